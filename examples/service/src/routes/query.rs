//! `POST /v1/query`: an answer as JSON, or with `Accept: text/event-stream` as
//! server-sent events: `sources`, then `token`s, then `done` (the whole answer) or
//! `error`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use rag::pipeline::QueryOptions;
use rag::{AnswerStream, Operation, StreamEvent};
use serde::Deserialize;
use serde_json::json;

use super::wire;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::service::{Core, Service};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryRequest {
    question: String,
    /// The tenant asked; only the caller's own is allowed.
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    top_k: Option<usize>,
    #[serde(default)]
    bypass_cache: bool,
}

pub(crate) fn core(service: &Service) -> Result<&Core, ApiError> {
    service
        .core()
        .ok_or_else(|| ApiError::unavailable("the service is starting"))
}

/// Checks a question: not blank, not over the limit.
pub(crate) fn check_question(service: &Service, q: &str) -> Result<(), ApiError> {
    if q.trim().is_empty() {
        return Err(ApiError::bad_request("the question is empty"));
    }
    let max = service.config.limits.max_question_bytes;
    if q.len() > max {
        return Err(ApiError::bad_request(format!(
            "the question is {} bytes; at most {max} are accepted",
            q.len()
        )));
    }
    Ok(())
}

pub(crate) fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

pub(crate) async fn query(
    State(service): State<Arc<Service>>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Json<QueryRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    caller.allow(req.tenant.as_deref(), Operation::Query)?;
    check_question(&service, &req.question)?;
    let core = core(&service)?;
    let options = QueryOptions {
        top_k: req.top_k.map(|k| k.clamp(1, 50)),
        bypass_cache: req.bypass_cache,
        ..QueryOptions::default()
    };
    let principal = &caller.0.principal;
    if !wants_stream(&headers) {
        let answer = core
            .rag
            .query_with(principal, &req.question, options)
            .await?;
        return Ok(Json(wire::answer(&answer)).into_response());
    }
    let stream = core
        .rag
        .stream_with(principal, &req.question, options)
        .await?;
    let events = Guarded::new(stream).map(|event| {
        let e = match event {
            Ok(StreamEvent::Sources(s)) => Event::default()
                .event("sources")
                .data(wire::citations(&s).to_string()),
            Ok(StreamEvent::Token(t)) => Event::default()
                .event("token")
                .data(json!({"text": t}).to_string()),
            Ok(StreamEvent::Done(a)) => Event::default()
                .event("done")
                .data(wire::answer(&a).to_string()),
            Err(e) => {
                let e = ApiError::from(e);
                Event::default()
                    .event("error")
                    .data(json!({"error": {"code": e.code, "message": e.message}}).to_string())
            }
        };
        Ok::<_, Infallible>(e)
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(service.config.limits.keep_alive()))
        .into_response())
}

/// An answer stream that counts itself cancelled when dropped before its end
/// (the client went away; dropping the stream stops generation at the next token).
pub(crate) struct Guarded {
    inner: AnswerStream,
    finished: bool,
}

impl Guarded {
    pub(crate) fn new(inner: AnswerStream) -> Self {
        Self {
            inner,
            finished: false,
        }
    }
}

impl Stream for Guarded {
    type Item = rag::Result<StreamEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        match &polled {
            Poll::Ready(None)
            | Poll::Ready(Some(Ok(StreamEvent::Done(_))))
            | Poll::Ready(Some(Err(_))) => {
                self.finished = true;
            }
            _ => {}
        }
        polled
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if !self.finished {
            metrics::counter!(crate::metrics::STREAMS_CANCELLED).increment(1);
            tracing::info!("client went away mid-stream; generation stops");
        }
    }
}
