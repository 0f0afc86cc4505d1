//! The adversarial suite: attacks through the public API, each asserting that the
//! attacker learns nothing (docs/SECURITY.md lists them with the other attack tests
//! of the workspace). The index is the real HNSW + BM25 index, the cache the real
//! semantic cache, the directory the real one; only the models are doubles.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rag_acl::{AuditAction, AuditEvent, AuditLog, Directory, Outcome, Registration, verify};
use rag_cache::{CacheConfig, SemanticCache};
use rag_core::{
    AccessResolver, Acl, DeletePredicate, DocId, DocKey, Document, Embedder, Error, InvalidInput,
    Metadata, Principal, RetrievalMode, SearchRequest, TenantId, VectorIndex, VectorIndexRead,
    WordCounter,
};
use rag_index::{HnswIndex, IndexConfig};
use rag_pipeline::RecursiveChunker;
use rag_pipeline::testing::{EchoGenerator, HashEmbedder};
use rag_pipeline::{Pipeline, PipelineConfig, QueryOptions};

const SECRET: &str = "Zanzibar quokka merger closes on ninth of Thermidor at valuation xylophone";
const PUBLIC: &str = "The cafeteria opens at eight and serves soup on Mondays";

struct World {
    pipeline: Pipeline,
    index: Arc<HnswIndex>,
    directory: Arc<Directory>,
    embedder: Arc<HashEmbedder>,
}

fn doc(tenant: &str, id: &str, version: u64, text: &str, acl: Option<Acl>) -> Document {
    Document {
        tenant: tenant.into(),
        id: DocId::new(id),
        version,
        text: text.into(),
        metadata: Metadata::default().with_source(format!("{id}.txt")),
        acl,
    }
}

fn hr() -> Acl {
    Acl::new("acme").allow_group("hr")
}

fn staff() -> Acl {
    Acl::new("acme").allow_group("staff")
}

fn world_with(registration: Registration) -> World {
    let embedder = Arc::new(HashEmbedder::new(64).unwrap());
    let index =
        Arc::new(HnswIndex::new(embedder.fingerprint().clone(), IndexConfig::default()).unwrap());
    let directory = Arc::new(Directory::new(registration));
    for (user, group) in [("hana", "hr"), ("sam", "staff"), ("eve", "staff")] {
        directory.add_user(&"acme".into(), &user.into(), [group.into()]);
    }
    let pipeline = Pipeline::builder()
        .chunker(Arc::new(
            RecursiveChunker::new(64, 4, Arc::new(WordCounter)).unwrap(),
        ))
        .index(index.clone())
        .embedder(embedder.clone())
        .generator(Arc::new(EchoGenerator {
            failing: false,
            words: 40,
        }))
        .cache(Arc::new(
            SemanticCache::new(CacheConfig::default()).unwrap(),
        ))
        .access(directory.clone())
        .config(PipelineConfig {
            top_k: 4,
            ..PipelineConfig::default()
        })
        .build()
        .unwrap();
    pipeline
        .ingest(vec![
            doc("acme", "secret", 1, SECRET, Some(hr())),
            doc("acme", "public", 1, PUBLIC, Some(staff())),
        ])
        .unwrap();
    World {
        pipeline,
        index,
        directory,
        embedder,
    }
}

fn world() -> World {
    world_with(Registration::Required)
}

fn eve() -> Principal {
    Principal::new("acme", "eve")
}

fn hana() -> Principal {
    Principal::new("acme", "hana")
}

/// Everything an answer exposes: its text and every passage it was made from.
fn exposed(w: &World, p: &Principal, question: &str, mode: RetrievalMode) -> String {
    let a = w
        .pipeline
        .query(
            p,
            question,
            &QueryOptions {
                mode: Some(mode),
                ..QueryOptions::default()
            },
        )
        .unwrap();
    let mut s = a.answer.text.clone();
    for c in a.answer.sources() {
        s.push_str(&format!(" {}", c.doc_id));
    }
    s
}

fn leaks(s: &str) -> bool {
    s.contains("secret") || s.contains("Zanzibar") || s.contains("xylophone")
}

// --- Retrieval built to reach a forbidden chunk --------------------------------

#[test]
fn a01_dense_query_equal_to_the_forbidden_chunk() {
    let w = world();
    for mode in [
        RetrievalMode::Dense,
        RetrievalMode::Lexical,
        RetrievalMode::Hybrid,
    ] {
        assert!(!leaks(&exposed(&w, &eve(), SECRET, mode)), "{mode:?}");
    }
    assert!(
        leaks(&exposed(&w, &hana(), SECRET, RetrievalMode::Dense)),
        "control: hana may read it"
    );
}

