//! The payload encoding of a log record, format 1 (little-endian throughout).
//!
//! ```text
//! payload  := format:u8 (=1) kind:u8 body
//! kind 1   := upsert: count:u32 document*
//! kind 2   := delete: count:u32 key*
//! kind 3   := erase:  count:u32 key*
//! key      := tenant:str doc_id:str
//! document := key version:u64 acl metadata hash chunks
//! acl      := 0:u8 | 1:u8 allow:tags deny:tags      (the ACL's tenant is the key's)
//! tags     := count:u32 tag:str*                     ("u:NAME", "g:NAME", "r:NAME")
//! metadata := title:opt_str source:opt_str count:u32 (key:str value)*
//! value    := 0:u8 str | 1:u8 i64 | 2:u8 u8(bool)
//! hash     := 0:u8 | 1:u8 [u8; 32]
//! chunks   := count:u32 (chunk_id:u64 ordinal:u32 start:u64 end:u64 text:str f32*dims)*
//! str      := len:u32 utf8-bytes ; opt_str := 0:u8 | 1:u8 str
//! ```
//!
//! The decoder never trusts a length: every count and string length is checked
//! against the bytes that remain before anything is allocated, so a corrupt or
//! hostile record costs at most its own size in memory.

use std::collections::BTreeSet;

use rag_core::{
    Acl, AttrValue, Chunk, ChunkId, ContentHash, DocKey, DocumentUpdate, EmbeddedChunk, Embedding,
    Metadata, ModelId, PermissionTag, Span,
};

/// The payload format this build writes and reads.
pub const RECORD_FORMAT: u8 = 1;

const KIND_UPSERT: u8 = 1;
const KIND_DELETE: u8 = 2;
const KIND_ERASE: u8 = 3;

/// What one log record does, resolved: predicates are logged as the keys they
/// matched, so that replay does not depend on evaluating them again.
#[derive(Debug, Clone, PartialEq)]
pub enum LogOp {
    /// Insert or replace these documents.
    Upsert(Vec<DocumentUpdate>),
    /// Remove these documents.
    Delete(Vec<DocKey>),
    /// Remove these documents and purge every copy of their content.
    Erase(Vec<DocKey>),
}

