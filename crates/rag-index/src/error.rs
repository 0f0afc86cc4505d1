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
    /// The durable store failed: log, checkpoint, lock or recovery.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This write was planned in a batch that another write's failure aborted; it
    /// changed nothing.
    #[error("write aborted with its batch: {reason}")]
    BatchAborted {
        /// The failure that aborted the batch.
        reason: String,
    },
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
    /// A snapshot key is configured and the snapshot has no signature.
    #[error("snapshot at {path} is not signed, and a snapshot key is configured")]
    Unsigned {
        /// The snapshot directory.
        path: PathBuf,
    },
    /// The manifest's signature does not verify under the configured key: the
    /// manifest (and so any file it lists) was altered, or another key signed it.
    #[error("snapshot manifest at {path} does not match its signature")]
    BadSignature {
        /// The snapshot directory.
        path: PathBuf,
    },
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

/// Why the durable store could not open, write or recover.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process (or another store in this one) holds the directory.
    #[error("store directory {path} is locked by another process")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The directory already holds a store.
    #[error("{path} already holds a store")]
    NotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// A file system call failed.
    #[error("store I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A log record before the tail is damaged; nothing after it is trusted, and
    /// nothing is skipped.
    #[error("log segment {segment} is corrupt at byte {offset}: {reason}")]
    CorruptLog {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the damaged frame.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A log segment was written for another embedding model.
    #[error("log segment {segment} belongs to model {found}, this store uses {expected}")]
    ForeignLog {
        /// The segment file.
        segment: PathBuf,
        /// This store's model.
        expected: String,
        /// The segment's model.
        found: String,
    },
    /// The log is missing records between a checkpoint and its segments, or
    /// between two segments.
    #[error("log gap: record {expected} is missing ({detail})")]
    LogGap {
        /// The sequence number that is missing.
        expected: u64,
        /// Where it was looked for.
        detail: String,
    },
    /// `CURRENT` names a checkpoint that is missing or does not verify.
    #[error("checkpoint {name} cannot be loaded: {source}")]
    Checkpoint {
        /// The checkpoint directory.
        name: String,
        /// Why.
        #[source]
        source: Box<IndexError>,
    },
    /// `CURRENT` itself is unreadable.
    #[error("checkpoint pointer {path} is corrupt: {reason}")]
    CorruptPointer {
        /// The pointer file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A logged write could not be applied on replay (a bug or a tampered log).
    #[error("log record {seq} could not be replayed: {reason}")]
    Replay {
        /// Its sequence number.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// A write to the log or its sync failed earlier; the store refuses writes
    /// until it is reopened (a failed fsync is never retried and reported as
    /// success).
    #[error("the store refuses writes after a failed log write: {reason}; reopen it")]
    Poisoned {
        /// The original failure.
        reason: String,
    },
    /// An injected failure (tests only).
    #[error("injected failure at {point}")]
    Injected {
        /// The failpoint.
        point: &'static str,
    },
}

impl StoreError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl From<IndexError> for rag_core::Error {
    fn from(e: IndexError) -> Self {
        match e {
            IndexError::Input(i) => rag_core::Error::InvalidInput(i),
            IndexError::UnknownDocument { doc_id } => rag_core::Error::unknown_document(&doc_id),
            IndexError::Snapshot(s) => rag_core::Error::backend(Stage::Snapshot, s),
            IndexError::Store(s @ StoreError::Locked { .. }) => rag_core::Error::Transient {
                stage: Stage::Index,
                source: Box::new(s),
            },
            IndexError::LexicalDisabled => rag_core::Error::Unsupported {
                feature: "lexical search (disabled in IndexConfig)",
            },
            other => rag_core::Error::backend(Stage::Index, other),
        }
    }
}
