//! Write operations on an index, expressed as values so that a change log can carry
//! them to replicas.

use crate::access::Acl;
use crate::document::{AttrValue, Chunk, Metadata};
use crate::embedding::Embedding;
use crate::ids::{DocId, TenantId};

/// A chunk with its embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedChunk {
    /// The chunk.
    pub chunk: Chunk,
    /// Its embedding.
    pub embedding: Embedding,
}

/// The new state of one document: all its chunks, replacing any it had.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentUpdate {
    /// The document.
    pub doc_id: DocId,
    /// Its version.
    pub version: u64,
    /// Who may read it; `None` stores it visible to nobody.
    pub acl: Option<Acl>,
    /// Its metadata.
    pub metadata: Metadata,
    /// Its chunks, all of them.
    pub chunks: Vec<EmbeddedChunk>,
}

/// Which documents a [`WriteOp::DeleteWhere`] removes.
#[derive(Debug, Clone, PartialEq)]
pub enum DeletePredicate {
    /// Every document of a tenant.
    Tenant(TenantId),
    /// Documents whose attribute `key` equals `value`.
    AttrEquals {
        /// Attribute key.
        key: String,
        /// Value to match.
        value: AttrValue,
    },
    /// Documents whose source equals this.
    Source(String),
    /// Documents matching every predicate (an empty list matches nothing).
    All(Vec<DeletePredicate>),
}

impl DeletePredicate {
    /// Whether a document with this ACL and metadata matches.
    pub fn matches(&self, acl: Option<&Acl>, metadata: &Metadata) -> bool {
        match self {
            DeletePredicate::Tenant(t) => acl.is_some_and(|a| &a.tenant == t),
            DeletePredicate::AttrEquals { key, value } => {
                metadata.attributes.get(key) == Some(value)
            }
            DeletePredicate::Source(s) => metadata.source.as_deref() == Some(s.as_str()),
            DeletePredicate::All(ps) => {
                !ps.is_empty() && ps.iter().all(|p| p.matches(acl, metadata))
            }
        }
    }
}

/// One write. Each document in an upsert is replaced atomically: a concurrent reader
/// sees its old chunks or its new ones, never a mix and never neither.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// Insert or replace documents (each id at most once per op).
    Upsert(Vec<DocumentUpdate>),
    /// Remove one document; unknown ids are an error.
    Delete(DocId),
    /// Remove every document matching a predicate.
    DeleteWhere(DeletePredicate),
}

/// What a write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Documents inserted or replaced.
    pub documents_upserted: usize,
    /// Documents removed.
    pub documents_deleted: usize,
    /// Chunks added.
    pub chunks_added: usize,
    /// Chunks removed (including replaced ones).
    pub chunks_removed: usize,
    /// The index generation after the write.
    pub generation: u64,
}
