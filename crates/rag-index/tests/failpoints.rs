//! Fault injection in the log and checkpoint paths (`--features failpoints`): a
//! failed sync, a full disk on append, a crash between append and publish, between
//! the checkpoint files and `CURRENT`, and between `CURRENT` and log truncation.
//! Each: a typed error to the caller, nothing visible that is not durable, and no
//! acknowledged write lost after reopening.
#![cfg(feature = "failpoints")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;

use rag_core::{
    Acl, Chunk, DocKey, DocumentUpdate, EmbeddedChunk, Embedding, Error, Metadata,
    ModelFingerprint, VectorIndex, VectorIndexRead,
};
use rag_index::{DurableIndex, IndexConfig, IndexError, StoreError, StoreOptions};

const DIMS: usize = 4;

fn fp() -> ModelFingerprint {
    ModelFingerprint::new("fail-model", DIMS, "v1").unwrap()
}

fn doc(i: usize) -> DocumentUpdate {
    let key = DocKey::new("acme", format!("d{i}"));
    let text = format!("document {i}");
    let mut v = vec![0.1f32; DIMS];
    v[i % DIMS] = 1.0;
    DocumentUpdate {
        tenant: key.tenant.clone(),
        doc_id: key.doc_id.clone(),
        version: 1,
        acl: Some(Acl::new("acme").allow_group("eng")),
        metadata: Metadata::default(),
        content_hash: None,
        chunks: vec![EmbeddedChunk {
            chunk: Chunk::whole(&key, text),
            embedding: Embedding::new(fp().id(), v).unwrap(),
        }],
    }
}

fn open(dir: &Path) -> DurableIndex {
    DurableIndex::open(dir, fp(), IndexConfig::default(), StoreOptions::default())
        .unwrap()
        .0
}

fn present(store: &DurableIndex, i: usize) -> bool {
    store
        .document(&DocKey::new("acme", format!("d{i}")))
        .unwrap()
        .is_some()
}

fn store_error(e: IndexError) -> StoreError {
    match e {
        IndexError::Store(s) => s,
        other => panic!("expected a store error, got {other:?}"),
    }
}

/// Failpoints are process-global: one scenario at a time.
fn scenario(name: &str, point: &str, action: &str, body: impl FnOnce(&Path)) {
    let guard = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for i in 0..5 {
            store
                .write(rag_core::WriteOp::Upsert(vec![doc(i)]))
                .unwrap();
        }
    }
    fail::cfg(point, action).unwrap();
    body(dir.path());
    fail::remove(point);
    // Whatever happened, every acknowledged write is there after a reopen.
    let store = open(dir.path());
    for i in 0..5 {
        assert!(present(&store, i), "{name}: acknowledged d{i} lost");
    }
    drop(guard);
}

#[test]
fn injected_faults() {
    scenario("fsync error", "wal::sync", "return", |dir| {
        let store = open(dir);
        let err = store
            .write(rag_core::WriteOp::Upsert(vec![doc(10)]))
            .unwrap_err();
        assert!(matches!(store_error(err), StoreError::Injected { .. }));
        assert!(!present(&store, 10), "visible before it was durable");
        // Never retried and reported as success: the store refuses writes.
        fail::remove("wal::sync");
        let err = store
            .write(rag_core::WriteOp::Upsert(vec![doc(11)]))
            .unwrap_err();
        assert!(matches!(store_error(err), StoreError::Poisoned { .. }));
        assert!(matches!(
            store.checkpoint().map_err(store_error),
            Err(StoreError::Poisoned { .. })
        ));
        assert!(!present(&store, 11));
    });

    scenario("ENOSPC on append", "wal::append", "return", |dir| {
        let store = open(dir);
        let err = store.upsert(vec![doc(12)]).unwrap_err();
        assert!(matches!(err, Error::Backend { .. }), "{err}");
        assert!(!present(&store, 12));
        drop(store);
        fail::remove("wal::append");
        let store = open(dir);
        assert!(
            !present(&store, 12),
            "a write that never reached the log appeared"
        );
    });

    scenario(
        "crash between append and publish",
        "store::after_append",
        "return",
        |dir| {
            let store = open(dir);
            assert!(store.upsert(vec![doc(13)]).is_err());
            assert!(
                !present(&store, 13),
                "visible though the writer was told it failed"
            );
            drop(store);
            // The record is in the log: recovery applies it whole (it was durable).
            fail::remove("store::after_append");
            let store = open(dir);
            assert!(present(&store, 13));
        },
    );

    scenario(
        "crash between checkpoint files and CURRENT",
        "checkpoint::before_current",
        "return",
        |dir| {
            let store = open(dir);
            assert!(store.checkpoint().is_err());
            // Writes go on: a failed checkpoint loses nothing.
            store.upsert(vec![doc(14)]).unwrap();
            drop(store);
            fail::remove("checkpoint::before_current");
            let store = open(dir);
            assert!(present(&store, 14));
            assert_eq!(
                store.recovery().checkpoint,
                None,
                "the unfinished checkpoint was used"
            );
        },
    );

    scenario(
        "crash between CURRENT and log truncation",
        "checkpoint::before_truncate",
        "return",
        |dir| {
            let store = open(dir);
            assert!(store.checkpoint().is_err());
            store.upsert(vec![doc(15)]).unwrap();
            drop(store);
            fail::remove("checkpoint::before_truncate");
            let store = open(dir);
            assert!(present(&store, 15));
            assert_eq!(store.recovery().checkpoint, Some(5));
            assert_eq!(store.recovery().records_replayed, 1);
        },
    );
}
