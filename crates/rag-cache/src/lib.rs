//! # rag-cache
//!
//! A semantic answer cache for the RAG SDK, scoped by the caller's compiled access
//! set and invalidated when a cited document changes. It implements
//! [`rag_core::AnswerCache`].
//!
//! Not implemented yet: this crate is a placeholder in the workspace graph.
#![deny(missing_docs)]
