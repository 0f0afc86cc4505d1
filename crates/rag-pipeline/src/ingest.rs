//! Ingestion: validate, skip unchanged documents, chunk, embed in batches, upsert,
//! invalidate the cache.

use std::collections::{BTreeSet, HashSet};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::{Pipeline, observe};
use rag_core::DocKey;
use rag_core::{AttrValue, ContentHash, Document};
use rag_core::{DocumentUpdate, EmbeddedChunk};
use rag_core::{Error, InvalidInput, Result, Stage};

/// What an ingestion did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestReport {
    /// Documents given.
    pub documents: usize,
    /// Documents whose text, ACL, metadata and version were already stored: skipped,
    /// nothing embedded.
    pub unchanged: usize,
    /// Documents inserted or replaced.
    pub upserted: usize,
    /// Chunks embedded and stored.
    pub chunks: usize,
    /// Cache entries dropped because they cited a replaced document.
    pub cache_invalidated: usize,
    /// Seconds spent embedding.
    pub embed_seconds: f64,
    /// Seconds in all.
    pub seconds: f64,
}

/// A digest of everything stored about a document besides its chunks: tenant, id,
/// version, text, ACL and metadata, each field length-prefixed in a fixed order (a
/// stable encoding, not `Debug` output), so that it survives restarts and upgrades.
pub fn content_hash(doc: &Document) -> ContentHash {
    fn field(h: &mut Sha256, bytes: &[u8]) {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    let mut h = Sha256::new();
    field(&mut h, b"rag-document-v1");
    field(&mut h, doc.tenant.as_str().as_bytes());
    field(&mut h, doc.id.as_str().as_bytes());
    h.update(doc.version.to_le_bytes());
    field(&mut h, doc.text.as_bytes());
    match &doc.acl {
        None => h.update([0u8]),
        Some(acl) => {
            h.update([1u8]);
            field(&mut h, acl.tenant.as_str().as_bytes());
            for tags in [&acl.allow, &acl.deny] {
                h.update((tags.len() as u64).to_le_bytes());
                for t in tags {
                    field(&mut h, t.to_string().as_bytes());
                }
            }
        }
    }
    for s in [&doc.metadata.title, &doc.metadata.source] {
        match s {
            None => h.update([0u8]),
            Some(s) => {
                h.update([1u8]);
                field(&mut h, s.as_bytes());
            }
        }
    }
    h.update((doc.metadata.attributes.len() as u64).to_le_bytes());
    for (k, v) in &doc.metadata.attributes {
        field(&mut h, k.as_bytes());
        match v {
            AttrValue::Text(s) => {
                h.update([0u8]);
                field(&mut h, s.as_bytes());
            }
            AttrValue::Int(i) => {
                h.update([1u8]);
                h.update(i.to_le_bytes());
            }
            AttrValue::Bool(b) => h.update([2u8, u8::from(*b)]),
        }
    }
    ContentHash(h.finalize().into())
}

impl Pipeline {
    /// Ingests documents. The batch is validated first (ids, duplicates, empty or
    /// over-large text) and rejected whole on a problem. Then, a window of documents
    /// at a time: documents stored with the same content hash are skipped, the rest
    /// are chunked, embedded in batches and upserted (replacing their old chunks), and
    /// cache entries citing them are dropped. A failure mid-way keeps the windows
    /// already written.
    pub fn ingest(&self, docs: Vec<Document>) -> Result<IngestReport> {
        let start = Instant::now();
        let span = tracing::info_span!("rag.ingest", documents = docs.len());
        let _enter = span.enter();
        let mut seen = HashSet::new();
        for d in &docs {
            rag_core::check_key(&d.tenant, &d.id, d.acl.as_ref())?;
            if !seen.insert(d.key()) {
                return Err(InvalidInput::DuplicateDocument {
                    doc_id: d.id.clone(),
                }
                .into());
            }
            if d.text.trim().is_empty() {
                return Err(InvalidInput::EmptyText {
                    what: "document text",
                }
                .into());
            }
            if d.text.len() > self.config.max_document_bytes {
                return Err(InvalidInput::TooLarge {
                    what: "document",
                    actual: d.text.len(),
                    max: self.config.max_document_bytes,
                }
                .into());
            }
        }
        let mut report = IngestReport {
            documents: docs.len(),
            ..IngestReport::default()
        };
        let mut window = Vec::with_capacity(self.config.upsert_batch);
        for doc in docs {
            let hash = content_hash(&doc);
            let stored = self.index.document(&doc.key())?;
            let same = stored.is_some_and(|s| s.content_hash == Some(hash));
            if same {
                report.unchanged += 1;
                continue;
            }
            window.push((doc, hash));
            if window.len() == self.config.upsert_batch {
                self.write_window(std::mem::take(&mut window), &mut report)?;
            }
        }
        if !window.is_empty() {
            self.write_window(window, &mut report)?;
        }
        let stats = self.index.stats();
        metrics::gauge!(observe::INDEX_CHUNKS).set(stats.chunks as f64);
        metrics::gauge!(observe::INDEX_DOCUMENTS).set(stats.documents as f64);
        report.seconds = start.elapsed().as_secs_f64();
        observe::stage("ingest", true, start.elapsed());
        Ok(report)
    }

    fn write_window(
        &self,
        window: Vec<(Document, ContentHash)>,
        report: &mut IngestReport,
    ) -> Result<()> {
        let mut chunked = Vec::with_capacity(window.len());
        for (doc, hash) in window {
            let chunks = self.chunker.chunk(&doc)?;
            if chunks.is_empty() {
                return Err(InvalidInput::NoChunks { doc_id: doc.id }.into());
            }
            chunked.push((doc, hash, chunks));
        }
        let owned: Vec<std::borrow::Cow<'_, str>> = chunked
            .iter()
            .flat_map(|(_, _, cs)| cs.iter().map(|c| c.embedding_text()))
            .collect();
        let texts: Vec<&str> = owned.iter().map(|c| c.as_ref()).collect();
        let t = Instant::now();
        let mut embeddings = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.config.embed_batch) {
            embeddings.extend(self.embedder.embed(batch)?);
        }
        report.embed_seconds += t.elapsed().as_secs_f64();
        observe::stage("embed", true, t.elapsed());
        if embeddings.len() != texts.len() {
            // Never pair a chunk with another chunk's vector.
            return Err(Error::backend(
                Stage::Embed,
                format!(
                    "the embedder returned {} vectors for {} texts",
                    embeddings.len(),
                    texts.len()
                ),
            ));
        }
        drop(texts);
        drop(owned);
        let mut embeddings = embeddings.into_iter();
        let mut updates = Vec::with_capacity(chunked.len());
        let mut ids = BTreeSet::new();
        for (doc, hash, chunks) in chunked {
            report.chunks += chunks.len();
            let chunks = chunks
                .into_iter()
                .zip(embeddings.by_ref())
                .map(|(chunk, embedding)| EmbeddedChunk { chunk, embedding })
                .collect();
            ids.insert(doc.key());
            updates.push(DocumentUpdate {
                tenant: doc.tenant,
                doc_id: doc.id,
                version: doc.version,
                acl: doc.acl,
                metadata: doc.metadata,
                content_hash: Some(hash),
                chunks,
            });
        }
        let t = Instant::now();
        let written = self.index.upsert(updates);
        observe::stage("index", written.is_ok(), t.elapsed());
        // A write that fails may have published some of its documents (the log sync
        // failing after the graph changed): drop what the cache made from them
        // either way.
        let invalidated = self.invalidate(&ids);
        let written = written?;
        report.upserted += written.documents_upserted;
        report.unchanged += written.documents_unchanged;
        report.cache_invalidated += invalidated?;
        Ok(())
    }

    /// Removes a document from the index and drops cache entries citing it.
    pub fn delete(&self, key: &DocKey) -> Result<()> {
        let done = self.index.delete(key);
        // Invalidated even when the write failed: it may have been published.
        self.invalidate(&BTreeSet::from([key.clone()]))?;
        done?;
        metrics::gauge!(observe::INDEX_CHUNKS).set(self.index.stats().chunks as f64);
        Ok(())
    }

    /// Erases a document: removed from the index and the cache, with every copy of
    /// its text and embedding purged before this returns.
    pub fn erase(&self, key: &DocKey) -> Result<()> {
        let done = self.index.erase(key);
        // Invalidated even when the write failed: it may have been published.
        self.invalidate(&BTreeSet::from([key.clone()]))?;
        done?;
        metrics::gauge!(observe::INDEX_CHUNKS).set(self.index.stats().chunks as f64);
        Ok(())
    }

    fn invalidate(&self, ids: &BTreeSet<DocKey>) -> Result<usize> {
        match &self.cache {
            Some(c) => c.invalidate(ids),
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rag_core::Acl;
    use rag_core::Metadata;

    fn doc() -> Document {
        Document {
            tenant: "acme".into(),
            id: "handbook".into(),
            version: 3,
            text: "Expenses need a receipt.".into(),
            metadata: Metadata::default()
                .with_title("Handbook")
                .with_attr("pages", AttrValue::Int(12)),
            acl: Some(Acl::new("acme").allow_group("staff").deny_user("eve")),
        }
    }

    #[test]
    fn the_content_hash_is_a_stable_encoding() {
        // Pinned: stores written by earlier builds compare against this value, so a
        // change here would make every restart re-embed everything.
        assert_eq!(
            content_hash(&doc()).to_string(),
            "d49f0b559ecc07b8ffd8ad1a47b14fece362cf31e03713e8fb12f9245acaf926"
        );
    }

    #[test]
    fn every_field_changes_the_content_hash() {
        let base = content_hash(&doc());
        let edits: [fn(&mut Document); 7] = [
            |d| d.tenant = "globex".into(),
            |d| d.id = "handbook2".into(),
            |d| d.version = 4,
            |d| d.text.push('!'),
            |d| d.acl = None,
            |d| d.metadata.title = None,
            |d| {
                d.metadata
                    .attributes
                    .insert("pages".into(), AttrValue::Int(13));
            },
        ];
        for edit in edits {
            let mut d = doc();
            edit(&mut d);
            assert_ne!(content_hash(&d), base, "{d:?}");
        }
    }
}