#[test]
fn a02_lexical_query_of_the_forbidden_chunks_rare_words() {
    let w = world();
    let q = "Zanzibar quokka Thermidor xylophone";
    assert!(!leaks(&exposed(&w, &eve(), q, RetrievalMode::Lexical)));
    let f = w.directory.resolve(&eve()).unwrap();
    let r = w
        .index
        .retrieve(&SearchRequest::lexical(q, 100), &f)
        .unwrap();
    assert!(r.hits.iter().all(|h| h.doc_id.as_str() != "secret"));
}

#[test]
fn a03_hybrid_query_mixing_both_documents() {
    let w = world();
    let q = format!("{PUBLIC} {SECRET}");
    let e = w.embedder.embed(&[q.as_str()]).unwrap().remove(0);
    let f = w.directory.resolve(&eve()).unwrap();
    let r = w
        .index
        .retrieve(&SearchRequest::hybrid(&e, &q, 100), &f)
        .unwrap();
    assert!(!r.hits.is_empty());
    assert!(r.hits.iter().all(|h| h.doc_id.as_str() == "public"));
    assert_eq!(
        r.visible, 1,
        "the visible count must not include hidden chunks"
    );
}

#[test]
fn a04_k_larger_than_the_index() {
    let w = world();
    let e = w.embedder.embed(&[SECRET]).unwrap().remove(0);
    let f = w.directory.resolve(&eve()).unwrap();
    let r = w.index.search(&e, 1000, &f).unwrap();
    assert!(r.hits.iter().all(|h| h.doc_id.as_str() == "public"));
}

// --- The cache -------------------------------------------------------------------

#[test]
fn a05_question_quoting_a_forbidden_chunk_after_an_authorised_answer() {
    let w = world();
    assert!(leaks(&exposed(&w, &hana(), SECRET, RetrievalMode::Dense)));
    let a = w
        .pipeline
        .query(&eve(), SECRET, &QueryOptions::default())
        .unwrap();
    assert!(!a.from_cache);
    assert!(!leaks(&a.answer.text));
}

#[test]
fn a06_cache_is_not_shared_across_access_sets_differing_by_one_deny_tag() {
    let embedder = Arc::new(HashEmbedder::new(64).unwrap());
    let index =
        Arc::new(HnswIndex::new(embedder.fingerprint().clone(), IndexConfig::default()).unwrap());
    let directory = Arc::new(Directory::new(Registration::Required));
    directory.add_user(&"acme".into(), &"ann".into(), ["staff".into()]);
    directory.add_user(
        &"acme".into(),
        &"bob".into(),
        ["staff".into(), "contractors".into()],
    );
    let p = Pipeline::builder()
        .chunker(Arc::new(
            RecursiveChunker::new(64, 4, Arc::new(WordCounter)).unwrap(),
        ))
        .index(index)
        .embedder(embedder)
        .generator(Arc::new(EchoGenerator::default()))
        .cache(Arc::new(
            SemanticCache::new(CacheConfig::default()).unwrap(),
        ))
        .access(directory)
        .build()
        .unwrap();
    p.ingest(vec![doc(
        "acme",
        "plan",
        1,
        SECRET,
        Some(
            Acl::new("acme")
                .allow_group("staff")
                .deny_group("contractors"),
        ),
    )])
    .unwrap();
    let ann = Principal::new("acme", "ann");
    let bob = Principal::new("acme", "bob");
    assert!(leaks(
        &p.query(&ann, SECRET, &QueryOptions::default())
            .unwrap()
            .answer
            .text
    ));
    let b = p.query(&bob, SECRET, &QueryOptions::default()).unwrap();
    assert!(!b.from_cache && !leaks(&b.answer.text));
}

#[test]
fn a07_revoked_reader_is_not_served_a_cached_answer() {
    let w = world();
    assert!(leaks(&exposed(&w, &hana(), SECRET, RetrievalMode::Dense)));
    assert!(
        w.directory
            .remove_from_group(&"acme".into(), &"hana".into(), &"hr".into())
    );
    let a = w
        .pipeline
        .query(&hana(), SECRET, &QueryOptions::default())
        .unwrap();
    assert!(!a.from_cache && !leaks(&a.answer.text));
}

