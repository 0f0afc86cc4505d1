//! An append-only, hash-chained audit log.
//!
//! Each record is one line, `HASH<TAB>BODY`, where `BODY` is the record as JSON
//! (sequence number, time, the previous record's hash, the event) and `HASH` is the
//! sha256 of `BODY`. [`AuditLog::append`] writes the line and syncs it to disk before
//! it returns. [`verify`] recomputes the chain and names the first record that was
//! altered, removed or moved. Cutting records off the end leaves a valid shorter
//! chain: compare [`Verified::head`] with a head kept elsewhere to detect that.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use fs_err as fs;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{AclError, Result};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A search or query.
    Search,
    /// Documents were ingested.
    Ingest,
    /// Documents were deleted.
    Delete,
    /// A snapshot was written.
    Snapshot,
    /// A snapshot was restored.
    Restore,
    /// Access was refused.
    AccessDenied,
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done.
    Ok,
    /// Refused.
    Denied,
    /// Failed.
    Failed,
}

/// One audited event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// What happened.
    pub action: AuditAction,
    /// The tenant acted in.
    pub tenant: Option<String>,
    /// Who acted.
    pub actor: Option<String>,
    /// What was touched (document or chunk ids).
    pub resources: Vec<String>,
    /// How it ended.
    pub outcome: Outcome,
}

#[derive(Debug, Serialize, Deserialize)]
struct Body {
    seq: u64,
    ts_ms: u64,
    prev: String,
    event: AuditEvent,
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the log, from 0.
    pub seq: u64,
    /// Milliseconds since the Unix epoch when it was written.
    pub ts_ms: u64,
    /// The event.
    pub event: AuditEvent,
    /// This record's hash.
    pub hash: String,
}

/// The result of a successful [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Records in the log.
    pub records: Vec<AuditRecord>,
    /// The last record's hash (the genesis hash for an empty log).
    pub head: String,
}

struct Tail {
    file: fs::File,
    seq: u64,
    head: String,
}

/// An open audit log, safe to share between threads.
pub struct AuditLog {
    path: PathBuf,
    tail: Mutex<Tail>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish()
    }
}

