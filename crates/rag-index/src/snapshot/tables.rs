//! The Parquet tables of a snapshot: one row per document, one row per chunk.
//!
//! `documents`: `doc_id`, `version`, `has_acl`, `tenant`, `allow` and `deny` (lists of
//! `u:`/`g:`/`r:` tags), `title`, `source`, `attr_keys`, `attr_values` (values typed
//! by prefix: `s:` text, `i:` integer, `b:` flag), and from format 2 `content_hash`
//! (hex, nullable).
//! `chunks`: `slot`, `chunk_id`, `doc_id`, `doc_version`, `ordinal`, `span_start`,
//! `span_end`, `text`, `embedding` (fixed-size list of `f32`, unit length), and from
//! format 2 `tenant`.
//! ACL and metadata live once per document and join to chunks on (`tenant`, `doc_id`).
//!
//! Format 1 had no tenant in the document key: its `tenant` column is the ACL's
//! (null without an ACL), and a document without an ACL is read into the empty
//! tenant, which no filter names. From format 2 `tenant` is the key's tenant,
//! always set, and an ACL's tenant equals it.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, ListArray, ListBuilder,
    RecordBatch, StringArray, StringBuilder, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rag_core::{
    Acl, AttrValue, ChunkId, ContentHash, DocId, DocKey, Metadata, PermissionTag, Span, TenantId,
};

use crate::error::SnapshotError;

/// A document row.
#[derive(Debug, Clone, PartialEq)]
pub struct DocRow {
    pub key: DocKey,
    pub version: u64,
    pub acl: Option<Acl>,
    pub metadata: Metadata,
    pub content_hash: Option<ContentHash>,
}

/// A chunk row.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRow {
    pub slot: u32,
    pub chunk_id: ChunkId,
    /// The document's tenant (`None` when read from format 1).
    pub tenant: Option<TenantId>,
    pub doc_id: DocId,
    pub doc_version: u64,
    pub ordinal: u32,
    pub span: Span,
    pub text: Arc<str>,
}

const ROW_GROUP: usize = 65_536;

fn tag_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

fn documents_schema(format: u32) -> SchemaRef {
    let mut fields = vec![
        Field::new("doc_id", DataType::Utf8, false),
        Field::new("version", DataType::UInt64, false),
        Field::new("has_acl", DataType::Boolean, false),
        Field::new("tenant", DataType::Utf8, true),
        Field::new("allow", tag_list(), false),
        Field::new("deny", tag_list(), false),
        Field::new("title", DataType::Utf8, true),
        Field::new("source", DataType::Utf8, true),
        Field::new("attr_keys", tag_list(), false),
        Field::new("attr_values", tag_list(), false),
    ];
    if format >= 2 {
        fields.push(Field::new("content_hash", DataType::Utf8, true));
    }
    Arc::new(Schema::new(fields))
}

fn chunks_schema(dims: usize, format: u32) -> SchemaRef {
    let mut fields = vec![
        Field::new("slot", DataType::UInt32, false),
        Field::new("chunk_id", DataType::UInt64, false),
        Field::new("doc_id", DataType::Utf8, false),
        Field::new("doc_version", DataType::UInt64, false),
        Field::new("ordinal", DataType::UInt32, false),
        Field::new("span_start", DataType::UInt64, false),
        Field::new("span_end", DataType::UInt64, false),
        Field::new("text", DataType::Utf8, false),
        Field::new(
            "embedding",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, false)),
                dims as i32,
            ),
            false,
        ),
    ];
    if format >= 2 {
        fields.push(Field::new("tenant", DataType::Utf8, false));
    }
    Arc::new(Schema::new(fields))
}

/// The table format this build writes.
const WRITE_FORMAT: u32 = super::SNAPSHOT_FORMAT_VERSION;

fn encode_err(file: &str) -> impl Fn(String) -> SnapshotError + '_ {
    move |reason| SnapshotError::Encode {
        file: file.to_owned(),
        reason,
    }
}

