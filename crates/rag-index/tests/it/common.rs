//! Builders shared by the integration tests.

use rag_core::{
    AccessFilter, Acl, AttrValue, Chunk, ChunkId, DocId, DocKey, DocumentUpdate, EmbeddedChunk,
    Embedding, Metadata, ModelFingerprint, SearchResult, Span, VectorIndexRead,
};
use rag_index::{HnswIndex, IndexConfig};
use rag_pipeline::testing::FlatIndex;

pub const DIMS: usize = 8;

pub fn fingerprint() -> ModelFingerprint {
    ModelFingerprint::new("test-model", DIMS, "sha-test").unwrap()
}

pub fn small_config() -> IndexConfig {
    IndexConfig::builder()
        .max_concurrency(8)
        .exact_scan_max(8)
        .exact_scan_fraction(0.0)
        .compaction_min(16)
        .build()
        .unwrap()
}

pub fn emb(v: &[f32]) -> Embedding {
    Embedding::new(fingerprint().id(), v.to_vec()).unwrap()
}

/// The tenant of test documents that have no ACL to name one.
pub const DEFAULT_TENANT: &str = "acme";

/// A document whose chunk `i` has vector `vectors[i]`, of its ACL's tenant (or
/// [`DEFAULT_TENANT`]).
pub fn doc(id: &str, version: u64, acl: Option<Acl>, vectors: &[Vec<f32>]) -> DocumentUpdate {
    let tenant = acl
        .as_ref()
        .map_or_else(|| DEFAULT_TENANT.into(), |a| a.tenant.clone());
    doc_in(tenant.as_str(), id, version, acl, vectors)
}

/// The key of a test document of [`DEFAULT_TENANT`].
pub fn key(id: &str) -> DocKey {
    DocKey::new(DEFAULT_TENANT, id)
}

/// [`doc`] in a given tenant.
pub fn doc_in(
    tenant: &str,
    id: &str,
    version: u64,
    acl: Option<Acl>,
    vectors: &[Vec<f32>],
) -> DocumentUpdate {
    let doc_id = DocId::new(id);
    let key = DocKey::new(tenant, doc_id.clone());
    DocumentUpdate {
        tenant: key.tenant.clone(),
        doc_id: doc_id.clone(),
        version,
        acl,
        content_hash: None,
        metadata: Metadata::default()
            .with_title(format!("title {id}"))
            .with_attr("v", AttrValue::Int(version as i64)),
        chunks: vectors
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let text = format!("{id} v{version} chunk {i} {}", words(v).join(" "));
                EmbeddedChunk {
                    chunk: Chunk {
                        id: ChunkId::derive(&key, i as u32),
                        ordinal: i as u32,
                        span: Span::new(0, text.len()),
                        text,
                        context: None,
                    },
                    embedding: emb(v),
                }
            })
            .collect(),
    }
}

/// The words a chunk with vector `v` holds: `w{j}` for each positive component, so
/// lexical queries have a known set of matches.
pub fn words(v: &[f32]) -> Vec<String> {
    v.iter()
        .enumerate()
        .filter(|(_, x)| **x > 0.0)
        .map(|(j, _)| format!("w{j}"))
        .collect()
}

pub fn pair() -> (HnswIndex, FlatIndex) {
    (
        HnswIndex::new(fingerprint(), small_config()).unwrap(),
        FlatIndex::new(fingerprint()),
    )
}

/// Asserts that `got` is a correct exact answer given the oracle's answer `want`.
pub fn assert_same_ranking(got: &SearchResult, want: &SearchResult) {
    assert_eq!(got.visible, want.visible, "visible counts differ");
    assert_eq!(got.hits.len(), want.hits.len(), "hit counts differ");
    for (g, w) in got.hits.iter().zip(&want.hits) {
        assert!(
            (g.score - w.score).abs() < 1e-4,
            "scores differ: {} vs {}",
            g.score,
            w.score
        );
        if (g.score - w.score).abs() < 1e-6 && g.chunk_id != w.chunk_id {
            // A tie: both orders are right as long as the other side has it too.
            assert!(
                want.hits
                    .iter()
                    .any(|h| h.chunk_id == g.chunk_id && (h.score - g.score).abs() < 1e-4)
            );
        }
    }
}

/// Asserts every hit of `r` is visible to `filter` according to `oracle`.
pub fn assert_all_visible(r: &SearchResult, filter: &AccessFilter, oracle: &FlatIndex) {
    for h in &r.hits {
        let info = oracle
            .document(&DocKey::new(filter.tenant().clone(), h.doc_id.clone()))
            .unwrap()
            .unwrap_or_else(|| panic!("hit of a document the oracle does not hold: {}", h.doc_id));
        assert!(
            filter.permits(info.acl.as_ref()),
            "leak: {} is not visible",
            h.doc_id
        );
        assert_eq!(info.version, h.doc_version, "stale version in a hit");
    }
}
