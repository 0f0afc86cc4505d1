//! An OpenAI-compatible server (feature `server`) over any [`Generator`]: a local
//! model served to other machines, the test double for remote generation, and the
//! generation endpoint of the example service.
//!
//! Routes: `POST /v1/chat/completions` (streamed over SSE when `"stream": true`),
//! `GET /v1/models`, `GET /health`. Requests over [`ServerConfig::max_prompt_bytes`]
//! get 413, a full server 503 with `Retry-After`, and a server not
//! [`ServerHandle::set_ready`] yet 503. A client that goes away cancels its
//! generation within one token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream;
use rag_core::{
    ChatMessage, FinishReason, Generation, GenerationRequest, Generator, Role, SamplingParams,
    TokenControl,
};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};

use crate::error::RemoteError;

/// Limits of the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The model id the server reports and accepts (any `model` is accepted when
    /// empty).
    pub model: String,
    /// The most bytes of message content one request may carry.
    pub max_prompt_bytes: usize,
    /// The most tokens one request may ask for.
    pub max_tokens: usize,
    /// Generations run at once; more get 503.
    pub max_concurrent: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            model: String::new(),
            max_prompt_bytes: 256 * 1024,
            max_tokens: 2048,
            max_concurrent: 4,
        }
    }
}

struct Shared {
    generator: Arc<dyn Generator>,
    config: ServerConfig,
    slots: Arc<Semaphore>,
    served: AtomicU64,
}

/// A running server; it shuts down when dropped.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    shared: Arc<SharedFlags>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct SharedFlags {
    ready: Arc<AtomicBool>,
}

#[derive(Deserialize)]
struct WireMessage {
    role: String,
    content: String,
}

#[derive(Deserialize)]
struct WireRequest {
    #[serde(default)]
    model: String,
    messages: Vec<WireMessage>,
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stop: Option<Vec<String>>,
    #[serde(default)]
    repetition_penalty: Option<f32>,
}

/// The router over `generator`, for hosts that mount it in their own axum app.
pub fn router(generator: Arc<dyn Generator>, config: ServerConfig) -> Router {
    router_with_flag(generator, config, Arc::new(AtomicBool::new(true)))
}

fn router_with_flag(
    generator: Arc<dyn Generator>,
    config: ServerConfig,
    ready: Arc<AtomicBool>,
) -> Router {
    let body_limit = config
        .max_prompt_bytes
        .saturating_mul(2)
        .saturating_add(64 * 1024);
    let shared = Arc::new(Shared {
        slots: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
        generator,
        config,
        served: AtomicU64::new(0),
    });
    let flag = ready;
    Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state((shared, flag))
}

type AppState = (Arc<Shared>, Arc<AtomicBool>);

/// Serves `generator` on `addr` (port 0 picks one) from a thread of its own.
pub fn spawn(
    addr: SocketAddr,
    generator: Arc<dyn Generator>,
    config: ServerConfig,
) -> Result<ServerHandle, RemoteError> {
    let ready = Arc::new(AtomicBool::new(true));
    let app = router_with_flag(generator, config, Arc::clone(&ready));
    let std_listener = std::net::TcpListener::bind(addr)
        .map_err(|e| RemoteError::Config(format!("binding {addr}: {e}")))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| RemoteError::Config(format!("listener: {e}")))?;
    let local = std_listener
        .local_addr()
        .map_err(|e| RemoteError::Config(format!("listener: {e}")))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("rag-openai-server")
        .build()
        .map_err(|e| RemoteError::Config(format!("runtime: {e}")))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("rag-openai-server".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                    return;
                };
                let served = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = stopped.await;
                });
                if let Err(e) = served.await {
                    tracing::warn!(error = %e, "OpenAI-compatible server stopped");
                }
            });
            runtime.shutdown_timeout(Duration::from_secs(2));
        })
        .map_err(|e| RemoteError::Config(format!("server thread: {e}")))?;
    Ok(ServerHandle {
        addr: local,
        shared: Arc::new(SharedFlags { ready }),
        stop: Some(stop),
        thread: Some(thread),
    })
}

impl ServerHandle {
    /// The address served.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the base URL for [`OpenAiConfig`](crate::OpenAiConfig).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Whether the server answers requests (`false`: 503, as while a model loads).
    pub fn set_ready(&self, ready: bool) {
        self.shared.ready.store(ready, Ordering::Release);
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = Json(json!({"error": {"message": message, "type": "invalid_request_error"}}));
    let mut r = (status, body).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

async fn health(State((_, ready)): State<AppState>) -> Response {
    if ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok").into_response()
    } else {
        error(StatusCode::SERVICE_UNAVAILABLE, "loading")
    }
}

async fn models(State((shared, ready)): State<AppState>) -> Response {
    if !ready.load(Ordering::Acquire) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "loading");
    }
    let id = if shared.config.model.is_empty() {
        shared.generator.name().to_owned()
    } else {
        shared.config.model.clone()
    };
    Json(json!({"object": "list", "data": [{"id": id, "object": "model", "owned_by": "rag-sdk"}]}))
        .into_response()
}

