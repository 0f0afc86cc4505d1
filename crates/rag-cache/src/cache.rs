//! [`SemanticCache`]: partitions, similarity lookup, provenance checks, LRU.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rag_core::{
    AccessFilter, Answer, AnswerCache, CacheKey, Citation, DocKey, ModelId, VectorIndexRead,
};

use crate::config::CacheConfig;
use crate::error::CacheError;

/// A clock giving the time elapsed since some fixed start.
pub type Clock = Arc<dyn Fn() -> Duration + Send + Sync>;

/// Counters of a cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups served from the cache.
    pub hits: u64,
    /// Lookups that found nothing servable (stale and expired ones included).
    pub misses: u64,
    /// Close-enough entries refused because a cited chunk changed or is not visible.
    pub stale_rejections: u64,
    /// Entries past their TTL.
    pub expirations: u64,
    /// Entries evicted for room.
    pub evictions: u64,
    /// Entries dropped because a cited document changed.
    pub invalidations: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now.
    pub bytes: u64,
}

/// Everything besides the question that must match for a hit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Partition {
    scope: AccessFilter,
    model: ModelId,
    generator: String,
    settings: u64,
}

#[derive(Debug)]
struct Entry {
    partition: Arc<Partition>,
    question: Vec<f32>,
    answer: Answer,
    stored_at: Duration,
    last_used: u64,
    bytes: usize,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<u64, Entry>,
    partitions: HashMap<Arc<Partition>, Vec<u64>>,
    /// Entries by the documents they cite (each entry is of one tenant: its scope's).
    by_doc: HashMap<DocKey, HashSet<u64>>,
    lru: BTreeMap<u64, u64>,
    bytes: usize,
    tick: u64,
    next_id: u64,
}

impl Inner {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.entries.remove(&id)?;
        self.lru.remove(&e.last_used);
        self.bytes -= e.bytes;
        if let Some(ids) = self.partitions.get_mut(&e.partition) {
            ids.retain(|x| *x != id);
            if ids.is_empty() {
                self.partitions.remove(&e.partition);
            }
        }
        for c in e.answer.sources() {
            let key = DocKey::new(e.partition.scope.tenant().clone(), c.doc_id.clone());
            if let Some(set) = self.by_doc.get_mut(&key) {
                set.remove(&id);
                if set.is_empty() {
                    self.by_doc.remove(&key);
                }
            }
        }
        Some(e)
    }

    fn touch(&mut self, id: u64) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(e) = self.entries.get_mut(&id) {
            self.lru.remove(&e.last_used);
            e.last_used = tick;
            self.lru.insert(tick, id);
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    expirations: AtomicU64,
    evictions: AtomicU64,
    invalidations: AtomicU64,
}

/// A semantic answer cache; see the [crate](crate) docs.
pub struct SemanticCache {
    config: CacheConfig,
    inner: Mutex<Inner>,
    counters: Counters,
    clock: Clock,
}

impl std::fmt::Debug for SemanticCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SemanticCache")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// What an entry costs: its text, citations, vector and bookkeeping.
fn entry_bytes(answer: &Answer, dims: usize) -> usize {
    let citations: usize = answer
        .citations
        .iter()
        .chain(&answer.provenance)
        .map(|c| std::mem::size_of::<Citation>() + c.doc_id.as_str().len())
        .sum();
    std::mem::size_of::<Entry>() + answer.text.len() + citations + dims * 4 + 64
}

impl SemanticCache {
    /// An empty cache.
    pub fn new(config: CacheConfig) -> Result<Self, CacheError> {
        let start = Instant::now();
        Self::with_clock(config, Arc::new(move || start.elapsed()))
    }

    /// An empty cache reading time from `clock` (for tests of expiry).
    pub fn with_clock(config: CacheConfig, clock: Clock) -> Result<Self, CacheError> {
        config.validate()?;
        Ok(Self {
            config,
            inner: Mutex::new(Inner::default()),
            counters: Counters::default(),
            clock,
        })
    }

