//! Bad input gets a typed error, and nothing accepted before is lost.

use rag_core::{
    AccessFilter, Acl, ChunkId, Embedding, Fusion, InvalidInput, ModelId, Principal, SearchRequest,
    VectorIndexRead,
};
use rag_index::{HnswIndex, IndexConfig, IndexError};

use crate::common::*;

fn seeded() -> HnswIndex {
    let index = HnswIndex::new(fingerprint(), small_config()).unwrap();
    let acl = Some(Acl::new("acme").allow_group("eng"));
    index
        .upsert_documents(vec![doc(
            "keep",
            1,
            acl,
            &[vec![1.0; DIMS], vec![0.5; DIMS]],
        )])
        .unwrap();
    index
}

fn eng() -> AccessFilter {
    AccessFilter::for_principal(&Principal::new("acme", "ann").with_group("eng"))
}

/// The seeded document is still there and found.
fn assert_intact(index: &HnswIndex) {
    let r = index.search(&emb(&[1.0; DIMS]), 10, &eng()).unwrap();
    assert_eq!(r.hits.len(), 2);
    assert!(
        r.hits
            .iter()
            .all(|h| h.doc_id.as_str() == "keep" && h.doc_version == 1)
    );
    assert_eq!(index.stats().documents, 1);
}

fn input_err(r: Result<impl std::fmt::Debug, IndexError>) -> InvalidInput {
    match r {
        Err(IndexError::Input(i)) => i,
        other => panic!("expected an input error, got {other:?}"),
    }
}

#[test]
fn wrong_dimension() {
    let index = seeded();
    let other = rag_core::ModelFingerprint::new("test-model", DIMS, "sha-test").unwrap();
    let short = Embedding::new(other.id(), vec![1.0; DIMS - 1]).unwrap();
    let mut u = doc(
        "new",
        1,
        Some(Acl::new("acme").allow_group("eng")),
        &[vec![1.0; DIMS]],
    );
    u.chunks[0].embedding = short.clone();
    assert!(matches!(
        input_err(index.upsert_documents(vec![u])),
        InvalidInput::DimensionMismatch { expected: DIMS, actual } if actual == DIMS - 1
    ));
    assert!(matches!(
        input_err(index.search_filtered(&short, 5, &eng())),
        InvalidInput::DimensionMismatch { .. }
    ));
    assert_intact(&index);
}

#[test]
fn non_finite_and_zero_vectors_cannot_be_built() {
    let m = fingerprint().id();
    let mut v = vec![1.0; DIMS];
    v[3] = f32::NAN;
    assert_eq!(
        Embedding::new(m, v).unwrap_err(),
        InvalidInput::NonFinite { position: 3 }
    );
    assert_eq!(
        Embedding::new(m, vec![f32::NEG_INFINITY; DIMS]).unwrap_err(),
        InvalidInput::NonFinite { position: 0 }
    );
    assert_eq!(
        Embedding::new(m, vec![0.0; DIMS]).unwrap_err(),
        InvalidInput::ZeroVector
    );
}

#[test]
fn model_mismatch_on_insert_and_query() {
    let index = seeded();
    let foreign = Embedding::new(ModelId(42), vec![1.0; DIMS]).unwrap();
    let mut u = doc(
        "new",
        1,
        Some(Acl::new("acme").allow_group("eng")),
        &[vec![1.0; DIMS]],
    );
    u.chunks[0].embedding = foreign.clone();
    assert!(matches!(
        input_err(index.upsert_documents(vec![u])),
        InvalidInput::ModelMismatch { .. }
    ));
    assert!(matches!(
        input_err(index.search_filtered(&foreign, 5, &eng())),
        InvalidInput::ModelMismatch { .. }
    ));
    assert_intact(&index);
}

#[test]
fn empty_text_and_empty_documents() {
    let index = seeded();
    let acl = Some(Acl::new("acme").allow_group("eng"));
    let mut u = doc("new", 1, acl.clone(), &[vec![1.0; DIMS]]);
    u.chunks[0].chunk.text = "  \n".into();
    assert_eq!(
        input_err(index.upsert_documents(vec![u])),
        InvalidInput::EmptyText { what: "chunk text" }
    );
    let mut u = doc("new", 1, acl.clone(), &[vec![1.0; DIMS]]);
    u.chunks.clear();
    assert!(matches!(
        input_err(index.upsert_documents(vec![u])),
        InvalidInput::NoChunks { .. }
    ));
    let u = doc("", 1, acl, &[vec![1.0; DIMS]]);
    assert_eq!(
        input_err(index.upsert_documents(vec![u])),
        InvalidInput::EmptyId { what: "document" }
    );
    assert_intact(&index);
}

#[test]
fn unknown_document() {
    let index = seeded();
    let err = index.delete_document(&key("nope")).unwrap_err();
    assert!(matches!(err, IndexError::UnknownDocument { .. }));
    let boundary: rag_core::Error = err.into();
    assert!(matches!(boundary, rag_core::Error::NotFound { .. }));
    assert_intact(&index);
}

