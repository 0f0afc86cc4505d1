//! The durable store: recovery of acknowledged writes, torn tails, corruption,
//! locking, tenancy, versions, erasure, checkpoints and the format-1 fixture.

use std::path::{Path, PathBuf};

use rag_core::{
    AccessFilter, Acl, AttrValue, DeletePredicate, DocKey, Error, InvalidInput, Principal,
    VectorIndex, VectorIndexRead,
};
use rag_index::{
    Durability, DurableIndex, HnswIndex, IndexError, RecoveryReport, SearchMode, StoreError,
    StoreOptions,
};

use crate::common::*;

fn options() -> StoreOptions {
    StoreOptions {
        segment_bytes: 4096,
        ..StoreOptions::default()
    }
}

fn open(dir: &Path) -> (DurableIndex, RecoveryReport) {
    DurableIndex::open(dir, fingerprint(), small_config(), options()).unwrap()
}

fn acme(group: &str) -> Option<Acl> {
    Some(Acl::new("acme").allow_group(group))
}

fn v(i: usize) -> Vec<f32> {
    (0..DIMS)
        .map(|j| {
            if j == i % DIMS {
                1.0
            } else {
                0.1 * (j + i) as f32
            }
        })
        .collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut s: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    s.sort();
    s
}

fn index_err(e: IndexError) -> StoreError {
    match e {
        IndexError::Store(s) => s,
        other => panic!("expected a store error, got {other:?}"),
    }
}

/// Every byte string `needle` found in any file under `dir`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    out.push(p);
                }
            }
        }
    }
    out
}

#[test]
fn acknowledged_writes_survive_reopen_without_close() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, report) = open(dir.path());
        assert_eq!(report.records_replayed, 0);
        for i in 0..40 {
            store
                .upsert(vec![doc(
                    &format!("d{i}"),
                    1,
                    acme("eng"),
                    &[v(i), v(i + 1)],
                )])
                .unwrap();
        }
        store.delete(&key("d3")).unwrap();
        let r = store
            .delete_where(
                &"acme".into(),
                DeletePredicate::AttrEquals {
                    key: "v".into(),
                    value: AttrValue::Int(7),
                },
            )
            .unwrap();
        assert_eq!(r.documents_deleted, 0);
        // dropped without close: no checkpoint, the log is all there is
    }
    assert!(
        segments(dir.path()).len() > 1,
        "segments should have rolled"
    );
    let (store, report) = open(dir.path());
    assert_eq!(report.checkpoint, None);
    assert_eq!(report.records_replayed, 41, "{report:?}");
    assert_eq!(report.bytes_cut, 0);
    assert_eq!(store.stats().documents, 39);
    assert!(store.document(&key("d3")).unwrap().is_none());
    assert_eq!(
        store.document(&key("d4")).unwrap().unwrap().chunk_ids.len(),
        2
    );
    let f = AccessFilter::for_principal(&Principal::new("acme", "ann").with_group("eng"));
    let r = store.search(&emb(&v(5)), 3, &f).unwrap();
    assert_eq!(r.hits[0].doc_id.as_str(), "d5");
}

#[test]
fn checkpoint_then_log_replays_only_what_follows() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(dir.path());
        for i in 0..10 {
            store
                .upsert(vec![doc(&format!("d{i}"), 1, acme("eng"), &[v(i)])])
                .unwrap();
        }
        let c = store.checkpoint().unwrap();
        assert_eq!(c.sequence, 10);
        assert!(c.segments_removed >= 1);
        for i in 10..15 {
            store
                .upsert(vec![doc(&format!("d{i}"), 1, acme("eng"), &[v(i)])])
                .unwrap();
        }
    }
    let (store, report) = open(dir.path());
    assert_eq!(report.checkpoint, Some(10));
    assert_eq!(report.records_replayed, 5);
    assert_eq!(report.last_sequence, 15);
    assert_eq!(store.stats().documents, 15);
    // Close checkpoints: nothing to replay next time.
    store.close().unwrap();
    let (_, report) = open(dir.path());
    assert_eq!((report.checkpoint, report.records_replayed), (Some(15), 0));
}

