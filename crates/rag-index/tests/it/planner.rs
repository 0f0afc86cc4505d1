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
    corpus_of(every, config)
}

fn corpus_of(every: usize, config: IndexConfig) -> (HnswIndex, FlatIndex) {
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

/// Recall@10 against the oracle over 50 random queries, each answered by a strategy
/// that `expect` accepts.
fn recall_at_10(
    index: &HnswIndex,
    oracle: &FlatIndex,
    filter: &AccessFilter,
    mode: SearchMode,
    expect: impl Fn(SearchStrategy) -> bool,
) -> f64 {
    let mut rng = StdRng::seed_from_u64(11);
    let mut found = 0;
    let mut wanted = 0;
    for _ in 0..50 {
        let q = emb(&random_unit(&mut rng));
        let want = oracle.search(&q, 10, filter).unwrap();
        let got = index.search_with(&q, 10, filter, mode).unwrap();
        assert!(expect(got.strategy), "{:?}", got.strategy);
        assert_eq!(got.hits.len(), want.hits.len());
        wanted += want.hits.len();
        found += got
            .hits
            .iter()
            .filter(|h| want.hits.iter().any(|w| w.chunk_id == h.chunk_id))
            .count();
    }
    found as f64 / wanted as f64
}

fn node_filter_config() -> IndexConfig {
    IndexConfig::builder()
        .max_concurrency(4)
        .exact_scan_max(64)
        .exact_scan_fraction(0.0)
        .post_filter_oversample(0.0)
        .build()
        .unwrap()
}

#[test]
fn graph_walk_recall_on_broad_filters() {
    let rare = AccessFilter::for_principal(&Principal::new("acme", "u").with_group("rare"));
    let post = |s| matches!(s, SearchStrategy::PostFilteredHnsw { .. });
    let walk = |s| matches!(s, SearchStrategy::FilteredHnsw { .. });
    // A third and a tenth visible: the planner post-filters an unfiltered walk.
    for every in [3, 10] {
        let (index, oracle) = corpus(every);
        for mode in [SearchMode::Auto, SearchMode::Hnsw] {
            let recall = recall_at_10(&index, &oracle, &rare, mode, post);
            assert!(
                recall >= 0.95,
                "1/{every} visible, post-filtered: recall@10 {recall}"
            );
        }
        // With post-filtering off, the walk checks the filter at each node.
        let (index, oracle) = corpus_of(every, node_filter_config());
        let recall = recall_at_10(&index, &oracle, &rare, SearchMode::Auto, walk);
        assert!(
            recall >= 0.95,
            "1/{every} visible, node filter: recall@10 {recall}"
        );
    }
}

#[test]
fn a_post_filtered_walk_that_finds_too_few_widens_then_scans() {
    // 1% visible with almost no oversampling: the first beam meets about one visible
    // chunk, the widened one a few, so the search must end in an exact scan.
    let config = IndexConfig::builder()
        .max_concurrency(4)
        .exact_scan_max(0)
        .exact_scan_fraction(0.0)
        .post_filter_oversample(0.01)
        .build()
        .unwrap();
    let (index, oracle) = corpus_of(100, config);
    let rare = AccessFilter::for_principal(&Principal::new("acme", "u").with_group("rare"));
    let mut rng = StdRng::seed_from_u64(5);
    let mut scans = 0;
    for _ in 0..20 {
        let q = emb(&random_unit(&mut rng));
        let got = index.search_with(&q, 10, &rare, SearchMode::Auto).unwrap();
        assert_eq!(got.hits.len(), 10);
        if got.strategy == SearchStrategy::ExactScan {
            scans += 1;
            assert!(got.exhaustive);
            assert_same_ranking(&got, &oracle.search(&q, 10, &rare).unwrap());
        } else {
            assert!(matches!(
                got.strategy,
                SearchStrategy::PostFilteredHnsw { .. }
            ));
        }
    }
    assert!(scans > 0, "no post-filtered walk fell short");
    // A filter too narrow for any beam under the limit walks with the node filter.
    let config = IndexConfig::builder()
        .max_concurrency(4)
        .exact_scan_max(0)
        .exact_scan_fraction(0.0)
        .post_filter_max_beam(100)
        .build()
        .unwrap();
    let (index, _) = corpus_of(100, config);
    let q = emb(&random_unit(&mut rng));
    let got = index.search_with(&q, 10, &rare, SearchMode::Auto).unwrap();
    assert!(matches!(
        got.strategy,
        SearchStrategy::FilteredHnsw { .. } | SearchStrategy::ExactScan
    ));
    assert_eq!(got.hits.len(), 10);
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
