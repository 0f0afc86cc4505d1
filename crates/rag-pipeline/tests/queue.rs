//! The ingest queue over the pipeline's doubles: acknowledgement modes, bounds,
//! order, retries with backoff, dead letters and re-drive, a torn journal, and
//! acknowledged changes surviving SIGKILL (a child process killed mid-stream).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rag_core::{DocId, DocKey, Document, Embedder, Error, VectorIndexRead, WordCounter};
use rag_pipeline::queue::{Ack, Change, IngestQueue, JOURNAL_FILE, QueueConfig, QueueError};
use rag_pipeline::testing::{FaultyIndex, HashEmbedder, OpenResolver};
use rag_pipeline::{Pipeline, RecursiveChunker};

fn pipeline(failures: usize) -> (Arc<Pipeline>, Arc<FaultyIndex>) {
    let embedder = Arc::new(HashEmbedder::new(32).unwrap());
    let index = Arc::new(FaultyIndex::new(embedder.fingerprint().clone()));
    index.fail_writes.store(failures, Ordering::SeqCst);
    let p = Pipeline::builder()
        .chunker(Arc::new(
            RecursiveChunker::new(32, 4, Arc::new(WordCounter)).unwrap(),
        ))
        .index(index.clone())
        .embedder(embedder)
        .access(Arc::new(OpenResolver))
        .build()
        .unwrap();
    (Arc::new(p), index)
}

fn config() -> QueueConfig {
    QueueConfig {
        backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        apply_timeout: Duration::from_secs(10),
        ..QueueConfig::default()
    }
}

fn doc(id: &str, version: u64, text: &str) -> Change {
    Change::Upsert(
        Document::new("acme", id, text)
            .with_version(version)
            .readable_by_group("staff"),
    )
}

fn version(index: &FaultyIndex, id: &str) -> Option<u64> {
    index
        .document(&DocKey::new("acme", DocId::new(id)))
        .unwrap()
        .map(|d| d.version)
}

#[test]
fn an_applied_ack_returns_once_the_index_has_the_change() {
    let dir = tempfile::tempdir().unwrap();
    let (p, index) = pipeline(0);
    let (q, rec) = IngestQueue::open(dir.path(), p, config()).unwrap();
    assert_eq!(rec.requeued, 0);
    let r = q
        .submit(
            vec![doc("a", 1, "alpha text"), doc("b", 1, "beta text")],
            Ack::Applied,
        )
        .unwrap();
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|r| r.sequence.is_some_and(|s| s >= 1)));
    assert_eq!(version(&index, "a"), Some(1));
    assert_eq!(version(&index, "b"), Some(1));
    assert_eq!(q.depth(), 0);
}

#[test]
fn a_full_queue_refuses_then_accepts_after_draining() {
    let dir = tempfile::tempdir().unwrap();
    let (p, index) = pipeline(0);
    let small = QueueConfig {
        capacity: 3,
        retry_after: Duration::from_millis(10),
        ..config()
    };
    let (q, _) = IngestQueue::open_paused(dir.path(), p.clone(), small.clone()).unwrap();
    q.submit(vec![doc("a", 1, "one"), doc("b", 1, "two")], Ack::Queued)
        .unwrap();
    q.submit(vec![doc("c", 1, "three")], Ack::Queued).unwrap();
    let full = q
        .submit(vec![doc("d", 1, "four")], Ack::Queued)
        .unwrap_err();
    assert!(matches!(full, QueueError::Full { retry_after } if retry_after > Duration::ZERO));
    assert!(Error::from(full).is_transient());
    drop(q);
    // The same journal with a worker: drains, then has room again.
    let (q, rec) = IngestQueue::open(dir.path(), p, small).unwrap();
    assert_eq!(rec.requeued, 3);
    // A client honouring the retry hint gets in once the worker has made room.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match q.submit(vec![doc("d", 1, "four")], Ack::Applied) {
            Ok(_) => break,
            Err(QueueError::Full { retry_after }) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the queue never drained"
                );
                std::thread::sleep(retry_after);
            }
            Err(e) => panic!("{e}"),
        }
    }
    for id in ["a", "b", "c", "d"] {
        assert_eq!(version(&index, id), Some(1), "{id}");
    }
}