    /// The settings.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        let (entries, bytes) = {
            let inner = self.inner.lock();
            (inner.entries.len() as u64, inner.bytes as u64)
        };
        let c = &self.counters;
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            stale_rejections: c.stale.load(Ordering::Relaxed),
            expirations: c.expirations.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            invalidations: c.invalidations.load(Ordering::Relaxed),
            entries,
            bytes,
        }
    }

    /// Drops every entry.
    pub fn clear(&self) {
        *self.inner.lock() = Inner::default();
    }

    fn partition(key: &CacheKey<'_>) -> Partition {
        Partition {
            scope: key.scope.clone(),
            model: key.question.model(),
            generator: key.generator.to_owned(),
            settings: key.settings,
        }
    }

    fn miss(&self) -> Option<Answer> {
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// The closest live entry of the key's partition at or above the threshold.
    fn closest(&self, key: &CacheKey<'_>) -> Option<(u64, Answer)> {
        let partition = Self::partition(key);
        let q = key.question.normalized();
        let now = (self.clock)();
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let mut best: Option<(f32, u64)> = None;
        let mut expired = Vec::new();
        for &id in inner.partitions.get(&partition)? {
            let Some(e) = inner.entries.get(&id) else {
                continue;
            };
            if now.saturating_sub(e.stored_at) > self.config.ttl {
                expired.push(id);
                continue;
            }
            let sim = dot(&q, &e.question);
            if sim >= self.config.min_similarity && best.is_none_or(|(s, _)| sim > s) {
                best = Some((sim, id));
            }
        }
        for id in expired {
            inner.remove(id);
            self.counters.expirations.fetch_add(1, Ordering::Relaxed);
        }
        let (_, id) = best?;
        inner.touch(id);
        let answer = inner.entries.get(&id)?.answer.clone();
        Some((id, answer))
    }

    /// Whether every source (provenance and citations) is of the current version
    /// of its document, names one of its current chunks, and is visible to `scope`.
    fn still_valid(
        answer: &Answer,
        scope: &AccessFilter,
        index: &dyn VectorIndexRead,
    ) -> rag_core::Result<bool> {
        for c in answer.sources() {
            let key = DocKey::new(scope.tenant().clone(), c.doc_id.clone());
            let Some(info) = index.document(&key)? else {
                return Ok(false);
            };
            if info.version != c.doc_version
                || !info.chunk_ids.contains(&c.chunk_id)
                || !scope.permits(info.acl.as_ref())
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl AnswerCache for SemanticCache {
    fn lookup(
        &self,
        key: &CacheKey<'_>,
        index: &dyn VectorIndexRead,
    ) -> rag_core::Result<Option<Answer>> {
        let Some((id, answer)) = self.closest(key) else {
            return Ok(self.miss());
        };
        // Checked outside the lock: the index has locks of its own.
        if !Self::still_valid(&answer, key.scope, index)? {
            self.inner.lock().remove(id);
            self.counters.stale.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("cached answer refused: a chunk it was made from changed or is hidden");
            return Ok(self.miss());
        }
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
        Ok(Some(answer))
    }

    fn store(&self, key: &CacheKey<'_>, answer: &Answer) -> rag_core::Result<()> {
        // An answer with no recorded sources cannot be re-checked: not cached.
        if answer.sources().next().is_none() {
            return Ok(());
        }
        let question = key.question.normalized();
        let bytes = entry_bytes(answer, question.len());
        if bytes > self.config.max_bytes {
            return Ok(());
        }
        let partition = Arc::new(Self::partition(key));
        let now = (self.clock)();
        let mut inner = self.inner.lock();
        // One entry per question within the threshold: a fresher answer replaces it.
        if let Some(ids) = inner.partitions.get(&partition) {
            let same: Vec<u64> =
                ids.iter()
                    .copied()
                    .filter(|id| {
                        inner.entries.get(id).is_some_and(|e| {
                            dot(&question, &e.question) >= self.config.min_similarity
                        })
                    })
                    .collect();
            for id in same {
                inner.remove(id);
            }
        }
        while inner.entries.len() >= self.config.max_entries
            || inner.bytes + bytes > self.config.max_bytes
        {
            let Some((_, &oldest)) = inner.lru.iter().next() else {
                break;
            };
            inner.remove(oldest);
            self.counters.evictions.fetch_add(1, Ordering::Relaxed);
        }
        inner.next_id += 1;
        inner.tick += 1;
        let (id, tick) = (inner.next_id, inner.tick);
        for c in answer.sources() {
            inner
                .by_doc
                .entry(DocKey::new(key.scope.tenant().clone(), c.doc_id.clone()))
                .or_default()
                .insert(id);
        }
        inner
            .partitions
            .entry(partition.clone())
            .or_default()
            .push(id);
        inner.lru.insert(tick, id);
        inner.bytes += bytes;
        inner.entries.insert(
            id,
            Entry {
                partition,
                question,
                answer: answer.clone(),
                stored_at: now,
                last_used: tick,
                bytes,
            },
        );
        Ok(())
    }

    fn invalidate(&self, docs: &BTreeSet<DocKey>) -> rag_core::Result<usize> {
        let mut inner = self.inner.lock();
        let ids: BTreeSet<u64> = docs
            .iter()
            .filter_map(|d| inner.by_doc.get(d))
            .flatten()
            .copied()
            .collect();
        let mut dropped = 0;
        for id in ids {
            if inner.remove(id).is_some() {
                dropped += 1;
            }
        }
        self.counters
            .invalidations
            .fetch_add(dropped as u64, Ordering::Relaxed);
        Ok(dropped)
    }
}
