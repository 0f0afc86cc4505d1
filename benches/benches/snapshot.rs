//! Snapshots of a 20,000-chunk index: write and restore.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use rag_index::HnswIndex;

fn snapshot(c: &mut Criterion) {
    let corpus = common::corpus();
    let index = common::build(&corpus);
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("snapshot_20k");
    g.bench_function("write", |b| b.iter(|| index.snapshot(dir.path()).unwrap()));
    g.bench_function("restore", |b| {
        b.iter(|| {
            HnswIndex::restore(dir.path(), Some(&corpus.fingerprint()), common::config()).unwrap()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(5));
    targets = snapshot
}
criterion_main!(benches);
