//! The queue journal's record payloads, version 1: little-endian integers,
//! strings as `u32` length + UTF-8, options as a `0`/`1` byte.
//!
//! | kind | payload after the kind byte |
//! |---|---|
//! | 1 enqueued | id `u64`, change (below) |
//! | 2 done | id `u64` |
//! | 3 dead | id `u64`, attempts `u32`, reason string |
//! | 4 redriven | id `u64`, change |
//!
//! A change is `1` + document (tenant, id, version `u64`, text, title option,
//! source option, attribute count `u32` then key + value (`0` text, `1` int
//! `i64`, `2` bool byte), ACL option (tenant, allow count + tags, deny count +
//! tags, tags as `u:`/`g:`/`r:` strings)), `2` + key (tenant, document id), or
//! `3` + document (its text empty) + path (`u32` length + the path's bytes, as
//! the OS gives them) for a change read from a file.

use rag_core::{Acl, AttrValue, DocId, DocKey, Document, Metadata, PermissionTag, TenantId};

use super::Change;

/// One journal record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Record {
    Enqueued {
        id: u64,
        change: Change,
    },
    Done {
        id: u64,
    },
    Dead {
        id: u64,
        attempts: u32,
        reason: String,
    },
    Redriven {
        id: u64,
        change: Change,
    },
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
        None => out.push(0),
    }
}

fn put_tags<'a>(out: &mut Vec<u8>, tags: impl ExactSizeIterator<Item = &'a PermissionTag>) {
    put_u32(out, tags.len() as u32);
    for t in tags {
        put_str(out, &t.to_string());
    }
}

fn put_change(out: &mut Vec<u8>, change: &Change) {
    match change {
        Change::UpsertFile { doc, path } => {
            out.push(3);
            put_document(
                out,
                &Document {
                    text: String::new(),
                    ..doc.clone()
                },
            );
            let bytes = path.as_os_str().as_encoded_bytes();
            put_u32(out, bytes.len() as u32);
            out.extend_from_slice(bytes);
        }
        Change::Upsert(d) => {
            out.push(1);
            put_document(out, d);
        }
        Change::Delete(key) => {
            out.push(2);
            put_str(out, key.tenant.as_str());
            put_str(out, key.doc_id.as_str());
        }
    }
}

fn put_document(out: &mut Vec<u8>, d: &Document) {
    put_str(out, d.tenant.as_str());
    put_str(out, d.id.as_str());
    put_u64(out, d.version);
    put_str(out, &d.text);
    put_opt(out, d.metadata.title.as_deref());
    put_opt(out, d.metadata.source.as_deref());
    put_u32(out, d.metadata.attributes.len() as u32);
    for (k, v) in &d.metadata.attributes {
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
    match &d.acl {
        Some(acl) => {
            out.push(1);
            put_str(out, acl.tenant.as_str());
            put_tags(out, acl.allow.iter());
            put_tags(out, acl.deny.iter());
        }
        None => out.push(0),
    }
}

/// The payload of `record`.
pub(crate) fn encode(record: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    match record {
        Record::Enqueued { id, change } => {
            out.push(1);
            put_u64(&mut out, *id);
            put_change(&mut out, change);
        }
        Record::Done { id } => {
            out.push(2);
            put_u64(&mut out, *id);
        }
        Record::Dead {
            id,
            attempts,
            reason,
        } => {
            out.push(3);
            put_u64(&mut out, *id);
            put_u32(&mut out, *attempts);
            put_str(&mut out, reason);
        }
        Record::Redriven { id, change } => {
            out.push(4);
            put_u64(&mut out, *id);
            put_change(&mut out, change);
        }
    }
    out
}

struct Reader<'a> {
    buf: &'a [u8],
}

