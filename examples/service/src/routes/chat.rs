//! `POST /v1/chat/completions`: OpenAI-compatible, so OpenAI clients (and other
//! services' generator balancers) can use this service. The last user message is
//! the question, answered from what the caller may read; the answer's citations
//! ride along as an extra `citations` member (on the final chunk when streaming,
//! with the retrieved `sources` on the first).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, stream};
use rag::Operation;
use rag::StreamEvent;
use rag::pipeline::QueryOptions;
use serde::Deserialize;
use serde_json::{Value, json};

use super::query::{Guarded, check_question, core};
use super::wire;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::service::Service;

/// The model name reported when the request names none.
const MODEL: &str = "rag";

#[derive(Deserialize)]
pub(crate) struct ChatRequest {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: bool,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Value,
}

/// The text of a message's content: a string, or an array of text parts.
fn text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                if p.get("type").and_then(Value::as_str) == Some("text") {
                    out.push_str(p.get("text").and_then(Value::as_str)?);
                } else {
                    return None;
                }
            }
            Some(out)
        }
        _ => None,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) async fn completions(
    State(service): State<Arc<Service>>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Json<ChatRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    caller.allow(None, Operation::Query)?;
    let mut question = None;
    for m in &req.messages {
        if !matches!(
            m.role.as_str(),
            "system" | "developer" | "user" | "assistant" | "tool"
        ) {
            return Err(ApiError::bad_request(format!("unknown role {:?}", m.role)));
        }
        if m.role == "user" {
            question =
                Some(text(&m.content).ok_or_else(|| {
                    ApiError::bad_request("a user message's content is not text")
                })?);
        }
    }
    let question = question.ok_or_else(|| ApiError::bad_request("no user message"))?;
    check_question(&service, &question)?;
    let core = core(&service)?;
    let model = req
        .model
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| MODEL.into());
    let id = format!(
        "chatcmpl-{}",
        headers
            .get(crate::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("0")
    );
    let principal = &caller.0.principal;
    if !req.stream {
        let a = core
            .rag
            .query_with(principal, &question, QueryOptions::default())
            .await?;
        return Ok(Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": now(),
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": a.answer.text},
                "finish_reason": "stop",
            }],
            "citations": wire::citations(&a.answer.citations),
            "rag": {"kind": wire::kind(a.kind), "from_cache": a.from_cache},
        }))
        .into_response());
    }
    let answer = core
        .rag
        .stream_with(principal, &question, QueryOptions::default())
        .await?;
    let created = now();
    let chunk = move |delta: Value, finish: Option<&str>, extra: Option<(&str, Value)>| {
        let mut v = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        if let Some((k, x)) = extra {
            v[k] = x;
        }
        Event::default().data(v.to_string())
    };
    let events = Guarded::new(answer)
        .map(move |event| {
            let e = match event {
                Ok(StreamEvent::Sources(s)) => chunk(
                    json!({"role": "assistant", "content": ""}),
                    None,
                    Some(("sources", wire::citations(&s))),
                ),
                Ok(StreamEvent::Token(t)) => chunk(json!({"content": t}), None, None),
                Ok(StreamEvent::Done(a)) => chunk(
                    json!({}),
                    Some("stop"),
                    Some(("citations", wire::citations(&a.answer.citations))),
                ),
                Err(e) => {
                    let e = ApiError::from(e);
                    Event::default()
                        .data(json!({"error": {"code": e.code, "message": e.message}}).to_string())
                }
            };
            Ok::<_, Infallible>(e)
        })
        .chain(stream::once(async { Ok(Event::default().data("[DONE]")) }));
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(service.config.limits.keep_alive()))
        .into_response())
}
