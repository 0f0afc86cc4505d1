//! Upserts and deletes under concurrent readers: a reader sees a document's old
//! chunks or its new ones, never a mix and never neither.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rag_core::{AccessFilter, Acl, Principal, SearchRequest, VectorIndex, VectorIndexRead};
use rag_index::{HnswIndex, IndexConfig, SearchMode};

use crate::common::*;

/// Version `v` of document "hot" has `1 + v % 4` chunks.
fn hot(v: u64) -> rag_core::DocumentUpdate {
    let n = 1 + (v % 4) as usize;
    let vectors: Vec<Vec<f32>> = (0..n).map(|i| vec![1.0 + i as f32 * 0.01; DIMS]).collect();
    doc(
        "hot",
        v,
        Some(Acl::new("acme").allow_group("eng")),
        &vectors,
    )
}

#[test]
fn readers_never_see_a_mix_or_nothing() {
    // Compactions run (and repack the graph) while the readers search.
    let config = IndexConfig::builder()
        .max_concurrency(4)
        .compaction_min(32)
        .repack_min(1)
        .build()
        .unwrap();
    let index = HnswIndex::new(fingerprint(), config).unwrap();
    let acl = Some(Acl::new("acme").allow_group("eng"));
    let filler: Vec<_> = (0..200)
        .map(|i| {
            doc(
                &format!("f{i}"),
                1,
                acl.clone(),
                &[vec![-1.0 + (i as f32) * 1e-3; DIMS]],
            )
        })
        .collect();
    index.upsert(filler).unwrap();
    index.upsert(vec![hot(0)]).unwrap();
    let filter = AccessFilter::for_principal(&Principal::new("acme", "ann").with_group("eng"));
    let q = emb(&[1.0; DIMS]);
    let done = AtomicBool::new(false);
    let checks = AtomicUsize::new(0);
    std::thread::scope(|s| {
        // More readers than usearch thread slots: extra callers must wait, not fail.
        for r in 0..8 {
            let (index, filter, q, done, checks) = (&index, &filter, &q, &done, &checks);
            s.spawn(move || {
                while !done.load(Ordering::Acquire) {
                    // Dense (two strategies), lexical and hybrid readers; the word
                    // "hot" is in the hot document's chunks only.
                    let res = match r % 4 {
                        0 => index.search_with(q, 50, filter, SearchMode::Exact),
                        1 => index.search_with(q, 50, filter, SearchMode::Auto),
                        2 => index.search_request(&SearchRequest::lexical("hot", 50), filter),
                        _ => index.search_request(&SearchRequest::hybrid(q, "hot", 50), filter),
                    }
                    .unwrap();
                    let hot: Vec<_> = res
                        .hits
                        .iter()
                        .filter(|h| h.doc_id.as_str() == "hot")
                        .collect();
                    assert!(!hot.is_empty(), "document vanished during an upsert");
                    let v = hot[0].doc_version;
                    assert!(hot.iter().all(|h| h.doc_version == v), "mixed versions");
                    assert_eq!(hot.len() as u64, 1 + v % 4, "partial version {v}");
                    checks.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let index = &index;
        let done = &done;
        s.spawn(move || {
            for v in 1..=300 {
                index.upsert(vec![hot(v)]).unwrap();
                // Churn other documents too, so compaction runs under the readers.
                let id = format!("f{}", v % 200);
                index.delete(&key(&id)).unwrap();
                index
                    .upsert(vec![doc(
                        &id,
                        v,
                        Some(Acl::new("acme").allow_group("eng")),
                        &[vec![-1.0; DIMS]],
                    )])
                    .unwrap();
            }
            done.store(true, Ordering::Release);
        });
    });
    assert!(checks.load(Ordering::Relaxed) > 100, "readers barely ran");
    let r = index.search(&q, 50, &filter).unwrap();
    assert!(
        r.hits
            .iter()
            .any(|h| h.doc_id.as_str() == "hot" && h.doc_version == 300)
    );
}

#[test]
fn concurrent_writers_keep_every_document() {
    let index = HnswIndex::new(fingerprint(), small_config()).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let index = &index;
            s.spawn(move || {
                for i in 0..50 {
                    let acl = Some(Acl::new("acme").allow_user(format!("u{t}")));
                    let v = vec![(t * 50 + i) as f32 + 1.0; DIMS];
                    index
                        .upsert(vec![doc(&format!("t{t}-{i}"), 1, acl, &[v])])
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(index.stats().documents, 200);
    for t in 0..4 {
        let f = AccessFilter::for_principal(&Principal::new("acme", format!("u{t}")));
        let r = index.search(&emb(&[1.0; DIMS]), 100, &f).unwrap();
        assert_eq!(r.visible, 50);
        assert!(
            r.hits
                .iter()
                .all(|h| h.doc_id.as_str().starts_with(&format!("t{t}-")))
        );
    }
}
