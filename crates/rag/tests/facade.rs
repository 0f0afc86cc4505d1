//! The async facade over test doubles: event order, cancellation by dropping the
//! stream, no caching of a cancelled answer, error kinds, a bounded pool that never
//! blocks the runtime, and the durable store opened from the embedder's fingerprint.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rag::pipeline::testing::{HashEmbedder, ScriptedGenerator};
use rag::prelude::*;

fn words(n: usize, each_ms: u64) -> Arc<ScriptedGenerator> {
    ScriptedGenerator::new(n)
        .delays(Duration::ZERO, Duration::from_millis(each_ms))
        .shared()
}

async fn rag_with(g: Arc<ScriptedGenerator>) -> (Rag, Principal) {
    let rag = Rag::builder()
        .embedder(Arc::new(HashEmbedder::new(64).unwrap()))
        .generator(g)
        .workers(2)
        .in_memory()
        .unwrap();
    let ann = rag.register(Principal::new("acme", "ann").with_group("staff"));
    let doc = Document::new("acme", "faq", "Expenses are approved by the team lead.");
    rag.ingest(vec![doc.readable_by_group("staff")])
        .await
        .unwrap();
    (rag, ann)
}

#[tokio::test]
async fn events_arrive_sources_then_tokens_then_the_answer_they_add_up_to() {
    let (rag, ann) = rag_with(words(10, 0)).await;
    let mut stream = rag.stream(&ann, "Who approves expenses?").await.unwrap();
    let mut events = Vec::new();
    while let Some(e) = stream.next().await {
        events.push(e.unwrap());
    }
    let StreamEvent::Sources(sources) = &events[0] else {
        panic!("sources first: {events:?}")
    };
    let StreamEvent::Done(answer) = events.last().unwrap() else {
        panic!("the answer last: {events:?}")
    };
    let tokens: String = events[1..events.len() - 1]
        .iter()
        .map(|e| match e {
            StreamEvent::Token(t) => t.as_str(),
            other => panic!("only tokens between: {other:?}"),
        })
        .collect();
    assert_eq!(tokens, answer.answer.text);
    assert_eq!(tokens, "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9");
    assert_eq!(sources, &answer.answer.provenance);
    // "w0 … w9" is in no passage, so it claims no source; what the prompt held
    // is its provenance.
    assert!(answer.answer.citations.is_empty());
    assert_eq!(answer.answer.provenance[0].doc_id.as_str(), "faq");
    assert!(answer.timings.iter().any(|t| t.stage == "generate"));
}

#[tokio::test]
async fn dropping_the_stream_after_3_tokens_stops_generation_within_one_token() {
    let g = words(150, 5);
    let (rag, ann) = rag_with(g.clone()).await;
    let mut stream = rag.stream(&ann, "Who approves expenses?").await.unwrap();
    let mut tokens = 0;
    while tokens < 3 {
        if let StreamEvent::Token(_) = stream.next().await.unwrap().unwrap() {
            tokens += 1;
        }
    }
    let at_drop = g.produced();
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    while g.running() {
        assert!(Instant::now() < deadline, "generation never stopped");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let made = g.produced();
    eprintln!("pieces made: {at_drop} when the stream was dropped, {made} in all");
    // One piece may sit in the channel and one be in the making when the reader goes.
    assert!(
        made <= at_drop + 1,
        "{made} pieces made; {at_drop} when the stream was dropped"
    );
    assert!(made <= 3 + 2, "{made} pieces for a reader that read 3");
    // The cancelled answer was not cached: the next one is generated afresh.
    let a = rag.query(&ann, "Who approves expenses?").await.unwrap();
    assert!(!a.from_cache);
    assert_eq!(a.kind, AnswerKind::Generated);
    assert!(
        rag.query(&ann, "Who approves expenses?")
            .await
            .unwrap()
            .from_cache
    );
}

#[tokio::test]
async fn failures_map_to_the_small_set_of_kinds() {
    let (rag, ann) = rag_with(words(3, 0)).await;
    let empty = rag
        .stream(&ann, "   ")
        .await
        .unwrap()
        .answer()
        .await
        .unwrap_err();
    assert_eq!(empty.kind(), ErrorKind::InvalidInput);
    assert_eq!(empty.kind().http_status(), 400);
    let stranger = Principal::new("acme", "mallory").with_group("staff");
    let denied = rag
        .query(&stranger, "Who approves expenses?")
        .await
        .unwrap_err();
    assert_eq!(denied.kind(), ErrorKind::Denied);
    let long = "why ".repeat(10_000);
    let too_long = rag.query(&ann, &long).await.unwrap_err();
    assert_eq!(too_long.kind(), ErrorKind::InvalidInput);
}

#[tokio::test(flavor = "current_thread")]
async fn concurrent_streams_on_a_small_pool_do_not_block_the_runtime() {
    let (rag, ann) = rag_with(words(20, 2)).await;
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                ticks.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (rag, ann) = (rag.clone(), ann.clone());
        tasks.push(tokio::spawn(async move {
            rag.stream(&ann, "Who approves expenses?")
                .await
                .unwrap()
                .answer()
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        let a = t.await.unwrap();
        assert!(!a.answer.text.is_empty());
    }
    ticker.abort();
    // Eight answers of 20 × 2 ms on two workers take ≥ 80 ms; a blocked
    // single-threaded runtime would not have ticked meanwhile.
    assert!(ticks.load(Ordering::SeqCst) >= 5, "the runtime was blocked");
}

#[tokio::test]
async fn the_store_is_opened_for_the_embedders_model_and_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let build = || {
        Rag::builder()
            .embedder(Arc::new(HashEmbedder::new(64).unwrap()))
            .generator(words(3, 0))
            .open(dir.path())
            .unwrap()
    };
    let rag = build();
    let ann = rag.register(Principal::new("acme", "ann").with_group("staff"));
    let doc = Document::new("acme", "faq", "Expenses are approved by the team lead.");
    rag.ingest(vec![doc.readable_by_group("staff")])
        .await
        .unwrap();
    drop(rag);
    let rag = build();
    let recovered = rag.recovery().unwrap();
    assert!(
        recovered.records_replayed >= 1 || recovered.checkpoint.is_some(),
        "{recovered:?}"
    );
    let ann = rag.register(ann);
    let info = rag.document(&ann, "faq".into()).await.unwrap().unwrap();
    assert_eq!(info.version, 1);
    drop(rag);
    // Another embedding model cannot open the store.
    let other = Rag::builder()
        .embedder(Arc::new(HashEmbedder::new(32).unwrap()))
        .open(dir.path());
    assert!(other.is_err());
}