fn write_batches<W: std::io::Write + Send>(
    out: W,
    file: &str,
    schema: SchemaRef,
    batches: impl Iterator<Item = Result<RecordBatch, SnapshotError>>,
) -> Result<W, SnapshotError> {
    let err = encode_err(file);
    let level = ZstdLevel::try_new(1).map_err(|e| err(e.to_string()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(ROW_GROUP))
        .build();
    let mut writer =
        ArrowWriter::try_new(out, schema, Some(props)).map_err(|e| err(e.to_string()))?;
    for batch in batches {
        writer.write(&batch?).map_err(|e| err(e.to_string()))?;
        // Row groups go to `out` as they fill: the table is never held whole.
    }
    writer.into_inner().map_err(|e| err(e.to_string()))
}

fn string_list<'a, I, S>(rows: I) -> ListArray
where
    I: Iterator<Item = S>,
    S: IntoIterator<Item = &'a str>,
{
    let mut b = ListBuilder::new(StringBuilder::new());
    for row in rows {
        for s in row {
            b.values().append_value(s);
        }
        b.append(true);
    }
    b.finish()
}

fn encode_attr(v: &AttrValue) -> String {
    match v {
        AttrValue::Text(s) => format!("s:{s}"),
        AttrValue::Int(i) => format!("i:{i}"),
        AttrValue::Bool(b) => format!("b:{b}"),
    }
}

fn decode_attr(s: &str) -> Option<AttrValue> {
    let (kind, v) = s.split_once(':')?;
    match kind {
        "s" => Some(AttrValue::Text(v.to_owned())),
        "i" => v.parse().ok().map(AttrValue::Int),
        "b" => v.parse().ok().map(AttrValue::Bool),
        _ => None,
    }
}

/// Encodes the documents table into `out`, a row group at a time.
pub fn write_documents<W: std::io::Write + Send>(
    out: W,
    file: &str,
    rows: &[DocRow],
) -> Result<W, SnapshotError> {
    let schema = documents_schema(WRITE_FORMAT);
    let err = encode_err(file);
    let batches = rows.chunks(ROW_GROUP.max(1)).map(|rows| {
        let tags = |pick: fn(&Acl) -> &std::collections::BTreeSet<PermissionTag>| {
            let rendered: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    r.acl
                        .as_ref()
                        .map(|a| pick(a).iter().map(ToString::to_string).collect())
                        .unwrap_or_default()
                })
                .collect();
            string_list(rendered.iter().map(|v| v.iter().map(String::as_str)))
        };
        let attr_values: Vec<Vec<String>> = rows
            .iter()
            .map(|r| r.metadata.attributes.values().map(encode_attr).collect())
            .collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.key.doc_id.as_str()),
            )),
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| r.version),
            )),
            Arc::new(BooleanArray::from(
                rows.iter().map(|r| r.acl.is_some()).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| Some(r.key.tenant.as_str())),
            )),
            Arc::new(tags(|a| &a.allow)),
            Arc::new(tags(|a| &a.deny)),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| r.metadata.title.as_deref()),
            )),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| r.metadata.source.as_deref()),
            )),
            Arc::new(string_list(
                rows.iter()
                    .map(|r| r.metadata.attributes.keys().map(String::as_str)),
            )),
            Arc::new(string_list(
                attr_values.iter().map(|v| v.iter().map(String::as_str)),
            )),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| r.content_hash.map(|h| h.to_string())),
            )),
        ];
        RecordBatch::try_new(schema.clone(), columns).map_err(|e| err(e.to_string()))
    });
    write_batches(out, file, documents_schema(WRITE_FORMAT), batches)
}