fn parse(shared: &Shared, wire: WireRequest) -> Result<(GenerationRequest, bool), Box<Response>> {
    let cfg = &shared.config;
    if !cfg.model.is_empty() && !wire.model.is_empty() && wire.model != cfg.model {
        return Err(Box::new(error(StatusCode::NOT_FOUND, "unknown model")));
    }
    if wire.messages.is_empty() {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "messages is empty",
        )));
    }
    let bytes: usize = wire.messages.iter().map(|m| m.content.len()).sum();
    if bytes > cfg.max_prompt_bytes {
        return Err(Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the prompt is over the limit",
        )));
    }
    let mut messages = Vec::with_capacity(wire.messages.len());
    for m in wire.messages {
        let role = match m.role.as_str() {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            _ => {
                return Err(Box::new(error(
                    StatusCode::BAD_REQUEST,
                    "unknown message role",
                )));
            }
        };
        messages.push(ChatMessage {
            role,
            content: m.content,
        });
    }
    let defaults = SamplingParams::default();
    let max_new_tokens = wire.max_tokens.unwrap_or(defaults.max_new_tokens);
    if max_new_tokens == 0 || max_new_tokens > cfg.max_tokens {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "max_tokens is out of range",
        )));
    }
    let temperature = wire.temperature.unwrap_or(defaults.temperature);
    let top_p = wire.top_p.unwrap_or(defaults.top_p);
    if !(0.0..=2.0).contains(&temperature) || !(0.0..=1.0).contains(&top_p) || top_p == 0.0 {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "temperature or top_p is out of range",
        )));
    }
    let params = SamplingParams {
        max_new_tokens,
        temperature,
        top_p,
        seed: wire.seed.unwrap_or(defaults.seed),
        stop: wire.stop.unwrap_or_default(),
        repetition_penalty: wire
            .repetition_penalty
            .filter(|p| p.is_finite() && *p >= 1.0 && *p <= 2.0)
            .unwrap_or(defaults.repetition_penalty),
        ..defaults
    };
    Ok((GenerationRequest::new(messages, params), wire.stream))
}

fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::MaxTokens => "length",
        _ => "stop",
    }
}

fn created() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn completions(
    State((shared, ready)): State<AppState>,
    body: Result<Json<WireRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if !ready.load(Ordering::Acquire) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "loading");
    }
    let Json(wire) = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request is over the limit",
            );
        }
        Err(_) => return error(StatusCode::BAD_REQUEST, "the body is not a chat request"),
    };
    let (request, streamed) = match parse(&shared, wire) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let Ok(permit) = Arc::clone(&shared.slots).try_acquire_owned() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "busy");
    };
    let id = format!("chatcmpl-{}", shared.served.fetch_add(1, Ordering::Relaxed));
    let model = shared.generator.name().to_owned();
    if !streamed {
        let g = Arc::clone(&shared.generator);
        let out = tokio::task::spawn_blocking(move || {
            let out = g.generate(&request, &mut |_| TokenControl::Continue);
            // The slot is free before the client hears back, so a client that asks
            // again at once is not turned away as busy.
            drop(permit);
            out
        })
        .await;
        return match out {
            Ok(Ok(out)) => Json(completion(&id, &model, &out)).into_response(),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "generation failed");
                error(StatusCode::INTERNAL_SERVER_ERROR, &e.summary())
            }
            Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "generation panicked"),
        };
    }

    let (tx, rx) = mpsc::channel::<Result<Event, std::convert::Infallible>>(16);
    let g = Arc::clone(&shared.generator);
    let chunk_id = id.clone();
    let chunk_model = model.clone();
    tokio::task::spawn_blocking(move || {
        let chunk = |delta: serde_json::Value, finish: Option<&str>| {
            let body = json!({
                "id": chunk_id, "object": "chat.completion.chunk", "created": created(),
                "model": chunk_model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            });
            Ok(Event::default().data(body.to_string()))
        };
        if tx
            .blocking_send(chunk(json!({"role": "assistant"}), None))
            .is_err()
        {
            return;
        }
        let out = g.generate(&request, &mut |piece| {
            match tx.blocking_send(chunk(json!({"content": piece}), None)) {
                Ok(()) => TokenControl::Continue,
                // The client went away: stop generating.
                Err(_) => TokenControl::Stop,
            }
        });
        // Free the slot before the last events (see above).
        drop(permit);
        match out {
            Ok(done) if done.finish != FinishReason::Cancelled => {
                let _ = tx.blocking_send(chunk(json!({}), Some(finish_reason(done.finish))));
                let usage = json!({
                    "id": chunk_id, "object": "chat.completion.chunk", "created": created(),
                    "model": chunk_model, "choices": [],
                    "usage": {"prompt_tokens": done.prompt_tokens,
                              "completion_tokens": done.generated_tokens,
                              "total_tokens": done.prompt_tokens + done.generated_tokens},
                });
                let _ = tx.blocking_send(Ok(Event::default().data(usage.to_string())));
                let _ = tx.blocking_send(Ok(Event::default().data("[DONE]")));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "streamed generation failed");
                // Close without [DONE]: the client sees the stream cut mid-answer.
            }
        }
    });
    let events = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn completion(id: &str, model: &str, g: &Generation) -> serde_json::Value {
    json!({
        "id": id, "object": "chat.completion", "created": created(), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": g.text},
                     "finish_reason": finish_reason(g.finish)}],
        "usage": {"prompt_tokens": g.prompt_tokens, "completion_tokens": g.generated_tokens,
                  "total_tokens": g.prompt_tokens + g.generated_tokens},
    })
}
