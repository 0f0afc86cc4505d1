//! Snapshots without stalling writers on the graph: while a snapshot serialises the
//! graph, writers publish without touching it (their inserts and removals wait in
//! [`DeferredGraph`](crate::state::DeferredGraph), and searches scan the slots not
//! in it yet); afterwards writers use the graph again at once and the held-back
//! changes are applied beside them in small batches, without the writer lock.

use std::sync::Arc;

use parking_lot::{MutexGuard, RwLockReadGuard};

use crate::error::Result;
use crate::hnsw::Hnsw;
use crate::index::HnswIndex;
use crate::write::add_parallel;

/// Held-back inserts applied per batch (each batch is visible to searches as soon
/// as it is in). Small, since a writer's inserts wait for the batch under way: 64
/// inserts took 50 ms at 100k vectors.
const THAW_BATCH: usize = 8;

/// A graph that writers leave alone until [`Frozen::thaw`] (or drop).
pub(crate) struct Frozen<'a> {
    index: &'a HnswIndex,
    graph: Arc<Hnsw>,
    thawed: bool,
    /// One frozen graph at a time.
    _one: MutexGuard<'a, ()>,
}

impl Frozen<'_> {
    /// The graph as it was when frozen.
    pub(crate) fn graph(&self) -> &Hnsw {
        &self.graph
    }

    /// Applies the held-back changes and lets writers change the graph again.
    pub(crate) fn thaw(mut self) -> Result<()> {
        self.thawed = true;
        self.index.thaw()
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        if !self.thawed
            && let Err(e) = self.index.thaw()
        {
            tracing::error!(error = %e, "applying the graph changes held back for a snapshot failed");
        }
    }
}

impl HnswIndex {
    /// Freezes the graph: `with_writer` runs under the writer lock, after any
    /// changes still held back from an earlier freeze were applied, so that what it
    /// sees and the frozen graph match.
    pub(crate) fn freeze<T>(
        &self,
        with_writer: impl FnOnce(&crate::state::State) -> Result<T>,
    ) -> Result<(Frozen<'_>, T)> {
        let one = self.freezing.lock();
        let _writer = self.writer.lock();
        if !self.state.read().deferred.is_empty() {
            // A thaw that failed part way left changes behind: apply them first.
            while self.apply_deferred(usize::MAX)? {}
        }
        let seen = with_writer(&self.state.read())?;
        let graph = {
            let mut state = self.state.write();
            state.deferred.frozen = true;
            state.hnsw.clone()
        };
        Ok((
            Frozen {
                index: self,
                graph,
                thawed: false,
                _one: one,
            },
            seen,
        ))
    }

    /// Applies the held-back graph changes, then returns to normal. Writers use
    /// the graph again at once (their own inserts and removals go straight to it);
    /// the backlog is applied beside them without the writer lock, so it only
    /// shrinks, and a writer's inserts wait for one small batch of it at most.
    fn thaw(&self) -> Result<()> {
        {
            let _writer = self.writer.lock();
            let _adds = self.graph_adds.write();
            let mut state = self.state.write();
            state.deferred.frozen = false;
            let backlog = state.deferred.unindexed.len() as usize;
            if backlog > 0 && !state.hnsw.has_room(backlog) {
                // Room for the backlog now, so that it seldom needs growth later.
                state.hnsw.grow(backlog)?;
            }
        }
        while self.apply_deferred(THAW_BATCH)? {}
        Ok(())
    }