#[test]
fn a_torn_tail_is_cut_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(dir.path());
        for i in 0..5 {
            store
                .upsert(vec![doc(&format!("d{i}"), 1, acme("eng"), &[v(i)])])
                .unwrap();
        }
    }
    let last = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    // The last record half written: cut 7 bytes off its end.
    let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    f.set_len(len - 7).unwrap();
    drop(f);
    let (store, report) = open(dir.path());
    assert_eq!(report.records_replayed, 4);
    assert!(report.bytes_cut > 0);
    assert_eq!(report.torn_segment.as_deref(), Some(last.as_path()));
    assert_eq!(store.stats().documents, 4);
    // The store goes on at the right sequence, and a reopen finds a clean log.
    store
        .upsert(vec![doc("d9", 1, acme("eng"), &[v(9)])])
        .unwrap();
    drop(store);
    let (store, report) = open(dir.path());
    assert_eq!(report.bytes_cut, 0);
    assert_eq!(store.stats().documents, 5);

    // Garbage appended after the last record (a frame header that never got its
    // payload) is a torn tail too.
    drop(store);
    let last = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 9]);
    std::fs::write(&last, &bytes).unwrap();
    let (store, report) = open(dir.path());
    assert_eq!(report.bytes_cut, 9);
    assert_eq!(store.stats().documents, 5);
}

#[test]
fn a_flipped_byte_mid_log_is_a_typed_error_naming_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(dir.path());
        for i in 0..3 {
            store
                .upsert(vec![doc(&format!("d{i}"), 1, acme("eng"), &[v(i)])])
                .unwrap();
        }
    }
    let seg = segments(dir.path()).remove(0);
    let mut bytes = std::fs::read(&seg).unwrap();
    // Inside the first record's payload (after the segment header and frame header).
    let at = 120;
    bytes[at] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    let err = DurableIndex::open(dir.path(), fingerprint(), small_config(), options()).unwrap_err();
    match index_err(err) {
        StoreError::CorruptLog {
            segment, offset, ..
        } => {
            assert_eq!(segment, seg);
            assert!(
                offset < at as u64,
                "offset {offset} should be the frame's start"
            );
        }
        other => panic!("expected CorruptLog, got {other}"),
    }
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, _) = open(dir.path());
    let err = DurableIndex::open(dir.path(), fingerprint(), small_config(), options()).unwrap_err();
    assert!(matches!(index_err(err), StoreError::Locked { .. }));
    // Mapped for hosts: retry later.
    let err = DurableIndex::open(dir.path(), fingerprint(), small_config(), options()).unwrap_err();
    assert!(Error::from(err).is_transient());
}

#[test]
fn a_log_of_another_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(dir.path());
        store
            .upsert(vec![doc("d0", 1, acme("eng"), &[v(0)])])
            .unwrap();
    }
    let other = rag_core::ModelFingerprint::new("other-model", DIMS, "sha-x").unwrap();
    let err = DurableIndex::open(dir.path(), other, small_config(), options()).unwrap_err();
    assert!(
        matches!(index_err(err), StoreError::ForeignLog { .. }),
        "foreign log accepted"
    );
    // The original model still opens it, nothing lost.
    let (store, _) = open(dir.path());
    assert_eq!(store.stats().documents, 1);
}

#[test]
fn a_missing_or_corrupt_checkpoint_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(dir.path());
        store
            .upsert(vec![doc("d0", 1, acme("eng"), &[v(0)])])
            .unwrap();
        store.close().unwrap();
    }
    let current = std::fs::read_to_string(dir.path().join("CURRENT")).unwrap();
    let ck = dir.path().join("checkpoints").join(current.trim());
    // A half-written checkpoint: a table file truncated.
    let table = std::fs::read_dir(&ck)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("chunks-"))
        .unwrap();
    let len = std::fs::metadata(&table).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&table)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = DurableIndex::open(dir.path(), fingerprint(), small_config(), options()).unwrap_err();
    assert!(matches!(index_err(err), StoreError::Checkpoint { .. }));
    // Gone altogether.
    std::fs::remove_dir_all(&ck).unwrap();
    let err = DurableIndex::open(dir.path(), fingerprint(), small_config(), options()).unwrap_err();
    assert!(matches!(index_err(err), StoreError::Checkpoint { .. }));
    // A pointer that names no checkpoint.
    std::fs::write(dir.path().join("CURRENT"), "../../etc\n").unwrap();
    let err = DurableIndex::open(dir.path(), fingerprint(), small_config(), options()).unwrap_err();
    assert!(matches!(index_err(err), StoreError::CorruptPointer { .. }));
}

