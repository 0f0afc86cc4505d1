//! Prometheus: one recorder per process with bucketed histograms, its upkeep on a
//! timer, and per-route request counters and durations.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};

/// Buckets of every histogram, in seconds: 1 ms to 60 s.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// HTTP requests by route and status.
pub const HTTP_REQUESTS: &str = "rag_http_requests_total";
/// HTTP request durations by route (to the response head; streams excluded).
pub const HTTP_DURATION: &str = "rag_http_request_duration_seconds";
/// Streams whose client went away before the answer was done.
pub const STREAMS_CANCELLED: &str = "rag_streams_cancelled_total";

/// Bearer tokens refused.
pub const AUTH_REFUSED: &str = "rag_auth_refused_total";
/// Webhooks refused.
pub const WEBHOOKS_REFUSED: &str = "rag_webhooks_refused_total";
/// The ingest queue's depth.
pub const QUEUE_DEPTH: &str = "rag_queue_depth";
/// Dead letters held.
pub const DEAD_LETTERS: &str = "rag_dead_letters";
/// Changes the watcher queued.
pub const WATCHER_CHANGES: &str = "rag_watcher_changes_total";
/// Rescans of watched directories.
pub const WATCHER_RESCANS: &str = "rag_watcher_rescans_total";
/// Watcher errors by reason.
pub const WATCHER_ERRORS: &str = "rag_watcher_errors_total";

static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Installs the process's recorder (once, even when called from several threads at
/// once; later calls return the same handle).
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let mut slot = HANDLE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(h) = &*slot {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(BUCKETS)?
        .install_recorder()?;
    metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests by route and status");
    metrics::describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "HTTP request durations by route"
    );
    metrics::describe_counter!(
        STREAMS_CANCELLED,
        "Streamed answers whose client went away before the end"
    );
    metrics::describe_counter!(AUTH_REFUSED, "Bearer tokens refused");
    metrics::describe_counter!(
        WEBHOOKS_REFUSED,
        "Webhooks refused (signature, age, replay)"
    );
    metrics::describe_gauge!(QUEUE_DEPTH, "Changes waiting in the ingest queue");
    metrics::describe_gauge!(DEAD_LETTERS, "Changes in the dead-letter store");
    metrics::describe_counter!(WATCHER_CHANGES, "Changes the file watcher queued");
    metrics::describe_counter!(WATCHER_RESCANS, "Full rescans of watched directories");
    metrics::describe_counter!(
        WATCHER_ERRORS,
        "File watcher errors by reason (overflow, error, watch, queue); each triggers a rescan"
    );
    rag::pipeline::observe::describe();
    *slot = Some(handle.clone());
    Ok(handle)
}

/// Runs the recorder's upkeep (histogram compaction) every `every`, for ever.
pub fn spawn_upkeep(handle: PrometheusHandle, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
}

/// Counts and times each request by its route template (never its path, which
/// may hold document ids).
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "route" => route).record(started.elapsed().as_secs_f64());
    response
}