type Decoded<T> = Result<T, &'static str>;

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Decoded<&'a [u8]> {
        if self.buf.len() < n {
            return Err("record ends early");
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Decoded<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Decoded<u32> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Decoded<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn string(&mut self) -> Decoded<String> {
        let n = self.u32()? as usize;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "a string is not UTF-8")
    }

    fn opt(&mut self) -> Decoded<Option<String>> {
        match self.byte()? {
            0 => Ok(None),
            1 => Ok(Some(self.string()?)),
            _ => Err("bad option tag"),
        }
    }

    fn tags(&mut self) -> Decoded<Vec<PermissionTag>> {
        let n = self.u32()? as usize;
        let mut tags = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            tags.push(self.string()?.parse().map_err(|_| "bad permission tag")?);
        }
        Ok(tags)
    }

    fn change(&mut self) -> Decoded<Change> {
        match self.byte()? {
            1 => Ok(Change::Upsert(self.document()?)),
            2 => {
                let tenant = TenantId::new(self.string()?);
                Ok(Change::Delete(DocKey::new(
                    tenant,
                    DocId::new(self.string()?),
                )))
            }
            3 => {
                let doc = self.document()?;
                let n = self.u32()? as usize;
                let bytes = self.take(n)?;
                let path = std::str::from_utf8(bytes)
                    .map(std::path::PathBuf::from)
                    .or_else(|_| os_path(bytes))?;
                Ok(Change::UpsertFile { doc, path })
            }
            _ => Err("bad change tag"),
        }
    }

    fn document(&mut self) -> Decoded<Document> {
        let tenant = TenantId::new(self.string()?);
        let id = DocId::new(self.string()?);
        let version = self.u64()?;
        let text = self.string()?;
        let mut metadata = Metadata {
            title: self.opt()?,
            source: self.opt()?,
            ..Metadata::default()
        };
        for _ in 0..self.u32()? {
            let key = self.string()?;
            let value = match self.byte()? {
                0 => AttrValue::Text(self.string()?),
                1 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(self.take(8)?);
                    AttrValue::Int(i64::from_le_bytes(b))
                }
                2 => AttrValue::Bool(self.byte()? != 0),
                _ => return Err("bad attribute tag"),
            };
            metadata.attributes.insert(key, value);
        }
        let acl = match self.byte()? {
            0 => None,
            1 => {
                let mut acl = Acl::new(TenantId::new(self.string()?));
                acl.allow.extend(self.tags()?);
                acl.deny.extend(self.tags()?);
                Some(acl)
            }
            _ => return Err("bad ACL tag"),
        };
        Ok(Document {
            tenant,
            id,
            version,
            text,
            metadata,
            acl,
        })
    }
}

/// A path that is not UTF-8, from the bytes the OS gave.
#[cfg(unix)]
fn os_path(bytes: &[u8]) -> Decoded<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    Ok(std::ffi::OsStr::from_bytes(bytes).into())
}

/// Elsewhere paths are stored as UTF-8 only.
#[cfg(not(unix))]
fn os_path(_: &[u8]) -> Decoded<std::path::PathBuf> {
    Err("a path is not UTF-8")
}

/// The record `payload` holds.
pub(crate) fn decode(payload: &[u8]) -> Decoded<Record> {
    let mut r = Reader { buf: payload };
    let record = match r.byte()? {
        1 => Record::Enqueued {
            id: r.u64()?,
            change: r.change()?,
        },
        2 => Record::Done { id: r.u64()? },
        3 => Record::Dead {
            id: r.u64()?,
            attempts: r.u32()?,
            reason: r.string()?,
        },
        4 => Record::Redriven {
            id: r.u64()?,
            change: r.change()?,
        },
        _ => return Err("unknown record kind"),
    };
    if !r.buf.is_empty() {
        return Err("trailing bytes after the record");
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_round_trips() {
        let doc = Document::new("acme", "faq", "text ✓")
            .with_version(7)
            .readable_by_group("staff")
            .readable_by_user("ann");
        let mut doc = doc;
        doc.metadata = Metadata::default()
            .with_title("FAQ")
            .with_attr("n", AttrValue::Int(-3))
            .with_attr("b", AttrValue::Bool(true))
            .with_attr("s", AttrValue::Text("x".into()));
        if let Some(acl) = &mut doc.acl {
            acl.deny.insert("u:mallory".parse().unwrap());
        }
        let records = [
            Record::Enqueued {
                id: 1,
                change: Change::Upsert(doc.clone()),
            },
            Record::Enqueued {
                id: 2,
                change: Change::Delete(DocKey::new("acme", DocId::new("old"))),
            },
            Record::Done { id: 1 },
            Record::Dead {
                id: 2,
                attempts: 5,
                reason: "invalid input: text is empty".into(),
            },
            Record::Redriven {
                id: 2,
                change: Change::Upsert(Document::new("acme", "bare", "no acl")),
            },
            Record::Enqueued {
                id: 3,
                change: Change::UpsertFile {
                    doc: Document::new("acme", "notes.md", "").readable_by_group("staff"),
                    path: "/srv/docs/notes.md".into(),
                },
            },
        ];
        for r in records {
            let bytes = encode(&r);
            assert_eq!(decode(&bytes), Ok(r.clone()));
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err(), "a cut record decoded");
            }
        }
    }
}
