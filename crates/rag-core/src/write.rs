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

/// The longest permission tag name accepted on write, in bytes.
pub const MAX_TAG_BYTES: usize = 256;
/// The most allow and deny tags one ACL may list.
pub const MAX_ACL_TAGS: usize = 1024;

/// Checks one tag's name: what a write accepts must parse back from a snapshot, and
/// must not be able to forge lines in logs.
fn check_tag(tag: &crate::access::PermissionTag) -> Result<(), crate::error::InvalidInput> {
    use crate::access::PermissionTag;
    let name = match tag {
        PermissionTag::User(u) => u.as_str(),
        PermissionTag::Group(g) => g.as_str(),
        PermissionTag::Role(r) => r.as_str(),
    };
    let reason = if name.trim().is_empty() {
        "the name is empty or whitespace only"
    } else if name.chars().any(char::is_control) {
        "the name holds a control character"
    } else if name.len() > MAX_TAG_BYTES {
        "the name is longer than 256 bytes"
    } else {
        return Ok(());
    };
    let mut shown = tag.to_string();
    if shown.len() > 64 {
        let mut end = 64;
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown.truncate(end);
    }
    Err(crate::error::InvalidInput::InvalidTag { tag: shown, reason })
}

/// Checks a write's key against its ACL: the document id and the tenant must be
/// non-empty, an ACL must be of the write's tenant, list at most
/// [`MAX_ACL_TAGS`] tags, and each tag's name must be non-blank, free of control
/// characters and at most [`MAX_TAG_BYTES`] long.
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
    let Some(a) = acl else {
        return Ok(());
    };
    if &a.tenant != tenant {
        return Err(InvalidInput::TenantMismatch {
            key: tenant.clone(),
            acl: a.tenant.clone(),
        });
    }
    let listed = a.allow.len() + a.deny.len();
    if listed > MAX_ACL_TAGS {
        return Err(InvalidInput::TooManyTags {
            actual: listed,
            max: MAX_ACL_TAGS,
        });
    }
    a.allow.iter().chain(&a.deny).try_for_each(check_tag)
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
