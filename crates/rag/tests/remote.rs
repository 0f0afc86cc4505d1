//! Remote generation on the real path: SmolLM2 (ONNX Runtime) served by two
//! OpenAI-compatible servers on loopback, and a facade generating through a
//! balancer over them with the local path's prompt and citation rules. Greedy
//! decoding makes the remote answer the local one, token for token.
//! Skips without the assets unless `RAG_SDK_REQUIRE_ASSETS=1` (CI).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use rag::infer::{EmbedderConfig, GeneratorConfig, OnnxEmbedder, OnnxGenerator, assets};
use rag::prelude::*;
use rag::{ChatMessage, Embedder, GenerationRequest, Generator, SamplingParams, TokenControl};
use rag_remote::server::{ServerConfig, spawn};
use rag_remote::{Backend, Balancer, BalancerConfig, OpenAiConfig, OpenAiGenerator, Strategy};

fn assets_present() -> bool {
    let present =
        assets::runtime_library().exists() && assets::minilm_dir().join("model.onnx").exists();
    if !present {
        assert_ne!(
            std::env::var("RAG_SDK_REQUIRE_ASSETS").as_deref(),
            Ok("1"),
            "assets missing under {}",
            assets::cache_dir().display()
        );
        eprintln!("SKIP: assets missing; run `python3 tools/assets.py fetch`");
    }
    present
}

async fn facade(embedder: Arc<dyn Embedder>, generator: Arc<dyn Generator>) -> (Rag, Principal) {
    let rag = Rag::builder()
        .embedder(embedder)
        .generator(generator)
        .in_memory()
        .unwrap();
    let lee = rag.register(Principal::new("acme", "lee").with_group("finance"));
    rag.ingest(vec![
        Document::new(
            "acme",
            "acme/launch",
            "# Launch plan\n\nThe launch code word for the spring release is BLUEBIRD.",
        )
        .readable_by_group("finance"),
        Document::new(
            "acme",
            "acme/salaries",
            "# Salaries\n\nSalary bands are reviewed by human resources every March.",
        )
        .readable_by_group("hr"),
    ])
    .await
    .unwrap();
    (rag, lee)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_facade_generating_through_balanced_remote_servers_answers_as_the_local_one() {
    if !assets_present() {
        return;
    }
    rag::infer::load_runtime(&assets::runtime_library()).unwrap();
    let embedder: Arc<dyn Embedder> =
        Arc::new(OnnxEmbedder::new(EmbedderConfig::pinned_minilm()).unwrap());
    let local: Arc<dyn Generator> =
        Arc::new(OnnxGenerator::new(GeneratorConfig::smollm2("q4")).unwrap());
    let servers: Vec<_> = (0..2)
        .map(|_| {
            spawn(
                "127.0.0.1:0".parse().unwrap(),
                Arc::clone(&local),
                ServerConfig::default(),
            )
            .unwrap()
        })
        .collect();
    let backends = servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut c = OpenAiConfig::new(s.base_url(), local.name());
            c.context_window = local.context_window();
            c.stream = i == 0;
            Backend::openai(format!("smollm2-{i}"), OpenAiGenerator::new(c).unwrap())
        })
        .collect();
    let config = BalancerConfig {
        strategy: Strategy::RoundRobin,
        ..BalancerConfig::default()
    };
    let balancer = Arc::new(Balancer::new("smollm2-remote", backends, config).unwrap());
    let q = "What is the launch code word?";

    let (local_rag, lee) = facade(embedder.clone(), local.clone()).await;
    let expected = local_rag.query(&lee, q).await.unwrap();
    assert!(
        expected.answer.text.contains("BLUEBIRD"),
        "{}",
        expected.answer.text
    );
    let (remote_rag, lee) = facade(embedder, balancer.clone()).await;
    // Round robin: the first answer is streamed (server 0), the second is not.
    for _ in 0..2 {
        let options = QueryOptions {
            bypass_cache: true,
            ..QueryOptions::default()
        };
        let stream = remote_rag.stream_with(&lee, q, options).await.unwrap();
        let mut pieces = String::new();
        let a = stream.tokens(|t| pieces.push_str(t)).await.unwrap();
        assert_eq!(a.answer.text, expected.answer.text);
        assert_eq!(pieces, a.answer.text);
        assert_eq!(a.answer.citations, expected.answer.citations);
        assert!(
            a.answer
                .citations
                .iter()
                .all(|c| c.doc_id.as_str() == "acme/launch")
        );
        assert!(a.degradations.is_empty(), "{:?}", a.degradations);
    }
    let requests: Vec<u64> = balancer.status().iter().map(|s| s.requests).collect();
    assert_eq!(requests, [1, 1]);

    // Pieces over HTTP on the real model concatenate to the text, which is the
    // in-process text.
    let request = GenerationRequest::new(
        vec![ChatMessage {
            role: rag::Role::User,
            content: "Name three colours.".into(),
        }],
        SamplingParams {
            max_new_tokens: 24,
            ..Default::default()
        },
    );
    let b = balancer.clone();
    let r = request.clone();
    let (out, pieces) = tokio::task::spawn_blocking(move || {
        let mut pieces = String::new();
        let out = b
            .generate(&r, &mut |p| {
                pieces.push_str(p);
                TokenControl::Continue
            })
            .unwrap();
        (out, pieces)
    })
    .await
    .unwrap();
    assert!(!out.text.trim().is_empty());
    assert_eq!(pieces, out.text);
    let l = local.clone();
    let local_out = tokio::task::spawn_blocking(move || {
        l.generate(&request, &mut |_| TokenControl::Continue)
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.text, local_out.text);
}