#[test]
fn an_unusable_directory_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = DurableIndex::open(file.join("store"), fingerprint(), small_config(), options())
        .unwrap_err();
    assert!(matches!(index_err(err), StoreError::Io { .. }));
}

#[test]
fn tenants_are_isolated_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let a = doc_in("acme", "x", 1, acme("eng"), &[v(1)]);
    let b = doc_in(
        "globex",
        "x",
        1,
        Some(Acl::new("globex").allow_group("eng")),
        &[v(2)],
    );
    store.upsert(vec![a]).unwrap();
    store.upsert(vec![b]).unwrap();
    assert_eq!(
        store.stats().documents,
        2,
        "the same id in two tenants is two documents"
    );
    let ka = DocKey::new("acme", "x");
    let kb = DocKey::new("globex", "x");
    assert_ne!(
        store.document(&ka).unwrap().unwrap().chunk_ids,
        store.document(&kb).unwrap().unwrap().chunk_ids
    );
    // Globex cannot overwrite, delete, erase or probe Acme's document.
    store.delete(&kb).unwrap();
    assert!(store.document(&ka).unwrap().is_some());
    assert!(matches!(store.delete(&kb), Err(Error::NotFound { .. })));
    assert!(matches!(store.erase(&kb), Err(Error::NotFound { .. })));
    let r = store
        .delete_where(&"globex".into(), DeletePredicate::Everything)
        .unwrap();
    assert_eq!(r.documents_deleted, 0);
    assert!(store.document(&ka).unwrap().is_some());
    // A delete in a tenant the store has never seen: not found, like any other.
    assert!(matches!(
        store.delete(&DocKey::new("initech", "x")),
        Err(Error::NotFound { .. })
    ));
    // Chunk ids are scoped to the tenant too: Globex writing a chunk with the id of
    // one of Acme's chunks neither fails (which would reveal it) nor touches it.
    let acme_chunk = store.document(&ka).unwrap().unwrap().chunk_ids[0];
    let mut probe = doc_in(
        "globex",
        "probe",
        1,
        Some(Acl::new("globex").allow_group("eng")),
        &[v(4)],
    );
    probe.chunks[0].chunk.id = acme_chunk;
    store.upsert(vec![probe]).unwrap();
    assert_eq!(
        store.document(&ka).unwrap().unwrap().chunk_ids,
        vec![acme_chunk]
    );
    store.delete(&DocKey::new("globex", "probe")).unwrap();
    // An ACL of another tenant than the write's is refused.
    let forged = doc_in("globex", "x", 5, acme("eng"), &[v(3)]);
    assert!(matches!(
        store.upsert(vec![forged]),
        Err(Error::InvalidInput(InvalidInput::TenantMismatch { .. }))
    ));
    let acme_eng = AccessFilter::for_principal(&Principal::new("acme", "ann").with_group("eng"));
    let r = store.search_exact(&v(1), &acme_eng);
    assert_eq!(r, vec!["x".to_owned()]);
    drop(store);
    let (store, _) = open(dir.path());
    assert!(store.document(&ka).unwrap().is_some());
    assert!(store.document(&kb).unwrap().is_none());
}

trait Exact {
    fn search_exact(&self, q: &[f32], f: &AccessFilter) -> Vec<String>;
}

impl Exact for DurableIndex {
    fn search_exact(&self, q: &[f32], f: &AccessFilter) -> Vec<String> {
        self.index()
            .search_with(&emb(q), 10, f, SearchMode::Exact)
            .unwrap()
            .hits
            .iter()
            .map(|h| h.doc_id.to_string())
            .collect()
    }
}

#[test]
fn versions_only_move_forward() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let d = doc("d", 5, acme("eng"), &[v(1)]);
    let r = store.upsert(vec![d.clone()]).unwrap();
    assert_eq!(r.sequence, 1);
    // A replay of the same write is a no-op: nothing logged, nothing changed.
    let again = store.upsert(vec![d.clone()]).unwrap();
    assert_eq!(
        (
            again.documents_unchanged,
            again.documents_upserted,
            again.sequence
        ),
        (1, 0, 1)
    );
    // Lower: refused.
    let err = store
        .upsert(vec![doc("d", 4, acme("eng"), &[v(2)])])
        .unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidInput(InvalidInput::StaleVersion {
            stored: 5,
            given: 4,
            ..
        })
    ));
    // Same version, other content: refused too.
    let err = store
        .upsert(vec![doc("d", 5, acme("ops"), &[v(1)])])
        .unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidInput(InvalidInput::StaleVersion { .. })
    ));
    // Forward: fine.
    store
        .upsert(vec![doc("d", 6, acme("ops"), &[v(1)])])
        .unwrap();
    drop(store);
    let (store, report) = open(dir.path());
    assert_eq!(report.records_replayed, 2);
    assert_eq!(store.document(&key("d")).unwrap().unwrap().version, 6);
}

