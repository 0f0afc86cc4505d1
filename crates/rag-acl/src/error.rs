//! Errors of the access-control crate.

use std::path::PathBuf;

/// `Result` with [`AclError`].
pub type Result<T, E = AclError> = std::result::Result<T, E>;

/// What went wrong in access resolution or the audit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AclError {
    /// The principal is disabled in the directory.
    #[error("principal is disabled")]
    Disabled,
    /// The directory requires registered users and this one is not.
    #[error("principal is not registered in the directory")]
    UnknownPrincipal,
    /// The principal's tenant is empty or its user id is empty.
    #[error("principal has an empty {what}")]
    EmptyPrincipal {
        /// `"tenant"` or `"user"`.
        what: &'static str,
    },
    /// Reading or writing the audit log failed.
    #[error("audit log I/O on {path}: {source}")]
    Io {
        /// The log file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An audit key shorter than 16 bytes.
    #[error("an audit key needs at least 16 bytes, got {len}")]
    WeakKey {
        /// Bytes given.
        len: usize,
    },
    /// An earlier write or sync of the audit log failed; it refuses appends until
    /// reopened.
    #[error("the audit log refuses appends after a failed write; reopen it")]
    Poisoned,
    /// A record could not be encoded.
    #[error("audit record encoding: {0}")]
    Encode(#[source] serde_json::Error),
    /// The audit log does not verify: a record was altered, removed, reordered, or
    /// the file was cut mid-record.
    #[error("audit log is not intact at record {line}: {reason}")]
    Tampered {
        /// 1-based line number of the first bad record.
        line: usize,
        /// What is wrong there.
        reason: String,
    },
}

impl From<AclError> for rag_core::Error {
    fn from(e: AclError) -> Self {
        match e {
            AclError::Disabled | AclError::UnknownPrincipal => rag_core::Error::Denied {
                reason: e.to_string(),
            },
            AclError::EmptyPrincipal { what } => {
                rag_core::Error::InvalidInput(rag_core::InvalidInput::EmptyId { what })
            }
            other => rag_core::Error::backend(rag_core::Stage::Audit, other),
        }
    }
}
