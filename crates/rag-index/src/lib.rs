//! # rag-index
//!
//! An access-filtered vector index: a usearch HNSW graph plus a chunk store (text,
//! document id and version, ACL, metadata), with Parquet snapshots.
//!
//! * The caller's [`AccessFilter`](rag_core::AccessFilter) is compiled against
//!   per-tag postings and applied **inside** the search, never by trimming a top-k.
//!   A planner picks an exact scan of the allowed vectors when the filter is
//!   selective, and a filtered HNSW walk with a beam widened for the selectivity
//!   otherwise; either way `min(k, visible)` hits come back.
//! * Documents are keyed by tenant and id; versions only move forward. Upserts
//!   replace a document's chunks atomically; deletes and replacements leave
//!   tombstones that compaction reclaims; erasure compacts at once.
//! * [`DurableIndex`] puts a write-ahead log in front (group commit, `fdatasync` by
//!   default), recovers from the newest checkpoint plus the log, and purges erased
//!   documents from every file.
//! * A tantivy BM25 index of the chunks' text gives lexical search, and hybrid search
//!   fuses both legs by reciprocal rank fusion
//!   ([`VectorIndexRead::retrieve`](rag_core::VectorIndexRead::retrieve)); the same compiled
//!   filter is applied inside the lexical search.
//! * The index is bound to one embedding model's fingerprint.
//!
//! ```
//! use rag_pipeline::testing::HashEmbedder;
//! use rag_core::{AccessFilter, Acl, Chunk, ChunkId, DocId, DocKey, DocumentUpdate,
//!     EmbeddedChunk, Embedder, Metadata, Principal, SearchRequest, Span, VectorIndex,
//!     VectorIndexRead};
//! use rag_index::{DurableIndex, HnswIndex, IndexConfig, StoreOptions};
//!
//! let embedder = HashEmbedder::new(32)?;
//! let index = HnswIndex::new(embedder.fingerprint().clone(), IndexConfig::default())?;
//! let text = "the quarterly budget for the platform team";
//! let doc = DocId::new("budget");
//! let key = DocKey::new("acme", doc.clone());
//! let update = DocumentUpdate {
//!     tenant: key.tenant.clone(),
//!     doc_id: doc.clone(),
//!     version: 1,
//!     acl: Some(Acl::new("acme").allow_group("finance")),
//!     metadata: Metadata::default(),
//!     content_hash: None,
//!     chunks: vec![EmbeddedChunk {
//!         chunk: Chunk { id: ChunkId::derive(&key, 0), ordinal: 0,
//!                        span: Span::new(0, text.len()), text: text.into(),
//!                        context: None },
//!         embedding: embedder.embed(&[text])?.remove(0),
//!     }],
//! };
//! index.upsert(vec![update.clone()])?;
//! let q = embedder.embed(&["budget"])?.remove(0);
//! let finance = AccessFilter::for_principal(&Principal::new("acme", "ann").with_group("finance"));
//! let other = AccessFilter::for_principal(&Principal::new("acme", "bob"));
//! assert_eq!(index.search(&q, 5, &finance)?.hits.len(), 1);
//! assert!(index.search(&q, 5, &other)?.hits.is_empty());
//! let lexical = index.retrieve(&SearchRequest::lexical("budgets", 5), &finance)?;
//! assert_eq!(lexical.hits.len(), 1); // "budgets" and "budget" share a stem
//! assert!(index.retrieve(&SearchRequest::lexical("budgets", 5), &other)?.hits.is_empty());
//!
//! // The same, durable: logged (and synced) before visible, recovered on open.
//! let dir = tempfile::tempdir().map_err(|e| rag_core::Error::backend(rag_core::Stage::Index, e))?;
//! let (store, _) = DurableIndex::open(dir.path(), embedder.fingerprint().clone(),
//!     IndexConfig::default(), StoreOptions::default())?;
//! store.upsert(vec![update])?;
//! drop(store);
//! let (store, recovery) = DurableIndex::open(dir.path(), embedder.fingerprint().clone(),
//!     IndexConfig::default(), StoreOptions::default())?;
//! assert_eq!(recovery.records_replayed, 1);
//! assert_eq!(store.search(&q, 5, &finance)?.hits.len(), 1);
//! # Ok::<(), rag_core::Error>(())
//! ```
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![doc(test(attr(deny(warnings))))]

mod config;
mod error;
mod filter;
mod freeze;
#[doc(hidden)]
pub mod fuzzing;
mod hnsw;
mod index;
mod kernels;
mod lexical;
mod plan;
mod search;
mod snapshot;
mod state;
pub mod store;
mod vectors;
mod write;

pub use config::{IndexConfig, IndexConfigBuilder, SnapshotKey};
pub use error::{IndexError, Result, SnapshotError, StoreError};
pub use index::{HnswIndex, MemoryUsage};
pub use kernels::dot;
pub use search::SearchMode;
pub use snapshot::{FileEntry, Manifest, SIGNATURE_FILE, SNAPSHOT_FORMAT_VERSION, SnapshotReport};
pub use store::{CheckpointReport, Durability, DurableIndex, RecoveryReport, StoreOptions};
pub use write::{Commit, CommitLog};
