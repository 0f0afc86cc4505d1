//! Cache settings.

use std::time::Duration;

use crate::error::CacheError;

/// Settings of a [`SemanticCache`](crate::SemanticCache).
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Least cosine similarity between question embeddings for a hit, in (0, 1].
    pub min_similarity: f32,
    /// How long an entry may be served.
    pub ttl: Duration,
    /// Most entries held.
    pub max_entries: usize,
    /// Most bytes held (answer text, citations, question vector, bookkeeping).
    pub max_bytes: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            min_similarity: 0.95,
            ttl: Duration::from_secs(3600),
            max_entries: 10_000,
            max_bytes: 64 << 20,
        }
    }
}

impl CacheConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), CacheError> {
        if !(self.min_similarity > 0.0 && self.min_similarity <= 1.0) {
            return Err(CacheError::Config(format!(
                "min_similarity {} must be in (0, 1]",
                self.min_similarity
            )));
        }
        if self.max_entries == 0 || self.max_bytes == 0 || self.ttl.is_zero() {
            return Err(CacheError::Config(
                "max_entries, max_bytes and ttl must be positive".into(),
            ));
        }
        Ok(())
    }
}