    /// A shared hold on inserts into `hnsw` with room in it for `n` more vectors,
    /// grown first if needed (growing reallocates inside usearch: no search nor
    /// insert may run meanwhile). Inserting under it, a writer cannot run short
    /// of the room it checked.
    pub(crate) fn room_for(&self, hnsw: &Hnsw, n: usize) -> Result<RwLockReadGuard<'_, ()>> {
        loop {
            let adds = self.graph_adds.read();
            if hnsw.has_room(n) {
                return Ok(adds);
            }
            drop(adds);
            let _adds = self.graph_adds.write();
            let _exclusive = self.state.write();
            hnsw.grow(n)?;
        }
    }

    /// Applies the held-back removals and up to `batch` held-back inserts to the
    /// graph they were held back from. Returns whether any change is left. A
    /// failure keeps what was not applied for the next attempt. Runs beside
    /// writers (not while the graph is frozen): a slot a writer retires meanwhile
    /// is noticed when the batch is marked done and removed in the next one.
    fn apply_deferred(&self, batch: usize) -> Result<bool> {
        let (hnsw, slots, vectors, removals) = {
            let mut state = self.state.write();
            if state.deferred.is_empty() {
                return Ok(false);
            }
            let slots: Vec<u32> = state.deferred.unindexed.iter().take(batch).collect();
            // Copied, so that no lock is held while they go in.
            let vectors: Vec<Vec<f32>> = slots
                .iter()
                .map(|&s| state.vectors.get(s).to_vec())
                .collect();
            let removals = std::mem::take(&mut state.deferred.removals);
            (state.hnsw.clone(), slots, vectors, removals)
        };
        for (i, &s) in removals.iter().enumerate() {
            if let Err(e) = hnsw.remove(s) {
                self.state
                    .write()
                    .deferred
                    .removals
                    .extend_from_slice(&removals[i..]);
                return Err(e);
            }
        }
        {
            // Exclusive: the room checked here must still be there when the batch
            // goes in, so no writer inserts beside it (a writer waits for one
            // batch at most). With both inserting under the shared lock, each
            // could see room for its own inserts and together overrun it, and a
            // writer's failed insert poisons the store.
            let _adds = self.graph_adds.write();
            if !hnsw.has_room(slots.len()) {
                // Growing reallocates inside usearch: no search may run either.
                let _exclusive = self.state.write();
                hnsw.grow(slots.len())?;
            }
            // A slot already in the graph got there in an attempt that failed
            // part way.
            let items: Vec<(u32, &[f32])> = slots
                .iter()
                .zip(&vectors)
                .filter(|(s, _)| !hnsw.contains(**s))
                .map(|(&s, v)| (s, v.as_slice()))
                .collect();
            // Searches may see a slot in the graph and in `unindexed` now: they
            // skip it in the walk's results and score it by the scan.
            add_parallel(&hnsw, &items)?;
        }
        let mut state = self.state.write();
        if !Arc::ptr_eq(&state.hnsw, &hnsw) {
            // Compaction replaced the graph (with every slot in it) meanwhile.
            return Ok(!state.deferred.is_empty());
        }
        for &s in &slots {
            if !state.deferred.unindexed.remove(s) {
                // Retired while it went in: it must come out again.
                state.deferred.removals.push(s);
            }
        }
        Ok(!state.deferred.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use rag_core::{
        AccessFilter, Acl, Chunk, DocKey, DocumentUpdate, EmbeddedChunk, Embedding, Metadata,
        ModelFingerprint, Principal, VectorIndex,
    };
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use crate::{HnswIndex, IndexConfig, SearchMode};

    const DIMS: usize = 16;

    fn model() -> ModelFingerprint {
        ModelFingerprint::new("freeze-test", DIMS, "t").unwrap()
    }

    fn unit(rng: &mut StdRng) -> Vec<f32> {
        let v: Vec<f32> = (0..DIMS).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    fn doc(id: &str, version: u64, v: Vec<f32>) -> DocumentUpdate {
        let key = DocKey::new("acme", id);
        DocumentUpdate {
            tenant: key.tenant.clone(),
            doc_id: key.doc_id.clone(),
            version,
            acl: Some(Acl::new("acme").allow_group("eng")),
            metadata: Metadata::default(),
            content_hash: None,
            chunks: vec![EmbeddedChunk {
                chunk: Chunk::whole(&key, format!("{id} v{version}")),
                embedding: Embedding::new(model().id(), v).unwrap(),
            }],
        }
    }

    fn ids(index: &HnswIndex, q: &[f32], mode: SearchMode) -> Vec<String> {
        let filter = AccessFilter::for_principal(&Principal::new("acme", "ann").with_group("eng"));
        let q = Embedding::new(model().id(), q.to_vec()).unwrap();
        index
            .search_with(&q, 5, &filter, mode)
            .unwrap()
            .hits
            .into_iter()
            .map(|h| format!("{}@{}", h.doc_id, h.doc_version))
            .collect()
    }

    #[test]
    fn writes_while_the_graph_is_frozen_are_searchable_and_reach_it_after() {
        let config = IndexConfig::builder()
            .exact_scan_max(0)
            .exact_scan_fraction(0.0)
            .compaction_min(10_000)
            .build()
            .unwrap();
        let index = HnswIndex::new(model(), config).unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let mut vectors = std::collections::HashMap::new();
        for i in 0..200 {
            let v = unit(&mut rng);
            vectors.insert(format!("a{i}"), v.clone());
            index.upsert(vec![doc(&format!("a{i}"), 1, v)]).unwrap();
        }
        let (frozen, seen) = index.freeze(|s| Ok(s.live.len())).unwrap();
        assert_eq!(seen, 200);
        let graph_size = frozen.graph().size();
        assert_eq!(graph_size, 200);

        // While frozen: new documents, replaced ones (old and new versions), deleted
        // old ones, and ones both written and deleted during the freeze.
        for i in 0..100 {
            let v = unit(&mut rng);
            vectors.insert(format!("b{i}"), v.clone());
            index.upsert(vec![doc(&format!("b{i}"), 1, v)]).unwrap();
        }
        for i in 0..20 {
            let v = unit(&mut rng);
            vectors.insert(format!("a{i}"), v.clone());
            index.upsert(vec![doc(&format!("a{i}"), 2, v)]).unwrap();
            index
                .delete(&DocKey::new("acme", format!("a{}", 100 + i)))
                .unwrap();
            index.delete(&DocKey::new("acme", format!("b{i}"))).unwrap();
        }
        {
            let state = index.state.read();
            assert_eq!(
                state.hnsw.size(),
                graph_size,
                "a writer changed the frozen graph"
            );
            assert_eq!(
                state.deferred.unindexed.len(),
                100,
                "80 new and 20 replacements wait"
            );
            assert_eq!(
                state.deferred.removals.len(),
                40,
                "20 replaced and 20 deleted"
            );
        }
        let check = |label: &str| {
            for (id, v) in &vectors {
                let n: usize = id[1..].parse().unwrap();
                let deleted = (id.starts_with('b') && n < 20)
                    || (id.starts_with('a') && (100..120).contains(&n));
                let graph = ids(&index, v, SearchMode::Hnsw);
                let mut a = graph.clone();
                let mut b = ids(&index, v, SearchMode::Exact);
                a.sort();
                b.sort();
                assert_eq!(a, b, "{label}: {id}");
                let top = graph
                    .first()
                    .map(|s| s.split('@').next().unwrap().to_owned());
                if deleted {
                    assert!(
                        !graph.iter().any(|h| h.starts_with(&format!("{id}@"))),
                        "{label}: {id} deleted"
                    );
                } else {
                    assert_eq!(
                        top.as_deref(),
                        Some(id.as_str()),
                        "{label}: {id} is its own nearest"
                    );
                }
            }
        };
        check("frozen");
        frozen.thaw().unwrap();
        {
            let state = index.state.read();
            assert!(!state.deferred.frozen);
            assert!(state.deferred.is_empty());
            assert_eq!(state.hnsw.size(), state.live.len() as usize);
            assert_eq!(state.live.len(), 260);
        }
        check("thawed");
    }

    #[test]
    fn a_snapshot_taken_while_writers_go_on_restores_to_its_sequence() {
        let index = HnswIndex::new(model(), IndexConfig::default()).unwrap();
        let mut rng = StdRng::seed_from_u64(8);
        for i in 0..300 {
            index
                .upsert(vec![doc(&format!("a{i}"), 1, unit(&mut rng))])
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let capturing = index.capture().unwrap();
        let seq = capturing.sequence();
        // Writes between the copy of the rows and the graph's serialisation.
        for i in 0..50 {
            index
                .upsert(vec![doc(&format!("c{i}"), 1, unit(&mut rng))])
                .unwrap();
            index.delete(&DocKey::new("acme", format!("a{i}"))).unwrap();
        }
        let captured = capturing.finish().unwrap();
        index.write_captured(dir.path(), captured).unwrap();
        let restored =
            HnswIndex::restore(dir.path(), Some(&model()), IndexConfig::default()).unwrap();
        let s = restored.state.read();
        assert_eq!(s.sequence, seq);
        assert_eq!(s.live.len(), 300);
        assert_eq!(s.hnsw.size(), 300);
        assert_eq!(index.state.read().hnsw.size(), 300);
    }

    #[test]
    fn snapshots_beside_writers_and_searches_keep_graph_and_rows_in_step() {
        let config = IndexConfig::builder()
            .exact_scan_max(0)
            .exact_scan_fraction(0.0)
            .max_concurrency(8)
            .build()
            .unwrap();
        let index = HnswIndex::new(model(), config.clone()).unwrap();
        let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        std::thread::scope(|s| {
            for w in 0..2u64 {
                let index = &index;
                s.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(100 + w);
                    for i in 0..600 {
                        let k = rng.random_range(0..150);
                        let id = format!("w{w}-{k}");
                        if i % 5 == 4 {
                            match index.delete(&DocKey::new("acme", id)) {
                                Ok(_) | Err(rag_core::Error::NotFound { .. }) => {}
                                Err(e) => panic!("{e}"),
                            }
                        } else {
                            index.upsert(vec![doc(&id, i + 1, unit(&mut rng))]).unwrap();
                        }
                    }
                });
            }
            let index = &index;
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(9);
                for _ in 0..300 {
                    ids(index, &unit(&mut rng), SearchMode::Hnsw);
                }
            });
            for dir in &dirs {
                index.snapshot(dir.path()).unwrap();
            }
        });
        let state = index.state.read();
        assert!(state.deferred.is_empty() && !state.deferred.frozen);
        assert_eq!(state.hnsw.size(), state.live.len() as usize);
        drop(state);
        for dir in &dirs {
            // Each snapshot restores (its graph and rows agree in size, or restore
            // would refuse it) at the sequence it was taken.
            let r = HnswIndex::restore(dir.path(), Some(&model()), config.clone()).unwrap();
            let st = r.state.read();
            assert_eq!(st.hnsw.size(), st.live.len() as usize);
        }
    }
}
