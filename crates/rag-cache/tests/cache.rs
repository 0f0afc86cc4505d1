//! The semantic cache against the brute-force index: scoping, provenance checks,
//! expiry, eviction, and a property test of isolation between access sets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use rag_cache::{CacheConfig, SemanticCache};
use rag_core::{
    AccessFilter, Acl, Answer, AnswerCache, CacheKey, Chunk, ChunkId, Citation, DocId, DocKey,
    DocumentInfo, DocumentUpdate, EmbeddedChunk, Embedder, Embedding, IndexStats, Metadata,
    ModelFingerprint, Principal, SearchResult, Span, VectorIndex, VectorIndexRead, WriteOp,
    WriteReport,
};
use rag_pipeline::testing::{FlatIndex, HashEmbedder};

/// Test documents without an ACL belong to this tenant.
const DEFAULT_TENANT: &str = "acme";

fn dkey(id: &str) -> DocKey {
    DocKey::new(DEFAULT_TENANT, id)
}

/// An index that reports one document as visible to nobody: what a reader sees
/// when access is revoked by a write the cache was not told about.
struct Revoked<'a> {
    inner: &'a FlatIndex,
    doc: DocKey,
}

impl VectorIndexRead for Revoked<'_> {
    fn fingerprint(&self) -> &ModelFingerprint {
        self.inner.fingerprint()
    }
    fn search(&self, q: &Embedding, k: usize, f: &AccessFilter) -> rag_core::Result<SearchResult> {
        self.inner.search(q, k, f)
    }
    fn document(&self, key: &DocKey) -> rag_core::Result<Option<DocumentInfo>> {
        let info = self.inner.document(key)?;
        Ok(info.map(|mut i| {
            if key == &self.doc {
                i.acl = None;
            }
            i
        }))
    }
    fn stats(&self) -> IndexStats {
        self.inner.stats()
    }
}

impl VectorIndex for Revoked<'_> {
    fn apply(&self, op: WriteOp) -> rag_core::Result<WriteReport> {
        self.inner.apply(op)
    }
}

fn embedder() -> HashEmbedder {
    HashEmbedder::new(32).unwrap()
}

fn upsert(index: &FlatIndex, e: &HashEmbedder, id: &str, version: u64, acl: Option<Acl>) {
    let doc_id = DocId::new(id);
    let tenant = acl
        .as_ref()
        .map_or_else(|| DEFAULT_TENANT.into(), |a| a.tenant.clone());
    let key = DocKey::new(tenant.clone(), doc_id.clone());
    let text = format!("document {id} version {version}");
    index
        .upsert(vec![DocumentUpdate {
            tenant,
            doc_id: doc_id.clone(),
            version,
            acl,
            metadata: Metadata::default(),
            content_hash: None,
            chunks: vec![EmbeddedChunk {
                chunk: Chunk {
                    id: ChunkId::derive(&key, 0),
                    ordinal: 0,
                    span: Span::new(0, text.len()),
                    text: text.clone(),
                    context: None,
                },
                embedding: e.embed(&[&text]).unwrap().remove(0),
            }],
        }])
        .unwrap();
}

fn citing(index: &FlatIndex, ids: &[&str]) -> Answer {
    Answer {
        text: format!("an answer from {ids:?}"),
        provenance: vec![],
        citations: ids
            .iter()
            .map(|id| {
                let doc_id = DocId::new(*id);
                let info = index.document(&dkey(id)).unwrap().unwrap();
                Citation {
                    doc_id,
                    doc_version: info.version,
                    chunk_id: info.chunk_ids[0],
                    span: Span::new(0, 1),
                }
            })
            .collect(),
    }
}

fn key<'a>(q: &'a Embedding, scope: &'a AccessFilter) -> CacheKey<'a> {
    CacheKey {
        question: q,
        scope,
        generator: "gen",
        settings: 1,
    }
}

