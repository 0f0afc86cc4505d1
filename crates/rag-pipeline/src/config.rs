//! Pipeline settings.

use std::time::Duration;

use rag_core::AuditFailure;
use rag_core::InvalidInput;
use rag_core::SamplingParams;
use rag_core::{Fusion, RetrievalMode};

/// What to do with a question over [`PipelineConfig::max_question_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuestionPolicy {
    /// Refuse it with [`InvalidInput::TooLarge`].
    #[default]
    Reject,
    /// Keep its first `max_question_bytes` (cut on a character boundary).
    Truncate,
}

/// When to abstain: the least score the best retrieved passage must reach, per
/// retrieval mode, for the question to be answered from the passages; below it the
/// answer says the documents do not answer it (no generation, no citations). The
/// scale is the index's: cosine similarity for dense retrieval, BM25 for lexical,
/// the fused reciprocal-rank score for hybrid (rank-based, so a floor there is
/// rarely meaningful). `None` never abstains. Floors depend on the embedding model
/// and the collection's style; calibrate them (the `answers` report prints the
/// score distributions of answerable and unanswerable questions).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Abstention {
    /// Floor for dense retrieval (cosine similarity).
    pub dense: Option<f32>,
    /// Floor for lexical retrieval (BM25).
    pub lexical: Option<f32>,
    /// Floor for hybrid retrieval (fused score).
    pub hybrid: Option<f32>,
}

impl Abstention {
    /// Never abstain.
    pub const NEVER: Self = Self {
        dense: None,
        lexical: None,
        hybrid: None,
    };

    /// The floor for `mode`.
    pub fn floor(&self, mode: RetrievalMode) -> Option<f32> {
        match mode {
            RetrievalMode::Dense => self.dense,
            RetrievalMode::Lexical => self.lexical,
            RetrievalMode::Hybrid => self.hybrid,
        }
    }
}

/// Settings of a [`Pipeline`](super::Pipeline).
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    /// Chunks retrieved per question.
    pub top_k: usize,
    /// Dense, lexical or hybrid retrieval.
    pub mode: RetrievalMode,
    /// Fusion settings for hybrid retrieval.
    pub fusion: Fusion,
    /// Longest question accepted, in bytes.
    pub max_question_bytes: usize,
    /// Over-long questions are rejected or truncated.
    pub question_policy: QuestionPolicy,
    /// Largest document accepted, in bytes.
    pub max_document_bytes: usize,
    /// Tokens the generator may produce per answer.
    pub max_answer_tokens: usize,
    /// Most tokens of passages put in the prompt, most relevant first (`None`: as
    /// many as the context window holds). Prefill time grows with the prompt, so a
    /// larger model on a small CPU wants a budget: the answers report runs
    /// Qwen2.5-Coder-0.5B at 256.
    pub context_tokens: Option<usize>,
    /// When the passages found are too weak to answer from.
    pub abstention: Abstention,
    /// How answers are decoded (its `max_new_tokens` is replaced by
    /// `max_answer_tokens`); part of cache keys.
    pub sampling: SamplingParams,
    /// The system prompt; its hash is part of cache keys.
    pub system_prompt: String,
    /// Time a query may take before it degrades (see [`Degradation`](super::Degradation)).
    pub latency_budget: Duration,
    /// Share of the budget after which retrieval shrinks to half of `top_k`.
    pub shrink_retrieval_after: f64,
    /// Chunks embedded per call during ingestion.
    pub embed_batch: usize,
    /// Documents per index upsert during ingestion.
    pub upsert_batch: usize,
    /// Recent question embeddings remembered (per access set, by normalised text)
    /// so that a repeated question skips the embedding model; 0 turns it off.
    pub question_memo_entries: usize,
    /// What a query does when its audit record cannot be written (with an
    /// audit sink configured): refuse the answer by default.
    pub audit_failure: AuditFailure,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            top_k: 4,
            mode: RetrievalMode::Dense,
            fusion: Fusion::default(),
            max_question_bytes: 4096,
            question_policy: QuestionPolicy::Reject,
            max_document_bytes: 64 << 20,
            max_answer_tokens: 160,
            context_tokens: None,
            sampling: SamplingParams::default(),
            abstention: Abstention::NEVER,
            system_prompt: "Answer the question in one short sentence, using only the \
                            numbered context passages, and cite the passage you used as \
                            [1]. If the passages do not contain the answer, say that you \
                            do not know."
                .into(),
            latency_budget: Duration::from_secs(30),
            shrink_retrieval_after: 0.5,
            embed_batch: 64,
            upsert_batch: 64,
            question_memo_entries: 1024,
            audit_failure: AuditFailure::Refuse,
        }
    }
}

impl PipelineConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        let bad = |reason: &str| {
            Err(InvalidInput::Config {
                reason: reason.into(),
            })
        };
        if self.top_k == 0 || self.max_question_bytes == 0 || self.max_document_bytes == 0 {
            return bad("top_k, max_question_bytes and max_document_bytes must be positive");
        }
        if self.embed_batch == 0 || self.upsert_batch == 0 || self.max_answer_tokens == 0 {
            return bad("embed_batch, upsert_batch and max_answer_tokens must be positive");
        }
        if !(0.0..=1.0).contains(&self.shrink_retrieval_after) || self.latency_budget.is_zero() {
            return bad("shrink_retrieval_after must be in 0..=1 and the latency budget positive");
        }
        self.fusion.validate()
    }

    /// A stable hash of everything in the prompt besides question and context.
    pub fn prompt_fingerprint(&self) -> u64 {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.system_prompt.as_bytes());
        h.update((self.max_answer_tokens as u64).to_le_bytes());
        h.update([self.mode as u8]);
        h.update((self.top_k as u64).to_le_bytes());
        if let Some(budget) = self.context_tokens {
            h.update(b"context_tokens");
            h.update((budget as u64).to_le_bytes());
        }
        let d = h.finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        u64::from_le_bytes(b)
    }
}
