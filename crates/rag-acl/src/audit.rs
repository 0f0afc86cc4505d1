//! An append-only, hash-chained audit log with group commit.
//!
//! Each record is one line, `MAC<TAB>BODY`, where `BODY` is the record as JSON
//! (sequence number, time, the previous record's MAC, the event) and `MAC` is the
//! sha256 of `BODY` or, with an [`AuditKey`], its HMAC-SHA256. [`AuditLog::append`]
//! writes the line and returns once it is on disk; appends that overlap share one
//! `fdatasync` (group commit). [`verify`] recomputes the chain and names the first
//! record that was altered, removed or moved.
//!
//! What the chain protects: without a key, it detects accidental damage and edits
//! by someone who does not recompute the hashes; anyone who can write the file can
//! rewrite a record and recompute every later hash. With a key kept away from the
//! log's directory, a rewritten, removed or reordered record fails verification
//! unless the key is known. Cutting records off the end leaves a valid shorter
//! chain either way: compare [`Verified::head`] with a head kept elsewhere.
//!
//! A crash (or a full disk) in the middle of an append leaves a torn last line.
//! [`AuditLog::open`] cuts it off, as a log tail, and says so in
//! [`AuditLog::recovery`]; [`verify`] still reports it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use fs_err as fs;
use hmac::{Hmac, Mac};
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{AclError, Result};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A search.
    Search,
    /// A question was answered (or refused) by the pipeline.
    Answer,
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
    /// What was touched: document or chunk references (`doc@version#chunk` for
    /// served passages).
    pub resources: Vec<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// For answers: the sha256 of the question, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question_sha256: Option<String>,
    /// For answers: whether the cache served it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_cache: Option<bool>,
    /// When the event happened (milliseconds since the Unix epoch), if not when
    /// it was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
}

impl AuditEvent {
    /// An event with no answer fields.
    pub fn new(
        action: AuditAction,
        tenant: Option<String>,
        actor: Option<String>,
        resources: Vec<String>,
        outcome: Outcome,
    ) -> Self {
        Self {
            action,
            tenant,
            actor,
            resources,
            outcome,
            question_sha256: None,
            from_cache: None,
            at_ms: None,
        }
    }
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
    /// This record's MAC (hash).
    pub hash: String,
}

/// The result of a successful [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Records in the log.
    pub records: Vec<AuditRecord>,
    /// The last record's MAC (the genesis value for an empty log).
    pub head: String,
}

/// A secret key for the log's HMAC-SHA256 chain (at least 16 bytes). Its `Debug`
/// does not show it.
#[derive(Clone)]
pub struct AuditKey(Vec<u8>);

impl AuditKey {
    /// A key from secret bytes; fewer than 16 is [`AclError::WeakKey`].
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self> {
        let bytes = bytes.into();
        if bytes.len() < 16 {
            return Err(AclError::WeakKey { len: bytes.len() });
        }
        Ok(Self(bytes))
    }
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

fn mac(key: Option<&AuditKey>, body: &str) -> String {
    match key {
        None => hex::encode(Sha256::digest(body.as_bytes())),
        Some(k) => match Hmac::<Sha256>::new_from_slice(&k.0) {
            Ok(mut m) => {
                m.update(body.as_bytes());
                hex::encode(m.finalize().into_bytes())
            }
            // HMAC takes keys of any length; unreachable in practice, and a MAC
            // that never verifies is the fail-closed answer.
            Err(_) => String::new(),
        },
    }
}

/// What opening the log repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuditRecovery {
    /// Bytes of a torn last record cut off (0 when the log ended cleanly).
    pub torn_bytes: u64,
    /// Records found intact.
    pub records: u64,
}

struct Tail {
    file: fs::File,
    seq: u64,
    head: String,
}

#[derive(Default)]
struct SyncState {
    /// Records known to be on disk.
    synced: u64,
    /// A sync is running.
    syncing: bool,
    /// A write or sync failed: the file's state is unknown, appends are refused.
    failed: bool,
}

/// An open audit log, safe to share between threads.
pub struct AuditLog {
    path: PathBuf,
    key: Option<AuditKey>,
    tail: Mutex<Tail>,
    /// Records written to the file (not necessarily synced).
    written: AtomicU64,
    sync_file: std::fs::File,
    sync: Mutex<SyncState>,
    synced: Condvar,
    recovery: AuditRecovery,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("keyed", &self.key.is_some())
            .field("recovery", &self.recovery)
            .finish()
    }
}