fn ann() -> AccessFilter {
    AccessFilter::for_principal(&Principal::new("acme", "ann").with_group("eng"))
}

fn setup() -> (HashEmbedder, FlatIndex, SemanticCache) {
    let e = embedder();
    let index = FlatIndex::new(e.fingerprint().clone());
    upsert(
        &index,
        &e,
        "a",
        1,
        Some(Acl::new("acme").allow_group("eng")),
    );
    upsert(
        &index,
        &e,
        "b",
        1,
        Some(Acl::new("acme").allow_group("eng")),
    );
    let cache = SemanticCache::new(CacheConfig::default()).unwrap();
    (e, index, cache)
}

#[test]
fn hits_need_the_same_scope_model_generator_and_template() {
    let (e, index, cache) = setup();
    let q = e.embed(&["what is the budget"]).unwrap().remove(0);
    let scope = ann();
    cache
        .store(&key(&q, &scope), &citing(&index, &["a"]))
        .unwrap();
    assert!(cache.lookup(&key(&q, &scope), &index).unwrap().is_some());

    let other = AccessFilter::for_principal(&Principal::new("acme", "bob").with_group("eng"));
    assert!(cache.lookup(&key(&q, &other), &index).unwrap().is_none());
    let mut k = key(&q, &scope);
    k.generator = "other";
    assert!(cache.lookup(&k, &index).unwrap().is_none());
    let mut k = key(&q, &scope);
    k.settings = 2;
    assert!(cache.lookup(&k, &index).unwrap().is_none());
    let other_model = HashEmbedder::new(31).unwrap();
    let q2 = other_model
        .embed(&["what is the budget"])
        .unwrap()
        .remove(0);
    assert!(cache.lookup(&key(&q2, &scope), &index).unwrap().is_none());
    let far = e
        .embed(&["an unrelated question on geology"])
        .unwrap()
        .remove(0);
    assert!(cache.lookup(&key(&far, &scope), &index).unwrap().is_none());
    let s = cache.stats();
    assert_eq!((s.hits, s.misses, s.entries), (1, 5, 1));
}

#[test]
fn changed_hidden_or_invalidated_citations_are_never_served() {
    let (e, index, cache) = setup();
    let scope = ann();
    let q = e.embed(&["q1"]).unwrap().remove(0);
    cache
        .store(&key(&q, &scope), &citing(&index, &["a", "b"]))
        .unwrap();
    // A new version of b, without telling the cache: the re-check refuses it.
    upsert(
        &index,
        &e,
        "b",
        2,
        Some(Acl::new("acme").allow_group("eng")),
    );
    assert!(cache.lookup(&key(&q, &scope), &index).unwrap().is_none());
    assert_eq!(cache.stats().stale_rejections, 1);
    assert_eq!(cache.stats().entries, 0);

    // Same version, but the caller lost access by a write the cache was not told
    // of (versions only move forward, so the index reports it through a double).
    cache
        .store(&key(&q, &scope), &citing(&index, &["a"]))
        .unwrap();
    let revoked = Revoked {
        inner: &index,
        doc: dkey("a"),
    };
    assert!(cache.lookup(&key(&q, &scope), &revoked).unwrap().is_none());
    assert_eq!(cache.stats().stale_rejections, 2);

    // Invalidation drops every entry citing the document, and only those.
    upsert(
        &index,
        &e,
        "a",
        3,
        Some(Acl::new("acme").allow_group("eng")),
    );
    let q2 = e.embed(&["q2"]).unwrap().remove(0);
    cache
        .store(&key(&q, &scope), &citing(&index, &["a"]))
        .unwrap();
    cache
        .store(&key(&q2, &scope), &citing(&index, &["b"]))
        .unwrap();
    let dropped = cache.invalidate(&BTreeSet::from([dkey("a")])).unwrap();
    assert_eq!(dropped, 1);
    assert!(cache.lookup(&key(&q, &scope), &index).unwrap().is_none());
    assert!(cache.lookup(&key(&q2, &scope), &index).unwrap().is_some());
    // Deleted documents are stale too.
    index.delete(&dkey("b")).unwrap();
    assert!(cache.lookup(&key(&q2, &scope), &index).unwrap().is_none());
    // Answers citing nothing are not kept.
    cache
        .store(
            &key(&q, &scope),
            &Answer {
                text: "nothing found".into(),
                citations: vec![],
                provenance: vec![],
            },
        )
        .unwrap();
    assert_eq!(cache.stats().entries, 0);
}

