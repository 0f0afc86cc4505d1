//! The semantic cache behind the pipeline: what an entry was built from, what its key
//! holds, and when it is dropped. Each test is an attack on a hole the cache had.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rag_cache::{CacheConfig, SemanticCache};
use rag_core::{
    Acl, DocId, DocKey, Embedder, Embedding, Error, Metadata, ModelFingerprint, Principal,
    VectorIndex, VectorIndexRead, WordCounter,
};
use rag_pipeline::RecursiveChunker;
use rag_pipeline::testing::{EchoGenerator, FaultyIndex, FlatIndex, HashEmbedder, OpenResolver};
use rag_pipeline::{Pipeline, PipelineConfig, QueryOptions};

const ALPHA: &str = "alpha bravo charlie delta echo foxtrot golf hotel";
const SECRET: &str = "alpha bravo charlie salary of the chief is ninety thousand";

fn doc(id: &str, version: u64, text: &str, acl: Acl) -> rag_core::Document {
    rag_core::Document {
        tenant: acl.tenant.clone(),
        id: DocId::new(id),
        version,
        text: text.into(),
        metadata: Metadata::default(),
        acl: Some(acl),
    }
}

fn eng() -> Acl {
    Acl::new("acme").allow_group("eng")
}

fn ann() -> Principal {
    Principal::new("acme", "ann").with_group("eng")
}

struct Setup {
    pipeline: Pipeline,
    cache: Arc<SemanticCache>,
    index: Arc<dyn VectorIndex>,
}

fn setup_with(index: Arc<dyn VectorIndex>, embedder: Arc<dyn Embedder>) -> Setup {
    let cache = Arc::new(SemanticCache::new(CacheConfig::default()).unwrap());
    let pipeline = Pipeline::builder()
        .chunker(Arc::new(
            RecursiveChunker::new(256, 16, Arc::new(WordCounter)).unwrap(),
        ))
        .embedder(embedder)
        .index(index.clone())
        .generator(Arc::new(EchoGenerator::default()))
        .cache(cache.clone())
        .access(Arc::new(OpenResolver))
        .config(PipelineConfig {
            top_k: 4,
            ..PipelineConfig::default()
        })
        .build()
        .unwrap();
    Setup {
        pipeline,
        cache,
        index,
    }
}

fn setup() -> Setup {
    let embedder = Arc::new(HashEmbedder::new(64).unwrap());
    let index = Arc::new(FlatIndex::new(embedder.fingerprint().clone()));
    setup_with(index, embedder)
}

/// The echo generator cites only `[1]`; the secret is passage `[2]` of the prompt.
fn answered_with_uncited_secret(s: &Setup) {
    s.pipeline
        .ingest(vec![
            doc("public", 1, ALPHA, eng()),
            doc("secret", 1, SECRET, eng()),
        ])
        .unwrap();
    let a = s
        .pipeline
        .query(&ann(), ALPHA, &QueryOptions::default())
        .unwrap();
    assert!(!a.from_cache);
    let cited: Vec<&str> = a
        .answer
        .citations
        .iter()
        .map(|c| c.doc_id.as_str())
        .collect();
    assert_eq!(cited, ["public"], "the set-up needs the secret uncited");
    assert!(
        s.pipeline
            .query(&ann(), ALPHA, &QueryOptions::default())
            .unwrap()
            .from_cache
    );
}

/// Hole 1: revoking an uncited passage's ACL through the pipeline left the cached
/// answer built from it servable.
#[test]
fn revoking_an_uncited_passage_drops_the_answer_built_from_it() {
    let s = setup();
    answered_with_uncited_secret(&s);
    s.pipeline
        .ingest(vec![doc(
            "secret",
            2,
            SECRET,
            Acl::new("acme").allow_group("hr"),
        )])
        .unwrap();
    let a = s
        .pipeline
        .query(&ann(), ALPHA, &QueryOptions::default())
        .unwrap();
    assert!(
        !a.from_cache,
        "served from the cache after its source was revoked"
    );
}

/// Hole 1, the index path: a revocation the cache was never told about (another
/// writer of the same index) is caught when the entry is re-checked on a hit.
#[test]
fn an_uncited_passage_revoked_behind_the_caches_back_is_rechecked() {
    let s = setup();
    answered_with_uncited_secret(&s);
    // The same text at version 2, readable by hr only, written to the index
    // directly: the pipeline (and so the cache) never hears of it.
    let key = DocKey::new("acme", "secret");
    s.index
        .upsert(vec![rag_core::DocumentUpdate {
            tenant: key.tenant.clone(),
            doc_id: key.doc_id.clone(),
            version: 2,
            acl: Some(Acl::new("acme").allow_group("hr")),
            metadata: Metadata::default(),
            content_hash: None,
            chunks: vec![rag_core::EmbeddedChunk {
                chunk: rag_core::Chunk::whole(&key, SECRET),
                embedding: s.pipeline.embedder().embed(&[SECRET]).unwrap().remove(0),
            }],
        }])
        .unwrap();
    let a = s
        .pipeline
        .query(&ann(), ALPHA, &QueryOptions::default())
        .unwrap();
    assert!(
        !a.from_cache,
        "served although a passage it was built from was revoked"
    );
}

