//! Documents, their typed metadata, and chunks with byte spans.

use std::collections::BTreeMap;
use std::fmt;

use crate::access::Acl;
use crate::ids::{ChunkId, DocId, DocKey, TenantId};

/// A typed metadata value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttrValue {
    /// Text.
    Text(String),
    /// A signed integer (also used for timestamps in seconds or milliseconds).
    Int(i64),
    /// A flag.
    Bool(bool),
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Text(s) => f.write_str(s),
            AttrValue::Int(i) => write!(f, "{i}"),
            AttrValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A document's metadata: well-known fields plus typed attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Metadata {
    /// Human-readable title.
    pub title: Option<String>,
    /// Where the document came from (a path or URI).
    pub source: Option<String>,
    /// Further typed attributes, sorted by key.
    pub attributes: BTreeMap<String, AttrValue>,
}

impl Metadata {
    /// Sets the title.
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Sets the source.
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Adds an attribute.
    pub fn with_attr(mut self, key: impl Into<String>, value: AttrValue) -> Self {
        self.attributes.insert(key.into(), value);
        self
    }
}

/// A digest of everything that makes up a document's stored state (text, ACL,
/// metadata, version), kept beside it so that an unchanged document is recognised
/// after a restart without embedding it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A document as the host application hands it in.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The tenant that owns it; every write names its tenant, and an ACL must be
    /// of the same tenant.
    pub tenant: TenantId,
    /// The host's id for the document, unique within its tenant.
    pub id: DocId,
    /// A version the host increases on each change.
    pub version: u64,
    /// The full text.
    pub text: String,
    /// Metadata.
    pub metadata: Metadata,
    /// Who may read it; `None` means nobody.
    pub acl: Option<Acl>,
}

impl Document {
    /// Version 1 of a text document without an ACL: visible to nobody until one of
    /// the `readable_by_*` methods (or [`Document::with_acl`]) says who may read it.
    pub fn new(tenant: impl Into<TenantId>, id: impl Into<DocId>, text: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            id: id.into(),
            version: 1,
            text: text.into(),
            metadata: Metadata::default(),
            acl: None,
        }
    }

    /// Sets the version.
    pub fn with_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    /// Sets the ACL.
    pub fn with_acl(mut self, acl: Acl) -> Self {
        self.acl = Some(acl);
        self
    }

    /// Lets members of `group` (of the document's tenant) read it.
    pub fn readable_by_group(mut self, group: impl Into<crate::ids::GroupId>) -> Self {
        let acl = self
            .acl
            .take()
            .unwrap_or_else(|| Acl::new(self.tenant.clone()));
        self.acl = Some(acl.allow_group(group));
        self
    }

    /// Lets `user` (of the document's tenant) read it.
    pub fn readable_by_user(mut self, user: impl Into<crate::ids::UserId>) -> Self {
        let acl = self
            .acl
            .take()
            .unwrap_or_else(|| Acl::new(self.tenant.clone()));
        self.acl = Some(acl.allow_user(user));
        self
    }

    /// A document from raw bytes, which must be UTF-8: invalid UTF-8 is an error
    /// naming the first bad byte, never a lossy conversion.
    pub fn from_bytes(
        tenant: TenantId,
        id: DocId,
        version: u64,
        bytes: Vec<u8>,
        acl: Option<Acl>,
    ) -> Result<Self, crate::error::InvalidInput> {
        let text = String::from_utf8(bytes).map_err(|e| crate::error::InvalidInput::Malformed {
            what: "document text",
            detail: format!(
                "{id}: invalid UTF-8 at byte {}",
                e.utf8_error().valid_up_to()
            ),
        })?;
        Ok(Self {
            tenant,
            id,
            version,
            text,
            metadata: Metadata::default(),
            acl,
        })
    }

    /// The document's key: tenant and id.
    pub fn key(&self) -> DocKey {
        DocKey {
            tenant: self.tenant.clone(),
            doc_id: self.id.clone(),
        }
    }
}

/// A byte range `start..end` into a document's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// A span `start..end`.
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    /// Whether the span is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A piece of a document that is embedded and retrieved on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The chunk's id.
    pub id: ChunkId,
    /// Position of the chunk within its document, from 0.
    pub ordinal: u32,
    /// Where the chunk's text lies in the document's text.
    pub span: Span,
    /// The chunk's text: exactly the document's text at `span`.
    pub text: String,
    /// What situates the chunk, such as the path of markdown headings above it:
    /// embedded with the text, but not part of the span or the stored text.
    pub context: Option<String>,
}

impl Chunk {
    /// The single chunk of a document whose whole text is `text`: ordinal 0, the
    /// full span, the id derived from the document's key.
    pub fn whole(key: &DocKey, text: impl Into<String>) -> Self {
        let text = text.into();
        Self {
            id: ChunkId::derive(key, 0),
            ordinal: 0,
            span: Span::new(0, text.len()),
            text,
            context: None,
        }
    }

    /// What an embedder reads: the context, a blank line, then the text.
    pub fn embedding_text(&self) -> std::borrow::Cow<'_, str> {
        match &self.context {
            Some(c) if !c.is_empty() => format!("{c}\n\n{}", self.text).into(),
            _ => self.text.as_str().into(),
        }
    }
}