#[test]
fn erase_leaves_no_byte_of_text_or_vector_in_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let marker = "ZEBRA-SECRET-71";
    let secret_vec: Vec<f32> = vec![0.123, -0.456, 0.789, 0.031, -0.577, 0.211, 0.9, -0.013];
    let mut secret = doc("secret", 1, acme("eng"), std::slice::from_ref(&secret_vec));
    secret.chunks[0].chunk.text = format!("the {marker} text");
    secret.chunks[0].chunk.span = rag_core::Span::new(0, secret.chunks[0].chunk.text.len());
    for i in 0..20 {
        store
            .upsert(vec![doc(&format!("d{i}"), 1, acme("eng"), &[v(i)])])
            .unwrap();
    }
    store.upsert(vec![secret.clone()]).unwrap();
    // Version 1 goes into a checkpoint, version 2 into the log after it.
    store.checkpoint().unwrap();
    secret.version = 2;
    store.upsert(vec![secret]).unwrap();
    store
        .upsert(vec![doc("after", 1, acme("eng"), &[v(3)])])
        .unwrap();
    let raw: Vec<u8> = secret_vec.iter().flat_map(|x| x.to_le_bytes()).collect();
    let unit = emb(&secret_vec).normalized();
    let unit: Vec<u8> = unit.iter().flat_map(|x| x.to_le_bytes()).collect();
    // The check can fail: before erasure, the text and vectors are on disk.
    assert!(!files_containing(dir.path(), marker.as_bytes()).is_empty());
    assert!(!files_containing(dir.path(), &raw).is_empty());
    assert!(!files_containing(dir.path(), &unit).is_empty());

    let r = store.erase(&key("secret")).unwrap();
    assert_eq!(r.documents_deleted, 1);
    for needle in [marker.as_bytes(), &raw, &unit] {
        let found = files_containing(dir.path(), needle);
        assert!(found.is_empty(), "erased content still in {found:?}");
    }
    let f = AccessFilter::for_principal(&Principal::new("acme", "ann").with_group("eng"));
    for mode in [SearchMode::Exact, SearchMode::Hnsw] {
        let hits = store
            .index()
            .search_with(&emb(&secret_vec), 30, &f, mode)
            .unwrap()
            .hits;
        assert!(hits.iter().all(|h| h.doc_id.as_str() != "secret"));
    }
    let lexical = store
        .retrieve(&rag_core::SearchRequest::lexical(marker, 5), &f)
        .unwrap();
    assert!(lexical.hits.is_empty());
    // Everything else survives erasure and a reopen.
    drop(store);
    let (store, _) = open(dir.path());
    assert_eq!(store.stats().documents, 21);
    assert!(store.document(&key("secret")).unwrap().is_none());
    assert!(files_containing(dir.path(), marker.as_bytes()).is_empty());
}

#[test]
fn concurrent_writers_share_syncs_and_all_survive() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(dir.path());
        std::thread::scope(|s| {
            for t in 0..8 {
                let store = &store;
                s.spawn(move || {
                    for i in 0..25 {
                        let r = store
                            .upsert(vec![doc(&format!("t{t}-{i}"), 1, acme("eng"), &[v(i + t)])])
                            .unwrap();
                        assert!(r.sequence > 0);
                    }
                });
            }
        });
        assert_eq!(store.stats().sequence, 200);
    }
    let (store, report) = open(dir.path());
    assert_eq!(report.records_replayed, 200);
    assert_eq!(store.stats().documents, 200);
}

#[test]
fn os_and_none_durability_recover_what_reached_the_log() {
    for durability in [Durability::Os, Durability::None] {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            durability,
            ..options()
        };
        {
            let (store, _) =
                DurableIndex::open(dir.path(), fingerprint(), small_config(), opts.clone())
                    .unwrap();
            for i in 0..10 {
                store
                    .upsert(vec![doc(&format!("d{i}"), 1, acme("eng"), &[v(i)])])
                    .unwrap();
            }
            // Dropping flushes what `None` buffered.
        }
        let (store, _) =
            DurableIndex::open(dir.path(), fingerprint(), small_config(), opts).unwrap();
        assert_eq!(store.stats().documents, 10, "{durability:?}");
    }
}

