//! The usearch HNSW graph, with the thread slots it needs managed for the caller.
//!
//! usearch hands each concurrent call one of the thread slots reserved with
//! `reserve_capacity_and_threads`; a call that finds none fails with a misleading
//! "Reserve capacity" error. [`Hnsw`] holds a semaphore of as many permits as slots,
//! so extra callers wait instead.

use parking_lot::{Condvar, Mutex};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::config::IndexConfig;
use crate::error::{IndexError, Result};

struct Semaphore {
    free: Mutex<usize>,
    cv: Condvar,
}

struct Permit<'a>(&'a Semaphore);

impl Semaphore {
    fn new(n: usize) -> Self {
        Self {
            free: Mutex::new(n),
            cv: Condvar::new(),
        }
    }

    fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock();
        while *free == 0 {
            self.cv.wait(&mut free);
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock() += 1;
        self.0.cv.notify_one();
    }
}

/// An HNSW graph over inner products of unit vectors, keyed by slot.
pub struct Hnsw {
    index: Index,
    permits: Semaphore,
    threads: usize,
}

impl std::fmt::Debug for Hnsw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hnsw")
            .field("size", &self.index.size())
            .field("capacity", &self.index.capacity())
            .finish()
    }
}

/// The usearch options an index of `dims` dimensions is built with.
pub fn options(dims: usize, config: &IndexConfig) -> IndexOptions {
    IndexOptions {
        dimensions: dims,
        metric: MetricKind::IP,
        quantization: ScalarKind::F32,
        connectivity: config.connectivity,
        expansion_add: config.expansion_add,
        expansion_search: config.expansion_search,
        multi: false,
    }
}

/// Slots and inner products of usearch matches (distance is `1 - dot`).
fn similarities(m: &usearch::ffi::Matches) -> Vec<(u32, f32)> {
    m.keys
        .iter()
        .zip(&m.distances)
        .filter_map(|(&k, &d)| u32::try_from(k).ok().map(|k| (k, 1.0 - d)))
        .collect()
}

impl Hnsw {
    /// An empty graph with room for `capacity` vectors.
    pub fn new(dims: usize, config: &IndexConfig, capacity: usize) -> Result<Self> {
        let index =
            Index::new(&options(dims, config)).map_err(|e| IndexError::usearch("new", e))?;
        let threads = config.max_concurrency;
        index
            .reserve_capacity_and_threads(capacity.max(64), threads)
            .map_err(|e| IndexError::usearch("reserve", e))?;
        Ok(Self {
            index,
            permits: Semaphore::new(threads),
            threads,
        })
    }

    /// A graph loaded from bytes written by [`Hnsw::to_bytes`].
    pub fn from_bytes(bytes: &[u8], dims: usize, config: &IndexConfig) -> Result<Self> {
        let hnsw = Self::new(dims, config, 0)?;
        hnsw.index
            .load_from_buffer(bytes)
            .map_err(|e| IndexError::usearch("load", e))?;
        if hnsw.index.dimensions() != dims {
            return Err(IndexError::usearch("load", "dimensions differ"));
        }
        let size = hnsw.index.size();
        hnsw.index
            .reserve_capacity_and_threads(size.max(64), hnsw.threads)
            .map_err(|e| IndexError::usearch("reserve", e))?;
        Ok(hnsw)
    }

    /// The serialized graph.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; self.index.serialized_length()];
        self.index
            .save_to_buffer(&mut buf)
            .map_err(|e| IndexError::usearch("save", e))?;
        Ok(buf)
    }

    /// The graph's own search beam.
    pub fn expansion(&self) -> usize {
        self.index.expansion_search()
    }

    /// Vectors present.
    pub fn size(&self) -> usize {
        self.index.size()
    }

    /// Whether `additional` more vectors fit without [`Hnsw::grow`].
    pub fn has_room(&self, additional: usize) -> bool {
        self.index.size() + additional <= self.index.capacity()
    }

    /// Makes room for `additional` more vectors. The caller must make sure that no
    /// other call on this graph runs meanwhile.
    pub fn grow(&self, additional: usize) -> Result<()> {
        let needed = self.index.size() + additional;
        let target = needed.max(self.index.capacity().saturating_mul(2)).max(64);
        self.index
            .reserve_capacity_and_threads(target, self.threads)
            .map_err(|e| IndexError::usearch("reserve", e))
    }

    /// Inserts a unit vector under `key`.
    pub fn add(&self, key: u32, v: &[f32]) -> Result<()> {
        let _permit = self.permits.acquire();
        self.index
            .add(u64::from(key), v)
            .map_err(|e| IndexError::usearch("add", e))
    }

    /// Whether `key` is in the graph.
    pub fn contains(&self, key: u32) -> bool {
        self.index.contains(u64::from(key))
    }

    /// Removes a key; its node stays in the graph for navigation until compaction.
    pub fn remove(&self, key: u32) -> Result<()> {
        let _permit = self.permits.acquire();
        self.index
            .remove(u64::from(key))
            .map(|_| ())
            .map_err(|e| IndexError::usearch("remove", e))
    }

    /// Up to `count` nearest keys with no filter, for callers that check every result.
    pub fn search_unfiltered(&self, q: &[f32], count: usize) -> Result<Vec<(u32, f32)>> {
        let _permit = self.permits.acquire();
        let m = self
            .index
            .search(q, count)
            .map_err(|e| IndexError::usearch("search", e))?;
        Ok(similarities(&m))
    }

    /// Walks the graph as an unfiltered search with a beam of `beam`, handing `visit`
    /// every key the walk considers for its beam (each node that lies within the
    /// beam's radius when the walk meets it, once). That is a superset of the
    /// unfiltered search's `beam` results: a post-filter over everything the walk
    /// saw rather than over what it kept.
    pub fn search_visiting(&self, q: &[f32], beam: usize, visit: impl FnMut(u32)) -> Result<()> {
        let visit = std::cell::RefCell::new(visit);
        let _permit = self.permits.acquire();
        self.index
            .filtered_search(q, beam, |key: u64| {
                if let Ok(slot) = u32::try_from(key) {
                    (visit.borrow_mut())(slot);
                }
                true
            })
            .map_err(|e| IndexError::usearch("search", e))?;
        Ok(())
    }

    /// Up to `count` nearest keys (the beam is at least `count` wide) among those
    /// `allowed` accepts, with their inner products.
    pub fn search(
        &self,
        q: &[f32],
        count: usize,
        allowed: impl Fn(u32) -> bool,
    ) -> Result<Vec<(u32, f32)>> {
        let _permit = self.permits.acquire();
        let m = self
            .index
            .filtered_search(q, count, |key: u64| u32::try_from(key).is_ok_and(&allowed))
            .map_err(|e| IndexError::usearch("search", e))?;
        Ok(similarities(&m))
    }
}
