//! Errors of the cache crate.

/// What went wrong in the cache.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// A setting is out of range.
    #[error("invalid cache configuration: {0}")]
    Config(String),
}

impl From<CacheError> for rag_core::Error {
    fn from(e: CacheError) -> Self {
        match e {
            CacheError::Config(reason) => rag_core::InvalidInput::Config { reason }.into(),
        }
    }
}
