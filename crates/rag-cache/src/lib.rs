//! # rag-cache
//!
//! A semantic answer cache for the RAG SDK ([`SemanticCache`], an
//! [`AnswerCache`](rag_core::AnswerCache)).
//!
//! * **Scoped.** Entries are partitioned by the caller's compiled access set (the
//!   whole [`AccessFilter`](rag_core::AccessFilter), not only its fingerprint), the
//!   embedding model, the generator and the prompt template. A hit needs an exact
//!   partition match and a question embedding within the cosine threshold.
//! * **Provenance-checked.** Each entry records the chunks and document versions it
//!   cited. Invalidating a document drops every entry citing it, and a hit is served
//!   only after the index confirms each cited chunk is still current and visible to
//!   this caller; otherwise it is a miss (a stale rejection) and the entry is dropped.
//! * **Bounded.** TTL, and LRU eviction by entry count and by bytes.
//! * **Counted.** Hits, misses, stale rejections, expirations and evictions.
//!
//! An answer with no sources (no passage in its provenance, none cited) is not
//! stored: no document change could invalidate it, while a new document might
//! make it wrong. An answer that cites nothing but was made from passages is
//! stored, and invalidated through its provenance.
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod cache;
mod config;
mod error;

pub use cache::{CacheStats, SemanticCache};
pub use config::CacheConfig;
pub use error::CacheError;