#[test]
fn format_1_snapshot_fixture_still_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/snapshot-v1");
    let index = HnswIndex::restore(&dir, Some(&fingerprint()), small_config()).unwrap();
    let s = index.stats();
    assert_eq!((s.documents, s.chunks), (3, 4));
    let budget = index
        .document(&DocKey::new("acme", "budget"))
        .unwrap()
        .unwrap();
    assert_eq!(budget.version, 3);
    assert_eq!(budget.chunk_ids.len(), 2);
    assert_eq!(budget.metadata.source.as_deref(), Some("finance/budget.md"));
    assert!(
        index
            .document(&DocKey::new("globex", "handbook"))
            .unwrap()
            .is_some()
    );
    // Format 1 had no tenant for documents without an ACL: the empty tenant.
    assert!(
        index
            .document(&DocKey::new("", "orphan"))
            .unwrap()
            .is_some()
    );
    let finance = AccessFilter::for_principal(&Principal::new("acme", "ann").with_group("finance"));
    let hits = index
        .search(&emb(&[1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.2, 0.0]), 5, &finance)
        .unwrap();
    assert!(hits.hits.iter().all(|h| h.doc_id.as_str() == "budget"));
    assert_eq!(hits.hits.len(), 2);
    let mallory =
        AccessFilter::for_principal(&Principal::new("acme", "mallory").with_group("finance"));
    assert!(
        index
            .search(&emb(&[1.0; DIMS]), 5, &mallory)
            .unwrap()
            .hits
            .is_empty()
    );
    // And it becomes a store's first checkpoint, written in today's format.
    let store_dir = tempfile::tempdir().unwrap();
    let (store, _) = DurableIndex::create_from(store_dir.path(), &index, options()).unwrap();
    assert_eq!(store.stats().documents, 3);
}

#[test]
fn a_restart_then_a_reingest_of_unchanged_documents_embeds_nothing() {
    use std::sync::Arc;

    use rag_core::{Document, Embedder, WordCounter};
    use rag_pipeline::Pipeline;
    use rag_pipeline::RecursiveChunker;
    use rag_pipeline::testing::{HashEmbedder, OpenResolver};

    let dir = tempfile::tempdir().unwrap();
    let embedder = Arc::new(HashEmbedder::new(16).unwrap());
    let docs = || {
        (0..6)
            .map(|i| Document {
                tenant: "acme".into(),
                id: format!("doc-{i}").into(),
                version: 1,
                text: format!("document {i} is about topic {} and nothing else", i % 3),
                metadata: rag_core::Metadata::default(),
                acl: Some(Acl::new("acme").allow_group("staff")),
            })
            .collect::<Vec<_>>()
    };
    let pipeline = |store: Arc<DurableIndex>| {
        Pipeline::builder()
            .chunker(Arc::new(
                RecursiveChunker::new(64, 4, Arc::new(WordCounter)).unwrap(),
            ))
            .embedder(embedder.clone())
            .index(store)
            .access(Arc::new(OpenResolver))
            .build()
            .unwrap()
    };
    let open16 = || {
        let (s, _) = DurableIndex::open(
            dir.path(),
            embedder.fingerprint().clone(),
            small_config(),
            options(),
        )
        .unwrap();
        Arc::new(s)
    };
    let r = pipeline(open16()).ingest(docs()).unwrap();
    assert_eq!((r.upserted, r.unchanged), (6, 0));
    // The process goes away; a new one opens the store and ingests the same files.
    let store = open16();
    let r = pipeline(store.clone()).ingest(docs()).unwrap();
    assert_eq!((r.upserted, r.unchanged, r.chunks), (0, 6, 0), "{r:?}");
    assert_eq!(r.embed_seconds, 0.0);
    let info = store
        .document(&DocKey::new("acme", "doc-0"))
        .unwrap()
        .unwrap();
    assert!(
        info.content_hash.is_some(),
        "the content hash is a field of its own"
    );
    assert!(
        info.metadata.attributes.is_empty(),
        "and not in the user's metadata"
    );
}
