//! Search: this index against bare usearch on the same graph, unfiltered, at 30%
//! selectivity (where this index post-filters an unfiltered walk, beside its own walk
//! with the filter checked at each node and usearch's filtered walk) and at 1% (where
//! this index scans exactly and usearch walks the graph filtered).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use rag_benches::corpus::Corpus;
use rag_core::Embedding;

/// Whether bit `k` of `bits` is set.
fn has_bit(bits: &[u64], k: u64) -> bool {
    bits.get(k as usize / 64)
        .is_some_and(|w| w & (1 << (k % 64)) != 0)
}

fn search(c: &mut Criterion) {
    let corpus = common::corpus();
    let index = common::build(&corpus);
    let bare = common::bare_same_graph(&index);
    let dir = tempfile::tempdir().unwrap();
    index.snapshot(dir.path()).unwrap();
    let restored = rag_index::HnswIndex::restore(dir.path(), None, common::config()).unwrap();
    let node_filter = rag_index::HnswIndex::restore(
        dir.path(),
        None,
        rag_index::IndexConfig {
            post_filter_oversample: 0.0,
            ..common::config()
        },
    )
    .unwrap();
    let model = corpus.fingerprint().id();
    let queries: Vec<Embedding> = corpus
        .queries
        .iter()
        .map(|q| Embedding::new(model, q.clone()).unwrap())
        .collect();
    let everyone = Corpus::filter("all");
    let thirty_pct = Corpus::filter("s30");
    let one_pct = Corpus::filter("s1");
    let bitmap = |sel: f64| -> Vec<u64> {
        let mut bits = vec![0u64; common::N / 64 + 1];
        for i in (0..common::N).filter(|&i| corpus.visible(i, sel)) {
            bits[i / 64] |= 1 << (i % 64);
        }
        bits
    };
    let (allowed, allowed_30) = (bitmap(0.01), bitmap(0.3));
    let is_allowed = |k: u64| has_bit(&allowed, k);
    let is_allowed_30 = |k: u64| has_bit(&allowed_30, k);

    let mut g = c.benchmark_group("search_unfiltered");
    let mut i = 0;
    g.bench_function("ours", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            index.search_filtered(&queries[i], 10, &everyone).unwrap()
        })
    });
    g.bench_function("ours_restored", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            restored
                .search_filtered(&queries[i], 10, &everyone)
                .unwrap()
        })
    });
    g.bench_function("bare_usearch_same_graph", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            bare.search(&corpus.queries[i], 10).unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("search_filtered_30pct");
    g.bench_function("ours_post_filtered", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            index.search_filtered(&queries[i], 10, &thirty_pct).unwrap()
        })
    });
    g.bench_function("ours_node_filter_walk", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            node_filter
                .search_filtered(&queries[i], 10, &thirty_pct)
                .unwrap()
        })
    });
    g.bench_function("usearch_filtered_search", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            bare.filtered_search(&corpus.queries[i], 10, is_allowed_30)
                .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("search_filtered_1pct");
    g.bench_function("ours", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            index.search_filtered(&queries[i], 10, &one_pct).unwrap()
        })
    });
    g.bench_function("usearch_filtered_search", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            bare.filtered_search(&corpus.queries[i], 10, is_allowed)
                .unwrap()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = search
}
criterion_main!(benches);
