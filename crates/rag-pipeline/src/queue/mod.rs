//! Queued incremental indexing: a bounded, durable queue of document changes in
//! front of a [`Pipeline`], applied by a worker that batches, retries transient
//! failures with backoff, and moves poison changes to a dead-letter store.
//!
//! - **Bounded.** At [`QueueConfig::capacity`] pending changes a submit is refused
//!   with [`QueueError::Full`] and a retry hint (a service answers 429); nothing is
//!   held in memory beyond the capacity.
//! - **Durable.** A change is in the journal, synced, before [`Ack::Queued`] returns;
//!   reopening after a crash re-queues every change not yet applied. A change is
//!   marked done only after the pipeline's write returned, so with a durable store
//!   under the pipeline an acknowledged change is never lost.
//! - **Acknowledged when the caller chooses:** [`Ack::Queued`] (durably queued) or
//!   [`Ack::Applied`] (written to the index; the receipt carries the store sequence).
//! - **Dead letters.** A change the pipeline rejects as invalid, or that fails
//!   [`QueueConfig::max_attempts`] times, is kept with its reason and attempt count,
//!   listable ([`IngestQueue::dead_letters`]) and re-drivable
//!   ([`IngestQueue::redrive`], with a corrected change or as it was).
//! - **In order.** Changes apply in submission order; consecutive upserts go as one
//!   batch (a rejected batch is retried one change at a time to find the poison).

mod codec;
mod journal;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rag_core::{DocKey, Document, Error, Stage};

use crate::Pipeline;
use codec::Record;
use journal::Journal;

/// A change to the index.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Write (or rewrite) a document.
    Upsert(Document),
    /// Remove a document (removing one that is not there is not an error).
    Delete(DocKey),
    /// Write a document whose text is read from `path` when the change is applied
    /// (the `doc`'s own text is ignored, and its version is the file's modification
    /// time in nanoseconds, so a later edit always wins and re-reading an unchanged
    /// file is a no-op): what a file watcher queues. A file that is
    /// gone by then deletes the document; one that is not UTF-8 is rejected as
    /// invalid (a dead letter, re-drivable once the file is fixed, since the
    /// re-drive reads it again).
    UpsertFile {
        /// The document, less its text.
        doc: Document,
        /// Where its text is.
        path: PathBuf,
    },
}

impl Change {
    /// The document the change is about.
    pub fn key(&self) -> DocKey {
        match self {
            Change::Upsert(d) | Change::UpsertFile { doc: d, .. } => d.key(),
            Change::Delete(k) => k.clone(),
        }
    }

    fn is_upsert(&self) -> bool {
        !matches!(self, Change::Delete(_))
    }

    /// The document to write (`None`: delete it, its file is gone).
    fn materialize(&self) -> Result<Option<Document>, Error> {
        match self {
            Change::Upsert(d) => Ok(Some(d.clone())),
            Change::Delete(_) => Ok(None),
            Change::UpsertFile { doc, path } => match read_file(path) {
                Ok((bytes, version)) => match String::from_utf8(bytes) {
                    Ok(text) => Ok(Some(Document {
                        text,
                        version: version.unwrap_or(doc.version),
                        ..doc.clone()
                    })),
                    Err(e) => Err(Error::InvalidInput(rag_core::InvalidInput::Malformed {
                        what: "file",
                        detail: format!(
                            "{} is not UTF-8 (invalid byte at offset {})",
                            doc.id,
                            e.utf8_error().valid_up_to()
                        ),
                    })),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::Transient {
                    stage: Stage::Index,
                    source: Box::new(e),
                }),
            },
        }
    }
}

/// A file's bytes and its modification time in nanoseconds since the epoch.
fn read_file(path: &Path) -> std::io::Result<(Vec<u8>, Option<u64>)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let modified = file
        .metadata()?
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| u64::try_from(d.as_nanos()).ok());
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok((bytes, modified))
}

/// When a submit returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Once the change is durably queued.
    Queued,
    /// Once the change is applied (or dead-lettered), waiting at most
    /// [`QueueConfig::apply_timeout`].
    Applied,
}

