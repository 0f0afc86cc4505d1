//! The SDK's error boundary: errors sorted by what the caller should do.

use std::fmt;

use crate::embedding::ModelId;
use crate::ids::{ChunkId, DocId, TenantId};

/// A boxed error from a backend, the only `Box<dyn Error>` in the SDK.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with the SDK's boundary error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The stage of the pipeline an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    /// Splitting documents into chunks.
    Chunk,
    /// Computing embeddings.
    Embed,
    /// Writing to or reading from the vector index.
    Index,
    /// Resolving a principal's access.
    Access,
    /// Generating an answer.
    Generate,
    /// The answer cache.
    Cache,
    /// Writing or reading a snapshot.
    Snapshot,
    /// The audit log.
    Audit,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Stage::Chunk => "chunk",
            Stage::Embed => "embed",
            Stage::Index => "index",
            Stage::Access => "access",
            Stage::Generate => "generate",
            Stage::Cache => "cache",
            Stage::Snapshot => "snapshot",
            Stage::Audit => "audit",
        };
        f.write_str(name)
    }
}

/// Why an input was rejected. Each variant is the caller's to fix; nothing accepted
/// before the rejected call is lost.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// A vector has the wrong number of dimensions.
    #[error("wrong vector dimension: expected {expected}, got {actual}")]
    DimensionMismatch {
        /// Dimensions the index or model uses.
        expected: usize,
        /// Dimensions received.
        actual: usize,
    },
    /// A vector holds NaN or an infinity.
    #[error("vector holds a non-finite value at position {position}")]
    NonFinite {
        /// Index of the first offending component.
        position: usize,
    },
    /// A vector has (close to) zero norm and no direction.
    #[error("vector has zero norm")]
    ZeroVector,
    /// A vector has no components at all.
    #[error("vector is empty")]
    EmptyVector,
    /// A text that must not be empty is empty or whitespace only.
    #[error("{what} is empty")]
    EmptyText {
        /// What was empty (`"chunk text"`, `"question"`, ...).
        what: &'static str,
    },
    /// An identifier is empty.
    #[error("{what} id is empty")]
    EmptyId {
        /// Which id.
        what: &'static str,
    },
    /// A document has no chunks.
    #[error("document {doc_id} has no chunks")]
    NoChunks {
        /// The document.
        doc_id: DocId,
    },
    /// The same chunk id appears twice in a write, or belongs to another document.
    #[error("duplicate chunk id {chunk_id}")]
    DuplicateChunkId {
        /// The repeated id.
        chunk_id: ChunkId,
    },
    /// The same document appears twice in one batch.
    #[error("document {doc_id} appears more than once in one batch")]
    DuplicateDocument {
        /// The repeated document.
        doc_id: DocId,
    },
    /// A vector came from another embedding model than the one the index was built with.
    #[error("embedding model mismatch: index uses {expected}, vector is from {actual}")]
    ModelMismatch {
        /// The index's model.
        expected: ModelId,
        /// The vector's model.
        actual: ModelId,
    },
    /// A chunk span does not lie inside its document, or is not on character boundaries.
    #[error("chunk span {start}..{end} is invalid")]
    InvalidSpan {
        /// Start byte offset.
        start: usize,
        /// End byte offset.
        end: usize,
    },
    /// `k` (number of results) is zero or over the configured limit.
    #[error("k = {k} is out of range 1..={max}")]
    InvalidK {
        /// Requested k.
        k: usize,
        /// Largest k accepted.
        max: usize,
    },
    /// A value is too large.
    #[error("{what} is too large: {actual} > {max}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        actual: usize,
        /// The limit.
        max: usize,
    },
    /// A request or value is malformed.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was malformed.
        what: &'static str,
        /// How.
        detail: String,
    },
    /// A permission tag's name is empty, whitespace only, holds a control
    /// character, or is longer than [`MAX_TAG_BYTES`](crate::MAX_TAG_BYTES).
    #[error("permission tag {tag:?} is invalid: {reason}")]
    InvalidTag {
        /// The tag as written (`u:`, `g:` or `r:` and its name), cut to 64 bytes.
        tag: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An ACL lists more tags than [`MAX_ACL_TAGS`](crate::MAX_ACL_TAGS).
    #[error("the ACL lists {actual} tags; at most {max} are allowed")]
    TooManyTags {
        /// Allow and deny tags listed.
        actual: usize,
        /// The limit.
        max: usize,
    },
    /// A write names one tenant and carries an ACL of another.
    #[error("the ACL's tenant {acl} differs from the write's tenant {key}")]
    TenantMismatch {
        /// The tenant the write names.
        key: TenantId,
        /// The tenant of its ACL.
        acl: TenantId,
    },
    /// An upsert would move a document's version backwards, or change its content
    /// without a new version.
    #[error("document {doc_id} is stored at version {stored}; version {given} is stale")]
    StaleVersion {
        /// The document (within the caller's tenant).
        doc_id: DocId,
        /// The stored version.
        stored: u64,
        /// The version given.
        given: u64,
    },
    /// A configuration value is invalid.
    #[error("invalid configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
}

