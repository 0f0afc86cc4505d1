//! # rag-core
//!
//! The thin API crate of the RAG SDK: value types (documents, chunks, embeddings,
//! hits, answers with citations), the sync, object-safe `Send + Sync` traits that the
//! other crates implement ([`Chunker`], [`Embedder`], [`Generator`], [`VectorIndex`],
//! [`AnswerCache`], [`AccessResolver`]), and the boundary [`Error`] that tells a caller
//! what to do.
//!
//! Access control is fail-closed and defined once, in [`AccessFilter::permits`]: a
//! chunk whose document has no ACL is visible to nobody.
//!
//! ```
//! use rag_core::{AccessFilter, Acl, Principal};
//!
//! let alice = Principal::new("acme", "alice").with_group("eng");
//! let filter = AccessFilter::for_principal(&alice);
//! assert!(filter.permits(Some(&Acl::new("acme").allow_group("eng"))));
//! assert!(!filter.permits(Some(&Acl::new("acme").allow_group("eng").deny_user("alice"))));
//! assert!(!filter.permits(None));
//! ```
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![doc(test(attr(deny(warnings))))]

mod access;
mod answer;
mod audit;
mod authz;
mod document;
mod embedding;
mod error;
mod hit;
mod ids;
mod retrieval;
mod traits;
mod write;

pub use access::{AccessFilter, AccessFingerprint, Acl, ParseTagError, PermissionTag, Principal};
pub use answer::{
    Answer, ChatMessage, Citation, FinishReason, Generation, GenerationRequest, Role,
    SamplingParams, TokenControl,
};
pub use audit::{AnswerDecision, AnswerRecord, AuditFailure, AuditSink};
pub use authz::{Grants, Operation, ParseRoleError, ServiceRole, authorize};
pub use document::{AttrValue, Chunk, ContentHash, Document, Metadata, Span};
pub use embedding::{Embedding, ModelFingerprint, ModelId};
pub use error::{BoxError, Error, ErrorKind, InvalidInput, Result, Stage};
pub use hit::{Hit, SearchResult, SearchStrategy};
pub use ids::{ChunkId, DocId, DocKey, GroupId, RoleId, TenantId, UserId};
pub use retrieval::{Fusion, RetrievalMode, SearchRequest, reciprocal_rank_fusion};
pub use traits::{
    AccessResolver, AnswerCache, CacheKey, Chunker, Device, DocumentInfo, Embedder, EmbedderTokens,
    Generator, IndexStats, TokenCounter, VectorIndex, VectorIndexRead, WordCounter,
};
pub use write::{
    DeletePredicate, DocumentUpdate, EmbeddedChunk, MAX_ACL_TAGS, MAX_TAG_BYTES, WriteOp,
    WriteReport, check_key,
};