/// Re-ingests the secret at version 2, readable by the board only.
fn restrict_secret_to_board(w: &World) {
    w.pipeline
        .ingest(vec![doc(
            "acme",
            "secret",
            2,
            SECRET,
            Some(Acl::new("acme").allow_group("board")),
        )])
        .unwrap();
}

#[test]
fn a08_acl_tightened_by_reingest_drops_the_cached_answer() {
    let w = world();
    assert!(leaks(&exposed(&w, &hana(), SECRET, RetrievalMode::Dense)));
    restrict_secret_to_board(&w);
    let a = w
        .pipeline
        .query(&hana(), SECRET, &QueryOptions::default())
        .unwrap();
    assert!(!a.from_cache && !leaks(&a.answer.text));
}

// --- Tenants -----------------------------------------------------------------------

#[test]
fn a09_same_document_id_in_another_tenant_does_not_replace_it() {
    let w = world();
    w.pipeline
        .ingest(vec![doc(
            "globex",
            "secret",
            9,
            "globex text",
            Some(Acl::new("globex").allow_group("hr")),
        )])
        .unwrap();
    assert!(leaks(&exposed(&w, &hana(), SECRET, RetrievalMode::Dense)));
}

#[test]
fn a10_existence_probe_by_upsert_reports_the_same_for_hidden_and_missing() {
    let w = world();
    // Globex writes acme's document id with acme's text: neither "unchanged" nor
    // an error may tell it that acme holds such a document.
    let probe = |id: &str| {
        w.pipeline
            .ingest(vec![doc(
                "globex",
                id,
                1,
                SECRET,
                Some(Acl::new("globex").allow_user("spy")),
            )])
            .map(|r| (r.upserted, r.unchanged))
    };
    assert_eq!(probe("secret").unwrap(), (1, 0));
    assert_eq!(probe("never-existed").unwrap(), (1, 0));
}

#[test]
fn a11_delete_in_another_tenant_removes_nothing_and_reveals_nothing() {
    let w = world();
    let other = w.index.delete(&DocKey::new("globex", "secret"));
    let missing = w.index.delete(&DocKey::new("globex", "missing"));
    // Both answers are "not found", whether or not acme holds the id.
    assert!(matches!(other, Err(Error::NotFound { .. })), "{other:?}");
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );
    w.index
        .delete_where(&TenantId::new("globex"), DeletePredicate::Everything)
        .unwrap();
    w.index
        .delete_where(
            &TenantId::new("globex"),
            DeletePredicate::Source("secret.txt".into()),
        )
        .unwrap();
    assert!(leaks(&exposed(&w, &hana(), SECRET, RetrievalMode::Dense)));
}

#[test]
fn a12_a_write_whose_acl_names_another_tenant_is_refused() {
    let w = world();
    let err = w
        .pipeline
        .ingest(vec![doc("globex", "x", 1, "text", Some(hr()))])
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidInput(InvalidInput::TenantMismatch { .. })
        ),
        "{err}"
    );
}

#[test]
fn a13_same_user_and_group_names_in_another_tenant_see_nothing() {
    let w = world_with(Registration::TrustClaims);
    let p = Principal::new("globex", "hana").with_group("hr");
    assert!(!leaks(&exposed(&w, &p, SECRET, RetrievalMode::Hybrid)));
}

#[test]
fn a14_unicode_confusables_are_other_names() {
    let w = world_with(Registration::TrustClaims);
    // Cyrillic "а" in the tenant, Cyrillic "һ" in the group.
    for p in [
        Principal::new("\u{430}cme", "hana").with_group("hr"),
        Principal::new("acme", "eve").with_group("\u{4bb}r"),
        Principal::new("acme", "eve").with_group("HR"),
        Principal::new("acme", "eve").with_group("hr "),
    ] {
        assert!(
            !leaks(&exposed(&w, &p, SECRET, RetrievalMode::Dense)),
            "{p:?}"
        );
    }
}

#[test]
fn a15_document_reads_for_a_principal_hide_what_search_hides() {
    let w = world();
    assert!(
        w.pipeline
            .document(&eve(), &DocId::new("secret"))
            .unwrap()
            .is_none()
    );
    assert!(
        w.pipeline
            .document(&hana(), &DocId::new("secret"))
            .unwrap()
            .is_some()
    );
}

// --- Principals and the directory ---------------------------------------------------

#[test]
fn a16_claimed_groups_are_ignored_by_default() {
    let w = world();
    let forged = eve().with_group("hr").with_role("admin");
    assert!(!leaks(&exposed(&w, &forged, SECRET, RetrievalMode::Dense)));
}

