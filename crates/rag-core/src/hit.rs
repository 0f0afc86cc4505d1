//! Search results.

use std::fmt;
use std::sync::Arc;

use crate::document::Span;
use crate::ids::{ChunkId, DocId};

/// One retrieved chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The chunk.
    pub chunk_id: ChunkId,
    /// Its document.
    pub doc_id: DocId,
    /// The document's version the chunk belongs to.
    pub doc_version: u64,
    /// Position of the chunk within its document.
    pub ordinal: u32,
    /// Where the chunk lies in the document's text.
    pub span: Span,
    /// The chunk's text.
    pub text: Arc<str>,
    /// Higher is better: cosine similarity for dense search, BM25 for lexical search,
    /// the fused reciprocal-rank score for hybrid search.
    pub score: f32,
}

/// How a search was carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchStrategy {
    /// Nothing is visible to the caller; nothing was searched.
    Empty,
    /// Every visible vector was scored.
    ExactScan,
    /// The HNSW graph was walked with the access filter checked at each node.
    FilteredHnsw {
        /// Beam width used.
        expansion: usize,
    },
    /// The HNSW graph was walked without the filter and every visible chunk the walk
    /// met was scored: a post-filter over all the walk saw, not only what it kept.
    PostFilteredHnsw {
        /// Beam width used.
        beam: usize,
    },
    /// BM25 over the visible chunks' text (the filter is checked per matching chunk).
    Lexical,
    /// Dense and lexical legs merged by reciprocal rank fusion.
    Hybrid,
}

impl fmt::Display for SearchStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SearchStrategy::Empty => f.write_str("empty"),
            SearchStrategy::ExactScan => f.write_str("exact"),
            SearchStrategy::FilteredHnsw { expansion } => write!(f, "hnsw(ef={expansion})"),
            SearchStrategy::PostFilteredHnsw { beam } => write!(f, "hnsw-post(beam={beam})"),
            SearchStrategy::Lexical => f.write_str("lexical"),
            SearchStrategy::Hybrid => f.write_str("hybrid"),
        }
    }
}

/// The result of a search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    /// Hits, best first: `min(k, visible)` of them.
    pub hits: Vec<Hit>,
    /// The strategy that produced them.
    pub strategy: SearchStrategy,
    /// Whether the hits are exactly the best `k` visible chunks.
    pub exhaustive: bool,
    /// How many chunks the caller may see.
    pub visible: usize,
}
