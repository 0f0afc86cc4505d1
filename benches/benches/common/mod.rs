//! Setup shared by the criterion benches.
#![allow(dead_code)]

use rag_benches::corpus::Corpus;
use rag_index::{HnswIndex, IndexConfig};
use usearch::{Index, IndexOptions};

pub const N: usize = 20_000;
pub const DIMS: usize = 384;

pub fn config() -> IndexConfig {
    IndexConfig::builder()
        .max_concurrency(8)
        .build()
        .unwrap_or_else(|e| panic!("config: {e}"))
}

pub fn corpus() -> Corpus {
    Corpus::clustered(N, DIMS, 64, 42)
}

pub fn build(corpus: &Corpus) -> HnswIndex {
    let index = HnswIndex::new(corpus.fingerprint(), config()).unwrap_or_else(|e| panic!("{e}"));
    index
        .upsert_documents(corpus.updates(0..corpus.len()))
        .unwrap_or_else(|e| panic!("{e}"));
    index
}

pub fn bare_options() -> IndexOptions {
    rag_benches::corpus::bare_usearch_options(DIMS, &config())
}

/// A bare usearch index holding `index`'s own graph, loaded from a snapshot.
pub fn bare_same_graph(index: &HnswIndex) -> Index {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let report = index.snapshot(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let graph = dir.path().join(
        &report
            .manifest
            .file("graph")
            .unwrap_or_else(|e| panic!("{e}"))
            .name,
    );
    let bare = Index::new(&bare_options()).unwrap_or_else(|e| panic!("{e}"));
    bare.load(graph.to_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    bare.reserve_capacity_and_threads(N, 8)
        .unwrap_or_else(|e| panic!("{e}"));
    bare
}