#[test]
fn changes_apply_in_submission_order() {
    let dir = tempfile::tempdir().unwrap();
    let (p, index) = pipeline(0);
    let (q, _) = IngestQueue::open(dir.path(), p, config()).unwrap();
    let key = DocKey::new("acme", DocId::new("a"));
    q.submit(
        vec![
            doc("a", 1, "first"),
            Change::Delete(key.clone()),
            doc("a", 2, "second"),
            doc("b", 1, "other"),
            Change::Delete(DocKey::new("acme", DocId::new("b"))),
        ],
        Ack::Applied,
    )
    .unwrap();
    assert_eq!(version(&index, "a"), Some(2));
    assert_eq!(version(&index, "b"), None);
    // Deleting what is not there is not an error.
    q.submit(
        vec![Change::Delete(key.clone()), Change::Delete(key)],
        Ack::Applied,
    )
    .unwrap();
}

#[test]
fn transient_failures_are_retried_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let (p, index) = pipeline(3);
    let (q, _) = IngestQueue::open(dir.path(), p, config()).unwrap();
    q.submit(vec![doc("a", 1, "alpha")], Ack::Applied).unwrap();
    assert_eq!(version(&index, "a"), Some(1));
    assert!(q.dead_letters().is_empty());
}

#[test]
fn poison_and_exhausted_changes_become_dead_letters_that_can_be_redriven() {
    let dir = tempfile::tempdir().unwrap();
    let (p, index) = pipeline(0);
    let (q, _) = IngestQueue::open(dir.path(), p, config()).unwrap();
    // A document with no text is rejected by the pipeline: poison. Its batch
    // neighbours still apply, in order.
    let err = q
        .submit(
            vec![
                doc("good-1", 1, "fine"),
                doc("bad", 1, "   "),
                doc("good-2", 1, "also fine"),
            ],
            Ack::Applied,
        )
        .unwrap_err();
    assert!(matches!(err, QueueError::DeadLettered { .. }), "{err:?}");
    assert_eq!(version(&index, "good-1"), Some(1));
    assert_eq!(version(&index, "good-2"), Some(1));
    let dead = q.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 1);
    assert!(
        dead[0].reason.contains("invalid input"),
        "{}",
        dead[0].reason
    );
    // Fixed and re-driven.
    q.redrive(dead[0].id, Some(doc("bad", 1, "now it has text")))
        .unwrap();
    q.submit(vec![doc("after", 1, "x")], Ack::Applied).unwrap();
    assert_eq!(version(&index, "bad"), Some(1));
    assert!(q.dead_letters().is_empty());
    assert!(matches!(
        q.redrive(9999, None),
        Err(QueueError::NoSuchDeadLetter(9999))
    ));

    // An index down for longer than the attempts allow: dead-lettered after 5.
    index.fail_writes.store(1000, Ordering::SeqCst);
    let err = q
        .submit(vec![doc("late", 1, "y")], Ack::Applied)
        .unwrap_err();
    assert!(matches!(err, QueueError::DeadLettered { .. }), "{err:?}");
    let dead = q.dead_letters();
    assert_eq!(dead[0].attempts, 5);
    // The index is back: re-driven as it was.
    index.fail_writes.store(0, Ordering::SeqCst);
    q.redrive(dead[0].id, None).unwrap();
    q.submit(vec![doc("later", 1, "z")], Ack::Applied).unwrap();
    assert_eq!(version(&index, "late"), Some(1));
}

#[test]
fn dead_letters_and_pending_changes_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = pipeline(0);
    {
        let (q, _) = IngestQueue::open(dir.path(), p.clone(), config()).unwrap();
        let _ = q.submit(vec![doc("bad", 1, " ")], Ack::Applied);
        assert_eq!(q.dead_letters().len(), 1);
    }
    {
        let (q, _) = IngestQueue::open_paused(dir.path(), p.clone(), config()).unwrap();
        q.submit(vec![doc("x", 1, "queued")], Ack::Queued).unwrap();
    }
    let (q, rec) = IngestQueue::open_paused(dir.path(), p, config()).unwrap();
    assert_eq!((rec.requeued, rec.dead_letters), (1, 1));
    assert!(q.dead_letters()[0].reason.contains("invalid input"));
    assert_eq!(q.pending()[0].1, DocKey::new("acme", DocId::new("x")));
}

