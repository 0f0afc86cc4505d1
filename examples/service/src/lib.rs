//! # rag-service
//!
//! The example host service: axum over the SDK's public API ([`rag::Rag`], the
//! durable ingest queue, JWT, webhooks), held to the standard of a real one. A
//! team copies it and changes the routes; see `docs/SERVICE.md`.
//!
//! - `POST /v1/query` (JSON, or SSE with `Accept: text/event-stream`),
//!   `POST /v1/chat/completions` (OpenAI-compatible, streaming),
//! - `PUT`/`DELETE /v1/documents/{id}`, `POST /v1/documents` (a batch),
//!   `POST /v1/webhooks/documents` (HMAC-signed),
//! - `GET /v1/dead-letters`, `POST /v1/dead-letters/{id}/redrive`,
//! - `GET /metrics` (Prometheus), `/livez`, `/readyz`.
//!
//! Every request gets an `x-request-id` (kept if the client sent one), every error
//! is JSON with it, the API sheds load above its concurrency limit (503), bodies
//! over the limit are 413, and a full ingest queue is 429 with `Retry-After`.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
mod routes;
pub mod service;
pub mod watcher;

pub use config::Config;
pub use routes::router;
pub use service::{Models, Service, StartError};

/// Serves `service` on `listener` until `shutdown` resolves, then lets requests
/// in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: std::sync::Arc<Service>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(service))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The request-id header.
pub const REQUEST_ID: &str = "x-request-id";