#[test]
fn entries_expire_after_their_ttl() {
    let (e, index, _) = setup();
    let now = Arc::new(AtomicU64::new(0));
    let clock = now.clone();
    let cache = SemanticCache::with_clock(
        CacheConfig {
            ttl: Duration::from_secs(10),
            ..CacheConfig::default()
        },
        Arc::new(move || Duration::from_secs(clock.load(Ordering::Relaxed))),
    )
    .unwrap();
    let scope = ann();
    let q = e.embed(&["q"]).unwrap().remove(0);
    cache
        .store(&key(&q, &scope), &citing(&index, &["a"]))
        .unwrap();
    now.store(10, Ordering::Relaxed);
    assert!(cache.lookup(&key(&q, &scope), &index).unwrap().is_some());
    now.store(11, Ordering::Relaxed);
    assert!(cache.lookup(&key(&q, &scope), &index).unwrap().is_none());
    assert_eq!(cache.stats().expirations, 1);
    assert_eq!(cache.stats().entries, 0);
}

#[test]
fn least_recently_used_entries_are_evicted_by_count_and_bytes() {
    let (e, index, _) = setup();
    let cache = SemanticCache::new(CacheConfig {
        max_entries: 2,
        ..CacheConfig::default()
    })
    .unwrap();
    let scope = ann();
    let qs: Vec<Embedding> = ["one", "two", "three"]
        .iter()
        .map(|t| e.embed(&[t]).unwrap().remove(0))
        .collect();
    cache
        .store(&key(&qs[0], &scope), &citing(&index, &["a"]))
        .unwrap();
    cache
        .store(&key(&qs[1], &scope), &citing(&index, &["a"]))
        .unwrap();
    // Touch "one" so "two" is the least recently used.
    assert!(
        cache
            .lookup(&key(&qs[0], &scope), &index)
            .unwrap()
            .is_some()
    );
    cache
        .store(&key(&qs[2], &scope), &citing(&index, &["b"]))
        .unwrap();
    assert!(
        cache
            .lookup(&key(&qs[1], &scope), &index)
            .unwrap()
            .is_none()
    );
    assert!(
        cache
            .lookup(&key(&qs[0], &scope), &index)
            .unwrap()
            .is_some()
    );
    assert!(
        cache
            .lookup(&key(&qs[2], &scope), &index)
            .unwrap()
            .is_some()
    );
    assert_eq!(cache.stats().evictions, 1);

    let small = SemanticCache::new(CacheConfig {
        max_bytes: 1000,
        ..CacheConfig::default()
    })
    .unwrap();
    for q in &qs {
        small
            .store(&key(q, &scope), &citing(&index, &["a"]))
            .unwrap();
        assert!(small.stats().bytes <= 1000);
    }
    assert!(small.stats().evictions >= 1);
    assert!(
        SemanticCache::new(CacheConfig {
            min_similarity: 1.5,
            ..CacheConfig::default()
        })
        .is_err()
    );
}

const USERS: [&str; 3] = ["ann", "bob", "cy"];
const GROUPS: [&str; 3] = ["eng", "ops", "hr"];

fn principal(t: usize, u: usize, groups: &[usize]) -> Principal {
    let mut p = Principal::new(["acme", "globex"][t], USERS[u]);
    for g in groups {
        p = p.with_group(GROUPS[*g]);
    }
    p
}

