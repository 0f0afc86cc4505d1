//! The pipeline writes the audit log before it answers (hole 6): who asked, when, a
//! hash of the question, every passage served (from the index or the cache), and
//! the decision; an answer whose record cannot be written is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rag_acl::{AuditAction, AuditLog, Directory, Outcome, Registration, verify};
use rag_cache::{CacheConfig, SemanticCache};
use rag_core::{
    Acl, AnswerRecord, AuditFailure, AuditSink, DocId, Document, Embedder, Error, Metadata,
    Principal, WordCounter,
};
use rag_pipeline::RecursiveChunker;
use rag_pipeline::testing::{EchoGenerator, FlatIndex, HashEmbedder};
use rag_pipeline::{Pipeline, PipelineConfig, QueryOptions};

const QUESTION: &str = "Expenses are approved by the team lead within five days.";

fn docs() -> Vec<Document> {
    [
        QUESTION,
        "Travel is booked through the portal by the assistant.",
    ]
    .iter()
    .enumerate()
    .map(|(i, text)| Document {
        tenant: "acme".into(),
        id: DocId::new(format!("d{i}")),
        version: 1,
        text: (*text).into(),
        metadata: Metadata::default(),
        acl: Some(Acl::new("acme").allow_group("staff")),
    })
    .collect()
}

fn pipeline(audit: Arc<dyn AuditSink>, on_failure: AuditFailure) -> Pipeline {
    let embedder = Arc::new(HashEmbedder::new(64).unwrap());
    let directory = Directory::new(Registration::Required);
    directory.add_user(&"acme".into(), &"sam".into(), ["staff".into()]);
    let p = Pipeline::builder()
        .chunker(Arc::new(
            RecursiveChunker::new(64, 4, Arc::new(WordCounter)).unwrap(),
        ))
        .index(Arc::new(FlatIndex::new(embedder.fingerprint().clone())))
        .embedder(embedder)
        .generator(Arc::new(EchoGenerator::default()))
        .cache(Arc::new(
            SemanticCache::new(CacheConfig::default()).unwrap(),
        ))
        .access(Arc::new(directory))
        .audit(audit)
        .config(PipelineConfig {
            audit_failure: on_failure,
            ..PipelineConfig::default()
        })
        .build()
        .unwrap();
    p.ingest(docs()).unwrap();
    p
}

fn sam() -> Principal {
    Principal::new("acme", "sam")
}

#[test]
fn every_answer_is_in_the_log_before_it_is_returned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = Arc::new(AuditLog::open(&path).unwrap());
    let p = pipeline(log.clone(), AuditFailure::Refuse);

    let first = p.query(&sam(), QUESTION, &QueryOptions::default()).unwrap();
    // Already on disk when the answer came back.
    let v = verify(&path).unwrap();
    assert_eq!(v.records.len(), 1);
    let e = &v.records[0].event;
    assert_eq!(e.action, AuditAction::Answer);
    assert_eq!(e.outcome, Outcome::Ok);
    assert_eq!(
        (e.tenant.as_deref(), e.actor.as_deref()),
        (Some("acme"), Some("sam"))
    );
    assert_eq!(
        e.question_sha256,
        Some(hex(&AnswerRecord::hash_question(QUESTION)))
    );
    assert_eq!(e.from_cache, Some(false));
    let served: Vec<String> = first
        .answer
        .sources()
        .map(|c| format!("{}@{}#{}", c.doc_id, c.doc_version, c.chunk_id))
        .collect();
    assert!(!served.is_empty());
    assert_eq!(
        e.resources, served,
        "every passage in the prompt, cited or not"
    );
    assert!(e.at_ms.is_some());

    let again = p.query(&sam(), QUESTION, &QueryOptions::default()).unwrap();
    assert!(again.from_cache);
    let v = verify(&path).unwrap();
    assert_eq!(v.records.len(), 2);
    assert_eq!(v.records[1].event.from_cache, Some(true));
    assert_eq!(v.records[1].event.resources, served);

    // A refused principal is recorded as a denial.
    let err = p
        .query(
            &Principal::new("acme", "mallory"),
            QUESTION,
            &QueryOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Denied { .. }), "{err}");
    let v = verify(&path).unwrap();
    assert_eq!(v.records[2].event.action, AuditAction::AccessDenied);
    assert_eq!(v.records[2].event.outcome, Outcome::Denied);
    assert!(v.records[2].event.resources.is_empty());
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A sink whose disk is full.
#[derive(Default)]
struct FullDisk {
    calls: AtomicBool,
}

