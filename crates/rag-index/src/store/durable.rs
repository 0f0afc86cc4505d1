//! [`DurableIndex`]: an [`HnswIndex`] whose writes go through the write-ahead log
//! before they are published, recovered from the newest checkpoint and the log.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use fs_err as fs;
use parking_lot::{Condvar, Mutex};
use rag_core::{
    AccessFilter, DocKey, DocumentInfo, Embedding, IndexStats, ModelFingerprint, SearchRequest,
    SearchResult, VectorIndex, VectorIndexRead, WriteOp, WriteReport,
};

use crate::config::IndexConfig;
use crate::error::{IndexError, Result, StoreError};
use crate::index::HnswIndex;
use crate::plan::Op;
use crate::store::checkpoint;
use crate::store::codec::{self, LogOp};
use crate::store::failpoint;
use crate::store::lock::DirLock;
use crate::store::segment::{self, SegmentWriter};
use crate::store::wal::{Durability, Wal};
use crate::write::CommitLog;

/// Settings of a durable store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// When an acknowledged write is durable (default [`Durability::Fsync`]).
    pub durability: Durability,
    /// A log segment is closed and a new one started past this size (64 MiB).
    pub segment_bytes: u64,
    /// A checkpoint is written once this many log bytes accumulated since the last
    /// one (256 MiB); `u64::MAX` turns automatic checkpoints off.
    pub checkpoint_bytes: u64,
    /// The largest record the log reader accepts (256 MiB): a length field beyond it
    /// is corruption, never an allocation.
    pub max_record_bytes: usize,
    /// Records applied per batch during replay.
    pub replay_batch: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Fsync,
            segment_bytes: 64 << 20,
            checkpoint_bytes: 256 << 20,
            max_record_bytes: 256 << 20,
            replay_batch: 512,
        }
    }
}

/// What [`DurableIndex::open`] found and did.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryReport {
    /// The sequence number of the checkpoint loaded, if there was one.
    pub checkpoint: Option<u64>,
    /// Log records applied on top of it.
    pub records_replayed: u64,
    /// Bytes of torn log tail cut off (a write that was never acknowledged).
    pub bytes_cut: u64,
    /// The segment the torn tail was cut from.
    pub torn_segment: Option<PathBuf>,
    /// The sequence number of the last write recovered.
    pub last_sequence: u64,
    /// Seconds the recovery took.
    pub seconds: f64,
}

/// What a checkpoint wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointReport {
    /// The sequence number it holds.
    pub sequence: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Log segments deleted because it covers them.
    pub segments_removed: usize,
    /// Seconds it took.
    pub seconds: f64,
}

/// Writes waiting for a leader, and the results a leader handed out.
#[derive(Default)]
struct Queue {
    /// Writes not yet taken by a leader, by ticket.
    ops: Vec<(u64, WriteOp)>,
    /// Results of writes a leader applied, waiting for their writers.
    results: HashMap<u64, Result<WriteReport>>,
    /// Whether a writer is applying a batch now.
    leading: bool,
}

/// Hands results out if the leader's batch ends early (an unwinding panic): each
/// writer of the batch gets an error instead of waiting for ever, and the next
/// writer may lead.
struct LeadGuard<'a> {
    store: &'a DurableIndex,
    tickets: Vec<u64>,
}

impl Drop for LeadGuard<'_> {
    fn drop(&mut self) {
        let mut q = self.store.queue.lock();
        q.leading = false;
        for t in self.tickets.drain(..) {
            q.results.entry(t).or_insert_with(|| {
                Err(IndexError::BatchAborted {
                    reason: "the batch's leader stopped before it finished".into(),
                })
            });
        }
        self.store.handed_out.notify_all();
    }
}

/// The leader's state: the log and what happened to it.
struct Committer {
    wal: Wal,
    /// Set when a log write or sync failed: no further write is accepted.
    poisoned: Option<String>,
    /// The checkpoint `CURRENT` names.
    current: Option<String>,
}

/// A durable, tenant-scoped store: every write is logged (and synced, per
/// [`Durability`]) before it is published, so an acknowledged write survives a
/// crash; `open` recovers from the newest checkpoint plus the log after it.
///
/// Concurrent writers share log syncs (group commit): each queues its write; when
/// no batch is being applied, one of them leads, applying every queued write as
/// one batch with one sync, and hands each writer its result. The others wait on a
/// condition variable for theirs, not on the log, so picking up a result never
/// waits for the next batch's sync.
pub struct DurableIndex {
    root: PathBuf,
    index: HnswIndex,
    queue: Mutex<Queue>,
    /// Signalled when a leader hands out results or stops leading.
    handed_out: Condvar,
    tickets: AtomicU64,
    commit: Mutex<Committer>,
    /// One checkpoint at a time.
    checkpointing: Mutex<()>,
    options: StoreOptions,
    recovery: RecoveryReport,
    _lock: DirLock,
}

