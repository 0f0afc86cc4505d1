//! Index settings.

use rag_core::InvalidInput;

/// Settings of an [`HnswIndex`](crate::HnswIndex). Build with [`IndexConfig::builder`].
#[derive(Debug, Clone, PartialEq)]
pub struct IndexConfig {
    /// HNSW graph degree (usearch `connectivity`).
    pub connectivity: usize,
    /// Beam width while inserting. 64 by default, where usearch's own default is 128:
    /// 64 inserts 1.6x faster, which moved pipeline ingest at 100k chunks from 0.85
    /// to 0.90-0.93 of the raw embedding rate. The cost, on SciFact with MiniLM: none
    /// on its 11,854 passage vectors (nDCG@10 0.6582 against 0.6583), and 0.003
    /// nDCG@10 and Recall@100 on its 5,183 whole-document vectors (0.6435 against
    /// 0.6468). Raise it where recall matters more than insert speed.
    pub expansion_add: usize,
    /// Base beam width while searching; widened as the filter gets more selective.
    pub expansion_search: usize,
    /// Concurrent callers the HNSW library reserves thread slots for; more callers wait.
    pub max_concurrency: usize,
    /// Filters that let through at most this many chunks are answered by an exact scan.
    pub exact_scan_max: usize,
    /// ... or at most this fraction of all chunks.
    pub exact_scan_fraction: f64,
    /// Filters broader than the exact scan's limit walk the graph unfiltered with a
    /// beam of `post_filter_oversample × k / selectivity` (at least
    /// `expansion_search`) and score the visible chunks the walk met. 0 turns this
    /// off: every filtered walk then checks the filter at each node instead.
    pub post_filter_oversample: f64,
    /// The widest beam a post-filtered walk starts with; filters that would need a
    /// wider one walk the graph with the filter checked at each node.
    pub post_filter_max_beam: usize,
    /// The largest `k` a search accepts.
    pub max_k: usize,
    /// The largest chunk text accepted, in bytes.
    pub max_chunk_bytes: usize,
    /// Compact once removed vectors exceed this fraction of live ones...
    pub compaction_fraction: f64,
    /// ... and this count.
    pub compaction_min: usize,
    /// Compiled access filters kept per index.
    pub filter_cache_entries: usize,
    /// After a write that inserts at least this many vectors (and a quarter of the
    /// index), the graph is serialised and reloaded so that it is laid out
    /// contiguously; 0 turns this off.
    pub repack_min: usize,
    /// Whether the index keeps a BM25 (tantivy) index of the chunks' text for lexical
    /// and hybrid search.
    pub lexical: bool,
    /// With a key, snapshots (and the durable store's checkpoints) are signed with
    /// HMAC-SHA256 over their manifest, and restoring requires a valid signature.
    /// Without one, their sha256 checksums catch damage but not an attacker who
    /// can write the directory and recompute them.
    pub snapshot_key: Option<SnapshotKey>,
}

/// A secret key that signs snapshot manifests (at least 16 bytes). Its `Debug`
/// does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct SnapshotKey(Vec<u8>);

impl SnapshotKey {
    /// A key from secret bytes; fewer than 16 is an invalid configuration.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, InvalidInput> {
        let bytes = bytes.into();
        if bytes.len() < 16 {
            return Err(InvalidInput::Config {
                reason: format!(
                    "a snapshot key needs at least 16 bytes, got {}",
                    bytes.len()
                ),
            });
        }
        Ok(Self(bytes))
    }

    /// The HMAC-SHA256 of `bytes`, hex.
    pub(crate) fn sign(&self, bytes: &[u8]) -> String {
        use hmac::Mac;
        match hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0) {
            Ok(mut m) => {
                m.update(bytes);
                hex::encode(m.finalize().into_bytes())
            }
            // Any key length is valid for HMAC; a signature that never verifies is
            // the fail-closed answer.
            Err(_) => String::new(),
        }
    }

    /// Whether `signature` (hex) is the HMAC-SHA256 of `bytes`, compared in
    /// constant time.
    pub(crate) fn verifies(&self, bytes: &[u8], signature: &str) -> bool {
        use hmac::Mac;
        let Ok(sig) = hex::decode(signature.trim()) else {
            return false;
        };
        hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0).is_ok_and(|mut m| {
            m.update(bytes);
            m.verify_slice(&sig).is_ok()
        })
    }
}

