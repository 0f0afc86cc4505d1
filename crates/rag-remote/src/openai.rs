//! A [`Generator`] that calls an OpenAI-compatible `/v1/chat/completions` server
//! (vLLM, TGI, llama.cpp's server, or the SDK's own), streamed over SSE or not.
//!
//! Every wait is bounded: the request gets no longer than what is left of
//! [`GenerationRequest::deadline`] (and at most [`OpenAiConfig::request_timeout`]);
//! connecting has its own timeout; event-stream lines and whole responses have size
//! caps. Returning [`TokenControl::Stop`] from the token callback drops the
//! connection, which the server sees as a cancelled request.
//!
//! Like every [`Generator`], it blocks: call it from a thread outside an async
//! runtime's workers (the `rag` facade's pool, `spawn_blocking`), where it waits on
//! the network for the whole answer.

use std::io::BufReader;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rag_core::{
    ChatMessage, Error, FinishReason, Generation, GenerationRequest, Generator, Result, Role,
    TokenControl, TokenCounter,
};
use reqwest::blocking::{Client, Response};
use reqwest::header::{ACCEPT, AUTHORIZATION, RETRY_AFTER};
use serde::{Deserialize, Serialize};

use crate::error::RemoteError;
use crate::sse::EventReader;

/// Where and how to reach a generator server.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// The server's base URL, e.g. `http://10.0.0.7:8000` (the client appends
    /// `/v1/chat/completions`).
    pub base_url: String,
    /// The `model` field of requests.
    pub model: String,
    /// A bearer token, if the server wants one.
    pub api_key: Option<String>,
    /// The model's context window in tokens.
    pub context_window: usize,
    /// Stream tokens over SSE (the default) or wait for the whole answer.
    pub stream: bool,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// The longest a request may take when its [`GenerationRequest`] has no
    /// deadline (or a later one).
    pub request_timeout: Duration,
    /// How long a health probe may take.
    pub probe_timeout: Duration,
    /// The longest event-stream line accepted.
    pub max_line_bytes: usize,
    /// The largest response (streamed or not) accepted.
    pub max_response_bytes: usize,
    /// Bytes per token assumed when counting prompt tokens without the model's
    /// tokenizer; low values overestimate, which keeps prompts inside the window.
    pub bytes_per_token: f32,
}

impl OpenAiConfig {
    /// A streaming configuration for `model` at `base_url`, with a 4,096-token
    /// window, a 2 s connect timeout and a 60 s request limit.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            context_window: 4096,
            stream: true,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(60),
            probe_timeout: Duration::from_secs(2),
            max_line_bytes: 64 * 1024,
            max_response_bytes: 4 * 1024 * 1024,
            bytes_per_token: 3.0,
        }
    }
}

/// An OpenAI-compatible chat-completions client.
#[derive(Clone)]
pub struct OpenAiGenerator {
    config: OpenAiConfig,
    name: String,
    endpoint: String,
    models: String,
    /// Built on first use, on the calling thread: building reqwest's blocking
    /// client inside an async runtime's worker panics, and a host builds its
    /// generators there.
    client: Arc<OnceLock<Client>>,
    counter: Option<Arc<dyn TokenCounter>>,
}

impl std::fmt::Debug for OpenAiGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiGenerator")
            .field("endpoint", &self.endpoint)
            .field("model", &self.config.model)
            .field("stream", &self.config.stream)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    max_tokens: usize,
    temperature: f32,
    top_p: f32,
    seed: u64,
    stream: bool,
    /// Asks for token counts in the last event (OpenAI, vLLM, llama.cpp).
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    /// Understood by vLLM and llama.cpp; ignored by servers that do not know it.
    repetition_penalty: f32,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Deserialize)]