/// Encodes the chunks table into `out`, a row group at a time; `vector(slot)` gives
/// each chunk's unit vector.
pub fn write_chunks<'v, W: std::io::Write + Send>(
    out: W,
    file: &str,
    dims: usize,
    rows: &[ChunkRow],
    vector: impl Fn(u32) -> &'v [f32],
) -> Result<W, SnapshotError> {
    let schema = chunks_schema(dims, WRITE_FORMAT);
    let err = encode_err(file);
    let batches = rows.chunks(ROW_GROUP).map(|rows| {
        let mut values = Vec::with_capacity(rows.len() * dims);
        for r in rows {
            values.extend_from_slice(vector(r.slot));
        }
        let embedding = FixedSizeListArray::try_new(
            Arc::new(Field::new("item", DataType::Float32, false)),
            dims as i32,
            Arc::new(Float32Array::from(values)),
            None,
        )
        .map_err(|e| err(e.to_string()))?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.slot))),
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| r.chunk_id.0),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.doc_id.as_str()),
            )),
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| r.doc_version),
            )),
            Arc::new(UInt32Array::from_iter_values(
                rows.iter().map(|r| r.ordinal),
            )),
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| r.span.start as u64),
            )),
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| r.span.end as u64),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.text.as_ref()),
            )),
            Arc::new(embedding),
            Arc::new(StringArray::from_iter_values(
                rows.iter()
                    .map(|r| r.tenant.as_ref().map_or("", TenantId::as_str)),
            )),
        ];
        RecordBatch::try_new(schema.clone(), columns).map_err(|e| err(e.to_string()))
    });
    write_batches(out, file, chunks_schema(dims, WRITE_FORMAT), batches)
}

struct Decoder<'a> {
    file: &'a str,
}

impl<'a> Decoder<'a> {
    fn corrupt(&self, reason: impl Into<String>) -> SnapshotError {
        SnapshotError::Corrupt {
            file: self.file.to_owned(),
            reason: reason.into(),
        }
    }

    /// Decodes every batch. The Parquet reader asserts on some malformed metadata
    /// (a negative column offset, found by the `snapshot_tables` fuzzer): that case
    /// is checked before reading. It also panics inside its page decoders (a
    /// dictionary page with no values but some bytes divides by zero, found by the
    /// same fuzzer), which metadata cannot reveal: any such panic is caught here
    /// and becomes [`SnapshotError::Corrupt`], so a damaged table never takes the
    /// process down.
    fn batches(&self, bytes: Bytes, schema: &SchemaRef) -> Result<Vec<RecordBatch>, SnapshotError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.decode(bytes, schema)))
            .unwrap_or_else(
                |_| Err(self.corrupt("the Parquet reader rejected the file (panicked)")),
            )
    }

    fn decode(&self, bytes: Bytes, schema: &SchemaRef) -> Result<Vec<RecordBatch>, SnapshotError> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| self.corrupt(e.to_string()))?;
        // parquet 60.1 asserts (panics) on a negative column offset or size while
        // reading; refuse such metadata first.
        for rg in builder.metadata().row_groups() {
            for c in rg.columns() {
                let negative = c.data_page_offset() < 0
                    || c.compressed_size() < 0
                    || c.dictionary_page_offset().is_some_and(|o| o < 0);
                if negative {
                    return Err(self.corrupt("negative column chunk offset or size"));
                }
            }
        }
        let reader = builder
            .with_batch_size(8192)
            .build()
            .map_err(|e| self.corrupt(e.to_string()))?;
        let mut out = Vec::new();
        for b in reader {
            let b = b.map_err(|e| self.corrupt(e.to_string()))?;
            if b.schema().fields() != schema.fields() {
                return Err(self.corrupt("unexpected columns"));
            }
            out.push(b);
        }
        Ok(out)
    }

    fn col<'b, T: 'static>(
        &self,
        batch: &'b RecordBatch,
        name: &str,
    ) -> Result<&'b T, SnapshotError> {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<T>())
            .ok_or_else(|| self.corrupt(format!("column {name} missing or mistyped")))
    }

    fn strings(&self, list: &ListArray, row: usize) -> Result<Vec<String>, SnapshotError> {
        let values = list.value(row);
        let s = values
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| self.corrupt("list of text expected"))?;
        Ok((0..s.len()).map(|i| s.value(i).to_owned()).collect())
    }

    fn tags(
        &self,
        list: &ListArray,
        row: usize,
    ) -> Result<std::collections::BTreeSet<PermissionTag>, SnapshotError> {
        self.strings(list, row)?
            .iter()
            .map(|t| {
                t.parse()
                    .map_err(|e: rag_core::ParseTagError| self.corrupt(e.to_string()))
            })
            .collect()
    }
}

