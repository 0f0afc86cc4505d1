//! The index's state behind its read-write lock: documents, chunk records by slot,
//! access postings, the vectors, and the HNSW graph.

use std::collections::HashMap;
use std::sync::Arc;

use rag_core::{Acl, ChunkId, ContentHash, DocKey, Metadata, Span, TenantId};
use roaring::RoaringBitmap;

use crate::error::Result;
use crate::filter::Postings;
use crate::hnsw::Hnsw;
use crate::lexical::Lexical;
use crate::vectors::VectorStore;

/// What every chunk of a document shares.
#[derive(Debug)]
pub struct DocHeader {
    /// The document's tenant and id.
    pub key: DocKey,
    /// Its version.
    pub version: u64,
}

/// A stored document.
#[derive(Debug, Clone)]
pub struct DocEntry {
    /// Id and version.
    pub header: Arc<DocHeader>,
    /// Who may read it (shared, so that a snapshot copies a pointer under the
    /// writer lock, not the list).
    pub acl: Option<Arc<Acl>>,
    /// Its metadata (shared likewise).
    pub metadata: Arc<Metadata>,
    /// The digest of its source the writer gave.
    pub content_hash: Option<ContentHash>,
    /// Its chunks' slots, in chunk order.
    pub slots: Vec<u32>,
}

/// A stored chunk.
#[derive(Debug, Clone)]
pub struct SlotRecord {
    /// The chunk's id.
    pub chunk_id: ChunkId,
    /// Its document.
    pub doc: Arc<DocHeader>,
    /// Its position in the document.
    pub ordinal: u32,
    /// Where it lies in the document.
    pub span: Span,
    /// Its text.
    pub text: Arc<str>,
}

/// Everything a search reads, swapped or mutated only under the write lock.
#[derive(Debug)]
pub struct State {
    /// Bumped by every write and by compaction; compiled filters are valid for one
    /// generation.
    pub generation: u64,
    /// The sequence number of the last write applied (one per logged write).
    pub sequence: u64,
    /// Documents by tenant and id.
    pub docs: HashMap<DocKey, DocEntry>,
    /// Slots by tenant and chunk id (chunk ids are unique within a tenant, so that
    /// a chunk id never tells one tenant about another's documents).
    pub chunks: HashMap<(TenantId, ChunkId), u32>,
    /// Chunk records by slot; `None` for removed slots.
    pub records: Vec<Option<SlotRecord>>,
    /// Published, searchable slots.
    pub live: RoaringBitmap,
    /// Access postings.
    pub postings: Postings,
    /// Unit vectors by slot.
    pub vectors: VectorStore,
    /// The graph (shared so writers can insert without the write lock).
    pub hnsw: Arc<Hnsw>,
    /// Removed slots still present in the graph.
    pub tombstones: usize,
    /// The BM25 index of the chunks' text, when the lexical leg is on.
    pub lexical: Option<Arc<Lexical>>,
    /// Graph changes held back while a snapshot serialises the graph.
    pub deferred: DeferredGraph,
}

/// Graph changes held back while the graph is being serialised (a snapshot or a
/// checkpoint): writers publish without touching the graph, and searches score the
/// published slots that are not in it yet by a scan; the snapshot applies the
/// changes once the graph is written.
#[derive(Debug, Default)]
pub struct DeferredGraph {
    /// Whether writers must leave the graph alone.
    pub frozen: bool,
    /// Published slots whose vectors are not in the graph yet.
    pub unindexed: RoaringBitmap,
    /// Retired slots still in the graph.
    pub removals: Vec<u32>,
}

impl DeferredGraph {
    /// Whether changes are waiting for the graph.
    pub fn is_empty(&self) -> bool {
        self.unindexed.is_empty() && self.removals.is_empty()
    }
}

impl State {
    /// An empty state over `hnsw`.
    pub fn new(dims: usize, hnsw: Arc<Hnsw>) -> Self {
        Self {
            generation: 0,
            sequence: 0,
            docs: HashMap::new(),
            chunks: HashMap::new(),
            records: Vec::new(),
            live: RoaringBitmap::new(),
            postings: Postings::default(),
            vectors: VectorStore::new(dims),
            hnsw,
            tombstones: 0,
            lexical: None,
            deferred: DeferredGraph::default(),
        }
    }

    /// A new lexical index of every published chunk (after compaction or restore).
    pub fn index_text(&self) -> Result<Lexical> {
        let lexical = Lexical::new()?;
        let items: Vec<(u32, &str)> = self
            .live
            .iter()
            .filter_map(|s| Some((s, &*self.records.get(s as usize)?.as_ref()?.text)))
            .collect();
        lexical.apply(&items, &[])?;
        lexical.refresh()?;
        Ok(lexical)
    }

    /// Removes a document from everything searches read; returns its slots.
    pub fn unpublish(&mut self, key: &DocKey) -> Option<Vec<u32>> {
        let entry = self.docs.remove(key)?;
        self.postings.remove(entry.acl.as_deref(), &entry.slots);
        for &slot in &entry.slots {
            self.live.remove(slot);
            if let Some(rec) = self.records.get_mut(slot as usize).and_then(Option::take)
                && self.chunks.get(&(key.tenant.clone(), rec.chunk_id)) == Some(&slot)
            {
                self.chunks.remove(&(key.tenant.clone(), rec.chunk_id));
            }
        }
        Some(entry.slots)
    }

    /// The chunk records of a stored document, in chunk order.
    pub fn records_of<'a>(
        &'a self,
        entry: &'a DocEntry,
    ) -> impl Iterator<Item = (u32, &'a SlotRecord)> + 'a {
        entry
            .slots
            .iter()
            .filter_map(|&s| Some((s, self.records.get(s as usize)?.as_ref()?)))
    }

    /// Publishes a document whose vectors are already in the graph and the store.
    pub fn publish(&mut self, entry: DocEntry, records: Vec<SlotRecord>) {
        self.postings.insert(entry.acl.as_deref(), &entry.slots);
        for (&slot, rec) in entry.slots.iter().zip(records) {
            self.live.insert(slot);
            self.chunks
                .insert((entry.header.key.tenant.clone(), rec.chunk_id), slot);
            let i = slot as usize;
            if self.records.len() <= i {
                self.records.resize(i + 1, None);
            }
            self.records[i] = Some(rec);
        }
        self.docs.insert(entry.header.key.clone(), entry);
    }
}