struct WireResponse {
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    message: Option<WireContent>,
    #[serde(default)]
    delta: Option<WireContent>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireContent {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: usize,
    #[serde(default)]
    completion_tokens: usize,
}

fn role(r: Role) -> &'static str {
    match r {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

fn finish(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("length") => FinishReason::MaxTokens,
        _ => FinishReason::EndOfText,
    }
}

impl OpenAiGenerator {
    /// A client for the server `config` names; nothing is sent until the first
    /// request or probe.
    pub fn new(config: OpenAiConfig) -> std::result::Result<Self, RemoteError> {
        let base = config.base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(RemoteError::Config(format!(
                "base_url must be http:// or https://, got {:?}",
                config.base_url
            )));
        }
        if config.context_window == 0 || config.max_line_bytes == 0 {
            return Err(RemoteError::Config(
                "context_window and max_line_bytes must be positive".into(),
            ));
        }
        if config.bytes_per_token.is_nan() || config.bytes_per_token <= 0.0 {
            return Err(RemoteError::Config(
                "bytes_per_token must be positive".into(),
            ));
        }
        Ok(Self {
            name: format!("openai:{}@{}", config.model, base),
            endpoint: format!("{base}/v1/chat/completions"),
            models: format!("{base}/v1/models"),
            config,
            client: Arc::new(OnceLock::new()),
            counter: None,
        })
    }

    /// Counts prompt tokens with the served model's own tokenizer instead of the
    /// bytes-per-token estimate.
    pub fn with_token_counter(mut self, counter: Arc<dyn TokenCounter>) -> Self {
        self.counter = Some(counter);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    fn client(&self) -> std::result::Result<&Client, RemoteError> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let built = Client::builder()
            .connect_timeout(self.config.connect_timeout)
            .timeout(self.config.request_timeout)
            .build()
            .map_err(RemoteError::Http)?;
        // Another thread may have won the race; either client will do.
        let _ = self.client.set(built);
        self.client
            .get()
            .ok_or_else(|| RemoteError::Config("the HTTP client could not be kept".into()))
    }

    /// Asks the server whether it is up and serving (`GET /v1/models` answers 2xx).
    /// A server still loading its model typically answers 503.
    pub fn probe(&self) -> std::result::Result<(), RemoteError> {
        let response = self
            .client()?
            .get(&self.models)
            .timeout(self.config.probe_timeout)
            .send()
            .map_err(RemoteError::from_reqwest)?;
        check_status(response).map(drop)
    }

