//! [`OnnxGenerator`]: autoregressive generation with a KV cache on an ONNX decoder in
//! the common layout (`input_ids`, `attention_mask`, `position_ids`,
//! `past_key_values.N.key/value` in; `logits`, `present.N.key/value` out).

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Instant;

use ndarray::{Array2, Array4};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, ValueType};
use rag_core::{
    ChatMessage, Device, FinishReason, Generation, GenerationRequest, Generator, Role, TokenControl,
};
use tokenizers::Tokenizer;

use crate::assets::cache_dir;
use crate::error::{InferError, Result};
use crate::pool::SessionPool;
use crate::runtime::{SessionOptions, build_session, model_files};
use crate::sampling::{Rng, guard, loop_cut, sample, words};

/// Settings of an [`OnnxGenerator`].
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// Directory with `model.onnx`, `tokenizer.json` and optionally `config.json`.
    pub model_dir: PathBuf,
    /// Name used in cache keys (defaults to the directory name).
    pub name: Option<String>,
    /// Context window; defaults to `config.json`'s `context_window`, else 2048.
    pub context_window: Option<usize>,
    /// Sessions in the pool.
    pub sessions: usize,
    /// Session and device settings.
    pub session: SessionOptions,
}

impl GeneratorConfig {
    /// Defaults for the model in `model_dir`.
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        Self {
            model_dir: model_dir.into(),
            name: None,
            context_window: None,
            sessions: 1,
            // Decoding is a tight loop of small runs, where waking parked threads
            // costs: 71.6 against 66.1 tokens/s with spinning (`generate --spinning`).
            session: SessionOptions {
                spinning: true,
                ..SessionOptions::default()
            },
        }
    }

    /// SmolLM2-135M-Instruct as converted by `tools/assets.py fetch` (`weights`:
    /// `"q4"` or `"fp32"`).
    pub fn smollm2(weights: &str) -> Self {
        Self {
            name: Some(format!("SmolLM2-135M-Instruct-{weights}")),
            ..Self::new(cache_dir().join(format!("SmolLM2-135M-Instruct/onnx-{weights}")))
        }
    }

    /// Qwen2.5-Coder-0.5B-Instruct as converted by `tools/assets.py fetch
    /// --generator qwen` (`weights`: `"q8"`, or `"fp32"` with `--fp32`).
    pub fn qwen2_5_coder(weights: &str) -> Self {
        Self {
            name: Some(format!("Qwen2.5-Coder-0.5B-Instruct-{weights}")),
            ..Self::new(cache_dir().join(format!("Qwen2.5-Coder-0.5B-Instruct/onnx-{weights}")))
        }
    }
}

/// The generators `tools/assets.py fetch` converts, by the names it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LocalGenerator {
    /// SmolLM2-135M-Instruct, 4-bit: fast and weak (SQuAD F1 5.5 in the answers
    /// report, time to first token 0.8 s at its p50, 30 tokens/s on 2 cores).
    SmolLm2,
    /// Qwen2.5-Coder-0.5B-Instruct, 8-bit: the default, chosen by the answers
    /// report (SQuAD F1 24.6, 4.4x SmolLM2's and above the extractive baseline's
    /// 13.2) at a price in time (first token 3.5 s at its p50 with a 256-token
    /// passage budget, 15.5 tokens/s); docs/EVALUATION.md.
    #[default]
    Qwen25Coder,
}

impl LocalGenerator {
    /// Every local generator.
    pub const ALL: [Self; 2] = [Self::SmolLm2, Self::Qwen25Coder];

    /// The environment variable that picks a generator by name
    /// ([`LocalGenerator::from_env`]).
    pub const ENV: &'static str = "RAG_SDK_GENERATOR";