/// What a submit returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The change's id in the queue.
    pub id: u64,
    /// With [`Ack::Applied`]: the index's sequence number after the change.
    pub sequence: Option<u64>,
}

/// A change that could not be applied.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The change's id.
    pub id: u64,
    /// The change.
    pub change: Change,
    /// Why (the error's summary: the kind of failure, never document text).
    pub reason: String,
    /// Attempts made.
    pub attempts: u32,
}

/// What opening the queue found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueRecovery {
    /// Changes re-queued (acknowledged, not yet applied).
    pub requeued: usize,
    /// Dead letters kept.
    pub dead_letters: usize,
    /// Torn bytes cut from the journal's end.
    pub bytes_cut: u64,
}

/// How the queue runs.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// Pending changes at most.
    pub capacity: usize,
    /// Upserts applied in one pipeline call at most.
    pub batch: usize,
    /// Attempts before a failing change becomes a dead letter.
    pub max_attempts: u32,
    /// The first retry's wait, doubled per attempt up to `max_backoff`.
    pub backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// The retry hint given with [`QueueError::Full`].
    pub retry_after: Duration,
    /// How long [`Ack::Applied`] waits.
    pub apply_timeout: Duration,
    /// Rewrite the journal once it is this large and nothing is pending.
    pub compact_bytes: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            batch: 64,
            max_attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            retry_after: Duration::from_secs(1),
            apply_timeout: Duration::from_secs(30),
            compact_bytes: 64 << 20,
        }
    }
}

/// Why the queue refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The queue is full; retry after the hint.
    #[error("the ingest queue is full; retry in {retry_after:?}")]
    Full {
        /// When to retry.
        retry_after: Duration,
    },
    /// The queue is closing.
    #[error("the ingest queue is closed")]
    Closed,
    /// An [`Ack::Applied`] wait ran out; the change stays queued.
    #[error("change {id} is queued but not applied within {waited:?}")]
    NotYetApplied {
        /// The change.
        id: u64,
        /// How long the submit waited.
        waited: Duration,
    },
    /// The change was dead-lettered instead of applied.
    #[error("change {id} was dead-lettered: {reason}")]
    DeadLettered {
        /// The change.
        id: u64,
        /// Why.
        reason: String,
    },
    /// No dead letter has this id.
    #[error("no dead letter {0}")]
    NoSuchDeadLetter(u64),
    /// A record is over the size limit.
    #[error("a queue record of {bytes} bytes is over {max}")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The journal is damaged other than at its end.
    #[error("queue journal {path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        /// The journal.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// What.
        reason: String,
    },
    /// Reading or writing the journal failed; the queue refuses writes after a
    /// failed sync until reopened.
    #[error("queue journal I/O on {path}: {source}")]
    Io {
        /// The journal.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An earlier journal write failed.
    #[error("the queue journal refuses writes after a failed write; reopen it")]
    Poisoned,
}

impl From<QueueError> for Error {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Full { .. } | QueueError::NotYetApplied { .. } | QueueError::Closed => {
                Error::Transient {
                    stage: Stage::Index,
                    source: Box::new(e),
                }
            }
            QueueError::NoSuchDeadLetter(id) => Error::NotFound {
                what: format!("dead letter {id}"),
            },
            QueueError::DeadLettered { .. } | QueueError::TooLarge { .. } => {
                Error::InvalidInput(rag_core::InvalidInput::Malformed {
                    what: "queued change",
                    detail: e.to_string(),
                })
            }
            other => Error::Backend {
                stage: Stage::Index,
                source: Box::new(other),
            },
        }
    }
}

enum Outcome {
    Applied(u64),
    Dead(String),
}

#[derive(Default)]
struct State {
    pending: VecDeque<(u64, Change, u32)>,
    dead: BTreeMap<u64, DeadLetter>,
    outcomes: HashMap<u64, Outcome>,
    waiting: HashMap<u64, usize>,
    next_id: u64,
    closing: bool,
    poisoned: bool,
}

struct Shared {
    pipeline: Arc<Pipeline>,
    config: QueueConfig,
    state: Mutex<State>,
    journal: Mutex<Journal>,
    work: Condvar,
    done: Condvar,
}

