//! Health: whether the pipeline can answer, and how well.

use super::Pipeline;
use rag_core::{Device, IndexStats};

/// Overall state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    /// Everything works.
    Healthy,
    /// Answers come back, but in a reduced form (for instance extractive only).
    Degraded,
    /// Questions cannot be answered.
    Unhealthy,
}

/// A health report.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// Overall state.
    pub status: HealthStatus,
    /// Why it is not healthy; empty when it is. Kinds of failure only: never a
    /// backend's message, which may quote prompt or document text.
    pub reasons: Vec<String>,
    /// Where the embedder runs.
    pub embedder_device: Device,
    /// The embedding model.
    pub embedder: String,
    /// The index's counters.
    pub index: IndexStats,
    /// The generator, if any.
    pub generator: Option<String>,
    /// Whether answers are cached.
    pub cache: bool,
}

impl Pipeline {
    /// Probes the embedder and the generator and reads the index's counters.
    pub fn health(&self) -> Health {
        let mut unhealthy = Vec::new();
        let mut degraded = Vec::new();
        if let Err(e) = self.embedder.embed(&["health probe"]) {
            tracing::debug!(error = %e, "health probe: the embedder failed");
            unhealthy.push(format!("embedder fails ({})", e.summary()));
        }
        let index = self.index.stats();
        if index.chunks == 0 {
            degraded.push("the index is empty".to_owned());
        }
        match &self.generator {
            None => degraded.push("no generator: answers are extractive".to_owned()),
            Some(g) => {
                if let Err(e) = g.count_tokens("health probe") {
                    tracing::debug!(error = %e, "health probe: the generator failed");
                    degraded.push(format!(
                        "generator fails ({}); answers are extractive",
                        e.summary()
                    ));
                }
            }
        }
        let status = if !unhealthy.is_empty() {
            HealthStatus::Unhealthy
        } else if !degraded.is_empty() {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        };
        unhealthy.extend(degraded);
        Health {
            status,
            reasons: unhealthy,
            embedder_device: self.embedder.device(),
            embedder: self.embedder.fingerprint().name().to_owned(),
            index,
            generator: self.generator.as_ref().map(|g| g.name().to_owned()),
            cache: self.cache.is_some(),
        }
    }
}
