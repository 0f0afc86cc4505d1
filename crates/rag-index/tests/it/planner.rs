//! The planner's choices, the graph path's recall, and compaction.

use rag_core::{AccessFilter, Acl, Principal, SearchStrategy, VectorIndex, VectorIndexRead};
use rag_index::{HnswIndex, IndexConfig, SearchMode};
use rag_pipeline::testing::FlatIndex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::*;

fn random_unit(rng: &mut StdRng) -> Vec<f32> {
    (0..DIMS).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// 2,000 one-chunk documents; one in `every` is readable by group "rare".
fn corpus(every: usize) -> (HnswIndex, FlatIndex) {
    corpus_with(every, 0)
}

fn corpus_with(every: usize, repack_min: usize) -> (HnswIndex, FlatIndex) {
    let config = IndexConfig::builder()
        .max_concurrency(4)
        .exact_scan_max(64)
        .exact_scan_fraction(0.0)
        .repack_min(repack_min)
        .build()
        .unwrap();
    let index = HnswIndex::new(fingerprint(), config).unwrap();
    let oracle = FlatIndex::new(fingerprint());
    let mut rng = StdRng::seed_from_u64(7);
    let docs: Vec<_> = (0..2000)
        .map(|i| {
            let mut acl = Acl::new("acme").allow_group("all");
            if i % every == 0 {
                acl = acl.allow_group("rare");
            }
            doc(&format!("d{i}"), 1, Some(acl), &[random_unit(&mut rng)])
        })
        .collect();
    index.upsert(docs.clone()).unwrap();
    oracle.upsert(docs).unwrap();
    (index, oracle)
}

#[test]
fn planner_scans_selective_filters_and_walks_broad_ones() {
    let (index, _) = corpus(100);
    let q = emb(&[0.3; DIMS]);
    let rare = AccessFilter::for_principal(&Principal::new("acme", "u").with_group("rare"));
    let all = AccessFilter::for_principal(&Principal::new("acme", "u").with_group("all"));
    let none = AccessFilter::for_principal(&Principal::new("acme", "u"));
    let r = index.search(&q, 10, &rare).unwrap();
    assert_eq!(
        (r.strategy, r.exhaustive, r.visible),
        (SearchStrategy::ExactScan, true, 20)
    );
    let r = index.search(&q, 10, &all).unwrap();
    assert!(matches!(r.strategy, SearchStrategy::FilteredHnsw { .. }));
    assert!(!r.exhaustive);
    assert_eq!(r.hits.len(), 10);
    let r = index.search(&q, 10, &none).unwrap();
    assert_eq!((r.strategy, r.hits.len()), (SearchStrategy::Empty, 0));
}

#[test]
fn graph_walk_recall_on_broad_filters() {
    let (index, oracle) = corpus(3);
    let mut rng = StdRng::seed_from_u64(11);
    let filter = AccessFilter::for_principal(&Principal::new("acme", "u").with_group("rare"));
    let mut found = 0;
    for _ in 0..50 {
        let q = emb(&random_unit(&mut rng));
        let want = oracle.search(&q, 10, &filter).unwrap();
        let got = index
            .search_with(&q, 10, &filter, SearchMode::Hnsw)
            .unwrap();
        assert!(matches!(got.strategy, SearchStrategy::FilteredHnsw { .. }));
        found += got
            .hits
            .iter()
            .filter(|h| want.hits.iter().any(|w| w.chunk_id == h.chunk_id))
            .count();
    }
    let recall = found as f64 / 500.0;
    assert!(recall >= 0.95, "recall@10 {recall}");
}

#[test]
fn deletes_are_compacted_and_space_is_reclaimed() {
    let (index, oracle) = corpus(1);
    let before = index.memory();
    assert_eq!(before.graph_vectors, 2000);
    for i in (0..2000).filter(|i| i % 4 != 0) {
        let id = key(&format!("d{i}"));
        index.delete(&id).unwrap();
        oracle.delete(&id).unwrap();
    }
    let after = index.memory();
    assert!(index.stats().tombstones < 1024, "{:?}", index.stats());
    assert!(after.slots < before.slots / 2, "{before:?} -> {after:?}");
    assert!(after.vector_bytes <= before.vector_bytes);
    assert_eq!(after.graph_vectors, 500);
    let filter = AccessFilter::for_principal(&Principal::new("acme", "u").with_group("all"));
    let q = emb(&[0.5; DIMS]);
    let got = index
        .search_with(&q, 10, &filter, SearchMode::Exact)
        .unwrap();
    assert_same_ranking(&got, &oracle.search(&q, 10, &filter).unwrap());
}

#[test]
fn repacked_graph_keeps_recall_and_accepts_writes() {
    // repack_min 100: the 2,000-document upsert is repacked.
    let (index, oracle) = corpus_with(3, 100);
    let filter = AccessFilter::for_principal(&Principal::new("acme", "u").with_group("rare"));
    let mut rng = StdRng::seed_from_u64(13);
    let recall = |index: &HnswIndex, oracle: &FlatIndex, rng: &mut StdRng| {
        let mut found = 0;
        for _ in 0..30 {
            let q = emb(&random_unit(rng));
            let want = oracle.search(&q, 10, &filter).unwrap();
            let got = index
                .search_with(&q, 10, &filter, SearchMode::Hnsw)
                .unwrap();
            assert_all_visible(&got, &filter, oracle);
            found += got
                .hits
                .iter()
                .filter(|h| want.hits.iter().any(|w| w.chunk_id == h.chunk_id))
                .count();
        }
        found as f64 / 300.0
    };
    assert!(recall(&index, &oracle, &mut rng) >= 0.95);
    // Writes after the swap land in the new graph.
    let docs: Vec<_> = (2000..2600)
        .map(|i| {
            doc(
                &format!("d{i}"),
                1,
                Some(Acl::new("acme").allow_group("rare")),
                &[random_unit(&mut rng)],
            )
        })
        .collect();
    index.upsert(docs.clone()).unwrap();
    oracle.upsert(docs).unwrap();
    for i in (0..600).step_by(3) {
        let id = key(&format!("d{i}"));
        index.delete(&id).unwrap();
        oracle.delete(&id).unwrap();
    }
    assert_eq!(index.stats().chunks, oracle.stats().chunks);
    assert!(recall(&index, &oracle, &mut rng) >= 0.95);
}