impl AuditLog {
    /// Opens or creates the log at `path`. An existing log must verify first;
    /// a tampered log is refused rather than extended.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io = |source| AclError::Io {
            path: path.clone(),
            source,
        };
        let (seq, head) = if path.exists() {
            let v = verify(&path)?;
            (v.records.len() as u64, v.head)
        } else {
            (0, GENESIS.to_owned())
        };
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        Ok(Self {
            path,
            tail: Mutex::new(Tail { file, seq, head }),
        })
    }

    /// Appends an event; returns once it is on disk.
    pub fn append(&self, event: AuditEvent) -> Result<AuditRecord> {
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut tail = self.tail.lock();
        let body = Body {
            seq: tail.seq,
            ts_ms,
            prev: tail.head.clone(),
            event,
        };
        let json = serde_json::to_string(&body).map_err(AclError::Encode)?;
        let hash = hex::encode(Sha256::digest(json.as_bytes()));
        let line = format!("{hash}\t{json}\n");
        let io = |source| AclError::Io {
            path: self.path.clone(),
            source,
        };
        tail.file.write_all(line.as_bytes()).map_err(io)?;
        tail.file.sync_data().map_err(io)?;
        tail.seq += 1;
        tail.head = hash.clone();
        Ok(AuditRecord {
            seq: body.seq,
            ts_ms,
            event: body.event,
            hash,
        })
    }

    /// The hash of the last record written.
    pub fn head(&self) -> String {
        self.tail.lock().head.clone()
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads and checks the whole log at `path`.
pub fn verify(path: impl AsRef<Path>) -> Result<Verified> {
    let path = path.as_ref();
    let file = fs::File::open(path).map_err(|source| AclError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = BufReader::new(file);
    let mut records = Vec::new();
    let mut head = GENESIS.to_owned();
    let mut buf = String::new();
    loop {
        buf.clear();
        let n = reader.read_line(&mut buf).map_err(|source| AclError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if n == 0 {
            break;
        }
        let line = records.len() + 1;
        let bad = |reason: &str| AclError::Tampered {
            line,
            reason: reason.to_owned(),
        };
        let text = buf
            .strip_suffix('\n')
            .ok_or_else(|| bad("record is cut short"))?;
        let (hash, json) = text
            .split_once('\t')
            .ok_or_else(|| bad("record has no hash"))?;
        if hex::encode(Sha256::digest(json.as_bytes())) != hash {
            return Err(bad("record content does not match its hash"));
        }
        let body: Body = serde_json::from_str(json).map_err(|_| bad("record is not valid"))?;
        if body.seq != records.len() as u64 {
            return Err(bad("record is out of sequence"));
        }
        if body.prev != head {
            return Err(bad("record does not follow the previous one"));
        }
        head = hash.to_owned();
        records.push(AuditRecord {
            seq: body.seq,
            ts_ms: body.ts_ms,
            event: body.event,
            hash: hash.to_owned(),
        });
    }
    Ok(Verified { records, head })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: usize) -> AuditEvent {
        AuditEvent {
            action: AuditAction::Search,
            tenant: Some("acme".into()),
            actor: Some(format!("user{i}")),
            resources: vec![format!("doc{i}")],
            outcome: Outcome::Ok,
        }
    }

    fn write_log(n: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        for i in 0..n {
            log.append(event(i)).unwrap();
        }
        (dir, path)
    }

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn rewrite(path: &Path, lines: &[String]) {
        let mut s = lines.join("\n");
        s.push('\n');
        fs::write(path, s).unwrap();
    }

    #[test]
    fn intact_log_verifies_and_reopens_on_the_same_chain() {
        let (_d, path) = write_log(5);
        let v = verify(&path).unwrap();
        assert_eq!(v.records.len(), 5);
        assert_eq!(v.records[3].event, event(3));
        let log = AuditLog::open(&path).unwrap();
        assert_eq!(log.head(), v.head);
        log.append(event(5)).unwrap();
        assert_eq!(verify(&path).unwrap().records.len(), 6);
    }

    #[test]
    fn altered_record_is_detected() {
        let (_d, path) = write_log(5);
        let mut l = lines(&path);
        l[2] = l[2].replace("doc2", "doc9");
        rewrite(&path, &l);
        let err = verify(&path).unwrap_err();
        assert!(matches!(err, AclError::Tampered { line: 3, .. }), "{err}");
    }

    #[test]
    fn altered_record_with_recomputed_hash_breaks_the_chain() {
        let (_d, path) = write_log(5);
        let mut l = lines(&path);
        let (_, json) = l[1].split_once('\t').unwrap();
        let json = json.replace("doc1", "doc9");
        let hash = hex::encode(Sha256::digest(json.as_bytes()));
        l[1] = format!("{hash}\t{json}");
        rewrite(&path, &l);
        let err = verify(&path).unwrap_err();
        assert!(matches!(err, AclError::Tampered { line: 3, .. }), "{err}");
    }

    #[test]
    fn removed_record_is_detected() {
        let (_d, path) = write_log(5);
        let mut l = lines(&path);
        l.remove(1);
        rewrite(&path, &l);
        assert!(matches!(
            verify(&path).unwrap_err(),
            AclError::Tampered { line: 2, .. }
        ));
    }

    #[test]
    fn reordered_records_are_detected() {
        let (_d, path) = write_log(5);
        let mut l = lines(&path);
        l.swap(1, 2);
        rewrite(&path, &l);
        assert!(matches!(
            verify(&path).unwrap_err(),
            AclError::Tampered { line: 2, .. }
        ));
    }

    #[test]
    fn cut_tail_is_detected_against_a_kept_head() {
        let (_d, path) = write_log(5);
        let head = verify(&path).unwrap().head;
        let mut l = lines(&path);
        l.pop();
        rewrite(&path, &l);
        assert_ne!(verify(&path).unwrap().head, head);
        let s = fs::read_to_string(&path).unwrap();
        fs::write(&path, &s[..s.len() - 10]).unwrap();
        assert!(matches!(
            verify(&path).unwrap_err(),
            AclError::Tampered { line: 4, .. }
        ));
    }

    #[test]
    fn tampered_log_is_not_extended() {
        let (_d, path) = write_log(3);
        let mut l = lines(&path);
        l.swap(0, 1);
        rewrite(&path, &l);
        assert!(AuditLog::open(&path).is_err());
    }

    #[test]
    fn concurrent_appends_keep_one_chain() {
        let (_d, path) = write_log(0);
        let log = AuditLog::open(&path).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let log = &log;
                s.spawn(move || {
                    for i in 0..10 {
                        log.append(event(t * 100 + i)).unwrap();
                    }
                });
            }
        });
        let v = verify(&path).unwrap();
        assert_eq!(v.records.len(), 40);
        assert_eq!(v.head, log.head());
    }
}