/// A borrowed [`LogOp`], what the write path hands to the log before publishing.
#[derive(Debug, Clone, Copy)]
pub enum LogOpRef<'a> {
    /// See [`LogOp::Upsert`].
    Upsert(&'a [&'a DocumentUpdate]),
    /// See [`LogOp::Delete`].
    Delete(&'a [DocKey]),
    /// See [`LogOp::Erase`].
    Erase(&'a [DocKey]),
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    put_u32(out, u32::try_from(n).unwrap_or(u32::MAX));
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

fn put_key(out: &mut Vec<u8>, k: &DocKey) {
    put_str(out, k.tenant.as_str());
    put_str(out, k.doc_id.as_str());
}

fn put_tags(out: &mut Vec<u8>, tags: &BTreeSet<PermissionTag>) {
    put_len(out, tags.len());
    for t in tags {
        put_str(out, &t.to_string());
    }
}

/// Appends what an upsert sets besides its key, version and chunks: the ACL's
/// tags (its tenant is the key's), title, source, attributes and content hash.
/// The index's content digest is taken over this same encoding.
pub(crate) fn encode_content(
    out: &mut Vec<u8>,
    acl: Option<&Acl>,
    metadata: &Metadata,
    content_hash: Option<&ContentHash>,
) {
    match acl {
        None => out.push(0),
        Some(acl) => {
            out.push(1);
            put_tags(out, &acl.allow);
            put_tags(out, &acl.deny);
        }
    }
    put_opt_str(out, metadata.title.as_deref());
    put_opt_str(out, metadata.source.as_deref());
    put_len(out, metadata.attributes.len());
    for (k, v) in &metadata.attributes {
        put_str(out, k);
        match v {
            AttrValue::Text(s) => {
                out.push(0);
                put_str(out, s);
            }
            AttrValue::Int(i) => {
                out.push(1);
                out.extend_from_slice(&i.to_le_bytes());
            }
            AttrValue::Bool(b) => {
                out.push(2);
                out.push(u8::from(*b));
            }
        }
    }
    match content_hash {
        None => out.push(0),
        Some(h) => {
            out.push(1);
            out.extend_from_slice(&h.0);
        }
    }
}

/// Appends one chunk: id, ordinal, span, text and the vector's `f32`s.
pub(crate) fn encode_chunk(
    out: &mut Vec<u8>,
    id: ChunkId,
    ordinal: u32,
    span: Span,
    text: &str,
    vector: &[f32],
) {
    put_u64(out, id.0);
    put_u32(out, ordinal);
    put_u64(out, span.start as u64);
    put_u64(out, span.end as u64);
    put_str(out, text);
    for v in vector {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn encode_document(out: &mut Vec<u8>, d: &DocumentUpdate) {
    put_str(out, d.tenant.as_str());
    put_str(out, d.doc_id.as_str());
    put_u64(out, d.version);
    encode_content(out, d.acl.as_ref(), &d.metadata, d.content_hash.as_ref());
    put_len(out, d.chunks.len());
    for c in &d.chunks {
        let ch = &c.chunk;
        encode_chunk(
            out,
            ch.id,
            ch.ordinal,
            ch.span,
            &ch.text,
            c.embedding.values(),
        );
    }
}

/// Appends the payload of `op`.
pub fn encode(out: &mut Vec<u8>, op: LogOpRef<'_>) {
    out.push(RECORD_FORMAT);
    match op {
        LogOpRef::Upsert(docs) => {
            out.push(KIND_UPSERT);
            put_len(out, docs.len());
            for d in docs {
                encode_document(out, d);
            }
        }
        LogOpRef::Delete(keys) | LogOpRef::Erase(keys) => {
            out.push(if matches!(op, LogOpRef::Delete(_)) {
                KIND_DELETE
            } else {
                KIND_ERASE
            });
            put_len(out, keys.len());
            for k in keys {
                put_key(out, k);
            }
        }
    }
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} at payload byte {offset}")]
pub struct DecodeError {
    /// Offset inside the payload.
    pub offset: usize,
    /// What is wrong.
    pub reason: String,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn fail<T>(&self, reason: impl Into<String>) -> Result<T, DecodeError> {
        Err(DecodeError {
            offset: self.pos,
            reason: reason.into(),
        })
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return self.fail(format!("{n} bytes wanted, {} left", self.remaining()));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn usize(&mut self) -> Result<usize, DecodeError> {
        let v = self.u64()?;
        usize::try_from(v).or_else(|_| self.fail("offset overflows"))
    }

    /// A count of items each at least `min_bytes` long, checked against what is left.
    fn count(&mut self, min_bytes: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_bytes.max(1)) > self.remaining() {
            return self.fail(format!("count {n} exceeds the record"));
        }
        Ok(n)
    }

    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let n = self.u32()? as usize;
        let at = self.pos;
        let b = self.bytes(n)?;
        std::str::from_utf8(b).map_err(|e| DecodeError {
            offset: at + e.valid_up_to(),
            reason: "invalid UTF-8".into(),
        })
    }

    fn flag(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => self.fail(format!("flag byte {b}")),
        }
    }

    fn opt_str(&mut self) -> Result<Option<String>, DecodeError> {
        Ok(if self.flag()? {
            Some(self.str()?.to_owned())
        } else {
            None
        })
    }

    fn key(&mut self) -> Result<DocKey, DecodeError> {
        let tenant = self.str()?;
        let doc = self.str()?;
        Ok(DocKey::new(tenant, doc))
    }

    fn tags(&mut self) -> Result<BTreeSet<PermissionTag>, DecodeError> {
        let n = self.count(4)?;
        let mut tags = BTreeSet::new();
        for _ in 0..n {
            let s = self.str()?;
            let tag = s
                .parse()
                .or_else(|e: rag_core::ParseTagError| self.fail(e.to_string()))?;
            tags.insert(tag);
        }
        Ok(tags)
    }

    fn document(&mut self, model: ModelId, dims: usize) -> Result<DocumentUpdate, DecodeError> {
        let key = self.key()?;
        let version = self.u64()?;
        let acl = if self.flag()? {
            Some(Acl {
                tenant: key.tenant.clone(),
                allow: self.tags()?,
                deny: self.tags()?,
            })
        } else {
            None
        };
        let title = self.opt_str()?;
        let source = self.opt_str()?;
        let n = self.count(5)?;
        let mut attributes = std::collections::BTreeMap::new();
        for _ in 0..n {
            let k = self.str()?.to_owned();
            let v = match self.u8()? {
                0 => AttrValue::Text(self.str()?.to_owned()),
                1 => AttrValue::Int(i64::from_le_bytes(self.array()?)),
                2 => AttrValue::Bool(self.flag()?),
                t => return self.fail(format!("attribute type {t}")),
            };
            attributes.insert(k, v);
        }
        let content_hash = if self.flag()? {
            Some(ContentHash(self.array()?))
        } else {
            None
        };
        let per_chunk = 8 + 4 + 8 + 8 + 4 + dims * 4;
        let n = self.count(per_chunk)?;
        let mut chunks = Vec::with_capacity(n);
        for _ in 0..n {
            let id = ChunkId(self.u64()?);
            let ordinal = self.u32()?;
            let start = self.usize()?;
            let end = self.usize()?;
            let text = self.str()?.to_owned();
            let raw = self.bytes(dims * 4)?;
            let values: Vec<f32> = raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let embedding = Embedding::new(model, values).or_else(|e| self.fail(e.to_string()))?;
            chunks.push(EmbeddedChunk {
                chunk: Chunk {
                    id,
                    ordinal,
                    span: Span::new(start, end),
                    text,
                    context: None,
                },
                embedding,
            });
        }
        Ok(DocumentUpdate {
            tenant: key.tenant,
            doc_id: key.doc_id,
            version,
            acl,
            metadata: Metadata {
                title,
                source,
                attributes,
            },
            content_hash,
            chunks,
        })
    }
}

/// Decodes a payload whose embeddings are `dims`-dimensional vectors of `model`.
pub fn decode(payload: &[u8], model: ModelId, dims: usize) -> Result<LogOp, DecodeError> {
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    let format = r.u8()?;
    if format != RECORD_FORMAT {
        return r.fail(format!(
            "record format {format}, this build reads {RECORD_FORMAT}"
        ));
    }
    let op = match r.u8()? {
        KIND_UPSERT => {
            let n = r.count(16)?;
            let mut docs = Vec::with_capacity(n);
            for _ in 0..n {
                docs.push(r.document(model, dims)?);
            }
            LogOp::Upsert(docs)
        }
        kind @ (KIND_DELETE | KIND_ERASE) => {
            let n = r.count(8)?;
            let mut keys = Vec::with_capacity(n);
            for _ in 0..n {
                keys.push(r.key()?);
            }
            if kind == KIND_DELETE {
                LogOp::Delete(keys)
            } else {
                LogOp::Erase(keys)
            }
        }
        k => return r.fail(format!("record kind {k}")),
    };
    if r.remaining() != 0 {
        return r.fail(format!("{} trailing bytes", r.remaining()));
    }
    Ok(op)
}
