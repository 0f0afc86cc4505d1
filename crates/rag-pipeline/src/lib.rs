//! # rag-pipeline
//!
//! The pipeline: chunk and ingest documents, and answer a principal's questions
//! with citations (access resolution, embedding, cache, filtered retrieval, prompt
//! assembly, generation under a latency budget, audit), over the trait objects of
//! every boundary. Answers can be streamed ([`Pipeline::query_stream`]).
//!
//! With the test doubles of the `testing` feature (without it, this example compiles
//! to nothing):
//!
//! ```
//! # #[cfg(feature = "testing")]
//! # fn main() -> Result<(), rag_core::Error> {
//! use std::sync::Arc;
//! use rag_pipeline::{Pipeline, QueryOptions};
//! use rag_pipeline::testing::{EchoGenerator, FlatIndex, HashEmbedder, OpenResolver};
//! use rag_pipeline::RecursiveChunker;
//! use rag_core::{Acl, DocId, Document, Embedder, Metadata, Principal, TenantId, WordCounter};
//!
//! let embedder = Arc::new(HashEmbedder::new(32)?);
//! let pipeline = Pipeline::builder()
//!     .chunker(Arc::new(RecursiveChunker::new(64, 8, Arc::new(WordCounter))?))
//!     .index(Arc::new(FlatIndex::new(embedder.fingerprint().clone())))
//!     .embedder(embedder)
//!     .generator(Arc::new(EchoGenerator::default()))
//!     .access(Arc::new(OpenResolver))
//!     .build()?;
//! pipeline.ingest(vec![Document {
//!     tenant: TenantId::new("acme"),
//!     id: DocId::new("handbook"),
//!     version: 1,
//!     text: "Expenses are approved by the team lead.".into(),
//!     metadata: Metadata::default(),
//!     acl: Some(Acl::new("acme").allow_group("staff")),
//! }])?;
//! let ann = Principal::new("acme", "ann").with_group("staff");
//! let answer = pipeline.query(&ann, "Who approves expenses?", &QueryOptions::default())?;
//! assert_eq!(answer.answer.citations[0].doc_id, DocId::new("handbook"));
//! let bob = Principal::new("acme", "bob");
//! assert!(pipeline.query(&bob, "Who approves expenses?", &QueryOptions::default())?
//!     .answer.citations.is_empty());
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "testing"))]
//! # fn main() {}
//! ```

#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![doc(test(attr(deny(warnings))))]

mod authorized;
mod chunking;
mod config;
mod health;
mod ingest;
mod memo;
pub mod observe;
mod prompt;
mod query;
pub mod queue;
mod stream;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

pub use chunking::{MarkdownChunker, RecursiveChunker};
pub use config::{Abstention, PipelineConfig, QuestionPolicy};
pub use health::{Health, HealthStatus};
pub use ingest::{IngestReport, content_hash};
pub use query::{AnswerKind, Degradation, QueryAnswer, QueryOptions, StageTiming};
pub use stream::QueryEvent;

use rag_core::AuditSink;
use rag_core::{AccessResolver, AnswerCache, Chunker, Embedder, Generator, VectorIndex};
use rag_core::{InvalidInput, Result};

/// Ingests documents and answers questions; see the [crate](self) docs.
pub struct Pipeline {
    chunker: Arc<dyn Chunker>,
    embedder: Arc<dyn Embedder>,
    index: Arc<dyn VectorIndex>,
    generator: Option<Arc<dyn Generator>>,
    cache: Option<Arc<dyn AnswerCache>>,
    access: Arc<dyn AccessResolver>,
    audit: Option<Arc<dyn AuditSink>>,
    config: PipelineConfig,
    prompt_fingerprint: u64,
    memo: memo::QuestionMemo,
    cache_hits: AtomicU64,
    cache_lookups: AtomicU64,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("embedder", &self.embedder.fingerprint().name())
            .field(
                "generator",
                &self.generator.as_ref().map(|g| g.name().to_owned()),
            )
            .field("cache", &self.cache.is_some())
            .field("audit", &self.audit.is_some())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Collects the parts of a [`Pipeline`]; [`build`](Self::build) checks they fit.
#[derive(Default)]
pub struct PipelineBuilder {
    chunker: Option<Arc<dyn Chunker>>,
    embedder: Option<Arc<dyn Embedder>>,
    index: Option<Arc<dyn VectorIndex>>,
    generator: Option<Arc<dyn Generator>>,
    cache: Option<Arc<dyn AnswerCache>>,
    access: Option<Arc<dyn AccessResolver>>,
    audit: Option<Arc<dyn AuditSink>>,
    config: PipelineConfig,
}

impl std::fmt::Debug for PipelineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineBuilder").finish_non_exhaustive()
    }
}

