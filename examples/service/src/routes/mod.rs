//! The routes, and the layers every request passes through.

mod chat;
mod dead_letters;
mod documents;
mod health;
mod query;
mod webhooks;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request, StatusCode};
use axum::middleware;
use axum::routing::{get, post};
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::service::Service;

/// The service's router: the API behind a concurrency limit that sheds load
/// (503), probes and metrics beside it; request ids, JSON errors, a body limit and
/// a timeout on everything.
pub fn router(service: Arc<Service>) -> Router {
    let limits = service.config.limits.clone();
    let api = Router::new()
        .route("/v1/query", post(query::query))
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/documents", post(documents::batch))
        .route(
            "/v1/documents/{*id}",
            get(documents::get)
                .put(documents::put)
                .delete(documents::delete),
        )
        .route("/v1/webhooks/documents", post(webhooks::receive))
        .route("/v1/dead-letters", get(dead_letters::list))
        .route("/v1/dead-letters/{id}/redrive", post(dead_letters::redrive))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                    ApiError::unavailable("the service is at its concurrency limit")
                }))
                .load_shed()
                .concurrency_limit(limits.max_concurrent_requests),
        );
    let request_id = HeaderName::from_static(crate::REQUEST_ID);
    Router::new()
        .merge(api)
        .route("/metrics", get(health::metrics))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .layer(middleware::from_fn(crate::metrics::track))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(limits.request_timeout_s),
        ))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(middleware::from_fn(crate::error::json_errors))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id = req
                    .headers()
                    .get(crate::REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path())
            }),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(service)
}