    fn send(&self, request: &GenerationRequest) -> std::result::Result<Response, RemoteError> {
        let mut timeout = self.config.request_timeout;
        if let Some(left) = request.time_left() {
            if left.is_zero() {
                return Err(RemoteError::DeadlineExceeded);
            }
            timeout = timeout.min(left);
        }
        let p = &request.params;
        let body = WireRequest {
            model: &self.config.model,
            messages: request
                .messages
                .iter()
                .map(|m: &ChatMessage| WireMessage {
                    role: role(m.role),
                    content: &m.content,
                })
                .collect(),
            max_tokens: p.max_new_tokens,
            temperature: p.temperature,
            top_p: p.top_p,
            seed: p.seed,
            stream: self.config.stream,
            stream_options: self.config.stream.then_some(StreamOptions {
                include_usage: true,
            }),
            stop: &p.stop,
            repetition_penalty: p.repetition_penalty,
        };
        let mut builder = self
            .client()?
            .post(&self.endpoint)
            .timeout(timeout)
            .json(&body);
        if self.config.stream {
            builder = builder.header(ACCEPT, "text/event-stream");
        }
        if let Some(key) = &self.config.api_key {
            builder = builder.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        let response = builder.send().map_err(RemoteError::from_reqwest)?;
        check_status(response)
    }

    fn generate_remote(
        &self,
        request: &GenerationRequest,
        on_token: &mut dyn FnMut(&str) -> TokenControl,
    ) -> std::result::Result<Generation, RemoteError> {
        let started = Instant::now();
        let response = self.send(request)?;
        let mut text = String::new();
        let mut first: Option<Duration> = None;
        let mut pieces = 0usize;
        let mut finish_reason = None;
        let mut usage = None;
        if self.config.stream {
            let mut events = EventReader::new(BufReader::new(response), self.config.max_line_bytes);
            let mut done = false;
            while let Some(data) = events.next_data()? {
                if data.trim() == "[DONE]" {
                    done = true;
                    break;
                }
                let chunk: WireResponse = serde_json::from_str(&data).map_err(|e| {
                    RemoteError::Malformed(format!("an event is not a completion chunk: {e}"))
                })?;
                usage = chunk.usage.or(usage);
                let Some(choice) = chunk.choices.into_iter().next() else {
                    continue;
                };
                if let Some(piece) = choice.delta.and_then(|d| d.content)
                    && !piece.is_empty()
                {
                    first.get_or_insert_with(|| started.elapsed());
                    pieces += 1;
                    if text.len() + piece.len() > self.config.max_response_bytes {
                        return Err(RemoteError::TooLarge {
                            max: self.config.max_response_bytes,
                        });
                    }
                    text.push_str(&piece);
                    if on_token(&piece) == TokenControl::Stop {
                        // Dropping the reader closes the connection.
                        finish_reason = Some(FinishReason::Cancelled);
                        break;
                    }
                }
                if let Some(r) = choice.finish_reason {
                    finish_reason = Some(finish(Some(&r)));
                }
            }
            if !done && finish_reason.is_none() {
                return Err(RemoteError::ClosedMidStream);
            }
        } else {
            let bytes = read_capped(response, self.config.max_response_bytes)?;
            let whole: WireResponse = serde_json::from_slice(&bytes).map_err(|e| {
                RemoteError::Malformed(format!("the body is not a chat completion: {e}"))
            })?;
            usage = whole.usage;
            let choice =
                whole.choices.into_iter().next().ok_or_else(|| {
                    RemoteError::Malformed("the completion has no choices".into())
                })?;
            text = choice.message.and_then(|m| m.content).ok_or_else(|| {
                RemoteError::Malformed("the completion's choice has no message content".into())
            })?;
            first = Some(started.elapsed());
            pieces = 1;
            finish_reason = Some(finish(choice.finish_reason.as_deref()));
            if !text.is_empty() && on_token(&text) == TokenControl::Stop {
                finish_reason = Some(FinishReason::Cancelled);
            }
        }
        let total = started.elapsed().as_secs_f64();
        let ttft = first.map_or(total, |d| d.as_secs_f64());
        let generated = usage.map_or(pieces, |u| u.completion_tokens.max(pieces.min(1)));
        Ok(Generation {
            text,
            finish: finish_reason.unwrap_or(FinishReason::EndOfText),
            prompt_tokens: usage.map_or(0, |u| u.prompt_tokens),
            generated_tokens: generated,
            time_to_first_token_s: ttft,
            tokens_per_s: generated.saturating_sub(1) as f64 / (total - ttft).max(1e-9),
        })
    }
}

fn check_status(response: Response) -> std::result::Result<Response, RemoteError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let detail = read_capped(response, 4096)
        .map(|b| String::from_utf8_lossy(&b).chars().take(200).collect())
        .unwrap_or_default();
    Err(RemoteError::Status {
        status: status.as_u16(),
        retry_after,
        detail,
    })
}

fn read_capped(response: Response, max: usize) -> std::result::Result<Vec<u8>, RemoteError> {
    use std::io::Read;
    let mut out = Vec::new();
    response
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(
            |e| match e.into_inner().map(|i| i.downcast::<reqwest::Error>()) {
                Some(Ok(re)) => RemoteError::from_reqwest(*re),
                _ => RemoteError::ClosedMidStream,
            },
        )?;
    if out.len() > max {
        return Err(RemoteError::TooLarge { max });
    }
    Ok(out)
}

impl Generator for OpenAiGenerator {
    fn name(&self) -> &str {
        &self.name
    }

    fn context_window(&self) -> usize {
        self.config.context_window
    }

    fn count_tokens(&self, text: &str) -> Result<usize> {
        if let Some(c) = &self.counter {
            return c.count(text);
        }
        Ok((text.len() as f32 / self.config.bytes_per_token).ceil() as usize)
    }

    fn generate(
        &self,
        request: &GenerationRequest,
        on_token: &mut dyn FnMut(&str) -> TokenControl,
    ) -> Result<Generation> {
        let _span =
            tracing::debug_span!("rag.generation.remote", endpoint = %self.endpoint).entered();
        self.generate_remote(request, on_token).map_err(Error::from)
    }
}
