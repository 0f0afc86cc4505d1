//! Insertion: upserting 2,000 one-chunk documents into this index against adding the
//! same vectors to a bare usearch index with the same parameters.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use rag_benches::corpus::Corpus;
use rag_index::HnswIndex;
use usearch::Index;

fn add(c: &mut Criterion) {
    let corpus = Corpus::clustered(2_000, common::DIMS, 1, 9);
    let mut g = c.benchmark_group("add_2000");
    g.bench_function("ours_upsert", |b| {
        b.iter_batched(
            || {
                (
                    HnswIndex::new(corpus.fingerprint(), common::config()).unwrap(),
                    corpus.updates(0..corpus.len()),
                )
            },
            |(index, docs)| index.upsert_documents(docs).unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("bare_usearch_add", |b| {
        b.iter_batched(
            || {
                let bare = Index::new(&common::bare_options()).unwrap();
                bare.reserve_capacity_and_threads(corpus.len(), 8).unwrap();
                bare
            },
            |bare| {
                let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
                std::thread::scope(|s| {
                    for t in 0..threads {
                        let (bare, corpus) = (&bare, &corpus);
                        s.spawn(move || {
                            for i in (t..corpus.len()).step_by(threads) {
                                bare.add(i as u64, corpus.vector(i)).unwrap();
                            }
                        });
                    }
                });
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(5));
    targets = add
}
criterion_main!(benches);
