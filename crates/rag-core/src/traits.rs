//! The sync, object-safe `Send + Sync` traits at every boundary of the SDK.
//! Pipelines hold them as `Arc<dyn Trait>`.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::access::{AccessFilter, Acl, Principal};
use crate::answer::{Answer, Generation, GenerationRequest, TokenControl};
use crate::document::{Chunk, ContentHash, Document, Metadata};
use crate::embedding::{Embedding, ModelFingerprint};
use crate::error::Result;
use crate::hit::SearchResult;
use crate::ids::{ChunkId, DocKey, TenantId};
use crate::retrieval::{RetrievalMode, SearchRequest};
use crate::write::{DeletePredicate, DocumentUpdate, WriteOp, WriteReport};

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    /// The CPU.
    Cpu,
    /// An NVIDIA GPU.
    Cuda {
        /// The CUDA device ordinal.
        ordinal: u32,
    },
}

/// Splits a document into chunks with byte spans into its text.
pub trait Chunker: Send + Sync {
    /// The chunks of `doc`, in order.
    fn chunk(&self, doc: &Document) -> Result<Vec<Chunk>>;
    /// The most tokens a chunk holds, if the chunker budgets tokens.
    fn max_tokens(&self) -> Option<usize> {
        None
    }
}

/// Turns texts into embeddings, a batch at a time.
pub trait Embedder: Send + Sync {
    /// The model's fingerprint; every embedding it returns carries its id.
    fn fingerprint(&self) -> &ModelFingerprint;
    /// One embedding per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Embedding>>;
    /// The device the model actually runs on.
    fn device(&self) -> Device;
    /// Tokens `text` costs with the model's tokenizer, without special tokens and
    /// without truncation: what a chunker budgets with.
    fn count_tokens(&self, text: &str) -> Result<usize>;
    /// The most tokens of one input the model reads (special tokens excluded); the
    /// rest is truncated.
    fn max_input_tokens(&self) -> usize;
}

/// Generates text from a chat prompt.
pub trait Generator: Send + Sync {
    /// A stable name of the model and its settings, part of cache keys.
    fn name(&self) -> &str;
    /// The context window in tokens.
    fn context_window(&self) -> usize;
    /// Counts the tokens a text takes.
    fn count_tokens(&self, text: &str) -> Result<usize>;
    /// Generates, calling `on_token` with each piece of text as it is produced;
    /// returning [`TokenControl::Stop`] from it cancels generation.
    fn generate(
        &self,
        request: &GenerationRequest,
        on_token: &mut dyn FnMut(&str) -> TokenControl,
    ) -> Result<Generation>;
}

/// Resolves a principal to the compiled filter that indexes and caches evaluate.
pub trait AccessResolver: Send + Sync {
    /// The principal's filter; an unknown or disabled principal is an error
    /// ([`Error::Denied`](crate::Error::Denied)), never a wider filter.
    fn resolve(&self, principal: &Principal) -> Result<AccessFilter>;
}

/// What an index knows of a stored document.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentInfo {
    /// Its version.
    pub version: u64,
    /// Its ACL.
    pub acl: Option<Acl>,
    /// Its metadata.
    pub metadata: Metadata,
    /// The digest of the source document given when it was written.
    pub content_hash: Option<ContentHash>,
    /// Its chunks, in order.
    pub chunk_ids: Vec<ChunkId>,
}

/// Counters of an index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Documents stored.
    pub documents: usize,
    /// Chunks stored and searchable.
    pub chunks: usize,
    /// Incremented by every write (and by compaction).
    pub generation: u64,
    /// The sequence number of the last write applied.
    pub sequence: u64,
    /// Removed vectors whose space is not reclaimed yet.
    pub tombstones: usize,
}

/// The read half of a vector index: what a search, a cache check or a replica
/// serving queries needs. Every [`VectorIndex`] is one.
pub trait VectorIndexRead: Send + Sync {
    /// The embedding model the index was built for.
    fn fingerprint(&self) -> &ModelFingerprint;

    /// The `k` chunks most similar to `query` among those `filter` may see. The filter
    /// is applied inside the search, so `min(k, visible)` hits come back.
    fn search(&self, query: &Embedding, k: usize, filter: &AccessFilter) -> Result<SearchResult>;

