//! Errors of the index crate.

use std::path::PathBuf;

use rag_core::{DocId, InvalidInput, Stage};

/// `Result` with [`IndexError`].
pub type Result<T, E = IndexError> = std::result::Result<T, E>;

/// What went wrong in the index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The caller's input was rejected; nothing was changed.
    #[error(transparent)]
    Input(#[from] InvalidInput),
    /// The document is not in the index.
    #[error("unknown document {doc_id}")]
    UnknownDocument {
        /// The document.
        doc_id: DocId,
    },
    /// The HNSW library failed.
    #[error("usearch {op} failed: {message}")]
    Usearch {
        /// The operation.
        op: &'static str,
        /// Its message.
        message: String,
    },
    /// The lexical (tantivy) index failed.
    #[error("lexical index {op} failed: {message}")]
    Lexical {
        /// The operation.
        op: &'static str,
        /// Its message.
        message: String,
    },
    /// The index was built without its lexical leg ([`IndexConfig::lexical`](crate::IndexConfig::lexical)).
    #[error("lexical search is disabled in this index's configuration")]
    LexicalDisabled,
    /// A snapshot could not be written or read.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

impl IndexError {
    pub(crate) fn usearch(op: &'static str, e: impl std::fmt::Display) -> Self {
        IndexError::Usearch {
            op,
            message: e.to_string(),
        }
    }
}

/// Why a snapshot could not be written or restored. A failed restore loads nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The directory has no manifest.
    #[error("snapshot manifest missing at {path}")]
    MissingManifest {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The manifest cannot be parsed.
    #[error("snapshot manifest {path} is corrupt: {reason}")]
    CorruptManifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The snapshot was written by an unsupported format version.
    #[error("snapshot format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// Found in the manifest.
        found: u32,
        /// What this build reads.
        supported: u32,
    },
    /// A file listed in the manifest is missing.
    #[error("snapshot file {file} is missing")]
    MissingFile {
        /// The file.
        file: String,
    },
    /// A file's size or sha256 differs from the manifest: truncated or altered.
    #[error("snapshot file {file} does not match its checksum ({reason})")]
    ChecksumMismatch {
        /// The file.
        file: String,
        /// Size or hash.
        reason: String,
    },
    /// A file verifies but its content is inconsistent or cannot be decoded.
    #[error("snapshot file {file} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The snapshot is of another embedding model than expected.
    #[error("snapshot is of model {found}, expected {expected}")]
    ModelMismatch {
        /// Expected model name and checksum.
        expected: String,
        /// Found.
        found: String,
    },
    /// File system failure.
    #[error("snapshot I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Parquet or Arrow failure while writing.
    #[error("snapshot encoding of {file}: {reason}")]
    Encode {
        /// The file.
        file: String,
        /// The cause.
        reason: String,
    },
}

impl From<IndexError> for rag_core::Error {
    fn from(e: IndexError) -> Self {
        match e {
            IndexError::Input(i) => rag_core::Error::InvalidInput(i),
            IndexError::UnknownDocument { doc_id } => rag_core::Error::unknown_document(&doc_id),
            IndexError::Snapshot(s) => rag_core::Error::backend(Stage::Snapshot, s),
            IndexError::LexicalDisabled => rag_core::Error::Unsupported {
                feature: "lexical search (disabled in IndexConfig)",
            },
            other => rag_core::Error::backend(Stage::Index, other),
        }
    }
}