#[test]
fn a_torn_journal_tail_is_cut_and_damage_before_it_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = pipeline(0);
    {
        let (q, _) = IngestQueue::open_paused(dir.path(), p.clone(), config()).unwrap();
        q.submit(vec![doc("a", 1, "one")], Ack::Queued).unwrap();
        q.submit(vec![doc("b", 1, "two")], Ack::Queued).unwrap();
    }
    let path = dir.path().join(JOURNAL_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let whole = bytes.clone();
    bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3]); // a frame cut short
    std::fs::write(&path, &bytes).unwrap();
    let (q, rec) = IngestQueue::open_paused(dir.path(), p.clone(), config()).unwrap();
    assert_eq!((rec.requeued, rec.bytes_cut), (2, 7));
    drop(q);
    // A flipped byte in the first record, with the second after it: corrupt.
    let mut bad = whole;
    bad[10] ^= 0xff;
    std::fs::write(&path, &bad).unwrap();
    assert!(matches!(
        IngestQueue::open_paused(dir.path(), p, config()),
        Err(QueueError::Corrupt { .. })
    ));
}

const CHILD: &str = "RAG_QUEUE_KILL_CHILD";

/// The child of the kill test: queues changes one at a time, printing each id once
/// it is acknowledged, until killed.
#[test]
fn kill_child() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let (p, _) = pipeline(0);
    let (q, _) = IngestQueue::open_paused(
        &dir,
        p,
        QueueConfig {
            capacity: 1_000_000,
            ..config()
        },
    )
    .unwrap();
    for i in 0.. {
        let r = q
            .submit(vec![doc(&format!("d{i}"), 1, "text")], Ack::Queued)
            .unwrap();
        println!("acked {}", r[0].id);
    }
}

#[test]
fn acknowledged_changes_survive_sigkill() {
    let (p, _) = pipeline(0);
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "kill_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked = Vec::new();
        let stop_after = 20 + round * 37;
        while acked.len() < stop_after {
            let line = lines.next().unwrap().unwrap();
            if let Some(id) = line.strip_prefix("acked ") {
                acked.push(id.parse::<u64>().unwrap());
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let (q, rec) = IngestQueue::open_paused(dir.path(), p.clone(), config()).unwrap();
        let pending: Vec<u64> = q.pending().into_iter().map(|(id, _)| id).collect();
        for id in &acked {
            assert!(
                pending.contains(id),
                "round {round}: acknowledged change {id} was lost"
            );
        }
        assert!(rec.requeued >= acked.len());
    }
}

#[test]
fn a_file_change_reads_the_file_when_applied_and_an_undecodable_one_is_redriven_once_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let (p, index) = pipeline(0);
    let (q, _) = IngestQueue::open(dir.path(), p, config()).unwrap();
    let path = files.path().join("notes.md");
    let change = Change::UpsertFile {
        doc: Document::new("acme", "notes.md", "").readable_by_group("staff"),
        path: path.clone(),
    };
    // Not UTF-8: a dead letter naming why, with nothing indexed.
    std::fs::write(&path, b"caf\xe9 menu").unwrap();
    let err = q.submit(vec![change.clone()], Ack::Applied).unwrap_err();
    assert!(matches!(err, QueueError::DeadLettered { .. }), "{err:?}");
    let dead = q.dead_letters();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("not UTF-8"), "{}", dead[0].reason);
    assert!(dead[0].reason.contains("offset 3"), "{}", dead[0].reason);
    assert_eq!(version(&index, "notes.md"), None);
    // Fixed, then re-driven as it was: the file is read again.
    std::fs::write(&path, "café menu").unwrap();
    q.redrive(dead[0].id, None).unwrap();
    q.submit(vec![], Ack::Applied).unwrap();
    wait_until(|| version(&index, "notes.md").is_some());
    assert!(q.dead_letters().is_empty());
    let v1 = version(&index, "notes.md").unwrap();
    assert!(
        v1 > 1_000_000_000,
        "the version is the file's mtime in ns: {v1}"
    );
    // The same file again is a no-op; a deleted file deletes the document.
    q.submit(vec![change.clone()], Ack::Applied).unwrap();
    assert_eq!(version(&index, "notes.md"), Some(v1));
    std::fs::remove_file(&path).unwrap();
    q.submit(vec![change], Ack::Applied).unwrap();
    assert_eq!(version(&index, "notes.md"), None);
}

fn wait_until(mut f: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !f() {
        assert!(started.elapsed() < Duration::from_secs(10), "timed out");
        std::thread::sleep(Duration::from_millis(5));
    }
}