/// Hole 10: `top_k` was not part of the key, so a `top_k = 4` query was served the
/// answer built from one chunk.
#[test]
fn answers_built_with_another_top_k_are_not_served() {
    let s = setup();
    s.pipeline
        .ingest(vec![
            doc("public", 1, ALPHA, eng()),
            doc("secret", 1, SECRET, eng()),
        ])
        .unwrap();
    let one = QueryOptions {
        top_k: Some(1),
        ..QueryOptions::default()
    };
    assert!(!s.pipeline.query(&ann(), ALPHA, &one).unwrap().from_cache);
    let four = QueryOptions {
        top_k: Some(4),
        ..QueryOptions::default()
    };
    assert!(
        !s.pipeline.query(&ann(), ALPHA, &four).unwrap().from_cache,
        "a top_k=4 query was served the top_k=1 answer"
    );
    assert!(s.pipeline.query(&ann(), ALPHA, &one).unwrap().from_cache);
}

/// Hole 10: an upsert that failed after publishing skipped the cache invalidation.
#[test]
fn a_failed_upsert_that_published_still_invalidates() {
    let embedder = Arc::new(HashEmbedder::new(64).unwrap());
    let index = Arc::new(FaultyIndex::new(embedder.fingerprint().clone()));
    let s = setup_with(index.clone(), embedder);
    answered_with_uncited_secret(&s);
    let before = s.cache.stats().entries;
    assert_eq!(before, 1);
    index.fail_after_publish.store(true, Ordering::SeqCst);
    let err = s
        .pipeline
        .ingest(vec![doc("public", 2, "a different text now", eng())])
        .unwrap_err();
    assert!(matches!(err, Error::Transient { .. }), "{err}");
    assert_eq!(
        s.cache.stats().entries,
        0,
        "the entry citing the published document stayed"
    );
}

/// The hash embedder with its output mangled: a misbehaving model.
struct Faulty {
    inner: HashEmbedder,
    mangle: fn(&[&str], &mut Vec<Embedding>),
}

impl Faulty {
    fn new(mangle: fn(&[&str], &mut Vec<Embedding>)) -> Self {
        Self {
            inner: HashEmbedder::new(64).unwrap(),
            mangle,
        }
    }
}

impl Embedder for Faulty {
    fn fingerprint(&self) -> &ModelFingerprint {
        self.inner.fingerprint()
    }
    fn embed(&self, texts: &[&str]) -> rag_core::Result<Vec<Embedding>> {
        let mut v = self.inner.embed(texts)?;
        (self.mangle)(texts, &mut v);
        Ok(v)
    }
    fn device(&self) -> rag_core::Device {
        self.inner.device()
    }
    fn count_tokens(&self, text: &str) -> rag_core::Result<usize> {
        self.inner.count_tokens(text)
    }
    fn max_input_tokens(&self) -> usize {
        self.inner.max_input_tokens()
    }
}

/// Hole 9: the query path took the first vector unchecked and panicked on none.
#[test]
fn an_embedder_returning_no_query_vector_is_a_typed_error() {
    // No vector for a one-text call (a query).
    let embedder = Arc::new(Faulty::new(|texts, v| {
        if texts.len() == 1 {
            v.clear();
        }
    }));
    let index = Arc::new(FlatIndex::new(embedder.fingerprint().clone()));
    let s = setup_with(index, embedder);
    s.pipeline
        .ingest(vec![
            doc("public", 1, ALPHA, eng()),
            doc("b", 1, SECRET, eng()),
        ])
        .unwrap();
    let err = s
        .pipeline
        .query(&ann(), ALPHA, &QueryOptions::default())
        .unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err}");
}

/// Hole 9, ingest: an embedder one vector short made ingest pair every later chunk
/// with the next chunk's vector (across documents) and report success. It is a
/// typed error and nothing of the batch is stored.
#[test]
fn an_embedder_one_vector_short_fails_the_ingest_and_stores_nothing() {
    // The first vector of every batch of more than one text dropped.
    let embedder = Arc::new(Faulty::new(|_, v| {
        if v.len() > 1 {
            v.remove(0);
        }
    }));
    let index = Arc::new(FlatIndex::new(embedder.fingerprint().clone()));
    let s = setup_with(index.clone(), embedder);
    let err = s
        .pipeline
        .ingest(vec![
            doc("public", 1, ALPHA, eng()),
            doc("b", 1, SECRET, eng()),
        ])
        .unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err}");
    assert_eq!(index.stats().chunks, 0);
}