    /// A dense, lexical or hybrid search among the chunks `filter` may see. The
    /// default supports dense requests only; indexes with a lexical leg override it.
    fn retrieve(&self, request: &SearchRequest<'_>, filter: &AccessFilter) -> Result<SearchResult> {
        match request.mode {
            RetrievalMode::Dense => self.search(request.require_embedding()?, request.k, filter),
            RetrievalMode::Lexical | RetrievalMode::Hybrid => Err(crate::Error::Unsupported {
                feature: "lexical search",
            }),
        }
    }

    /// A stored document's version, ACL and chunks.
    fn document(&self, key: &DocKey) -> Result<Option<DocumentInfo>>;

    /// Current counters.
    fn stats(&self) -> IndexStats;
}

/// A vector index with a chunk store, searched through an access filter: the read
/// half ([`VectorIndexRead`]) and the writes.
pub trait VectorIndex: VectorIndexRead {
    /// Applies one write.
    fn apply(&self, op: WriteOp) -> Result<WriteReport>;

    /// Inserts or replaces documents.
    fn upsert(&self, docs: Vec<DocumentUpdate>) -> Result<WriteReport> {
        self.apply(WriteOp::Upsert(docs))
    }

    /// Removes a document.
    fn delete(&self, key: &DocKey) -> Result<WriteReport> {
        self.apply(WriteOp::Delete(key.clone()))
    }

    /// Removes every document of `tenant` matching `predicate`.
    fn delete_where(&self, tenant: &TenantId, predicate: DeletePredicate) -> Result<WriteReport> {
        self.apply(WriteOp::DeleteWhere {
            tenant: tenant.clone(),
            predicate,
        })
    }

    /// Removes a document and every copy of its content before returning.
    fn erase(&self, key: &DocKey) -> Result<WriteReport> {
        self.apply(WriteOp::Erase(key.clone()))
    }

    /// [`VectorIndex::erase`] for every document of `tenant` matching `predicate`.
    fn erase_where(&self, tenant: &TenantId, predicate: DeletePredicate) -> Result<WriteReport> {
        self.apply(WriteOp::EraseWhere {
            tenant: tenant.clone(),
            predicate,
        })
    }
}

/// What identifies a cached answer: the question's embedding and everything that
/// changes the answer besides the question.
#[derive(Debug, Clone, Copy)]
pub struct CacheKey<'a> {
    /// The question's embedding.
    pub question: &'a Embedding,
    /// The caller's compiled access.
    pub scope: &'a AccessFilter,
    /// The generator's name.
    pub generator: &'a str,
    /// A fingerprint of everything else that shapes the answer: the prompt
    /// template, retrieval mode, fusion, `top_k` and generation settings.
    pub settings: u64,
}

/// A semantic answer cache, scoped by access and invalidated by document changes.
pub trait AnswerCache: Send + Sync {
    /// A cached answer for a close enough question with the same scope, model and
    /// settings, every one of whose sources (its provenance and citations) `index`
    /// confirms is current and visible.
    fn lookup(&self, key: &CacheKey<'_>, index: &dyn VectorIndexRead) -> Result<Option<Answer>>;
    /// Stores an answer.
    fn store(&self, key: &CacheKey<'_>, answer: &Answer) -> Result<()>;
    /// Drops every entry made from one of `docs` (cited or not); returns how many
    /// were dropped.
    fn invalidate(&self, docs: &BTreeSet<DocKey>) -> Result<usize>;
}

/// Counts the tokens a text costs. Every token covers at least one byte of the text
/// (true of WordPiece, byte-level BPE and SentencePiece), so a text of `n` bytes never
/// counts more than `n`: chunkers skip counting texts shorter than their budget.
pub trait TokenCounter: Send + Sync {
    /// Tokens in `text`, without any special tokens a model adds around an input.
    fn count(&self, text: &str) -> Result<usize>;
}

/// Counts whitespace-separated words: a tokenizer-free budget.
#[derive(Debug, Clone, Copy, Default)]
pub struct WordCounter;

impl TokenCounter for WordCounter {
    fn count(&self, text: &str) -> Result<usize> {
        Ok(text.split_whitespace().count())
    }
}

/// Counts with an embedder's own tokenizer.
#[derive(Clone)]
pub struct EmbedderTokens(pub Arc<dyn Embedder>);

impl std::fmt::Debug for EmbedderTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("EmbedderTokens")
            .field(&self.0.fingerprint().name())
            .finish()
    }
}

impl TokenCounter for EmbedderTokens {
    fn count(&self, text: &str) -> Result<usize> {
        self.0.count_tokens(text)
    }
}
