//! Snapshot roundtrip, atomic replacement, and rejection of damaged snapshots.

use std::path::Path;

use rag_core::{
    AccessFilter, Acl, AttrValue, DocKey, ModelFingerprint, Principal, SearchRequest, VectorIndex,
    VectorIndexRead,
};
use rag_index::{HnswIndex, IndexConfig, IndexError, Manifest, SearchMode, SnapshotError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::*;

/// The key of document `i` of [`populated`]: every fifth from 2 is Globex's.
fn key_of(i: usize) -> DocKey {
    DocKey::new(if i % 5 == 2 { "globex" } else { "acme" }, format!("d{i}"))
}

fn populated() -> HnswIndex {
    let index = HnswIndex::new(fingerprint(), small_config()).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let docs: Vec<_> = (0..300)
        .map(|i| {
            let acl = match i % 5 {
                0 => None,
                1 => Some(Acl::new("acme").allow_group("eng").deny_user("bob")),
                2 => Some(Acl::new("globex").allow_user("bob")),
                _ => Some(Acl::new("acme").allow_group("all")),
            };
            let vs: Vec<Vec<f32>> = (0..1 + i % 3)
                .map(|_| (0..DIMS).map(|_| rng.random_range(-1.0f32..1.0)).collect())
                .collect();
            let mut d = doc(&format!("d{i}"), i as u64, acl, &vs);
            d.metadata = d.metadata.with_attr("flag", AttrValue::Bool(i % 2 == 0));
            d
        })
        .collect();
    index.upsert(docs).unwrap();
    for i in (0..300).step_by(7) {
        index.delete(&key_of(i)).unwrap();
    }
    index
}

fn principals() -> Vec<AccessFilter> {
    [
        Principal::new("acme", "ann")
            .with_group("eng")
            .with_group("all"),
        Principal::new("acme", "bob").with_group("eng"),
        Principal::new("globex", "bob"),
        Principal::new("acme", "zed"),
    ]
    .iter()
    .map(AccessFilter::for_principal)
    .collect()
}

fn assert_same_results(a: &HnswIndex, b: &HnswIndex) {
    assert_eq!(a.stats().documents, b.stats().documents);
    assert_eq!(a.stats().chunks, b.stats().chunks);
    let mut rng = StdRng::seed_from_u64(5);
    for _ in 0..30 {
        let q = emb(&(0..DIMS)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect::<Vec<_>>());
        for f in principals() {
            for mode in [SearchMode::Exact, SearchMode::Hnsw, SearchMode::Auto] {
                let x = a.search_with(&q, 10, &f, mode).unwrap();
                let y = b.search_with(&q, 10, &f, mode).unwrap();
                assert_eq!(x, y);
            }
            // The lexical index is rebuilt from the chunks table on restore. BM25's
            // statistics count removed chunks until tantivy merges them away, so
            // scores may differ slightly; the matching visible chunks may not.
            let text = words(q.values()).join(" ") + " chunk";
            for request in [
                SearchRequest::lexical(&text, 1000),
                SearchRequest::hybrid(&q, &text, 1000),
            ] {
                let ids = |i: &HnswIndex| {
                    let mut v: Vec<_> = i
                        .retrieve(&request, &f)
                        .unwrap()
                        .hits
                        .iter()
                        .map(|h| (h.chunk_id, h.doc_version))
                        .collect();
                    v.sort();
                    v
                };
                assert_eq!(ids(a), ids(b));
            }
        }
    }
    for i in 0..300 {
        let id = key_of(i);
        assert_eq!(a.document(&id).unwrap(), b.document(&id).unwrap());
    }
}

#[test]
fn roundtrip_gives_identical_results() {
    let index = populated();
    let dir = tempfile::tempdir().unwrap();
    let report = index.snapshot(dir.path()).unwrap();
    assert_eq!(report.manifest.documents as usize, index.stats().documents);
    let restored = HnswIndex::restore(dir.path(), Some(&fingerprint()), small_config()).unwrap();
    assert_same_results(&index, &restored);
    // The restored index keeps working.
    restored
        .upsert(vec![doc(
            "new",
            1,
            Some(Acl::new("acme").allow_group("all")),
            &[vec![1.0; DIMS]],
        )])
        .unwrap();
    restored.delete(&key("d1")).unwrap();
}

#[test]
fn a_new_snapshot_replaces_the_old_one() {
    let index = populated();
    let dir = tempfile::tempdir().unwrap();
    index.snapshot(dir.path()).unwrap();
    index.delete(&key_of(3)).unwrap();
    index.snapshot(dir.path()).unwrap();
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert_eq!(files.len(), 4, "stale files left: {files:?}");
    let restored = HnswIndex::restore(dir.path(), None, small_config()).unwrap();
    assert!(restored.document(&key_of(3)).unwrap().is_none());
    assert_same_results(&index, &restored);
}

fn snapshot_dir() -> (HnswIndex, tempfile::TempDir, Manifest) {
    let index = populated();
    let dir = tempfile::tempdir().unwrap();
    let m = index.snapshot(dir.path()).unwrap().manifest;
    (index, dir, m)
}

fn file_of(dir: &Path, m: &Manifest, role: &str) -> std::path::PathBuf {
    dir.join(&m.file(role).unwrap().name)
}

fn restore_err(dir: &Path) -> SnapshotError {
    match HnswIndex::restore(dir, None, IndexConfig::default()) {
        Err(IndexError::Snapshot(e)) => e,
        Err(other) => panic!("expected a snapshot error, got {other}"),
        Ok(_) => panic!("a damaged snapshot was restored"),
    }
}

#[test]
fn truncated_or_altered_files_are_rejected() {
    for role in ["documents", "chunks", "graph"] {
        let (_, dir, m) = snapshot_dir();
        let path = file_of(dir.path(), &m, role);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(
            matches!(
                restore_err(dir.path()),
                SnapshotError::ChecksumMismatch { .. }
            ),
            "{role}"
        );

        let mut flipped = bytes.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        std::fs::write(&path, &flipped).unwrap();
        assert!(
            matches!(
                restore_err(dir.path()),
                SnapshotError::ChecksumMismatch { .. }
            ),
            "{role}"
        );
    }
}

#[test]
fn missing_or_broken_manifest_and_missing_files() {
    let (_, dir, m) = snapshot_dir();
    let manifest = dir.path().join("MANIFEST.json");
    let text = std::fs::read_to_string(&manifest).unwrap();

    std::fs::write(&manifest, &text[..text.len() / 2]).unwrap();
    assert!(matches!(
        restore_err(dir.path()),
        SnapshotError::CorruptManifest { .. }
    ));

    std::fs::write(
        &manifest,
        text.replace("\"format_version\": 2", "\"format_version\": 99"),
    )
    .unwrap();
    assert!(matches!(
        restore_err(dir.path()),
        SnapshotError::UnsupportedVersion { found: 99, .. }
    ));

    std::fs::write(&manifest, &text).unwrap();
    std::fs::remove_file(file_of(dir.path(), &m, "graph")).unwrap();
    assert!(matches!(
        restore_err(dir.path()),
        SnapshotError::MissingFile { .. }
    ));

    std::fs::remove_file(&manifest).unwrap();
    assert!(matches!(
        restore_err(dir.path()),
        SnapshotError::MissingManifest { .. }
    ));

    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        restore_err(empty.path()),
        SnapshotError::MissingManifest { .. }
    ));
}