    /// The name `tools/assets.py fetch --generator` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::SmolLm2 => "smollm2",
            Self::Qwen25Coder => "qwen",
        }
    }

    /// The generator called `name`.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|g| g.name() == name.trim())
            .ok_or_else(|| InferError::UnknownGenerator {
                name: name.to_owned(),
                known: Self::ALL.map(Self::name).join(", "),
            })
    }

    /// The generator named by `$RAG_SDK_GENERATOR`, else the default.
    pub fn from_env() -> Result<Self> {
        match std::env::var(Self::ENV) {
            Ok(name) if !name.trim().is_empty() => Self::from_name(&name),
            _ => Ok(Self::default()),
        }
    }

    /// The passage budget (`PipelineConfig::context_tokens`), chosen by the
    /// answers report: for Qwen2.5-Coder, 256 tokens (mostly the top passage)
    /// gave SQuAD F1 24.2 and citation precision 0.73 where 384 (often two
    /// passages) gave 21.8 and 0.70, with a time to first token of 1.0 s against
    /// 1.5 s; prefill is what a larger model costs on a CPU.
    pub fn passage_budget(self) -> Option<usize> {
        match self {
            Self::SmolLm2 => None,
            Self::Qwen25Coder => Some(256),
        }
    }

    /// Its settings, with the weights `tools/assets.py fetch` converts.
    pub fn config(self) -> GeneratorConfig {
        match self {
            Self::SmolLm2 => GeneratorConfig::smollm2("q4"),
            Self::Qwen25Coder => GeneratorConfig::qwen2_5_coder("q8"),
        }
    }
}

/// How messages become a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Template {
    /// `<|im_start|>role\ncontent<|im_end|>\n`, then `<|im_start|>assistant\n`; the
    /// two markers are spliced in by id, never tokenized from text.
    ChatMl {
        default_system: Option<String>,
        im_start: u32,
        im_end: u32,
    },
    /// Messages joined by blank lines, for models without a chat format.
    Plain,
}

#[derive(Debug, Clone)]
struct Interface {
    layers: usize,
    kv_heads: usize,
    head_dim: usize,
    position_ids: bool,
}

/// A decoder-only language model on ONNX Runtime.
#[derive(Debug)]
pub struct OnnxGenerator {
    tokenizer: Tokenizer,
    pool: SessionPool,
    interface: Interface,
    template: Template,
    stop_ids: Vec<u32>,
    context_window: usize,
    name: String,
    device: Device,
}

fn interface(session: &Session, path: &std::path::Path) -> Result<Interface> {
    let bad = |reason: String| InferError::ModelInterface {
        path: path.to_path_buf(),
        reason,
    };
    let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
    for needed in ["input_ids", "attention_mask"] {
        if !names.contains(&needed) {
            return Err(bad(format!("no input {needed:?}")));
        }
    }
    if !session.outputs().iter().any(|o| o.name() == "logits") {
        return Err(bad("no output \"logits\"".into()));
    }
    let layers = (0..)
        .take_while(|i| names.contains(&format!("past_key_values.{i}.key").as_str()))
        .count();
    if layers == 0 {
        return Err(bad(
            "no past_key_values.N.key inputs (a model without a KV cache)".into(),
        ));
    }
    let past = session
        .inputs()
        .iter()
        .find(|i| i.name() == "past_key_values.0.key")
        .map(|i| i.dtype().clone());
    let (kv_heads, head_dim) = match past {
        Some(ValueType::Tensor { shape, .. })
            if shape.len() == 4 && shape[1] > 0 && shape[3] > 0 =>
        {
            (shape[1] as usize, shape[3] as usize)
        }
        other => {
            return Err(bad(format!(
                "past_key_values.0.key must be [b, heads, past, dim] with static heads and dim, got {other:?}"
            )));
        }
    };
    Ok(Interface {
        layers,
        kv_heads,
        head_dim,
        position_ids: names.contains(&"position_ids"),
    })
}

/// Text of `s` that may be emitted while `stops` could still match at its end.
fn safe_prefix_len(s: &str, stops: &[String]) -> usize {
    let mut keep = s.len();
    for stop in stops {
        for k in (1..stop.len()).rev() {
            if s.len() >= k
                && s.is_char_boundary(s.len() - k)
                && stop.is_char_boundary(k)
                && s.ends_with(&stop[..k])
            {
                keep = keep.min(s.len() - k);
                break;
            }
        }
    }
    keep
}