#[test]
fn a17_unregistered_and_disabled_users_are_refused() {
    let w = world();
    let err = w
        .pipeline
        .query(
            &Principal::new("acme", "mallory"),
            SECRET,
            &QueryOptions::default(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Denied { .. }));
    w.directory
        .set_disabled(&"acme".into(), &"hana".into(), true);
    let err = w
        .pipeline
        .query(&hana(), SECRET, &QueryOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::Denied { .. }));
}

#[test]
fn a18_empty_principal_parts_are_typed_errors() {
    let w = world_with(Registration::TrustClaims);
    for p in [Principal::new("", "eve"), Principal::new("acme", "")] {
        let err = w
            .pipeline
            .query(&p, SECRET, &QueryOptions::default())
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    }
}

#[test]
fn a19_ten_thousand_claimed_groups_resolve_without_access() {
    let w = world_with(Registration::TrustClaims);
    let p = (0..10_000).fold(eve(), |p, i| p.with_group(format!("g{i}").as_str()));
    assert!(!leaks(&exposed(&w, &p, SECRET, RetrievalMode::Hybrid)));
}

#[test]
fn a20_deeply_nested_and_cyclic_groups_terminate_and_stay_exact() {
    let d = Directory::new(Registration::Required);
    let t = TenantId::new("acme");
    for i in 0..5_000 {
        d.nest_group(
            &t,
            &format!("g{i}").as_str().into(),
            &format!("g{}", i + 1).as_str().into(),
        );
    }
    d.nest_group(&t, &"g5000".into(), &"g0".into());
    d.add_user(&t, &"u".into(), ["g0".into()]);
    let f = d.compile(&Principal::new("acme", "u")).unwrap();
    assert!(f.permits(Some(&Acl::new("acme").allow_group("g4999"))));
    assert!(!f.permits(Some(&Acl::new("acme").allow_group("g5001"))));
}

#[test]
fn a21_a_flood_of_made_up_principals_does_not_grow_the_filter_cache() {
    let d = Directory::new(Registration::TrustClaims).with_cache_capacity(100);
    for i in 0..20_000 {
        d.compile(&Principal::new("acme", format!("bot{i}").as_str()))
            .unwrap();
    }
    assert!(d.cached_filters() <= 100);
}

// --- Hostile writes -------------------------------------------------------------------

#[test]
fn a22_huge_acl_lists_and_hostile_tags_are_typed_errors_that_lose_nothing() {
    let w = world();
    let huge = (0..5_000).fold(Acl::new("acme"), |a, i| {
        a.allow_user(format!("u{i}").as_str())
    });
    for acl in [
        huge,
        Acl::new("acme").allow_group(""),
        Acl::new("acme").allow_group("   "),
        Acl::new("acme").allow_user("bob\nINFO forged log line"),
        Acl::new("acme").allow_role("r".repeat(1000).as_str()),
    ] {
        let err = w
            .pipeline
            .ingest(vec![
                doc("acme", "ok", 1, PUBLIC, Some(staff())),
                doc("acme", "bad", 1, PUBLIC, Some(acl)),
            ])
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    }
    // A refused batch writes none of its documents; what was stored before is intact.
    assert!(
        w.pipeline
            .admin_index()
            .document(&DocKey::new("acme", "ok"))
            .unwrap()
            .is_none()
    );
    assert!(leaks(&exposed(&w, &hana(), SECRET, RetrievalMode::Dense)));
}

#[test]
fn a23_a_document_without_an_acl_is_nobodys() {
    let w = world_with(Registration::TrustClaims);
    w.pipeline
        .ingest(vec![doc(
            "acme",
            "orphan",
            1,
            "Orphan xylophone quokka text",
            None,
        )])
        .unwrap();
    for p in [hana(), eve(), hana().with_group("staff").with_role("admin")] {
        let e = exposed(
            &w,
            &p,
            "Orphan xylophone quokka text",
            RetrievalMode::Hybrid,
        );
        assert!(!e.contains("orphan"), "{e}");
    }
}

#[test]
fn a24_deny_beats_allow() {
    let w = world_with(Registration::TrustClaims);
    w.pipeline
        .ingest(vec![doc(
            "acme",
            "secret",
            2,
            SECRET,
            Some(Acl::new("acme").allow_group("hr").deny_user("hana")),
        )])
        .unwrap();
    assert!(!leaks(&exposed(
        &w,
        &hana().with_group("hr"),
        SECRET,
        RetrievalMode::Hybrid
    )));
}

