//! The facade carries the caller's tracing span onto its worker threads: events the
//! pipeline logs there appear inside the host's request span.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use rag::pipeline::testing::{HashEmbedder, ScriptedGenerator};
use rag::prelude::*;
use tracing::Instrument;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn pipeline_events_on_the_pool_sit_inside_the_callers_span() {
    let captured = Captured::default();
    let writer = captured.clone();
    // Global: the workers are other threads than this one.
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_thread_names(true)
            .finish(),
    )
    .unwrap();
    let rag = Rag::builder()
        .embedder(Arc::new(HashEmbedder::new(64).unwrap()))
        .generator(ScriptedGenerator::new(4).shared())
        .workers(1)
        .in_memory()
        .unwrap();
    let ann = rag.register(Principal::new("acme", "ann").with_group("staff"));
    let doc = Document::new("acme", "faq", "Expenses are approved by the team lead.");
    rag.ingest(vec![doc.readable_by_group("staff")])
        .await
        .unwrap();
    let span = tracing::info_span!("host_request", request_id = 4242);
    rag.stream(&ann, "Who approves expenses?")
        .instrument(span.clone())
        .await
        .unwrap()
        .answer()
        .instrument(span)
        .await
        .unwrap();
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let resolved: Vec<&str> = log.lines().filter(|l| l.contains("resolved")).collect();
    assert!(!resolved.is_empty(), "the pipeline logged nothing: {log}");
    assert!(
        resolved.iter().all(|l| l.contains("rag-worker-0")),
        "the query did not run on the pool: {resolved:?}"
    );
    assert!(
        resolved
            .iter()
            .all(|l| l.contains("host_request{request_id=4242}")),
        "an event on the worker lost the caller's span: {resolved:?}"
    );
}