/// Cuts a torn last line (no final newline) off the file at `path`; returns the
/// bytes cut.
fn cut_torn_tail(path: &Path) -> Result<u64> {
    let io = |source| AclError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = fs::read(path).map_err(io)?;
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(0);
    }
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let file = fs::OpenOptions::new().write(true).open(path).map_err(io)?;
    file.set_len(keep as u64).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok((bytes.len() - keep) as u64)
}

impl AuditLog {
    /// Opens or creates the unkeyed log at `path`; see [`open_with`](Self::open_with).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, None)
    }

    /// Opens or creates the log at `path`, chained with HMAC-SHA256 under `key` if
    /// given. A torn last record is cut off (see [`recovery`](Self::recovery)); the
    /// rest must verify, or the log is refused rather than extended.
    pub fn open_with(path: impl AsRef<Path>, key: Option<AuditKey>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io = |source| AclError::Io {
            path: path.clone(),
            source,
        };
        let (seq, head, torn_bytes) = if path.exists() {
            let torn_bytes = cut_torn_tail(&path)?;
            if torn_bytes > 0 {
                tracing::warn!(path = %path.display(), torn_bytes, "cut a torn audit record");
            }
            let v = verify_with(&path, key.as_ref())?;
            (v.records.len() as u64, v.head, torn_bytes)
        } else {
            (0, GENESIS.to_owned(), 0)
        };
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        let sync_file = file.file().try_clone().map_err(io)?;
        Ok(Self {
            key,
            tail: Mutex::new(Tail { file, seq, head }),
            written: AtomicU64::new(seq),
            sync_file,
            sync: Mutex::new(SyncState {
                synced: seq,
                ..SyncState::default()
            }),
            synced: Condvar::new(),
            recovery: AuditRecovery {
                torn_bytes,
                records: seq,
            },
            path,
        })
    }

    /// What opening repaired.
    pub fn recovery(&self) -> AuditRecovery {
        self.recovery
    }

    /// Appends an event; returns once it is on disk. Concurrent appends share one
    /// `fdatasync`. After a failed write or sync every append fails: the file's
    /// state is unknown until it is reopened (which cuts a torn record).
    pub fn append(&self, event: AuditEvent) -> Result<AuditRecord> {
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let io = |source| AclError::Io {
            path: self.path.clone(),
            source,
        };
        let (record, mine) = {
            let mut tail = self.tail.lock();
            if self.sync.lock().failed {
                return Err(AclError::Poisoned);
            }
            let body = Body {
                seq: tail.seq,
                ts_ms,
                prev: tail.head.clone(),
                event,
            };
            let json = serde_json::to_string(&body).map_err(AclError::Encode)?;
            let hash = mac(self.key.as_ref(), &json);
            let line = format!("{hash}\t{json}\n");
            if let Err(e) = tail.file.write_all(line.as_bytes()) {
                self.sync.lock().failed = true;
                return Err(io(e));
            }
            tail.seq += 1;
            tail.head = hash.clone();
            self.written.store(tail.seq, Ordering::Release);
            let record = AuditRecord {
                seq: body.seq,
                ts_ms,
                event: body.event,
                hash,
            };
            (record, tail.seq)
        };
        self.wait_synced(mine).map_err(io)?;
        Ok(record)
    }

    /// Waits until the first `count` records are on disk, syncing them itself if
    /// no other caller is (the leader syncs everything written so far).
    fn wait_synced(&self, count: u64) -> std::io::Result<()> {
        let mut st = self.sync.lock();
        loop {
            if st.failed {
                return Err(std::io::Error::other(
                    "an earlier audit write or sync failed",
                ));
            }
            if st.synced >= count {
                return Ok(());
            }
            if st.syncing {
                self.synced.wait(&mut st);
                continue;
            }
            st.syncing = true;
            let target = self.written.load(Ordering::Acquire);
            drop(st);
            let r = self.sync_file.sync_data();
            st = self.sync.lock();
            st.syncing = false;
            match r {
                Ok(()) => st.synced = st.synced.max(target),
                Err(e) => {
                    st.failed = true;
                    self.synced.notify_all();
                    return Err(e);
                }
            }
            self.synced.notify_all();
        }
    }

    /// The MAC of the last record written.
    pub fn head(&self) -> String {
        self.tail.lock().head.clone()
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl rag_core::AuditSink for AuditLog {
    fn record(&self, r: &rag_core::AnswerRecord) -> rag_core::Result<()> {
        let outcome = match r.decision {
            rag_core::AnswerDecision::Denied => Outcome::Denied,
            _ => Outcome::Ok,
        };
        let action = match r.decision {
            rag_core::AnswerDecision::Denied => AuditAction::AccessDenied,
            _ => AuditAction::Answer,
        };
        let at_ms =
            r.at.duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
        let event = AuditEvent {
            action,
            tenant: Some(r.tenant.to_string()),
            actor: Some(r.user.to_string()),
            resources: r
                .served
                .iter()
                .map(|c| format!("{}@{}#{}", c.doc_id, c.doc_version, c.chunk_id))
                .collect(),
            outcome,
            question_sha256: Some(hex::encode(r.question_sha256)),
            from_cache: Some(r.from_cache),
            at_ms: Some(at_ms),
        };
        self.append(event)
            .map(|_| ())
            .map_err(|e| rag_core::Error::backend(rag_core::Stage::Audit, e))
    }
}

/// Reads and checks the whole unkeyed log at `path`.
pub fn verify(path: impl AsRef<Path>) -> Result<Verified> {
    verify_with(path, None)
}

/// Reads and checks the whole log at `path`, chained under `key` if given.
pub fn verify_with(path: impl AsRef<Path>, key: Option<&AuditKey>) -> Result<Verified> {
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
        if mac(key, json) != hash {
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
        AuditEvent::new(
            AuditAction::Search,
            Some("acme".into()),
            Some(format!("user{i}")),
            vec![format!("doc{i}")],
            Outcome::Ok,
        )
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

    /// Hole 5: without a key anyone who can write the file rewrites a record and
    /// recomputes the chain, and it verifies clean. With a key it does not.
    #[test]
    fn a_rewritten_and_rechained_log_verifies_only_without_a_key() {
        let key = AuditKey::new(*b"0123456789abcdef0123456789abcdef").unwrap();
        for keyed in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.log");
            let log = AuditLog::open_with(&path, keyed.then(|| key.clone())).unwrap();
            for i in 0..4 {
                log.append(event(i)).unwrap();
            }
            drop(log);
            // The attacker's forgery: edit record 2, recompute every sha256 after it.
            let mut prev = GENESIS.to_owned();
            let mut forged = Vec::new();
            for l in lines(&path) {
                let (_, json) = l.split_once('\t').unwrap();
                let mut body: Body = serde_json::from_str(json).unwrap();
                body.prev = prev.clone();
                if body.seq == 1 {
                    body.event.resources = vec!["nothing-to-see".into()];
                }
                let json = serde_json::to_string(&body).unwrap();
                let hash = hex::encode(Sha256::digest(json.as_bytes()));
                forged.push(format!("{hash}\t{json}"));
                prev = hash;
            }
            rewrite(&path, &forged);
            let result = verify_with(&path, keyed.then_some(&key));
            if keyed {
                let err = result.unwrap_err();
                assert!(matches!(err, AclError::Tampered { line: 1, .. }), "{err}");
            } else {
                assert!(
                    result.is_ok(),
                    "the unkeyed chain cannot catch a re-chained log"
                );
            }
        }
        assert!(matches!(
            AuditKey::new(*b"short"),
            Err(AclError::WeakKey { len: 5 })
        ));
    }

    /// Hole 5: a torn last line (a crash or ENOSPC mid-append) made the log
    /// unopenable forever (`Tampered { line: 2 }`). It is cut like a log tail.
    #[test]
    fn a_torn_last_record_is_cut_on_open_and_reported() {
        let (_d, path) = write_log(3);
        let head = verify(&path).unwrap().records[1].hash.clone();
        let s = fs::read_to_string(&path).unwrap();
        let cut = s.len() - 25;
        fs::write(&path, &s[..cut]).unwrap();
        assert!(
            verify(&path).is_err(),
            "verify still reports the torn record"
        );
        let log = AuditLog::open(&path).unwrap();
        let r = log.recovery();
        assert_eq!(r.records, 2);
        assert!(r.torn_bytes > 0 && r.torn_bytes < s.len() as u64);
        assert_eq!(log.head(), head);
        log.append(event(9)).unwrap();
        let v = verify(&path).unwrap();
        assert_eq!(v.records.len(), 3);
        assert_eq!(v.records[2].event, event(9));
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
        // Reopening cuts the torn record; the kept head still tells two are gone.
        let log = AuditLog::open(&path).unwrap();
        assert_eq!(log.recovery().records, 3);
        assert_ne!(log.head(), head);
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
