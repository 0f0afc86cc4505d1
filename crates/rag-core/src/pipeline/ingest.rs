//! Ingestion: validate, skip unchanged documents, chunk, embed in batches, upsert,
//! invalidate the cache.

use std::collections::{BTreeSet, HashSet};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::{Pipeline, observe};
use crate::document::{AttrValue, Document};
use crate::error::{InvalidInput, Result};
use crate::ids::DocId;
use crate::write::{DocumentUpdate, EmbeddedChunk};

/// The metadata attribute holding a document's content hash.
pub const CONTENT_HASH_ATTR: &str = "rag.content_sha256";

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

/// A hash of everything stored about a document besides its chunks.
fn content_hash(doc: &Document) -> String {
    let mut h = Sha256::new();
    h.update(doc.version.to_le_bytes());
    h.update((doc.text.len() as u64).to_le_bytes());
    h.update(doc.text.as_bytes());
    h.update(format!("{:?}", doc.acl).as_bytes());
    let mut meta = doc.metadata.clone();
    meta.attributes.remove(CONTENT_HASH_ATTR);
    h.update(format!("{meta:?}").as_bytes());
    let d = h.finalize();
    d.iter().map(|b| format!("{b:02x}")).collect()
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
            if d.id.is_empty() {
                return Err(InvalidInput::EmptyId { what: "document" }.into());
            }
            if !seen.insert(d.id.clone()) {
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
            let stored = self.index.document(&doc.id)?;
            let same = stored.is_some_and(|s| {
                s.metadata.attributes.get(CONTENT_HASH_ATTR) == Some(&AttrValue::Text(hash.clone()))
            });
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
        window: Vec<(Document, String)>,
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
        drop(texts);
        drop(owned);
        let mut embeddings = embeddings.into_iter();
        let mut updates = Vec::with_capacity(chunked.len());
        let mut ids = BTreeSet::new();
        for (doc, hash, chunks) in chunked {
            let mut metadata = doc.metadata;
            metadata
                .attributes
                .insert(CONTENT_HASH_ATTR.into(), AttrValue::Text(hash));
            report.chunks += chunks.len();
            let chunks = chunks
                .into_iter()
                .zip(embeddings.by_ref())
                .map(|(chunk, embedding)| EmbeddedChunk { chunk, embedding })
                .collect();
            ids.insert(doc.id.clone());
            updates.push(DocumentUpdate {
                doc_id: doc.id,
                version: doc.version,
                acl: doc.acl,
                metadata,
                chunks,
            });
        }
        let t = Instant::now();
        let written = self.index.upsert(updates);
        observe::stage("index", written.is_ok(), t.elapsed());
        written?;
        report.upserted += ids.len();
        report.cache_invalidated += self.invalidate(&ids)?;
        Ok(())
    }

    /// Removes a document from the index and drops cache entries citing it.
    pub fn delete(&self, doc_id: &DocId) -> Result<()> {
        self.index.delete(doc_id)?;
        self.invalidate(&BTreeSet::from([doc_id.clone()]))?;
        metrics::gauge!(observe::INDEX_CHUNKS).set(self.index.stats().chunks as f64);
        Ok(())
    }

    fn invalidate(&self, ids: &BTreeSet<DocId>) -> Result<usize> {
        match &self.cache {
            Some(c) => c.invalidate(ids),
            None => Ok(0),
        }
    }
}
