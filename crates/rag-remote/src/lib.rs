//! # rag-remote
//!
//! Generation on other machines: [`OpenAiGenerator`] calls an OpenAI-compatible
//! `/v1/chat/completions` server (vLLM, TGI, llama.cpp, or this crate's own
//! [`server`]), streamed over SSE or not, under the request's deadline; [`Balancer`]
//! spreads requests over several such backends (round robin, least outstanding,
//! peak-EWMA with two choices) with ejection, probation, probes and failover before
//! the first token. Both are [`Generator`](rag_core::Generator)s, so a pipeline
//! takes them where it takes a local model, with the same prompt and citation rules.
//!
//! ```no_run
//! use std::sync::Arc;
//! use rag_remote::{Backend, Balancer, BalancerConfig, OpenAiConfig, OpenAiGenerator};
//!
//! let backends = ["http://10.0.0.7:8000", "http://10.0.0.8:8000"]
//!     .iter()
//!     .enumerate()
//!     .map(|(i, url)| {
//!         let client = OpenAiGenerator::new(OpenAiConfig::new(*url, "smollm2"))?;
//!         Ok(Backend::openai(format!("gen-{i}"), client))
//!     })
//!     .collect::<Result<Vec<_>, rag_remote::RemoteError>>()?;
//! let balancer = Arc::new(Balancer::new("smollm2", backends, BalancerConfig::default())?);
//! let _prober = balancer.spawn_prober()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod balancer;
mod error;
mod openai;
#[cfg(feature = "server")]
pub mod server;
mod sse;

pub use balancer::{
    Admission, Backend, BackendStatus, Balancer, BalancerConfig, EJECTIONS, ERRORS, FIRST_TOKEN,
    OUTSTANDING, Probe, Prober, REQUESTS, Strategy,
};
pub use error::RemoteError;
pub use openai::{OpenAiConfig, OpenAiGenerator};
