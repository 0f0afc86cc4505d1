//! # rag-infer
//!
//! ONNX Runtime inference for the RAG SDK: batched embedding and autoregressive
//! generation with a KV cache, on CPU by default and CUDA behind a `cuda` feature.
//! It implements [`rag_core::Embedder`] and [`rag_core::Generator`].
//!
//! Not implemented yet: this crate is a placeholder in the workspace graph.
#![deny(missing_docs)]