fn acl(t: usize, allow: &[usize], deny_user: Option<usize>) -> Option<Acl> {
    if allow.is_empty() {
        return None;
    }
    let mut a = Acl::new(["acme", "globex"][t]);
    for g in allow {
        a = a.allow_group(GROUPS[*g]);
    }
    if let Some(u) = deny_user {
        a = a.deny_user(USERS[u]);
    }
    Some(a)
}

type AclSpec = (usize, Vec<usize>, Option<usize>);

fn acl_spec() -> impl Strategy<Value = AclSpec> {
    (
        0usize..2,
        proptest::collection::vec(0usize..3, 0..3),
        proptest::option::of(0usize..3),
    )
}

type PrincipalSpec = (usize, usize, Vec<usize>);

fn principal_spec() -> impl Strategy<Value = PrincipalSpec> {
    (
        0usize..2,
        0usize..3,
        proptest::collection::vec(0usize..3, 0..3),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// Two principals ask the same question, each answered from what it may see and
    /// cached; documents then change (new versions, new ACLs, deletions), with or
    /// without invalidation. Whatever the cache serves either of them cites only
    /// documents that one may see now, at their current version.
    #[test]
    fn neither_principal_gets_citations_it_cannot_see(
        docs in proptest::collection::vec(acl_spec(), 1..8),
        p1 in principal_spec(),
        p2 in principal_spec(),
        changes in proptest::collection::vec((0usize..8, acl_spec(), any::<bool>(), any::<bool>()), 0..6),
        question in "[a-z]{1,12}",
    ) {
        let e = embedder();
        let index = FlatIndex::new(e.fingerprint().clone());
        for (i, (t, allow, deny)) in docs.iter().enumerate() {
            upsert(&index, &e, &format!("d{i}"), 1, acl(*t, allow, *deny));
        }
        let cache = SemanticCache::new(CacheConfig::default()).unwrap();
        let q = e.embed(&[&question]).unwrap().remove(0);
        let filters: Vec<AccessFilter> = [&p1, &p2]
            .iter()
            .map(|(t, u, g)| AccessFilter::for_principal(&principal(*t, *u, g)))
            .collect();
        // Each asks: the answer cites the visible top hits (what the pipeline does).
        for f in &filters {
            if cache.lookup(&key(&q, f), &index).unwrap().is_some() {
                continue;
            }
            let hits = index.search(&q, 3, f).unwrap().hits;
            let answer = Answer {
                text: "answer".into(),
                citations: hits.iter().map(|h| Citation {
                    doc_id: h.doc_id.clone(),
                    doc_version: h.doc_version,
                    chunk_id: h.chunk_id,
                    span: h.span,
                }).collect(),
                provenance: vec![],
            };
            cache.store(&key(&q, f), &answer).unwrap();
        }
        for (v, (d, (t, allow, deny), delete, tell)) in changes.into_iter().enumerate() {
            let id = format!("d{}", d % docs.len());
            // The change names a tenant: it touches that tenant's document `id`
            // (versions only move forward, so each change is a new version).
            let tenant = ["acme", "globex"][t];
            let k = DocKey::new(tenant, id.as_str());
            if delete {
                let _ = index.delete(&k);
            } else {
                let a = acl(t, &allow, deny).or_else(|| Some(Acl::new(tenant)));
                upsert(&index, &e, &id, 2 + v as u64, a);
            }
            if tell {
                cache.invalidate(&BTreeSet::from([k])).unwrap();
            }
        }
        for f in &filters {
            if let Some(a) = cache.lookup(&key(&q, f), &index).unwrap() {
                for c in &a.citations {
                    let info = index
                        .document(&DocKey::new(f.tenant().clone(), c.doc_id.clone()))
                        .unwrap();
                    let info = info.expect("served a citation of a deleted document");
                    prop_assert!(f.permits(info.acl.as_ref()), "leak of {}", c.doc_id);
                    prop_assert_eq!(info.version, c.doc_version);
                }
            }
        }
    }
}