#[test]
fn a25_a_replayed_older_version_cannot_regress_a_document() {
    let w = world();
    restrict_secret_to_board(&w);
    let err = w
        .pipeline
        .ingest(vec![doc("acme", "secret", 1, SECRET, Some(hr()))])
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidInput(InvalidInput::StaleVersion { .. })),
        "{err}"
    );
    assert!(!leaks(&exposed(&w, &hana(), SECRET, RetrievalMode::Dense)));
}

#[test]
fn a26_invalid_utf8_and_oversized_inputs_are_typed_errors() {
    let bad = Document::from_bytes(
        "acme".into(),
        DocId::new("b"),
        1,
        vec![0xff, 0xfe, 0x00],
        Some(staff()),
    );
    assert!(bad.is_err());
    let w = world();
    let huge_q = "why ".repeat(5_000);
    let err = w
        .pipeline
        .query(&eve(), &huge_q, &QueryOptions::default())
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidInput(InvalidInput::TooLarge { .. })),
        "{err}"
    );
}

#[test]
fn a27_erased_text_is_gone_from_every_search_and_the_cache() {
    let w = world();
    assert!(leaks(&exposed(&w, &hana(), SECRET, RetrievalMode::Dense)));
    w.pipeline.erase(&DocKey::new("acme", "secret")).unwrap();
    for mode in [
        RetrievalMode::Dense,
        RetrievalMode::Lexical,
        RetrievalMode::Hybrid,
    ] {
        assert!(!leaks(&exposed(&w, &hana(), SECRET, mode)), "{mode:?}");
    }
}

#[test]
fn a28_revocation_during_streaming_ingestion() {
    use std::sync::atomic::AtomicU64;
    let w = Arc::new(world());
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (w, stop, written) = (w.clone(), stop.clone(), written.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let i = written.load(Ordering::SeqCst);
                w.pipeline
                    .ingest(vec![doc(
                        "acme",
                        &format!("memo{i}"),
                        1,
                        &format!("memo {i} {SECRET}"),
                        Some(hr()),
                    )])
                    .unwrap();
                written.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    while written.load(Ordering::SeqCst) < 3 {
        std::thread::yield_now();
    }
    assert!(leaks(&exposed(&w, &hana(), SECRET, RetrievalMode::Dense)));
    assert!(
        w.directory
            .remove_from_group(&"acme".into(), &"hana".into(), &"hr".into())
    );
    // Keep asking until the writer has published at least ten more secret memos
    // since the revocation: none of them may reach hana.
    let at_revocation = written.load(Ordering::SeqCst);
    let mut asked = 0;
    while written.load(Ordering::SeqCst) < at_revocation + 10 || asked < 20 {
        assert!(!leaks(&exposed(&w, &hana(), SECRET, RetrievalMode::Hybrid)));
        asked += 1;
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
}

// --- The audit log ----------------------------------------------------------------------

fn audit_log(n: usize) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path).unwrap();
    for i in 0..n {
        log.append(AuditEvent::new(
            AuditAction::Answer,
            Some("acme".into()),
            Some(format!("user{i}")),
            vec![format!("doc{i}")],
            Outcome::Ok,
        ))
        .unwrap();
    }
    let head = log.head();
    (dir, path, head)
}

fn rewrite_lines(path: &std::path::Path, f: impl FnOnce(&mut Vec<String>)) {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    f(&mut lines);
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn a29_audit_record_removed() {
    let (_d, path, _) = audit_log(5);
    rewrite_lines(&path, |l| {
        l.remove(2);
    });
    assert!(verify(&path).is_err());
    assert!(
        AuditLog::open(&path).is_err(),
        "a tampered log is not extended"
    );
}

#[test]
fn a30_audit_records_reordered() {
    let (_d, path, _) = audit_log(5);
    rewrite_lines(&path, |l| l.swap(1, 3));
    assert!(verify(&path).is_err());
}

#[test]
fn a31_audit_log_truncated_is_caught_by_a_kept_head() {
    let (_d, path, head) = audit_log(5);
    rewrite_lines(&path, |l| l.truncate(3));
    assert_ne!(verify(&path).unwrap().head, head);
}

#[test]
fn a32_audit_record_edited_in_place() {
    let (_d, path, _) = audit_log(5);
    rewrite_lines(&path, |l| l[1] = l[1].replace("doc1", "doc7"));
    assert!(verify(&path).is_err());
}
