//! [`HnswIndex`]: the access-filtered vector index.

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rag_core::{
    AccessFilter, DocKey, DocumentInfo, Embedding, IndexStats, ModelFingerprint, SearchRequest,
    SearchResult, VectorIndex, VectorIndexRead, WriteOp, WriteReport,
};

use crate::config::IndexConfig;
use crate::error::Result;
use crate::filter::FilterCache;
use crate::hnsw::Hnsw;
use crate::lexical::Lexical;
use crate::state::{DocEntry, SlotRecord, State};
use crate::write::{add_parallel, repacked};

/// Memory held by an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Slots allocated in the vector store (live and removed).
    pub slots: usize,
    /// Bytes of the vector store.
    pub vector_bytes: usize,
    /// Vectors present in the graph.
    pub graph_vectors: usize,
}

/// An HNSW vector index with a chunk store, searched through access filters.
///
/// Reads run concurrently under a read lock. Writes are serialized: a writer inserts
/// new vectors into the graph while searches go on (unpublished slots are invisible
/// because no filter allows them), then publishes under a short write lock, so a
/// reader sees a document's old chunks or its new ones, never a mix or neither.
#[derive(Debug)]
pub struct HnswIndex {
    pub(crate) fingerprint: ModelFingerprint,
    pub(crate) config: IndexConfig,
    pub(crate) state: RwLock<State>,
    pub(crate) writer: Mutex<()>,
    /// Held while a snapshot has the graph frozen or applies what it held back.
    pub(crate) freezing: Mutex<()>,
    /// Read by every insert into the graph, written to grow it (usearch must not
    /// insert while it reallocates); inserts come from the writer and, after a
    /// snapshot, from applying what it held back.
    pub(crate) graph_adds: RwLock<()>,
    pub(crate) filters: FilterCache,
}

impl HnswIndex {
    /// An empty index for vectors of the model `fingerprint`.
    pub fn new(fingerprint: ModelFingerprint, config: IndexConfig) -> Result<Self> {
        config.validate()?;
        let hnsw = Hnsw::new(fingerprint.dims(), &config, 1024)?;
        let mut state = State::new(fingerprint.dims(), Arc::new(hnsw));
        if config.lexical {
            state.lexical = Some(Arc::new(Lexical::new()?));
        }
        Ok(Self::from_state(fingerprint.clone(), config, state))
    }

    pub(crate) fn from_state(
        fingerprint: ModelFingerprint,
        config: IndexConfig,
        state: State,
    ) -> Self {
        let filters = FilterCache::new(config.filter_cache_entries);
        Self {
            fingerprint,
            config,
            state: RwLock::new(state),
            writer: Mutex::new(()),
            freezing: Mutex::new(()),
            graph_adds: RwLock::new(()),
            filters,
        }
    }

    /// The settings.
    pub fn config(&self) -> &IndexConfig {
        &self.config
    }

    /// Memory held.
    pub fn memory(&self) -> MemoryUsage {
        let s = self.state.read();
        MemoryUsage {
            slots: s.vectors.len(),
            vector_bytes: s.vectors.allocated_bytes(),
            graph_vectors: s.hnsw.size(),
        }
    }

    /// Rebuilds the graph and the store from the live chunks alone, reclaiming the
    /// space of removed ones. Searches go on meanwhile; writes wait.
    pub fn compact(&self) -> Result<()> {
        let _writer = self.writer.lock();
        self.compact_locked()
    }

    /// Compaction with the writer lock already held.
    pub(crate) fn compact_locked(&self) -> Result<()> {
        let dims = self.fingerprint.dims();
        let mut next = {
            let old = self.state.read();
            let live = old.live.len() as usize;
            let hnsw = Hnsw::new(dims, &self.config, live + live / 4)?;
            let mut next = State::new(dims, Arc::new(hnsw));
            next.generation = old.generation;
            next.sequence = old.sequence;
            let mut ids: Vec<&DocKey> = old.docs.keys().collect();
            ids.sort();
            for id in ids {
                let Some(entry) = old.docs.get(id) else {
                    continue;
                };
                let mut slots = Vec::with_capacity(entry.slots.len());
                let mut records: Vec<SlotRecord> = Vec::with_capacity(entry.slots.len());
                for &s in &entry.slots {
                    if let Some(Some(rec)) = old.records.get(s as usize) {
                        slots.push(next.vectors.len() as u32);
                        next.vectors.push(old.vectors.get(s));
                        records.push(rec.clone());
                    }
                }
                next.publish(
                    DocEntry {
                        slots,
                        ..entry.clone()
                    },
                    records,
                );
            }
            next
        };
        let items: Vec<(u32, &[f32])> = (0..next.vectors.len() as u32)
            .map(|s| (s, next.vectors.get(s)))
            .collect();
        add_parallel(&next.hnsw, &items)?;
        drop(items);
        if self.config.repack_min > 0 && next.vectors.len() >= self.config.repack_min {
            next.hnsw = Arc::new(repacked(&next.hnsw, dims, &self.config)?);
        }
        if self.config.lexical {
            next.lexical = Some(Arc::new(next.index_text()?));
        }
        let mut state = self.state.write();
        next.generation = state.generation + 1;
        *state = next;
        tracing::debug!(live = state.live.len(), "compacted");
        Ok(())
    }
}

impl VectorIndexRead for HnswIndex {
    fn fingerprint(&self) -> &ModelFingerprint {
        &self.fingerprint
    }

    fn search(
        &self,
        query: &Embedding,
        k: usize,
        filter: &AccessFilter,
    ) -> rag_core::Result<SearchResult> {
        Ok(self.search_filtered(query, k, filter)?)
    }

    fn retrieve(
        &self,
        request: &SearchRequest<'_>,
        filter: &AccessFilter,
    ) -> rag_core::Result<SearchResult> {
        Ok(self.search_request(request, filter)?)
    }

    fn document(&self, key: &DocKey) -> rag_core::Result<Option<DocumentInfo>> {
        let state = self.state.read();
        Ok(state.docs.get(key).map(|d| DocumentInfo {
            version: d.header.version,
            acl: d.acl.as_deref().cloned(),
            metadata: (*d.metadata).clone(),
            content_hash: d.content_hash,
            chunk_ids: d
                .slots
                .iter()
                .filter_map(|&s| state.records.get(s as usize)?.as_ref().map(|r| r.chunk_id))
                .collect(),
        }))
    }

    fn stats(&self) -> IndexStats {
        let s = self.state.read();
        IndexStats {
            documents: s.docs.len(),
            chunks: s.live.len() as usize,
            generation: s.generation,
            sequence: s.sequence,
            tombstones: s.tombstones,
        }
    }
}

impl VectorIndex for HnswIndex {
    fn apply(&self, op: WriteOp) -> rag_core::Result<WriteReport> {
        Ok(self.apply_one(op.into())?)
    }
}
