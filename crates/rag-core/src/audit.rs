//! What the pipeline records about each answer, and the sink it records it in.
//!
//! The pipeline writes one [`AnswerRecord`] per question through an [`AuditSink`]
//! *before* it returns the answer. A sink returns only once the record is durable;
//! when it cannot write, the answer is refused unless the pipeline was configured to
//! answer anyway ([`AuditFailure`]).

use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::answer::Citation;
use crate::error::Result;
use crate::ids::{TenantId, UserId};

/// How a question was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnswerDecision {
    /// An answer made from passages the asker may read.
    Answered,
    /// Nothing the asker may read matched; the answer says so.
    NothingVisible,
    /// Passages matched, none relevant enough: the answer says the documents do
    /// not answer the question.
    Abstained,
    /// The asker was refused (disabled, unknown, invalid principal).
    Denied,
}

/// One audited answer.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerRecord {
    /// The asker's tenant.
    pub tenant: TenantId,
    /// The asker.
    pub user: UserId,
    /// When the question was asked.
    pub at: SystemTime,
    /// sha256 of the question as answered (trimmed; the question itself is not kept).
    pub question_sha256: [u8; 32],
    /// Every passage served: from the index or the cache, cited or not.
    pub served: Vec<Citation>,
    /// Whether the cache served the answer.
    pub from_cache: bool,
    /// The decision.
    pub decision: AnswerDecision,
}

impl AnswerRecord {
    /// The sha256 of a question.
    pub fn hash_question(question: &str) -> [u8; 32] {
        Sha256::digest(question.as_bytes()).into()
    }
}

/// A durable record of answers: [`record`](AuditSink::record) returns once the
/// record would survive a crash. Concurrent callers should share one sync (group
/// commit).
pub trait AuditSink: Send + Sync {
    /// Writes `record` durably.
    fn record(&self, record: &AnswerRecord) -> Result<()>;
}

/// What the pipeline does when the audit record cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditFailure {
    /// Refuse the answer with the audit error (fail-closed; the default).
    #[default]
    Refuse,
    /// Return the answer anyway and count the failure
    /// (`rag_audit_failures_total`).
    Answer,
}
