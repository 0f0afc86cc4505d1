//! Probes and metrics.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::service::Service;

/// `GET /livez`: the process serves HTTP.
pub(crate) async fn livez() -> impl IntoResponse {
    Json(json!({"status": "alive"}))
}

/// `GET /readyz`: 200 once the store is recovered, the models loaded and the
/// generator healthy; 503 with the reasons before that and while stopping.
pub(crate) async fn readyz(State(service): State<Arc<Service>>) -> impl IntoResponse {
    let s = Arc::clone(&service);
    let reasons = tokio::task::spawn_blocking(move || s.not_ready())
        .await
        .unwrap_or_else(|_| vec!["the readiness probe failed".into()]);
    if reasons.is_empty() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "reasons": reasons})),
        )
    }
}

/// `GET /metrics`: Prometheus text.
pub(crate) async fn metrics(State(service): State<Arc<Service>>) -> impl IntoResponse {
    if let Some(q) = service.queue() {
        metrics::gauge!(crate::metrics::QUEUE_DEPTH).set(q.depth() as f64);
        metrics::gauge!(crate::metrics::DEAD_LETTERS).set(q.dead_letters().len() as f64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        service.metrics.render(),
    )
}