impl std::fmt::Debug for SnapshotKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotKey(..)")
    }
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            connectivity: 16,
            expansion_add: 64,
            expansion_search: 64,
            max_concurrency: 64,
            exact_scan_max: 4096,
            exact_scan_fraction: 0.05,
            post_filter_oversample: 1.5,
            post_filter_max_beam: 1024,
            max_k: 1000,
            max_chunk_bytes: 1 << 20,
            compaction_fraction: 0.25,
            compaction_min: 1024,
            filter_cache_entries: 256,
            repack_min: 10_000,
            lexical: true,
            snapshot_key: None,
        }
    }
}

impl IndexConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> IndexConfigBuilder {
        IndexConfigBuilder(Self::default())
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        let bad = |reason: &str| {
            Err(InvalidInput::Config {
                reason: reason.to_owned(),
            })
        };
        if !(2..=256).contains(&self.connectivity) {
            return bad("connectivity must be in 2..=256");
        }
        if self.expansion_add == 0 || self.expansion_search == 0 {
            return bad("expansions must be positive");
        }
        if self.max_concurrency == 0 {
            return bad("max_concurrency must be positive");
        }
        if !(0.0..=1.0).contains(&self.exact_scan_fraction) {
            return bad("exact_scan_fraction must be in 0..=1");
        }
        if !(0.0..=1000.0).contains(&self.post_filter_oversample) {
            return bad("post_filter_oversample must be in 0..=1000");
        }
        if self.max_k == 0 || self.max_chunk_bytes == 0 || self.filter_cache_entries == 0 {
            return bad("max_k, max_chunk_bytes and filter_cache_entries must be positive");
        }
        if self.compaction_fraction.is_nan() || self.compaction_fraction <= 0.0 {
            return bad("compaction_fraction must be positive");
        }
        Ok(())
    }
}

/// Builds an [`IndexConfig`]; [`build`](IndexConfigBuilder::build) validates it.
#[derive(Debug, Clone)]
pub struct IndexConfigBuilder(IndexConfig);

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        impl IndexConfigBuilder {
            $(
                $(#[$doc])*
                pub fn $name(mut self, value: $ty) -> Self {
                    self.0.$name = value;
                    self
                }
            )*
        }
    };
}

setters! {
    /// Sets [`IndexConfig::connectivity`].
    connectivity: usize,
    /// Sets [`IndexConfig::expansion_add`].
    expansion_add: usize,
    /// Sets [`IndexConfig::expansion_search`].
    expansion_search: usize,
    /// Sets [`IndexConfig::max_concurrency`].
    max_concurrency: usize,
    /// Sets [`IndexConfig::exact_scan_max`].
    exact_scan_max: usize,
    /// Sets [`IndexConfig::exact_scan_fraction`].
    exact_scan_fraction: f64,
    /// Sets [`IndexConfig::post_filter_oversample`].
    post_filter_oversample: f64,
    /// Sets [`IndexConfig::post_filter_max_beam`].
    post_filter_max_beam: usize,
    /// Sets [`IndexConfig::max_k`].
    max_k: usize,
    /// Sets [`IndexConfig::max_chunk_bytes`].
    max_chunk_bytes: usize,
    /// Sets [`IndexConfig::compaction_fraction`].
    compaction_fraction: f64,
    /// Sets [`IndexConfig::compaction_min`].
    compaction_min: usize,
    /// Sets [`IndexConfig::filter_cache_entries`].
    filter_cache_entries: usize,
    /// Sets [`IndexConfig::repack_min`].
    repack_min: usize,
    /// Sets [`IndexConfig::lexical`].
    lexical: bool,
    /// Sets [`IndexConfig::snapshot_key`].
    snapshot_key: Option<SnapshotKey>,
}

impl IndexConfigBuilder {
    /// The validated settings.
    pub fn build(self) -> Result<IndexConfig, InvalidInput> {
        self.0.validate()?;
        Ok(self.0)
    }
}