#[test]
fn duplicate_chunk_ids() {
    let index = seeded();
    let acl = Some(Acl::new("acme").allow_group("eng"));
    // Within one document.
    let mut u = doc("new", 1, acl.clone(), &[vec![1.0; DIMS], vec![2.0; DIMS]]);
    u.chunks[1].chunk.id = u.chunks[0].chunk.id;
    assert!(matches!(
        input_err(index.upsert_documents(vec![u])),
        InvalidInput::DuplicateChunkId { .. }
    ));
    // Colliding with another stored document's chunk.
    let mut u = doc("new", 1, acl.clone(), &[vec![1.0; DIMS]]);
    u.chunks[0].chunk.id = ChunkId::derive(&key("keep"), 0);
    assert!(matches!(
        input_err(index.upsert_documents(vec![u])),
        InvalidInput::DuplicateChunkId { .. }
    ));
    // The same document twice in one batch.
    let a = doc("twice", 1, acl.clone(), &[vec![1.0; DIMS]]);
    let mut b = doc("twice", 2, acl, &[vec![1.0; DIMS]]);
    b.chunks[0].chunk.id = ChunkId(7);
    assert!(matches!(
        input_err(index.upsert_documents(vec![a, b])),
        InvalidInput::DuplicateDocument { .. }
    ));
    assert_intact(&index);
}

#[test]
fn bad_k_and_bad_config() {
    let index = seeded();
    assert!(matches!(
        input_err(index.search_filtered(&emb(&[1.0; DIMS]), 0, &eng())),
        InvalidInput::InvalidK { .. }
    ));
    assert!(matches!(
        input_err(index.search_filtered(&emb(&[1.0; DIMS]), 100_000, &eng())),
        InvalidInput::InvalidK { .. }
    ));
    assert!(IndexConfig::builder().connectivity(1).build().is_err());
    assert!(
        IndexConfig::builder()
            .exact_scan_fraction(2.0)
            .build()
            .is_err()
    );
    for oversample in [-1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            IndexConfig::builder()
                .post_filter_oversample(oversample)
                .build(),
            Err(InvalidInput::Config { .. })
        ));
    }
    assert_intact(&index);
}

#[test]
fn documents_without_acl_are_stored_but_visible_to_nobody() {
    let index = seeded();
    index
        .upsert_documents(vec![doc("secret", 1, None, &[vec![1.0; DIMS]])])
        .unwrap();
    assert_eq!(index.stats().documents, 2);
    for p in [
        Principal::new("acme", "ann").with_group("eng"),
        Principal::new("acme", "root").with_role("admin"),
    ] {
        let r = index
            .search(&emb(&[1.0; DIMS]), 10, &AccessFilter::for_principal(&p))
            .unwrap();
        assert!(r.hits.iter().all(|h| h.doc_id.as_str() != "secret"));
    }
}

#[test]
fn lexical_requests_without_text_or_with_lexical_off() {
    let index = seeded();
    let q = emb(&[1.0; DIMS]);
    let bare = SearchRequest {
        text: None,
        ..SearchRequest::lexical("x", 5)
    };
    assert!(matches!(
        input_err(index.search_request(&bare, &eng())),
        InvalidInput::Malformed { .. }
    ));
    let hybrid_without_vector = SearchRequest {
        embedding: None,
        ..SearchRequest::hybrid(&q, "w1", 5)
    };
    assert!(matches!(
        input_err(index.search_request(&hybrid_without_vector, &eng())),
        InvalidInput::Malformed { .. }
    ));
    for blank in ["", "  \n\t"] {
        assert!(matches!(
            input_err(index.search_request(&SearchRequest::lexical(blank, 5), &eng())),
            InvalidInput::EmptyText { .. }
        ));
    }
    let huge = "w1 ".repeat(1 << 20);
    assert!(matches!(
        input_err(index.search_request(&SearchRequest::lexical(&huge, 5), &eng())),
        InvalidInput::TooLarge { .. }
    ));
    assert!(matches!(
        input_err(index.search_request(&SearchRequest::lexical("w1", 0), &eng())),
        InvalidInput::InvalidK { .. }
    ));
    let bad_fusion = SearchRequest::hybrid(&q, "w1", 5).with_fusion(Fusion {
        rrf_k: -1.0,
        ..Fusion::default()
    });
    assert!(matches!(
        input_err(index.search_request(&bad_fusion, &eng())),
        InvalidInput::Malformed { .. }
    ));
    // Only stop words: nothing to match, not an error.
    let r = index
        .search_request(&SearchRequest::lexical("the of and", 5), &eng())
        .unwrap();
    assert!(r.hits.is_empty());
    assert_intact(&index);

    let off = HnswIndex::new(
        fingerprint(),
        IndexConfig::builder().lexical(false).build().unwrap(),
    )
    .unwrap();
    assert!(matches!(
        off.search_request(&SearchRequest::lexical("w1", 5), &eng()),
        Err(IndexError::LexicalDisabled)
    ));
    assert!(matches!(
        VectorIndexRead::retrieve(&off, &SearchRequest::lexical("w1", 5), &eng()),
        Err(rag_core::Error::Unsupported { .. })
    ));
    // Dense search still works without the lexical leg.
    assert!(off.retrieve(&SearchRequest::dense(&q, 5), &eng()).is_ok());
}
