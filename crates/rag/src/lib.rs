//! # rag
//!
//! The RAG SDK in one dependency and one `use`: every crate re-exported (local
//! models behind `onnx`, GPU behind `cuda`, remote generation behind `remote`, JWT
//! behind `jwt`), and [`Rag`], an async facade for tokio hosts that opens the
//! index from the embedder's own fingerprint, runs the CPU stages (embedding,
//! search, local generation) on a bounded pool of its own, and streams answers:
//! the sources first, then the tokens, then the final answer with its timings and
//! degradations. Dropping the stream stops generation within one token.
//!
//! ```no_run
//! # async fn run() -> Result<(), rag::Error> {
//! use rag::prelude::*;
//!
//! let rag = Rag::builder().local_models()?.open("./rag-state")?;
//! let ann = Principal::new("acme", "ann").with_group("staff");
//! rag.directory().add_user(&ann.tenant, &ann.user, ann.groups.clone());
//! rag.ingest(vec![Document::new("acme", "handbook", "Expenses are approved by the team lead.")
//!     .readable_by_group("staff")]).await?;
//! let mut answer = rag.stream(&ann, "Who approves expenses?").await?;
//! while let Some(event) = answer.next().await {
//!     match event? {
//!         StreamEvent::Sources(s) => println!("{} sources", s.len()),
//!         StreamEvent::Token(t) => print!("{t}"),
//!         StreamEvent::Done(a) => println!("\ncites {:?}", a.answer.citations),
//!     }
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod facade;
mod stream;

pub use facade::{Rag, RagBuilder};
pub use rag_core::*;
pub use stream::{AnswerStream, StreamEvent};

/// The pipeline: chunkers, ingest, streamed and cited answers
/// ([`rag_pipeline`]).
pub mod pipeline {
    pub use rag_pipeline::*;
}

/// Principals, groups, revocation, the audit log, and (feature `jwt`) bearer
/// tokens ([`rag_acl`]).
pub mod acl {
    pub use rag_acl::*;
}

/// The HNSW and BM25 index, the durable store, snapshots ([`rag_index`]).
pub mod index {
    pub use rag_index::*;
}

/// The semantic answer cache ([`rag_cache`]).
pub mod cache {
    pub use rag_cache::*;
}

/// Local models on ONNX Runtime ([`rag_infer`]).
#[cfg(feature = "onnx")]
pub mod infer {
    pub use rag_infer::*;
}

/// OpenAI-compatible remote generation and load balancing ([`rag_remote`]).
#[cfg(feature = "remote")]
pub mod remote {
    pub use rag_remote::*;
}

/// What a host uses most.
pub mod prelude {
    pub use crate::pipeline::{AnswerKind, QueryAnswer, QueryOptions};
    pub use crate::{
        Acl, AnswerStream, Document, Error, ErrorKind, Principal, Rag, StreamEvent, TenantId,
    };
}