#[test]
fn content_that_matches_a_forged_checksum_is_still_rejected() {
    let (_, dir, m) = snapshot_dir();
    let manifest_path = dir.path().join("MANIFEST.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    let garbage = b"PAR1 this is not a parquet file PAR1".to_vec();
    std::fs::write(file_of(dir.path(), &m, "chunks"), &garbage).unwrap();
    for f in manifest["files"].as_array_mut().unwrap() {
        if f["role"] == "chunks" {
            use sha2::Digest;
            f["bytes"] = garbage.len().into();
            f["sha256"] = hex::encode(sha2::Sha256::digest(&garbage)).into();
        }
    }
    std::fs::write(&manifest_path, serde_json::to_string(&manifest).unwrap()).unwrap();
    assert!(matches!(
        restore_err(dir.path()),
        SnapshotError::Corrupt { .. }
    ));
}

#[test]
fn snapshot_of_another_model_is_refused() {
    let (_, dir, _) = snapshot_dir();
    let other = ModelFingerprint::new("other-model", DIMS, "x").unwrap();
    assert!(matches!(
        HnswIndex::restore(dir.path(), Some(&other), small_config()),
        Err(IndexError::Snapshot(SnapshotError::ModelMismatch { .. }))
    ));
}

/// Tag names a hostile or careless writer might send.
fn hostile_name() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        Just(String::new()),
        Just(" ".to_owned()),
        Just("\t\n".to_owned()),
        Just("a\u{0}b".to_owned()),
        Just("x".repeat(300)),
        Just("g:nested:colon".to_owned()),
        Just("ａｄｍｉｎ".to_owned()),
        "[a-z]{1,8}",
        any::<String>(),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Hole 4: an ACL the write path accepted (an empty user name) made the whole
    /// snapshot unrestorable. Whatever a write accepts must survive a round trip,
    /// with its ACL unchanged.
    #[test]
    fn whatever_a_write_accepts_survives_a_snapshot_round_trip(
        users in proptest::collection::vec(hostile_name(), 0..3),
        groups in proptest::collection::vec(hostile_name(), 0..3),
        denied in proptest::collection::vec(hostile_name(), 0..2),
    ) {
        let index = HnswIndex::new(fingerprint(), small_config()).unwrap();
        index.upsert(vec![doc("base", 1, Some(Acl::new("acme").allow_group("eng")), &[vec![1.0; DIMS]])]).unwrap();
        let mut acl = Acl::new("acme");
        for u in &users { acl = acl.allow_user(u.as_str()); }
        for g in &groups { acl = acl.allow_group(g.as_str()); }
        for d in &denied { acl = acl.deny_group(d.as_str()); }
        let accepted = index
            .upsert(vec![doc("probe", 1, Some(acl.clone()), &[vec![0.5; DIMS]])])
            .is_ok();
        let dir = tempfile::tempdir().unwrap();
        index.snapshot(dir.path()).unwrap();
        let back = HnswIndex::restore(dir.path(), Some(&fingerprint()), small_config());
        let back = back.map_err(|e| proptest::test_runner::TestCaseError::fail(format!("restore failed after the write was {}: {e}", if accepted { "accepted" } else { "refused" })))?;
        let stored = back.document(&key("probe")).unwrap();
        proptest::prop_assert_eq!(stored.is_some(), accepted);
        if let Some(info) = stored {
            proptest::prop_assert_eq!(info.acl, Some(acl));
        }
    }
}