impl OnnxGenerator {
    /// Loads the model, tokenizer and chat format of `config.model_dir`.
    pub fn new(config: GeneratorConfig) -> Result<Self> {
        let dir = &config.model_dir;
        let (model, tokenizer_path) = model_files(dir)?;
        let extra: serde_json::Value = match fs_err::read_to_string(dir.join("config.json")) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| InferError::ModelInterface {
                path: dir.join("config.json"),
                reason: e.to_string(),
            })?,
            Err(_) => serde_json::Value::Null,
        };
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(InferError::tokenizer)?;
        // Text is always text: a `<|im_start|>` inside a document or a question
        // is encoded as the characters it is made of, never as the control token.
        tokenizer.set_encode_special_tokens(true);
        let sessions = (0..config.sessions.max(1))
            .map(|_| build_session(&model, &config.session))
            .collect::<Result<Vec<_>>>()?;
        let interface = interface(&sessions[0], &model)?;
        let template = match (
            tokenizer.token_to_id("<|im_start|>"),
            tokenizer.token_to_id("<|im_end|>"),
        ) {
            (Some(im_start), Some(im_end)) => Template::ChatMl {
                default_system: extra["default_system"].as_str().map(str::to_owned),
                im_start,
                im_end,
            },
            _ => Template::Plain,
        };
        let mut stop_ids: Vec<u32> = ["<|im_end|>", "<|endoftext|>", "</s>"]
            .iter()
            .filter_map(|t| tokenizer.token_to_id(t))
            .collect();
        if let Some(eos) = extra["eos_token_id"].as_u64() {
            stop_ids.push(eos as u32);
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let context_window = config
            .context_window
            .or_else(|| extra["context_window"].as_u64().map(|c| c as usize))
            .unwrap_or(2048);
        let name = config.name.clone().unwrap_or_else(|| {
            dir.file_name().map_or_else(
                || "onnx-generator".into(),
                |n| n.to_string_lossy().into_owned(),
            )
        });
        Ok(Self {
            tokenizer,
            pool: SessionPool::new(sessions),
            interface,
            template,
            stop_ids,
            context_window,
            name,
            device: config.session.device,
        })
    }

    /// The prompt for a chat as text, for display. Generation uses
    /// [`prompt_ids`](Self::prompt_ids), which differs from encoding this text: there
    /// the template's control tokens come only from the template.
    pub fn render(&self, messages: &[ChatMessage]) -> String {
        match &self.template {
            Template::ChatMl { default_system, .. } => {
                let mut s = String::new();
                if messages.first().is_none_or(|m| m.role != Role::System)
                    && let Some(sys) = default_system
                {
                    s.push_str(&format!("<|im_start|>system\n{sys}<|im_end|>\n"));
                }
                for m in messages {
                    let role = match m.role {
                        Role::System => "system",
                        Role::User => "user",
                        Role::Assistant => "assistant",
                    };
                    s.push_str(&format!("<|im_start|>{role}\n{}<|im_end|>\n", m.content));
                }
                s.push_str("<|im_start|>assistant\n");
                s
            }
            Template::Plain => {
                let mut s: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
                s.push("");
                s.join("\n\n")
            }
        }
    }

    /// The prompt's token ids: the chat template's control tokens spliced in by id,
    /// every message's content (and any default system prompt) encoded as plain
    /// text, so no content can open, close or forge a turn.
    pub fn prompt_ids(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        match &self.template {
            Template::ChatMl {
                default_system,
                im_start,
                im_end,
            } => {
                let mut ids = Vec::new();
                let mut turn = |role: &str, content: &str| -> Result<()> {
                    ids.push(*im_start);
                    ids.extend(self.encode(&format!("{role}\n{content}"))?);
                    ids.push(*im_end);
                    ids.extend(self.encode("\n")?);
                    Ok(())
                };
                if messages.first().is_none_or(|m| m.role != Role::System)
                    && let Some(sys) = default_system
                {
                    turn("system", sys)?;
                }
                for m in messages {
                    let role = match m.role {
                        Role::System => "system",
                        Role::User => "user",
                        Role::Assistant => "assistant",
                    };
                    turn(role, &m.content)?;
                }
                ids.push(*im_start);
                ids.extend(self.encode("assistant\n")?);
                Ok(ids)
            }
            Template::Plain => self.encode(&self.render(messages)),
        }
    }

    /// The id of a token of the vocabulary (a control token such as `<|im_end|>`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// Whether `id` is a special (control) token of the tokenizer.
    pub fn is_special(&self, id: u32) -> bool {
        self.tokenizer
            .get_added_tokens_decoder()
            .get(&id)
            .is_some_and(|t| t.special)
    }

    /// Token ids of a text, as plain text: special tokens written in it are
    /// encoded as their characters.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(text, false)
            .map_err(InferError::tokenizer)?
            .get_ids()
            .to_vec())
    }

    /// Text of token ids.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(InferError::tokenizer)
    }

    fn empty_past(&self) -> Result<Vec<DynValue>> {
        let i = &self.interface;
        (0..i.layers * 2)
            .map(|_| {
                Tensor::from_array(Array4::<f32>::zeros((1, i.kv_heads, 0, i.head_dim)))
                    .map(|t| t.into_dyn())
                    .map_err(|e| InferError::ort("empty cache", e))
            })
            .collect()
    }

    /// One forward pass: `ids` at positions `start..`, attending to `start + ids.len()`
    /// tokens; returns the last position's logits and the new cache.
    fn step(
        &self,
        session: &mut Session,
        ids: &[u32],
        start: usize,
        past: Vec<DynValue>,
    ) -> Result<(Vec<f32>, Vec<DynValue>)> {
        let n = ids.len();
        let total = start + n;
        let input_ids = Array2::from_shape_vec((1, n), ids.iter().map(|&t| i64::from(t)).collect())
            .map_err(|e| InferError::ort("input", e))?;
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(3 + past.len());
        let t = |a: Array2<i64>| Tensor::from_array(a).map_err(|e| InferError::ort("input", e));
        inputs.push(("input_ids".into(), t(input_ids)?.into()));
        inputs.push(("attention_mask".into(), t(Array2::ones((1, total)))?.into()));
        if self.interface.position_ids {
            let pos = Array2::from_shape_vec((1, n), (start as i64..total as i64).collect())
                .map_err(|e| InferError::ort("input", e))?;
            inputs.push(("position_ids".into(), t(pos)?.into()));
        }
        for (i, v) in past.into_iter().enumerate() {
            let kind = if i % 2 == 0 { "key" } else { "value" };
            inputs.push((format!("past_key_values.{}.{kind}", i / 2).into(), v.into()));
        }
        let mut out = session.run(inputs).map_err(|e| InferError::ort("run", e))?;
        let logits = {
            let value = out
                .get("logits")
                .ok_or_else(|| InferError::ort("run", "no logits"))?;
            let (shape, data) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| InferError::ort("logits", e))?;
            let vocab = *shape.last().unwrap_or(&0) as usize;
            if vocab == 0 || data.len() < vocab {
                return Err(InferError::ort(
                    "logits",
                    format!("unexpected shape {shape:?}"),
                ));
            }
            data[data.len() - vocab..].to_vec()
        };
        let mut present = Vec::with_capacity(self.interface.layers * 2);
        for l in 0..self.interface.layers {
            for kind in ["key", "value"] {
                present.push(
                    out.remove(format!("present.{l}.{kind}"))
                        .ok_or_else(|| InferError::ort("run", format!("no present.{l}.{kind}")))?,
                );
            }
        }
        Ok((logits, present))
    }

    fn check_window(&self, prompt: usize) -> Result<usize> {
        if prompt == 0 {
            return Err(rag_core::InvalidInput::EmptyText { what: "prompt" }.into());
        }
        if prompt >= self.context_window {
            return Err(InferError::PromptTooLong {
                tokens: prompt,
                window: self.context_window,
                reserved: 1,
            });
        }
        Ok(self.context_window - prompt)
    }

    /// Greedy token ids for a chat, with the KV cache or by recomputing the whole
    /// sequence at every step (a check of the cache path).
    pub fn greedy_ids(
        &self,
        messages: &[ChatMessage],
        max_new: usize,
        use_cache: bool,
    ) -> Result<Vec<u32>> {
        let ids = self.prompt_ids(messages)?;
        let room = self.check_window(ids.len())?;
        self.pool.with(|session| {
            let mut out = Vec::new();
            let (mut logits, mut past) = self.step(session, &ids, 0, self.empty_past()?)?;
            for _ in 0..max_new.min(room) {
                let next = crate::sampling::argmax(&logits);
                if self.stop_ids.contains(&next) {
                    break;
                }
                out.push(next);
                if use_cache {
                    (logits, past) =
                        self.step(session, &[next], ids.len() + out.len() - 1, past)?;
                } else {
                    let all: Vec<u32> = ids.iter().chain(&out).copied().collect();
                    (logits, _) = self.step(session, &all, 0, self.empty_past()?)?;
                }
            }
            Ok(out)
        })
    }

    /// Generates an answer, calling `on_token` with each new piece of text.
    pub fn generate_text(
        &self,
        request: &GenerationRequest,
        on_token: &mut dyn FnMut(&str) -> TokenControl,
    ) -> Result<Generation> {
        let p = &request.params;
        let ids = self.prompt_ids(&request.messages)?;
        let room = self.check_window(ids.len())?;
        let max_new = p.max_new_tokens.min(room);
        let stops: Vec<String> = p.stop.iter().filter(|s| !s.is_empty()).cloned().collect();
        let mut rng = Rng::new(p.seed);
        let started = Instant::now();
        self.pool.with(|session| {
            let (mut logits, mut past) = self.step(session, &ids, 0, self.empty_past()?)?;
            let mut out: Vec<u32> = Vec::new();
            let mut emitted = 0usize;
            let mut text = String::new();
            let mut first_token = None;
            let mut finish = FinishReason::MaxTokens;
            while out.len() < max_new {
                if request.deadline.is_some_and(|d| Instant::now() >= d) {
                    finish = FinishReason::Cancelled;
                    break;
                }
                guard(&mut logits, &out, p.repetition_penalty, p.no_repeat_ngram);
                let next = sample(&logits, p.temperature, p.top_p, &mut rng);
                first_token.get_or_insert_with(|| started.elapsed());
                if self.stop_ids.contains(&next) {
                    finish = FinishReason::EndOfText;
                    break;
                }
                out.push(next);
                text = self.decode(&out)?;
                if let Some(cut) = stops.iter().filter_map(|s| text.find(s.as_str())).min() {
                    text.truncate(cut);
                    finish = FinishReason::StopSequence;
                    break;
                }
                if let Some(cut) = loop_cut(&text, p.loop_ngram_words) {
                    text.truncate(cut);
                    finish = FinishReason::Repetition;
                    break;
                }
                // Hold back a partial character, anything a stop sequence may still
                // claim, and the last words a loop cut may still take back.
                let mut safe = safe_prefix_len(&text, &stops);
                if p.loop_ngram_words > 0 {
                    let w = words(&text);
                    if w.len() >= p.loop_ngram_words {
                        safe = safe.min(w[w.len() - p.loop_ngram_words].0);
                    } else {
                        safe = safe.min(w.first().map_or(safe, |(o, _)| *o));
                    }
                }
                while safe > emitted && text[..safe].ends_with('\u{FFFD}') {
                    safe -= '\u{FFFD}'.len_utf8();
                }
                if safe > emitted {
                    let piece = &text[emitted..safe];
                    emitted = safe;
                    if on_token(piece) == TokenControl::Stop {
                        finish = FinishReason::Cancelled;
                        break;
                    }
                }
                if out.len() < max_new {
                    (logits, past) =
                        self.step(session, &[next], ids.len() + out.len() - 1, past)?;
                }
            }
            if finish != FinishReason::Cancelled && text.len() > emitted {
                on_token(&text[emitted..]);
            }
            let total = started.elapsed().as_secs_f64();
            let ttft = first_token.map_or(total, |d| d.as_secs_f64());
            let decode_time = (total - ttft).max(1e-9);
            Ok(Generation {
                text,
                finish,
                prompt_tokens: ids.len(),
                generated_tokens: out.len(),
                time_to_first_token_s: ttft,
                tokens_per_s: out.len().saturating_sub(1) as f64 / decode_time,
            })
        })
    }

    /// Time of a prefill of `ids` alone, in seconds (for reports).
    pub fn time_prefill(&self, ids: &[u32]) -> Result<f64> {
        self.check_window(ids.len())?;
        self.pool.with(|session| {
            let t = Instant::now();
            self.step(session, ids, 0, self.empty_past()?)?;
            Ok(t.elapsed().as_secs_f64())
        })
    }
}

impl Generator for OnnxGenerator {
    fn name(&self) -> &str {
        &self.name
    }

    fn context_window(&self) -> usize {
        self.context_window
    }

    fn count_tokens(&self, text: &str) -> rag_core::Result<usize> {
        Ok(self.encode(text)?.len())
    }

    fn generate(
        &self,
        request: &GenerationRequest,
        on_token: &mut dyn FnMut(&str) -> TokenControl,
    ) -> rag_core::Result<Generation> {
        self.generate_text(request, on_token).map_err(|e| match e {
            InferError::PromptTooLong { .. } | InferError::Input(_) => e.into(),
            other => rag_core::Error::backend(rag_core::Stage::Generate, other),
        })
    }
}

impl OnnxGenerator {
    /// The device the model runs on.
    pub fn device(&self) -> Device {
        self.device
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_sequence_prefixes_are_held_back() {
        let stops = vec!["\nUser:".to_owned()];
        assert_eq!(safe_prefix_len("Hello\nUs", &stops), 5);
        assert_eq!(safe_prefix_len("Hello", &stops), 5);
        assert_eq!(safe_prefix_len("Hello\n", &stops), 5);
        assert_eq!(safe_prefix_len("Héllo", &[]), "Héllo".len());
    }
}