impl std::fmt::Debug for DurableIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableIndex")
            .field("root", &self.root)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The leader's [`CommitLog`]: the store's log, remembering what failed.
struct Logger<'a> {
    wal: &'a mut Wal,
    failure: Option<String>,
    /// The last sequence number appended.
    logged: Option<u64>,
}

impl Logger<'_> {
    fn note(&mut self, r: Result<(), StoreError>) -> Result<()> {
        if let Err(e) = &r {
            self.failure = Some(e.to_string());
        }
        Ok(r?)
    }
}

impl CommitLog for Logger<'_> {
    fn append(&mut self, commits: &[crate::write::Commit<'_>]) -> Result<()> {
        let r = self
            .wal
            .append(commits)
            .and_then(|()| failpoint("store::after_append"));
        if r.is_ok() {
            self.logged = commits.last().map(|c| c.seq);
        }
        self.note(r)
    }

    fn wait(&mut self) -> Result<()> {
        let r = self.wal.wait();
        self.note(r)
    }
}

fn to_op(op: LogOp) -> Op {
    match op {
        LogOp::Upsert(docs) => Op::Upsert(docs),
        LogOp::Delete(keys) => Op::Remove { keys, erase: false },
        LogOp::Erase(keys) => Op::Remove { keys, erase: true },
    }
}