impl AuditSink for FullDisk {
    fn record(&self, _: &AnswerRecord) -> rag_core::Result<()> {
        self.calls.store(true, Ordering::SeqCst);
        Err(Error::backend(
            rag_core::Stage::Audit,
            std::io::Error::from_raw_os_error(28),
        ))
    }
}

#[test]
fn an_answer_that_cannot_be_audited_is_refused_by_default() {
    let sink = Arc::new(FullDisk::default());
    let p = pipeline(sink.clone(), AuditFailure::Refuse);
    let err = p
        .query(&sam(), QUESTION, &QueryOptions::default())
        .unwrap_err();
    assert!(sink.calls.load(Ordering::SeqCst));
    assert!(
        matches!(
            err,
            Error::Backend {
                stage: rag_core::Stage::Audit,
                ..
            }
        ),
        "{err}"
    );
    // Configured to answer anyway, it does.
    let p = pipeline(Arc::new(FullDisk::default()), AuditFailure::Answer);
    assert!(p.query(&sam(), QUESTION, &QueryOptions::default()).is_ok());
}

#[test]
fn concurrent_answers_keep_one_verified_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = Arc::new(AuditLog::open(&path).unwrap());
    let p = pipeline(log.clone(), AuditFailure::Refuse);
    std::thread::scope(|s| {
        for t in 0..8 {
            let p = &p;
            s.spawn(move || {
                for i in 0..10 {
                    let q = format!("question {t} {i} about expenses");
                    p.query(&sam(), &q, &QueryOptions::default()).unwrap();
                }
            });
        }
    });
    let v = verify(&path).unwrap();
    assert_eq!(v.records.len(), 80);
    assert_eq!(v.head, log.head());
}

#[test]
fn a_streamed_answer_is_in_the_log_before_its_first_event_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = Arc::new(AuditLog::open(&path).unwrap());
    let p = pipeline(log.clone(), AuditFailure::Refuse);
    for (round, options) in [QueryOptions::default(), QueryOptions::default()]
        .into_iter()
        .enumerate()
    {
        // The second round is a cache hit: recorded before it is sent too.
        let mut checked = false;
        let answer = p
            .query_stream(&sam(), QUESTION, &options, &mut |event| {
                if !checked {
                    checked = true;
                    let records = verify(&path).unwrap().records;
                    assert_eq!(records.len(), round + 1, "recorded before the first event");
                    if let rag_pipeline::QueryEvent::Retrieved { sources } = event {
                        let sent: Vec<String> = sources
                            .iter()
                            .map(|c| format!("{}@{}#{}", c.doc_id, c.doc_version, c.chunk_id))
                            .collect();
                        assert_eq!(records[round].event.resources, sent);
                    } else {
                        panic!("the first event is not the sources");
                    }
                }
                rag_core::TokenControl::Continue
            })
            .unwrap();
        assert!(checked);
        assert_eq!(answer.from_cache, round == 1);
    }
    // One record per answer, not one per event.
    assert_eq!(verify(&path).unwrap().records.len(), 2);
}

#[test]
fn a_stream_whose_record_cannot_be_written_sends_nothing() {
    struct Failing;
    impl AuditSink for Failing {
        fn record(&self, _: &AnswerRecord) -> rag_core::Result<()> {
            Err(Error::backend(rag_core::Stage::Audit, "disk full"))
        }
    }
    let p = pipeline(Arc::new(Failing), AuditFailure::Refuse);
    let mut events = 0;
    let err = p
        .query_stream(&sam(), QUESTION, &QueryOptions::default(), &mut |_| {
            events += 1;
            rag_core::TokenControl::Continue
        })
        .unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err}");
    assert_eq!(events, 0, "no passage left without its record");
}
