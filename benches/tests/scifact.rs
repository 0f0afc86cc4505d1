//! The lexical leg on the real SciFact collection, end to end through the public
//! API: BM25 must land near the literature's figure. Skips, saying so, when the
//! collection is not on this machine.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use rag_benches::beir;
use rag_benches::eval::{chunk_corpus, insert, run_mode};
use rag_core::{Embedder, Fusion, RetrievalMode};
use rag_index::{HnswIndex, IndexConfig};
use rag_pipeline::testing::HashEmbedder;

fn scifact() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/scifact");
    if dir.join("corpus.jsonl").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: SciFact not found at {} (the BEIR collection from ../shared/datasets)",
            dir.display()
        );
        None
    }
}

#[test]
fn collection_loads_with_its_judgments() {
    let Some(dir) = scifact() else { return };
    let c = beir::load(&dir, "test").unwrap();
    assert_eq!(c.corpus.len(), 5183);
    assert_eq!(c.queries.len(), 300);
    assert!(c.qrels.values().all(|j| j.values().any(|g| *g > 0)));
}

#[test]
fn bm25_on_scifact_is_near_the_reference() {
    let Some(dir) = scifact() else { return };
    let c = beir::load(&dir, "test").unwrap();
    // Dense vectors are stand-ins here: only the lexical leg is scored.
    let embedder = HashEmbedder::new(16).unwrap();
    let docs = chunk_corpus(&c, None).unwrap();
    let texts: Vec<&str> = docs
        .iter()
        .flat_map(|(_, cs)| cs.iter().map(|c| c.text.as_str()))
        .collect();
    let embeddings = embedder.embed(&texts).unwrap();
    drop(texts);
    let index = HnswIndex::new(embedder.fingerprint().clone(), IndexConfig::default()).unwrap();
    insert(&index, docs, embeddings).unwrap();
    let r = run_mode(
        &c,
        &index,
        None,
        RetrievalMode::Lexical,
        Fusion::default(),
        100,
    )
    .unwrap();
    eprintln!(
        "SciFact BM25: nDCG@10 {:.4}, Recall@100 {:.4}",
        r.ndcg_10, r.recall_100
    );
    // BEIR's BM25 reference is 0.665; a broken analyser or scorer lands far below.
    assert!((r.ndcg_10 - 0.665).abs() < 0.03, "nDCG@10 {}", r.ndcg_10);
    assert!(r.recall_100 > 0.85, "Recall@100 {}", r.recall_100);
}