/// Applies replayed records, each of which must land at its own sequence number.
fn replay(index: &HnswIndex, batch: &mut Vec<(u64, Op)>) -> Result<(), StoreError> {
    if batch.is_empty() {
        return Ok(());
    }
    let (seqs, ops): (Vec<u64>, Vec<Op>) = std::mem::take(batch).into_iter().unzip();
    for (seq, result) in seqs.into_iter().zip(index.apply_ops(ops, None)) {
        match result {
            Ok(r) if r.sequence == seq => {}
            Ok(r) => {
                return Err(StoreError::Replay {
                    seq,
                    reason: format!("applied as sequence {}", r.sequence),
                });
            }
            Err(e) => {
                return Err(StoreError::Replay {
                    seq,
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(())
}

fn create_dir(path: &Path) -> Result<(), StoreError> {
    fs::create_dir_all(path).map_err(|e| StoreError::io(path, e))
}

impl DurableIndex {
    /// Creates the store in `root`, or recovers the one there: the checkpoint
    /// `CURRENT` names, then every log record after it. A torn log tail is cut off
    /// and reported; damage anywhere else is a typed error and nothing is opened.
    /// Another process holding `root` is [`StoreError::Locked`].
    pub fn open(
        root: impl AsRef<Path>,
        fingerprint: ModelFingerprint,
        config: IndexConfig,
        options: StoreOptions,
    ) -> Result<(Self, RecoveryReport)> {
        let start = Instant::now();
        let root = root.as_ref().to_path_buf();
        create_dir(&root)?;
        let lock = DirLock::acquire(&root)?;
        let ckdir = root.join("checkpoints");
        let waldir = root.join("wal");
        create_dir(&ckdir)?;
        create_dir(&waldir)?;

        let current = checkpoint::read_current(&root)?;
        let index = match &current {
            Some((name, seq)) => {
                let index = HnswIndex::restore(ckdir.join(name), Some(&fingerprint), config)
                    .map_err(|e| StoreError::Checkpoint {
                        name: name.clone(),
                        source: Box::new(e),
                    })?;
                if index.stats().sequence != *seq {
                    return Err(StoreError::Checkpoint {
                        name: name.clone(),
                        source: Box::new(IndexError::Snapshot(crate::SnapshotError::Corrupt {
                            file: "MANIFEST.json".into(),
                            reason: format!(
                                "holds sequence {}, its name says {seq}",
                                index.stats().sequence
                            ),
                        })),
                    }
                    .into());
                }
                index
            }
            None => HnswIndex::new(fingerprint.clone(), config)?,
        };
        checkpoint::remove_others(&ckdir, current.as_ref().map(|(n, _)| n.as_str()))?;
        let checkpoint_seq = current.as_ref().map(|(_, s)| *s);

        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for e in fs::read_dir(&waldir).map_err(|e| StoreError::io(&waldir, e))? {
            let e = e.map_err(|e| StoreError::io(&waldir, e))?;
            if let Some(first) = e.file_name().to_str().and_then(segment::parse_segment_name) {
                names.push((first, e.path()));
            }
        }
        names.sort();

        let mut report = RecoveryReport {
            checkpoint: checkpoint_seq,
            records_replayed: 0,
            bytes_cut: 0,
            torn_segment: None,
            last_sequence: 0,
            seconds: 0.0,
        };
        let mut applied = index.stats().sequence;
        let mut next_expected: Option<u64> = None;
        let mut live: Vec<(u64, PathBuf, u64)> = Vec::new();
        let mut batch: Vec<(u64, Op)> = Vec::new();
        let mut erased = false;
        let count = names.len();
        for (i, (first, path)) in names.into_iter().enumerate() {
            let last = i + 1 == count;
            let scan = segment::scan(&path, &fingerprint, last, options.max_record_bytes)?;
            if scan.valid_len == 0 {
                // A segment whose header never made it to disk.
                report.bytes_cut += scan.torn_bytes;
                report.torn_segment = Some(path.clone());
                fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
                continue;
            }
            if scan.first_seq != first {
                return Err(StoreError::CorruptLog {
                    segment: path,
                    offset: 0,
                    reason: format!("header names sequence {}", scan.first_seq),
                }
                .into());
            }
            if let Some(n) = next_expected
                && n != first
            {
                return Err(StoreError::LogGap {
                    expected: n,
                    detail: format!("the next segment is {}", path.display()),
                }
                .into());
            }
            next_expected = Some(first + scan.records.len() as u64);
            for rec in scan.records {
                if rec.seq <= applied {
                    continue;
                }
                if rec.seq != applied + 1 {
                    return Err(StoreError::LogGap {
                        expected: applied + 1,
                        detail: format!("{} starts at {}", path.display(), rec.seq),
                    }
                    .into());
                }
                let op = codec::decode(&rec.payload, fingerprint.id(), fingerprint.dims())
                    .map_err(|e| StoreError::CorruptLog {
                        segment: path.clone(),
                        offset: rec.offset,
                        reason: e.to_string(),
                    })?;
                erased |= matches!(op, LogOp::Erase(_));
                batch.push((rec.seq, to_op(op)));
                applied = rec.seq;
                report.records_replayed += 1;
                if batch.len() >= options.replay_batch.max(1) {
                    replay(&index, &mut batch)?;
                }
            }
            if scan.torn_bytes > 0 {
                report.bytes_cut += scan.torn_bytes;
                report.torn_segment = Some(path.clone());
                tracing::warn!(segment = %path.display(), bytes = scan.torn_bytes, "cut a torn log tail");
            }
            live.push((first, path, scan.valid_len));
        }
        replay(&index, &mut batch)?;
        let state_seq = index.stats().sequence;

        let reuse_last = live
            .last()
            .is_some_and(|_| next_expected == Some(state_seq + 1));
        let (active, closed) = if reuse_last {
            let (first, path, valid_len) = live.pop().ok_or_else(|| StoreError::LogGap {
                expected: state_seq + 1,
                detail: "no segment".into(),
            })?;
            (
                SegmentWriter::reopen(&path, first, valid_len)?,
                live.into_iter().map(|(f, p, _)| (f, p)).collect(),
            )
        } else {
            // The log ends before the checkpoint (or is empty): cut any torn tail,
            // then start a segment at the next sequence number.
            if let Some((first, path, valid_len)) = live.last() {
                SegmentWriter::reopen(path, *first, *valid_len)?;
            }
            (
                SegmentWriter::create(&waldir, &fingerprint, state_seq + 1)?,
                live.into_iter().map(|(f, p, _)| (f, p)).collect(),
            )
        };
        let mut wal = Wal::new(
            waldir,
            fingerprint,
            active,
            closed,
            state_seq + 1,
            options.durability,
            options.segment_bytes,
        )?;
        if let Some(seq) = checkpoint_seq {
            wal.drop_through(seq)?;
        }
        wal.bytes_since_checkpoint = wal.bytes();
        report.last_sequence = state_seq;
        report.seconds = start.elapsed().as_secs_f64();
        let store = Self {
            root,
            index,
            queue: Mutex::new(Queue::default()),
            handed_out: Condvar::new(),
            tickets: AtomicU64::new(0),
            commit: Mutex::new(Committer {
                wal,
                poisoned: None,
                current: current.map(|(n, _)| n),
            }),
            checkpointing: Mutex::new(()),
            options,
            recovery: report.clone(),
            _lock: lock,
        };
        if erased {
            // An erasure was logged but its purge may not have finished: finish it.
            store.checkpoint()?;
        }
        Ok((store, report))
    }

    /// Creates a store in `root`, which must not hold one yet, whose first
    /// checkpoint is `index` (a restored snapshot, say), and opens it.
    pub fn create_from(
        root: impl AsRef<Path>,
        index: &HnswIndex,
        options: StoreOptions,
    ) -> Result<(Self, RecoveryReport)> {
        let root = root.as_ref();
        create_dir(root)?;
        {
            let _lock = DirLock::acquire(root)?;
            let waldir = root.join("wal");
            let has_log = fs::read_dir(&waldir).is_ok_and(|mut d| d.next().is_some());
            if root.join(checkpoint::CURRENT).exists() || has_log {
                return Err(StoreError::NotEmpty {
                    path: root.to_path_buf(),
                }
                .into());
            }
            let ckdir = root.join("checkpoints");
            create_dir(&ckdir)?;
            let name = checkpoint::name(index.stats().sequence);
            let tmp = ckdir.join(format!(".tmp-{name}"));
            index.snapshot(&tmp)?;
            let dest = ckdir.join(&name);
            fs::rename(&tmp, &dest).map_err(|e| StoreError::io(&dest, e))?;
            segment::sync_dir(&ckdir)?;
            checkpoint::write_current(root, &name)?;
        }
        Self::open(
            root,
            index.fingerprint().clone(),
            index.config().clone(),
            options,
        )
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What `open` recovered.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The index, for reads and exports (its own write methods bypass the log:
    /// write through this store instead).
    pub fn index(&self) -> &HnswIndex {
        &self.index
    }

    /// Bytes of log not yet covered by a checkpoint.
    pub fn log_bytes(&self) -> u64 {
        self.commit.lock().wal.bytes()
    }

    /// Applies a write; it returns once the write is durable and visible. An
    /// erasure returns once a checkpoint without the erased documents has replaced
    /// every file that held them.
    pub fn write(&self, op: WriteOp) -> Result<WriteReport> {
        let erase = op.is_erase();
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        let mut q = self.queue.lock();
        q.ops.push((ticket, op));
        let (mine, due) = loop {
            if let Some(r) = q.results.remove(&ticket) {
                break (r, false);
            }
            if !q.leading {
                // Lead: the batch holds this write and every one queued before it.
                q.leading = true;
                let batch = std::mem::take(&mut q.ops);
                drop(q);
                let mut guard = LeadGuard {
                    store: self,
                    tickets: batch.iter().map(|(t, _)| *t).collect(),
                };
                let (results, due) = self.lead(batch);
                let mut mine = None;
                let mut q = self.queue.lock();
                for (t, r) in guard.tickets.drain(..).zip(results) {
                    if t == ticket {
                        mine = Some(r);
                    } else {
                        q.results.insert(t, r);
                    }
                }
                drop(q);
                // Stops leading and wakes the others.
                drop(guard);
                let mine = mine.unwrap_or_else(|| {
                    Err(IndexError::BatchAborted {
                        reason: "the write was not in its batch".into(),
                    })
                });
                break (mine, due);
            }
            self.handed_out.wait(&mut q);
        };
        if due {
            // Past the log size: checkpoint now (this writer waits for it; the
            // others only for its first, short step).
            if let Err(e) = self.checkpoint() {
                tracing::error!(error = %e, "automatic checkpoint failed");
            }
        }
        let report = mine?;
        if erase && report.documents_deleted > 0 {
            // The content must leave the log and older checkpoints before the
            // erasure is done.
            self.checkpoint().map_err(|e| IndexError::BatchAborted {
                reason: format!("erasure applied, but its purge failed: {e}"),
            })?;
        }
        Ok(report)
    }

    /// As the leader: applies a batch of queued writes with one log sync, and
    /// returns their results in order (and whether a checkpoint is due).
    fn lead(&self, batch: Vec<(u64, WriteOp)>) -> (Vec<Result<WriteReport>>, bool) {
        let mut committer = self.commit.lock();
        let committer = &mut *committer;
        let (tickets, ops): (Vec<u64>, Vec<WriteOp>) = batch.into_iter().unzip();
        let results: Vec<Result<WriteReport>> = match &committer.poisoned {
            Some(reason) => tickets
                .iter()
                .map(|_| {
                    Err(StoreError::Poisoned {
                        reason: reason.clone(),
                    }
                    .into())
                })
                .collect(),
            None => {
                let mut logger = Logger {
                    wal: &mut committer.wal,
                    failure: None,
                    logged: None,
                };
                let results = self.index.apply_batch(ops, &mut logger);
                let mut log_failure = logger.failure;
                if let Some(seq) = logger.logged
                    && log_failure.is_none()
                    && self.index.stats().sequence < seq
                {
                    // Logged but not applied (the graph inserts failed): memory is
                    // behind the log, so no further write may be planned on it.
                    log_failure = Some(format!(
                        "write {seq} is in the log but could not be applied in memory"
                    ));
                }
                if let Some(reason) = log_failure {
                    tracing::error!(%reason, "log write failed; the store refuses writes until reopened");
                    committer.poisoned = Some(reason);
                }
                results
            }
        };
        let due = committer.poisoned.is_none()
            && committer.wal.bytes_since_checkpoint >= self.options.checkpoint_bytes;
        (results, due)
    }

    /// Writes a checkpoint now: the index at its current sequence number, then the
    /// pointer, then drops the log segments and checkpoints it covers. Writers wait
    /// only while the index's rows are copied (its vector segments by reference,
    /// its graph frozen); the graph is serialised and the tables are encoded and
    /// written while they go on.
    pub fn checkpoint(&self) -> Result<CheckpointReport> {
        let _one = self.checkpointing.lock();
        let start = Instant::now();
        let (captured, current) = {
            let mut c = self.commit.lock();
            if let Some(reason) = &c.poisoned {
                return Err(StoreError::Poisoned {
                    reason: reason.clone(),
                }
                .into());
            }
            c.wal.flush()?;
            let capturing = self.index.capture()?;
            // The log after the checkpoint starts in a segment of its own.
            c.wal.roll()?;
            (capturing, c.current.clone())
        };
        let seq = captured.sequence();
        // Writers go on while the graph is serialised.
        let captured = captured.finish()?;
        let name = checkpoint::name(seq);
        let ckdir = self.root.join("checkpoints");
        let mut bytes = 0;
        if current.as_deref() != Some(name.as_str()) {
            let tmp = ckdir.join(format!(".tmp-{name}"));
            if tmp.exists() {
                fs::remove_dir_all(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
            }
            bytes = self.index.write_captured(&tmp, captured)?.bytes;
            segment::sync_dir(&tmp)?;
            let dest = ckdir.join(&name);
            fs::rename(&tmp, &dest).map_err(|e| StoreError::io(&dest, e))?;
            segment::sync_dir(&ckdir)?;
            failpoint("checkpoint::before_current")?;
            checkpoint::write_current(&self.root, &name)?;
        }
        failpoint("checkpoint::before_truncate")?;
        let mut c = self.commit.lock();
        c.current = Some(name.clone());
        let before = c.wal.segments().len();
        c.wal.drop_through(seq)?;
        let segments_removed = before - c.wal.segments().len();
        drop(c);
        checkpoint::remove_others(&ckdir, Some(&name))?;
        tracing::debug!(seq, bytes, "checkpoint written");
        Ok(CheckpointReport {
            sequence: seq,
            bytes,
            segments_removed,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Checkpoints and closes the store, releasing its directory.
    pub fn close(self) -> Result<CheckpointReport> {
        self.checkpoint()
    }
}

impl Drop for DurableIndex {
    fn drop(&mut self) {
        let mut c = self.commit.lock();
        if c.poisoned.is_none()
            && let Err(e) = c.wal.flush()
        {
            tracing::error!(error = %e, "flushing the log on drop failed");
        }
    }
}

impl VectorIndexRead for DurableIndex {
    fn fingerprint(&self) -> &ModelFingerprint {
        self.index.fingerprint()
    }

    fn search(
        &self,
        query: &Embedding,
        k: usize,
        filter: &AccessFilter,
    ) -> rag_core::Result<SearchResult> {
        self.index.search(query, k, filter)
    }

    fn retrieve(
        &self,
        request: &SearchRequest<'_>,
        filter: &AccessFilter,
    ) -> rag_core::Result<SearchResult> {
        self.index.retrieve(request, filter)
    }

    fn document(&self, key: &DocKey) -> rag_core::Result<Option<DocumentInfo>> {
        self.index.document(key)
    }

    fn stats(&self) -> IndexStats {
        self.index.stats()
    }
}

impl VectorIndex for DurableIndex {
    fn apply(&self, op: WriteOp) -> rag_core::Result<WriteReport> {
        Ok(self.write(op)?)
    }
}
