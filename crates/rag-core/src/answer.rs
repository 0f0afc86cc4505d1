//! Answers with citations, and generation requests.

use crate::document::Span;
use crate::ids::{ChunkId, DocId};

/// A reference from an answer to the span of a document it used.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Citation {
    /// The document.
    pub doc_id: DocId,
    /// The document's version.
    pub doc_version: u64,
    /// The chunk.
    pub chunk_id: ChunkId,
    /// The cited bytes of the document's text.
    pub span: Span,
}

/// An answer to a question.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The answer's text.
    pub text: String,
    /// What it cites.
    pub citations: Vec<Citation>,
    /// Every passage the answer was made from: all that reached the generator's
    /// prompt (or the extractive answer), cited or not. A superset of `citations`;
    /// the answer cache re-checks and invalidates an entry on all of them.
    pub provenance: Vec<Citation>,
}

impl Answer {
    /// Every passage the answer depends on: its provenance and its citations.
    pub fn sources(&self) -> impl Iterator<Item = &Citation> {
        self.provenance.iter().chain(
            self.citations
                .iter()
                .filter(|c| !self.provenance.contains(c)),
        )
    }
}

/// Who speaks in a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Instructions.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

/// How to sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// 0 means greedy.
    pub temperature: f32,
    /// Nucleus mass, in (0, 1].
    pub top_p: f32,
    /// Seed for sampling.
    pub seed: u64,
    /// Generation stops before any of these texts.
    pub stop: Vec<String>,
    /// Divides the positive logits (multiplies the negative ones) of tokens already
    /// generated in this answer; 1.0 is off. The prompt is not penalised: an
    /// answer may quote its passages.
    pub repetition_penalty: f32,
    /// A token that would repeat an n-gram of this many tokens already generated
    /// is never chosen; 0 is off.
    pub no_repeat_ngram: usize,
    /// Generation stops (and the text is cut) when a word n-gram of this many words
    /// appears a third time: a loop the other two controls did not prevent; 0 is
    /// off.
    pub loop_ngram_words: usize,
}

impl Default for SamplingParams {
    /// Greedy, with the loop controls on: repetition penalty 1.15, no repeated
    /// 4-gram of tokens, a stop at the third occurrence of a 4-word n-gram.
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop: Vec::new(),
            repetition_penalty: 1.15,
            no_repeat_ngram: 4,
            loop_ngram_words: 4,
        }
    }
}

impl SamplingParams {
    /// Plain decoding: the loop controls off (what the model does unaided).
    pub fn unguarded(self) -> Self {
        Self {
            repetition_penalty: 1.15,
            no_repeat_ngram: 0,
            loop_ngram_words: 0,
            ..self
        }
    }
}

/// A generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    /// The chat so far.
    pub messages: Vec<ChatMessage>,
    /// Sampling settings.
    pub params: SamplingParams,
    /// When the answer is due: a generator stops (or never starts) past it, and a
    /// remote one gives its HTTP request no longer than what is left. The pipeline
    /// sets it from its latency budget.
    pub deadline: Option<std::time::Instant>,
}

impl GenerationRequest {
    /// A request without a deadline.
    pub fn new(messages: Vec<ChatMessage>, params: SamplingParams) -> Self {
        Self {
            messages,
            params,
            deadline: None,
        }
    }

    /// The time left before the deadline: `None` without one, zero once past it.
    pub fn time_left(&self) -> Option<std::time::Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(std::time::Instant::now()))
    }
}

/// Whether generation should go on after a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenControl {
    /// Go on.
    Continue,
    /// Stop now.
    Stop,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced its end token.
    EndOfText,
    /// A stop sequence was produced.
    StopSequence,
    /// `max_new_tokens` was reached.
    MaxTokens,
    /// The caller cancelled.
    Cancelled,
    /// The text started repeating itself and was cut before the repetition
    /// ([`SamplingParams::loop_ngram_words`]).
    Repetition,
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The generated text.
    pub text: String,
    /// Why it ended.
    pub finish: FinishReason,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Seconds to the first token.
    pub time_to_first_token_s: f64,
    /// Decode speed.
    pub tokens_per_s: f64,
}