impl PipelineBuilder {
    /// The chunker (required).
    pub fn chunker(mut self, chunker: Arc<dyn Chunker>) -> Self {
        self.chunker = Some(chunker);
        self
    }
    /// The embedder (required).
    pub fn embedder(mut self, embedder: Arc<dyn Embedder>) -> Self {
        self.embedder = Some(embedder);
        self
    }
    /// The index (required).
    pub fn index(mut self, index: Arc<dyn VectorIndex>) -> Self {
        self.index = Some(index);
        self
    }
    /// The generator; without one, answers are extractive.
    pub fn generator(mut self, generator: Arc<dyn Generator>) -> Self {
        self.generator = Some(generator);
        self
    }
    /// The answer cache (optional).
    pub fn cache(mut self, cache: Arc<dyn AnswerCache>) -> Self {
        self.cache = Some(cache);
        self
    }
    /// The access resolver (required).
    pub fn access(mut self, access: Arc<dyn AccessResolver>) -> Self {
        self.access = Some(access);
        self
    }
    /// The audit sink: every answer is recorded in it before it is returned
    /// (optional; see [`PipelineConfig::audit_failure`]).
    pub fn audit(mut self, audit: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(audit);
        self
    }
    /// The settings.
    pub fn config(mut self, config: PipelineConfig) -> Self {
        self.config = config;
        self
    }

    /// Checks the parts against each other: the index is of the embedder's model
    /// (name, dimensions, checksum), chunks fit the embedder's input, the answer fits
    /// the generator's window, and the settings are valid.
    pub fn build(self) -> Result<Pipeline> {
        let missing = |what: &str| InvalidInput::Config {
            reason: format!("pipeline needs a {what}"),
        };
        let chunker = self.chunker.ok_or_else(|| missing("chunker"))?;
        let embedder = self.embedder.ok_or_else(|| missing("embedder"))?;
        let index = self.index.ok_or_else(|| missing("index"))?;
        let access = self.access.ok_or_else(|| missing("access resolver"))?;
        self.config.validate()?;
        if embedder.fingerprint() != index.fingerprint() {
            return Err(InvalidInput::ModelMismatch {
                expected: index.fingerprint().id(),
                actual: embedder.fingerprint().id(),
            }
            .into());
        }
        if let Some(max) = chunker.max_tokens()
            && max > embedder.max_input_tokens()
        {
            return Err(InvalidInput::Config {
                reason: format!(
                    "chunks of up to {max} tokens do not fit the embedder's {} input tokens",
                    embedder.max_input_tokens()
                ),
            }
            .into());
        }
        if let Some(g) = &self.generator
            && g.context_window() <= self.config.max_answer_tokens + 64
        {
            return Err(InvalidInput::Config {
                reason: format!(
                    "the generator's window of {} tokens cannot hold a {}-token answer and a prompt",
                    g.context_window(),
                    self.config.max_answer_tokens
                ),
            }
            .into());
        }
        let prompt_fingerprint = self.config.prompt_fingerprint();
        let memo = memo::QuestionMemo::new(
            embedder.fingerprint().id(),
            self.config.question_memo_entries,
        );
        Ok(Pipeline {
            chunker,
            embedder,
            index,
            generator: self.generator,
            cache: self.cache,
            access,
            audit: self.audit,
            config: self.config,
            prompt_fingerprint,
            memo,
            cache_hits: AtomicU64::new(0),
            cache_lookups: AtomicU64::new(0),
        })
    }
}

impl Pipeline {
    /// A builder.
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder::default()
    }

    /// The settings.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// The administrative handle: the index itself, whose reads
    /// ([`VectorIndexRead::document`](rag_core::VectorIndexRead::document), [`VectorIndexRead::stats`](rag_core::VectorIndexRead::stats)) take no access filter
    /// and return any tenant's documents, ACLs and metadata. For operators and
    /// tooling; never reachable from code acting for a principal, which reads
    /// through [`document`](Self::document) and [`query`](Self::query).
    pub fn admin_index(&self) -> &Arc<dyn VectorIndex> {
        &self.index
    }

    /// A document's metadata as `principal` may see it: `None` when it does not
    /// exist, is of another tenant, or is not visible to the principal (the three
    /// are indistinguishable).
    pub fn document(
        &self,
        principal: &rag_core::Principal,
        doc_id: &rag_core::DocId,
    ) -> Result<Option<rag_core::DocumentInfo>> {
        let filter = self.access.resolve(principal)?;
        let key = rag_core::DocKey::new(filter.tenant().clone(), doc_id.clone());
        Ok(self
            .index
            .document(&key)?
            .filter(|info| filter.permits(info.acl.as_ref())))
    }

    /// The embedder.
    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }
}