/// The queue; dropping it stops the worker after the change in hand (the rest
/// stay queued in the journal). [`IngestQueue::close`] drains first.
pub struct IngestQueue {
    shared: Arc<Shared>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for IngestQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestQueue")
            .field("depth", &self.depth())
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The journal file in a queue directory.
pub const JOURNAL_FILE: &str = "queue.log";

impl IngestQueue {
    /// Opens (or creates) the queue in `dir` in front of `pipeline`, re-queues what
    /// the journal holds unapplied, and starts the worker.
    pub fn open(
        dir: impl AsRef<Path>,
        pipeline: Arc<Pipeline>,
        config: QueueConfig,
    ) -> Result<(Self, QueueRecovery), QueueError> {
        Self::open_with(dir.as_ref(), pipeline, config, true)
    }

    /// [`IngestQueue::open`] without a worker: changes queue up and nothing applies
    /// them (for inspection, and tests of durability).
    pub fn open_paused(
        dir: impl AsRef<Path>,
        pipeline: Arc<Pipeline>,
        config: QueueConfig,
    ) -> Result<(Self, QueueRecovery), QueueError> {
        Self::open_with(dir.as_ref(), pipeline, config, false)
    }

    fn open_with(
        dir: &Path,
        pipeline: Arc<Pipeline>,
        config: QueueConfig,
        worker: bool,
    ) -> Result<(Self, QueueRecovery), QueueError> {
        std::fs::create_dir_all(dir).map_err(|e| QueueError::Io {
            path: dir.to_owned(),
            source: e,
        })?;
        let (mut journal, records, bytes_cut) = Journal::open(&dir.join(JOURNAL_FILE))?;
        let mut pending: BTreeMap<u64, Change> = BTreeMap::new();
        let mut dead: BTreeMap<u64, DeadLetter> = BTreeMap::new();
        let mut next_id = 1;
        for r in records {
            match r {
                Record::Enqueued { id, change } => {
                    next_id = next_id.max(id + 1);
                    pending.insert(id, change);
                }
                Record::Done { id } => {
                    pending.remove(&id);
                }
                Record::Dead {
                    id,
                    attempts,
                    reason,
                } => {
                    if let Some(change) = pending.remove(&id) {
                        dead.insert(
                            id,
                            DeadLetter {
                                id,
                                change,
                                reason,
                                attempts,
                            },
                        );
                    }
                }
                Record::Redriven { id, change } => {
                    dead.remove(&id);
                    pending.insert(id, change);
                }
            }
        }
        let recovery = QueueRecovery {
            requeued: pending.len(),
            dead_letters: dead.len(),
            bytes_cut,
        };
        // Keep only what is live.
        journal.rewrite(&live_records(&pending, &dead))?;
        let state = State {
            pending: pending.into_iter().map(|(id, c)| (id, c, 0)).collect(),
            dead,
            next_id,
            ..State::default()
        };
        let shared = Arc::new(Shared {
            pipeline,
            config,
            state: Mutex::new(state),
            journal: Mutex::new(journal),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let worker = if worker {
            let s = Arc::clone(&shared);
            Some(
                std::thread::Builder::new()
                    .name("rag-ingest-queue".into())
                    .spawn(move || run(&s))
                    .map_err(|e| QueueError::Io {
                        path: dir.to_owned(),
                        source: e,
                    })?,
            )
        } else {
            None
        };
        Ok((Self { shared, worker }, recovery))
    }

    /// Queues `changes` (all or none), synced to the journal once; with
    /// [`Ack::Applied`] waits until each is applied.
    pub fn submit(&self, changes: Vec<Change>, ack: Ack) -> Result<Vec<Receipt>, QueueError> {
        let ids = {
            let mut st = lock(&self.shared.state);
            if st.closing {
                return Err(QueueError::Closed);
            }
            if st.poisoned {
                return Err(QueueError::Poisoned);
            }
            if st.pending.len() + changes.len() > self.shared.config.capacity {
                return Err(QueueError::Full {
                    retry_after: self.shared.config.retry_after,
                });
            }
            let first = st.next_id;
            let records: Vec<Record> = changes
                .iter()
                .enumerate()
                .map(|(i, c)| Record::Enqueued {
                    id: first + i as u64,
                    change: c.clone(),
                })
                .collect();
            // Journal under the state lock: ids are in the journal in order.
            if let Err(e) = lock(&self.shared.journal).append(&records) {
                st.poisoned = true;
                return Err(e);
            }
            st.next_id += changes.len() as u64;
            let ids: Vec<u64> = (first..st.next_id).collect();
            if ack == Ack::Applied {
                for id in &ids {
                    *st.waiting.entry(*id).or_default() += 1;
                }
            }
            for (id, c) in ids.iter().zip(changes) {
                st.pending.push_back((*id, c, 0));
            }
            ids
        };
        self.shared.work.notify_all();
        match ack {
            Ack::Queued => Ok(ids
                .into_iter()
                .map(|id| Receipt { id, sequence: None })
                .collect()),
            Ack::Applied => self.wait_applied(&ids),
        }
    }

    fn wait_applied(&self, ids: &[u64]) -> Result<Vec<Receipt>, QueueError> {
        let started = Instant::now();
        let limit = self.shared.config.apply_timeout;
        let mut st = lock(&self.shared.state);
        loop {
            if ids.iter().all(|id| st.outcomes.contains_key(id)) {
                break;
            }
            let left = limit.saturating_sub(started.elapsed());
            if left.is_zero() {
                for id in ids {
                    release(&mut st, *id);
                }
                return Err(QueueError::NotYetApplied {
                    id: ids
                        .iter()
                        .copied()
                        .find(|id| !st.outcomes.contains_key(id))
                        .unwrap_or(0),
                    waited: limit,
                });
            }
            st = self
                .shared
                .done
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let mut receipts = Vec::with_capacity(ids.len());
        let mut dead = None;
        for id in ids {
            match st.outcomes.get(id) {
                Some(Outcome::Applied(seq)) => receipts.push(Receipt {
                    id: *id,
                    sequence: Some(*seq),
                }),
                Some(Outcome::Dead(reason)) => {
                    dead.get_or_insert((*id, reason.clone()));
                }
                None => {}
            }
        }
        for id in ids {
            release(&mut st, *id);
        }
        match dead {
            Some((id, reason)) => Err(QueueError::DeadLettered { id, reason }),
            None => Ok(receipts),
        }
    }

    /// The changes waiting to be applied, in order: id and document.
    pub fn pending(&self) -> Vec<(u64, DocKey)> {
        lock(&self.shared.state)
            .pending
            .iter()
            .map(|(id, c, _)| (*id, c.key()))
            .collect()
    }

    /// The most changes that may wait at once ([`QueueConfig::capacity`]).
    pub fn capacity(&self) -> usize {
        self.shared.config.capacity
    }

    /// Changes waiting to be applied.
    pub fn depth(&self) -> usize {
        lock(&self.shared.state).pending.len()
    }

    /// The dead letters, oldest first.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        lock(&self.shared.state).dead.values().cloned().collect()
    }

    /// Queues a dead letter again, as it was or replaced by a corrected change.
    pub fn redrive(&self, id: u64, replacement: Option<Change>) -> Result<(), QueueError> {
        {
            let mut st = lock(&self.shared.state);
            if st.poisoned {
                return Err(QueueError::Poisoned);
            }
            let Some(letter) = st.dead.get(&id) else {
                return Err(QueueError::NoSuchDeadLetter(id));
            };
            let change = replacement.unwrap_or_else(|| letter.change.clone());
            let record = Record::Redriven {
                id,
                change: change.clone(),
            };
            if let Err(e) = lock(&self.shared.journal).append(&[record]) {
                st.poisoned = true;
                return Err(e);
            }
            st.dead.remove(&id);
            st.pending.push_back((id, change, 0));
        }
        self.shared.work.notify_all();
        Ok(())
    }

    /// Waits up to `timeout` for everything queued to be applied (or
    /// dead-lettered), leaving the worker running; returns how many are still
    /// pending. What is left stays in the journal for the next open.
    pub fn drain(&self, timeout: Duration) -> usize {
        let started = Instant::now();
        let mut st = lock(&self.shared.state);
        while !st.pending.is_empty() && started.elapsed() < timeout && self.worker.is_some() {
            st = self
                .shared
                .done
                .wait_timeout(st, timeout.saturating_sub(started.elapsed()))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        st.pending.len()
    }

    /// Applies everything queued (waiting up to `timeout`), then stops the worker.
    pub fn close(mut self, timeout: Duration) -> Result<(), QueueError> {
        self.drain(timeout);
        self.stop();
        Ok(())
    }

    fn stop(&mut self) {
        lock(&self.shared.state).closing = true;
        self.shared.work.notify_all();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Drop for IngestQueue {
    fn drop(&mut self) {
        self.stop();
    }
}

fn release(st: &mut State, id: u64) {
    if let Some(n) = st.waiting.get_mut(&id) {
        *n -= 1;
        if *n == 0 {
            st.waiting.remove(&id);
            st.outcomes.remove(&id);
        }
    }
}

fn live_records(pending: &BTreeMap<u64, Change>, dead: &BTreeMap<u64, DeadLetter>) -> Vec<Record> {
    let mut out = Vec::new();
    let mut ids: Vec<u64> = pending.keys().chain(dead.keys()).copied().collect();
    ids.sort_unstable();
    for id in ids {
        if let Some(c) = pending.get(&id) {
            out.push(Record::Enqueued {
                id,
                change: c.clone(),
            });
        } else if let Some(d) = dead.get(&id) {
            out.push(Record::Enqueued {
                id,
                change: d.change.clone(),
            });
            out.push(Record::Dead {
                id,
                attempts: d.attempts,
                reason: d.reason.clone(),
            });
        }
    }
    out
}

/// The worker: apply the queue's head, in order, until closing.
fn run(s: &Shared) {
    loop {
        let batch = {
            let mut st = lock(&s.state);
            while st.pending.is_empty() && !st.closing {
                st = s.work.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
            if st.closing || st.poisoned {
                return;
            }
            // Consecutive upserts of distinct documents, or one delete.
            let mut batch: Vec<(u64, Change, u32)> = Vec::new();
            let mut keys = std::collections::HashSet::new();
            for (id, change, attempts) in st.pending.iter() {
                let upsert = change.is_upsert();
                let fits = batch.is_empty()
                    || (upsert
                        && batch[0].1.is_upsert()
                        && batch.len() < s.config.batch
                        && !keys.contains(&change.key()));
                if !fits {
                    break;
                }
                keys.insert(change.key());
                batch.push((*id, change.clone(), *attempts));
                if !upsert {
                    break;
                }
            }
            batch
        };
        let results = apply(s, &batch);
        if !settle(s, &batch, results) {
            return;
        }
    }
}

/// Applies a batch; a rejected batch of several is applied one by one.
fn apply(s: &Shared, batch: &[(u64, Change, u32)]) -> Vec<Result<u64, Error>> {
    let one = |change: &Change| -> Result<u64, Error> {
        match change.materialize()? {
            Some(d) => s.pipeline.ingest(vec![d]).map(|_| ()),
            None => match s.pipeline.delete(&change.key()) {
                Err(Error::NotFound { .. }) => Ok(()),
                other => other,
            },
        }?;
        Ok(s.pipeline.admin_index().stats().sequence)
    };
    if batch.len() == 1 {
        return vec![one(&batch[0].1)];
    }
    // A file that is gone or undecodable takes the one-by-one path below.
    let docs: Option<Vec<Document>> = batch
        .iter()
        .map(|(_, c, _)| c.materialize().ok().flatten())
        .collect();
    let batched = match docs {
        Some(docs) => s.pipeline.ingest(docs),
        None => Err(Error::InvalidInput(rag_core::InvalidInput::Malformed {
            what: "batch",
            detail: "a file in it is gone or unreadable".into(),
        })),
    };
    match batched {
        Ok(_) => {
            let seq = s.pipeline.admin_index().stats().sequence;
            batch.iter().map(|_| Ok(seq)).collect()
        }
        Err(Error::InvalidInput(_)) => {
            // Find the poison one change at a time, in order, stopping at the first
            // failure that is not the change's own fault (nothing after it may
            // apply first).
            let mut out = Vec::with_capacity(batch.len());
            for (_, c, _) in batch {
                let stop = out
                    .last()
                    .is_some_and(|r: &Result<u64, Error>| matches!(r, Err(e) if !matches!(e, Error::InvalidInput(_))));
                if stop {
                    out.push(Err(Error::Transient {
                        stage: Stage::Index,
                        source: "not attempted: an earlier change is being retried".into(),
                    }));
                } else {
                    out.push(one(c));
                }
            }
            out
        }
        Err(e) => {
            let summary = e.summary();
            batch
                .iter()
                .map(|_| {
                    Err(Error::Transient {
                        stage: Stage::Index,
                        source: summary.clone().into(),
                    })
                })
                .collect()
        }
    }
}

/// A dead letter's reason: the kind of failure, with an invalid input's own
/// description (ids and sizes, never document text).
fn reason(e: &Error) -> String {
    match e {
        Error::InvalidInput(inner) => format!("invalid input: {inner}"),
        other => other.summary(),
    }
}

/// Records the outcomes; returns `false` when the worker must stop.
fn settle(s: &Shared, batch: &[(u64, Change, u32)], results: Vec<Result<u64, Error>>) -> bool {
    let mut records = Vec::new();
    let mut outcomes = Vec::new();
    let mut retry = None;
    for ((id, _, attempts), result) in batch.iter().zip(results) {
        match result {
            Ok(seq) => {
                records.push(Record::Done { id: *id });
                outcomes.push((*id, Outcome::Applied(seq)));
            }
            Err(e) => {
                let attempts = attempts + 1;
                let poison = matches!(e, Error::InvalidInput(_));
                if poison || attempts >= s.config.max_attempts {
                    let reason = reason(&e);
                    tracing::warn!(id, attempts, %reason, "queued change dead-lettered");
                    records.push(Record::Dead {
                        id: *id,
                        attempts,
                        reason: reason.clone(),
                    });
                    outcomes.push((*id, Outcome::Dead(reason)));
                } else {
                    retry.get_or_insert((*id, attempts));
                    break; // in order: nothing after it applies first
                }
            }
        }
    }
    if !records.is_empty()
        && let Err(e) = lock(&s.journal).append(&records)
    {
        tracing::error!(error = %e, "queue journal write failed; the queue stops");
        lock(&s.state).poisoned = true;
        s.done.notify_all();
        return false;
    }
    let mut st = lock(&s.state);
    for (id, outcome) in outcomes {
        let removed = st
            .pending
            .iter()
            .position(|(p, _, _)| *p == id)
            .and_then(|pos| st.pending.remove(pos));
        if let (Some((_, change, attempts)), Outcome::Dead(reason)) = (removed, &outcome) {
            st.dead.insert(
                id,
                DeadLetter {
                    id,
                    change,
                    reason: reason.clone(),
                    attempts: attempts + 1,
                },
            );
        }
        if st.waiting.contains_key(&id) {
            st.outcomes.insert(id, outcome);
        }
    }
    let wait = if let Some((id, attempts)) = retry {
        if let Some(entry) = st.pending.iter_mut().find(|(p, _, _)| *p == id) {
            entry.2 = attempts;
        }
        let exp = s
            .config
            .backoff
            .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1)));
        Some(exp.min(s.config.max_backoff))
    } else {
        None
    };
    s.done.notify_all();
    if let Some(wait) = wait {
        // Backoff, cut short by closing.
        let (st2, _) = s
            .work
            .wait_timeout_while(st, wait, |st| !st.closing)
            .unwrap_or_else(PoisonError::into_inner);
        drop(st2);
    } else if st.pending.is_empty() && lock(&s.journal).bytes() > s.config.compact_bytes {
        let pending = BTreeMap::new();
        let records = live_records(&pending, &st.dead);
        if let Err(e) = lock(&s.journal).rewrite(&records) {
            tracing::error!(error = %e, "queue journal compaction failed; the queue stops");
            st.poisoned = true;
            return false;
        }
    }
    true
}
