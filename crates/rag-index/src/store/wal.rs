//! The write-ahead log: framed records appended to size-limited segments, made
//! durable per [`Durability`] before a write is acknowledged.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;

use fs_err as fs;
use rag_core::ModelFingerprint;

use crate::error::StoreError;
use crate::store::codec;
use crate::store::segment::{self, SegmentWriter};
use crate::write::Commit;

/// When an acknowledged write is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// On stable storage: the log is `fdatasync`ed before the write returns.
    /// Concurrent writers share one sync (group commit). Survives power loss.
    #[default]
    Fsync,
    /// Handed to the operating system (`write(2)`) before the write returns:
    /// survives the process being killed, not the machine losing power.
    Os,
    /// Buffered in the process and written in large pieces: a crash may lose the
    /// most recent writes (never half of one). For bulk loads that can be redone.
    None,
}

/// Bytes buffered under [`Durability::None`] before they are written out.
const BUFFER_BYTES: usize = 1 << 20;

/// A thread that runs `fdatasync` for the log, so that the leader of a group
/// commit can insert the batch's vectors into the graph meanwhile.
#[derive(Debug)]
struct Syncer {
    requests: mpsc::Sender<Arc<std::fs::File>>,
    done: mpsc::Receiver<std::io::Result<()>>,
}

impl Syncer {
    fn start() -> std::io::Result<Self> {
        let (requests, inbox) = mpsc::channel::<Arc<std::fs::File>>();
        let (outbox, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("rag-wal-sync".into())
            .spawn(move || {
                for file in inbox {
                    if outbox.send(file.sync_data()).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self { requests, done })
    }
}

/// The log of one store.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    model: ModelFingerprint,
    active: SegmentWriter,
    /// Closed segments by first sequence number, oldest first (the active one is
    /// not among them).
    closed: Vec<(u64, PathBuf)>,
    pending: Vec<u8>,
    durability: Durability,
    segment_bytes: u64,
    /// The sequence number the next record will carry.
    next_seq: u64,
    /// Bytes appended since the last checkpoint.
    pub bytes_since_checkpoint: u64,
    /// The sync thread (for [`Durability::Fsync`]).
    syncer: Option<Syncer>,
    /// Whether a sync was started and not waited for.
    syncing: bool,
}

impl Wal {
    /// A log over segments that recovery found (`closed`, then `active`).
    pub fn new(
        dir: PathBuf,
        model: ModelFingerprint,
        active: SegmentWriter,
        closed: Vec<(u64, PathBuf)>,
        next_seq: u64,
        durability: Durability,
        segment_bytes: u64,
    ) -> Result<Self, StoreError> {
        let syncer = match durability {
            Durability::Fsync => Some(Syncer::start().map_err(|e| StoreError::io(&dir, e))?),
            Durability::Os | Durability::None => None,
        };
        Ok(Self {
            dir,
            model,
            active,
            closed,
            pending: Vec::new(),
            durability,
            segment_bytes,
            next_seq,
            bytes_since_checkpoint: 0,
            syncer,
            syncing: false,
        })
    }

    /// Appends the records of `commits` (consecutive sequence numbers from the next
    /// one due) and, for [`Durability::Fsync`], starts their sync on the sync
    /// thread: [`Wal::wait`] returns once they are durable.
    pub fn append(&mut self, commits: &[Commit<'_>]) -> Result<(), StoreError> {
        self.wait()?;
        let mut payload = Vec::new();
        for c in commits {
            if c.seq != self.next_seq {
                return Err(StoreError::LogGap {
                    expected: self.next_seq,
                    detail: format!("a write arrived with sequence {}", c.seq),
                });
            }
            if self.active.len + self.pending.len() as u64 >= self.segment_bytes {
                self.roll()?;
            }
            payload.clear();
            codec::encode(&mut payload, c.op);
            let before = self.pending.len();
            segment::frame(&mut self.pending, c.seq, &payload);
            self.bytes_since_checkpoint += (self.pending.len() - before) as u64;
            self.next_seq += 1;
        }
        match self.durability {
            Durability::Fsync => {
                self.write_pending()?;
                match &self.syncer {
                    Some(s) if s.requests.send(self.active.handle()).is_ok() => {
                        self.syncing = true;
                        Ok(())
                    }
                    // No sync thread (it could not start, or is gone): sync here.
                    _ => self.active.sync(),
                }
            }
            Durability::Os => self.write_pending(),
            Durability::None if self.pending.len() >= BUFFER_BYTES => self.write_pending(),
            Durability::None => Ok(()),
        }
    }

    /// Waits for the sync [`Wal::append`] started, if any.
    pub fn wait(&mut self) -> Result<(), StoreError> {
        if !std::mem::take(&mut self.syncing) {
            return Ok(());
        }
        let synced = match &self.syncer {
            Some(s) => s
                .done
                .recv()
                .map_err(|_| std::io::Error::other("the log's sync thread is gone")),
            None => Ok(Ok(())),
        };
        crate::store::failpoint("wal::sync")?;
        synced
            .and_then(|r| r)
            .map_err(|e| StoreError::io(&self.active.path, e))
    }

    fn write_pending(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::take(&mut self.pending);
        self.active.write(&bytes)
    }

    /// Writes whatever is buffered and syncs it.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.wait()?;
        self.write_pending()?;
        self.active.sync()
    }

    /// Closes the active segment (synced) and starts a new one at the next sequence
    /// number, unless the active one holds no record yet.
    pub fn roll(&mut self) -> Result<(), StoreError> {
        self.wait()?;
        self.write_pending()?;
        if self.active.first_seq == self.next_seq {
            return Ok(());
        }
        self.active.sync()?;
        let fresh = SegmentWriter::create(&self.dir, &self.model, self.next_seq)?;
        let old = std::mem::replace(&mut self.active, fresh);
        self.closed.push((old.first_seq, old.path.clone()));
        Ok(())
    }

    /// Deletes the closed segments whose records all have sequence numbers up to
    /// `seq` (a checkpoint covers them).
    pub fn drop_through(&mut self, seq: u64) -> Result<(), StoreError> {
        let mut keep = Vec::new();
        let mut bounds: Vec<u64> = self.closed.iter().skip(1).map(|(f, _)| *f).collect();
        bounds.push(self.active.first_seq);
        for ((first, path), next_first) in std::mem::take(&mut self.closed).into_iter().zip(bounds)
        {
            if next_first.saturating_sub(1) <= seq {
                fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
            } else {
                keep.push((first, path));
            }
        }
        self.closed = keep;
        segment::sync_dir(&self.dir)?;
        self.bytes_since_checkpoint = 0;
        Ok(())
    }

    /// Every segment file, oldest first.
    pub fn segments(&self) -> Vec<PathBuf> {
        self.closed
            .iter()
            .map(|(_, p)| p.clone())
            .chain(std::iter::once(self.active.path.clone()))
            .collect()
    }

    /// Bytes in all segments.
    pub fn bytes(&self) -> u64 {
        let closed: u64 = self
            .closed
            .iter()
            .filter_map(|(_, p)| std::fs::metadata(p).ok().map(|m| m.len()))
            .sum();
        closed + self.active.len + self.pending.len() as u64
    }
}