/// Hole 5: an attacker who can write the snapshot directory swaps in a documents
/// table with an edited ACL and recomputes the manifest's checksums. Unkeyed, that
/// restores (checksums are no defence against a writer); with a snapshot key the
/// manifest's signature no longer verifies and nothing is restored.
#[test]
fn an_acl_edit_with_recomputed_checksums_is_caught_only_by_a_signature() {
    use sha2::Digest;
    let key = rag_index::SnapshotKey::new(*b"snapshot-key-0123456789").unwrap();
    let keyed = IndexConfig {
        snapshot_key: Some(key.clone()),
        ..small_config()
    };
    let secret = || {
        doc(
            "secret",
            1,
            Some(Acl::new("acme").allow_group("hr")),
            &[vec![1.0; DIMS]],
        )
    };
    let index = HnswIndex::new(fingerprint(), keyed.clone()).unwrap();
    index.upsert(vec![secret()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    index.snapshot(dir.path()).unwrap();
    assert!(dir.path().join(rag_index::SIGNATURE_FILE).exists());
    HnswIndex::restore(dir.path(), None, keyed.clone()).unwrap();

    // The attacker's table: the same document, readable by everyone in "all".
    let forged = HnswIndex::new(fingerprint(), small_config()).unwrap();
    let mut open = secret();
    open.acl = Some(Acl::new("acme").allow_group("all"));
    forged.upsert(vec![open]).unwrap();
    let forged_dir = tempfile::tempdir().unwrap();
    let fm = forged.snapshot(forged_dir.path()).unwrap().manifest;
    let m = Manifest::read(dir.path()).unwrap();
    let table = std::fs::read(file_of(forged_dir.path(), &fm, "documents")).unwrap();
    std::fs::write(file_of(dir.path(), &m, "documents"), &table).unwrap();
    let manifest_path = dir.path().join("MANIFEST.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    for f in manifest["files"].as_array_mut().unwrap() {
        if f["role"] == "documents" {
            f["bytes"] = table.len().into();
            f["sha256"] = hex::encode(sha2::Sha256::digest(&table)).into();
        }
    }
    std::fs::write(&manifest_path, serde_json::to_string(&manifest).unwrap()).unwrap();

    // Unkeyed, the forgery restores and the ACL is the attacker's.
    let restored = HnswIndex::restore(dir.path(), None, small_config()).unwrap();
    let acl = restored
        .document(&key_of_secret())
        .unwrap()
        .unwrap()
        .acl
        .unwrap();
    assert!(acl.allow.iter().any(|t| t.to_string() == "g:all"));
    // Keyed, it is refused.
    assert!(matches!(
        HnswIndex::restore(dir.path(), None, keyed.clone()),
        Err(IndexError::Snapshot(SnapshotError::BadSignature { .. }))
    ));
    // And a snapshot with its signature removed is refused as unsigned.
    std::fs::remove_file(dir.path().join(rag_index::SIGNATURE_FILE)).unwrap();
    assert!(matches!(
        HnswIndex::restore(dir.path(), None, keyed),
        Err(IndexError::Snapshot(SnapshotError::Unsigned { .. }))
    ));
    assert!(rag_index::SnapshotKey::new(*b"short").is_err());
}

fn key_of_secret() -> DocKey {
    key("secret")
}
