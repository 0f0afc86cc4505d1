//! Identifier newtypes.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Creates the id. Emptiness is checked where the id is used.
            pub fn new(id: impl AsRef<str>) -> Self {
                Self(Arc::from(id.as_ref()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Whether the id is empty.
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self::new(s)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(Arc::from(s))
            }
        }
    };
}

string_id!(
    /// A document's id, chosen by the host application.
    DocId
);
string_id!(
    /// A tenant: the outermost isolation boundary.
    TenantId
);
string_id!(
    /// A user within a tenant.
    UserId
);
string_id!(
    /// A group within a tenant.
    GroupId
);
string_id!(
    /// A role within a tenant.
    RoleId
);

/// What identifies a stored document: its tenant and the host's id within that
/// tenant. The same id in two tenants names two documents.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocKey {
    /// The tenant that owns the document.
    pub tenant: TenantId,
    /// The host's id for the document, unique within the tenant.
    pub doc_id: DocId,
}

impl DocKey {
    /// The key of `doc_id` in `tenant`.
    pub fn new(tenant: impl Into<TenantId>, doc_id: impl Into<DocId>) -> Self {
        Self {
            tenant: tenant.into(),
            doc_id: doc_id.into(),
        }
    }
}

impl fmt::Display for DocKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.doc_id)
    }
}

/// A chunk's id, stable across re-ingestion of the same document content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub u64);

impl ChunkId {
    /// Derives the id of the `ordinal`-th chunk of a document from its full key, so
    /// that two tenants' documents of the same id never share chunk ids.
    pub fn derive(key: &DocKey, ordinal: u32) -> Self {
        let mut hasher = Sha256::new();
        for part in [key.tenant.as_str(), key.doc_id.as_str()] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        hasher.update(ordinal.to_le_bytes());
        let digest = hasher.finalize();
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        ChunkId(u64::from_le_bytes(bytes))
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_chunk_ids_differ_by_doc_and_ordinal() {
        let a = DocKey::new("t", "a");
        let b = DocKey::new("t", "b");
        let other_tenant = DocKey::new("u", "a");
        assert_ne!(ChunkId::derive(&a, 0), ChunkId::derive(&a, 1));
        assert_ne!(ChunkId::derive(&a, 0), ChunkId::derive(&b, 0));
        assert_ne!(ChunkId::derive(&a, 0), ChunkId::derive(&other_tenant, 0));
        assert_eq!(ChunkId::derive(&a, 3), ChunkId::derive(&a, 3));
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        assert_ne!(
            ChunkId::derive(&DocKey::new("ab", "c"), 0),
            ChunkId::derive(&DocKey::new("a", "bc"), 0)
        );
    }
}