fn parse_hash(hex_text: &str) -> Option<ContentHash> {
    let bytes = hex::decode(hex_text).ok()?;
    Some(ContentHash(bytes.try_into().ok()?))
}

fn opt_str(a: &StringArray, i: usize) -> Option<String> {
    (!a.is_null(i)).then(|| a.value(i).to_owned())
}

/// Decodes the documents table.
pub fn read_documents(file: &str, bytes: Bytes, format: u32) -> Result<Vec<DocRow>, SnapshotError> {
    let d = Decoder { file };
    let mut rows = Vec::new();
    for b in d.batches(bytes, &documents_schema(format))? {
        let hashes = if format >= 2 {
            Some(d.col::<StringArray>(&b, "content_hash")?)
        } else {
            None
        };
        let ids = d.col::<StringArray>(&b, "doc_id")?;
        let versions = d.col::<UInt64Array>(&b, "version")?;
        let has_acl = d.col::<BooleanArray>(&b, "has_acl")?;
        let tenants = d.col::<StringArray>(&b, "tenant")?;
        let allow = d.col::<ListArray>(&b, "allow")?;
        let deny = d.col::<ListArray>(&b, "deny")?;
        let titles = d.col::<StringArray>(&b, "title")?;
        let sources = d.col::<StringArray>(&b, "source")?;
        let keys = d.col::<ListArray>(&b, "attr_keys")?;
        let values = d.col::<ListArray>(&b, "attr_values")?;
        for i in 0..b.num_rows() {
            let tenant = TenantId::from(opt_str(tenants, i).unwrap_or_default());
            let acl = if has_acl.value(i) {
                if tenant.is_empty() {
                    return Err(d.corrupt("ACL without tenant"));
                }
                Some(Acl {
                    tenant: tenant.clone(),
                    allow: d.tags(allow, i)?,
                    deny: d.tags(deny, i)?,
                })
            } else {
                None
            };
            let content_hash = match hashes.and_then(|h| opt_str(h, i)) {
                None => None,
                Some(h) => Some(parse_hash(&h).ok_or_else(|| d.corrupt("bad content hash"))?),
            };
            let (k, v) = (d.strings(keys, i)?, d.strings(values, i)?);
            if k.len() != v.len() {
                return Err(d.corrupt("attribute keys and values differ in length"));
            }
            let attributes = k
                .into_iter()
                .zip(v)
                .map(|(k, v)| {
                    decode_attr(&v)
                        .map(|v| (k, v))
                        .ok_or_else(|| d.corrupt(format!("bad attribute value {v:?}")))
                })
                .collect::<Result<_, _>>()?;
            rows.push(DocRow {
                key: DocKey::new(tenant, ids.value(i)),
                version: versions.value(i),
                content_hash,
                acl,
                metadata: Metadata {
                    title: opt_str(titles, i),
                    source: opt_str(sources, i),
                    attributes,
                },
            });
        }
    }
    Ok(rows)
}