/// The SDK's boundary error, sorted by what the caller should do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input was rejected; fix it and retry.
    #[error("invalid input: {0}")]
    InvalidInput(#[from] InvalidInput),
    /// The named thing does not exist.
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// The caller may not do this.
    #[error("access denied: {reason}")]
    Denied {
        /// Why (never names what the caller may not see).
        reason: String,
    },
    /// The feature is not compiled in or not supported by this backend.
    #[error("unsupported: {feature}")]
    Unsupported {
        /// The missing feature.
        feature: &'static str,
    },
    /// A passing failure; retrying may succeed.
    #[error("transient failure in {stage}: {source}")]
    Transient {
        /// The stage that failed.
        stage: Stage,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A backend failed; retrying the same call will likely fail again.
    #[error("{stage} backend failed: {source}")]
    Backend {
        /// The stage that failed.
        stage: Stage,
        /// The cause.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// A backend failure from any error type.
    pub fn backend(stage: Stage, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            stage,
            source: source.into(),
        }
    }

    /// A not-found error for a document.
    pub fn unknown_document(doc_id: &DocId) -> Self {
        Error::NotFound {
            what: format!("document {doc_id}"),
        }
    }

    /// What kind of failure this is and where, without any of its text (a backend's
    /// message can quote a prompt, and with it document text): safe for logs above
    /// debug, health reasons and metric labels.
    pub fn summary(&self) -> String {
        match self {
            Error::InvalidInput(_) => "invalid input".to_owned(),
            Error::NotFound { .. } => "not found".to_owned(),
            Error::Denied { .. } => "access denied".to_owned(),
            Error::Unsupported { feature } => format!("unsupported: {feature}"),
            Error::Transient { stage, .. } => format!("transient failure in {stage}"),
            Error::Backend { stage, .. } => format!("{stage} backend failed"),
        }
    }

    /// Whether retrying the same call may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Transient { .. })
    }

    /// The small set a service turns into statuses.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidInput(_) | Error::Unsupported { .. } => ErrorKind::InvalidInput,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Denied { .. } => ErrorKind::Denied,
            Error::Transient { .. } => ErrorKind::Unavailable,
            Error::Backend { .. } => ErrorKind::Internal,
        }
    }
}

/// What a caller of a service should do about an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Fix the request (HTTP 400).
    InvalidInput,
    /// Not permitted (HTTP 403).
    Denied,
    /// No such thing, or not one the caller may see (HTTP 404).
    NotFound,
    /// Retry later (HTTP 503).
    Unavailable,
    /// A fault of the service (HTTP 500).
    Internal,
}

impl ErrorKind {
    /// The HTTP status a service answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidInput => 400,
            ErrorKind::Denied => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
        }
    }
}
