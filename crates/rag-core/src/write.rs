//! Write operations on an index, expressed as values so that a change log can carry
//! them to replicas.

use crate::access::Acl;
use crate::document::{AttrValue, Chunk, ContentHash, Metadata};
use crate::embedding::Embedding;
use crate::ids::{DocId, DocKey, TenantId};

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
    /// The tenant that owns the document; an ACL must be of the same tenant.
    pub tenant: TenantId,
    /// The document's id within its tenant.
    pub doc_id: DocId,
    /// Its version. Versions only move forward: a lower one than stored is refused,
    /// and the same one is accepted only with the same content (a no-op).
    pub version: u64,
    /// Who may read it; `None` stores it visible to nobody.
    pub acl: Option<Acl>,
    /// Its metadata.
    pub metadata: Metadata,
    /// A digest of the source document, stored beside it (the pipeline's
    /// unchanged-skip reads it back after a restart).
    pub content_hash: Option<ContentHash>,
    /// Its chunks, all of them.
    pub chunks: Vec<EmbeddedChunk>,
}

impl DocumentUpdate {
    /// The document's key.
    pub fn key(&self) -> DocKey {
        DocKey {
            tenant: self.tenant.clone(),
            doc_id: self.doc_id.clone(),
        }
    }
}

/// Checks a write's key against its ACL: the document id and the tenant must be
/// non-empty, and an ACL must be of the write's tenant.
pub fn check_key(
    tenant: &TenantId,
    doc_id: &DocId,
    acl: Option<&Acl>,
) -> Result<(), crate::error::InvalidInput> {
    use crate::error::InvalidInput;
    if doc_id.is_empty() {
        return Err(InvalidInput::EmptyId { what: "document" });
    }
    if tenant.is_empty() {
        return Err(InvalidInput::EmptyId { what: "tenant" });
    }
    match acl {
        Some(a) if &a.tenant != tenant => Err(InvalidInput::TenantMismatch {
            key: tenant.clone(),
            acl: a.tenant.clone(),
        }),
        _ => Ok(()),
    }
}

/// Which documents of one tenant a [`WriteOp::DeleteWhere`] or
/// [`WriteOp::EraseWhere`] removes. The tenant is named by the operation: no
/// predicate reaches across tenants.
#[derive(Debug, Clone, PartialEq)]
pub enum DeletePredicate {
    /// Every document of the tenant.
    Everything,
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
    /// Whether a document (of the operation's tenant) with this metadata matches.
    pub fn matches(&self, metadata: &Metadata) -> bool {
        match self {
            DeletePredicate::Everything => true,
            DeletePredicate::AttrEquals { key, value } => {
                metadata.attributes.get(key) == Some(value)
            }
            DeletePredicate::Source(s) => metadata.source.as_deref() == Some(s.as_str()),
            DeletePredicate::All(ps) => !ps.is_empty() && ps.iter().all(|p| p.matches(metadata)),
        }
    }
}

/// One write. Each document in an upsert is replaced atomically: a concurrent reader
/// sees its old chunks or its new ones, never a mix and never neither. Every write
/// is scoped to one tenant per document.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// Insert or replace documents (each key at most once per op).
    Upsert(Vec<DocumentUpdate>),
    /// Remove one document; an unknown key (another tenant's document included) is
    /// an error.
    Delete(DocKey),
    /// Remove every document of `tenant` matching a predicate.
    DeleteWhere {
        /// The tenant whose documents are considered.
        tenant: TenantId,
        /// Which of them go.
        predicate: DeletePredicate,
    },
    /// Remove one document and, before returning, every copy of its text and
    /// embedding the index holds (memory and, for a durable store, every file).
    Erase(DocKey),
    /// [`WriteOp::Erase`] for every document of `tenant` matching a predicate.
    EraseWhere {
        /// The tenant whose documents are considered.
        tenant: TenantId,
        /// Which of them go.
        predicate: DeletePredicate,
    },
}

impl WriteOp {
    /// Whether this write erases.
    pub fn is_erase(&self) -> bool {
        matches!(self, WriteOp::Erase(_) | WriteOp::EraseWhere { .. })
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Documents inserted or replaced.
    pub documents_upserted: usize,
    /// Documents left as they were: the same version with the same content.
    pub documents_unchanged: usize,
    /// Documents removed.
    pub documents_deleted: usize,
    /// Chunks added.
    pub chunks_added: usize,
    /// Chunks removed (including replaced ones).
    pub chunks_removed: usize,
    /// The index generation after the write.
    pub generation: u64,
    /// The log sequence number of the write (the last applied one for a write
    /// that changed nothing): what a replica or a read-your-writes token compares.
    pub sequence: u64,
}