/// Decodes the chunks table; returns rows and their vectors, `dims` values each.
pub fn read_chunks(
    file: &str,
    bytes: Bytes,
    dims: usize,
    format: u32,
) -> Result<(Vec<ChunkRow>, Vec<f32>), SnapshotError> {
    let d = Decoder { file };
    let mut rows = Vec::new();
    let mut vectors = Vec::new();
    for b in d.batches(bytes, &chunks_schema(dims, format))? {
        let tenants = if format >= 2 {
            Some(d.col::<StringArray>(&b, "tenant")?)
        } else {
            None
        };
        let slots = d.col::<UInt32Array>(&b, "slot")?;
        let ids = d.col::<UInt64Array>(&b, "chunk_id")?;
        let docs = d.col::<StringArray>(&b, "doc_id")?;
        let versions = d.col::<UInt64Array>(&b, "doc_version")?;
        let ordinals = d.col::<UInt32Array>(&b, "ordinal")?;
        let starts = d.col::<UInt64Array>(&b, "span_start")?;
        let ends = d.col::<UInt64Array>(&b, "span_end")?;
        let texts = d.col::<StringArray>(&b, "text")?;
        let emb = d.col::<FixedSizeListArray>(&b, "embedding")?;
        if emb.value_length() as usize != dims {
            return Err(d.corrupt("embedding width differs from the manifest"));
        }
        let values = emb
            .values()
            .as_any()
            .downcast_ref::<Float32Array>()
            .ok_or_else(|| d.corrupt("embedding values are not f32"))?;
        let offset = emb.offset() * dims;
        let flat = &values.values()[offset..offset + b.num_rows() * dims];
        if let Some(bad) = flat.iter().position(|v| !v.is_finite()) {
            return Err(d.corrupt(format!("non-finite embedding value at {bad}")));
        }
        vectors.extend_from_slice(flat);
        for i in 0..b.num_rows() {
            rows.push(ChunkRow {
                slot: slots.value(i),
                chunk_id: ChunkId(ids.value(i)),
                tenant: tenants.map(|t| TenantId::new(t.value(i))),
                doc_id: DocId::new(docs.value(i)),
                doc_version: versions.value(i),
                ordinal: ordinals.value(i),
                span: Span::new(starts.value(i) as usize, ends.value(i) as usize),
                text: Arc::from(texts.value(i)),
            });
        }
    }
    Ok((rows, vectors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_roundtrip() {
        let rows = vec![
            DocRow {
                key: DocKey::new("t", "a"),
                version: 3,
                content_hash: Some(ContentHash([7; 32])),
                acl: Some(Acl::new("t").allow_group("g").deny_user("u")),
                metadata: Metadata::default()
                    .with_title("T")
                    .with_attr("n", AttrValue::Int(-4))
                    .with_attr("f", AttrValue::Bool(true))
                    .with_attr("s", AttrValue::Text("x:y".into())),
            },
            DocRow {
                key: DocKey::new("t2", "b"),
                version: 1,
                content_hash: None,
                acl: None,
                metadata: Metadata::default().with_source("/p"),
            },
        ];
        let bytes = write_documents(Vec::new(), "d", &rows).unwrap();
        assert_eq!(
            read_documents("d", Bytes::from(bytes), WRITE_FORMAT).unwrap(),
            rows
        );
    }

    #[test]
    fn the_fuzzers_parquet_crash_is_a_typed_error() {
        // Found by `cargo fuzz run snapshot_tables`: metadata with a negative column
        // offset, on which parquet 60.1 asserts.
        let bytes = include_bytes!("../../tests/data/fuzz-parquet-negative-offset");
        for format in 1..=2 {
            let err = read_documents("d", Bytes::from_static(bytes), format).unwrap_err();
            assert!(matches!(err, SnapshotError::Corrupt { .. }), "{err}");
        }
    }

    #[test]
    fn the_fuzzers_empty_dictionary_page_is_a_typed_error() {
        // Found by `cargo fuzz run snapshot_tables` in CI: a dictionary page that
        // declares no values but carries bytes; parquet 60.1 divides by zero while
        // decoding it. The reader's panic is contained and the table reported corrupt.
        let bytes = include_bytes!("../../tests/data/fuzz-parquet-empty-dictionary");
        for format in 1..=2 {
            let err = read_documents("d", Bytes::from_static(bytes), format).unwrap_err();
            assert!(matches!(err, SnapshotError::Corrupt { .. }), "{err}");
        }
    }

    #[test]
    fn garbage_is_a_typed_error() {
        let err = read_documents("d", Bytes::from_static(b"not parquet"), 2).unwrap_err();
        assert!(matches!(err, SnapshotError::Corrupt { .. }), "{err}");
    }
}
