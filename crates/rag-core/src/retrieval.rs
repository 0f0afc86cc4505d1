//! Retrieval requests over the dense and lexical legs, and reciprocal rank fusion.

use std::collections::HashMap;

use crate::embedding::Embedding;
use crate::error::{InvalidInput, Result};
use crate::hit::Hit;
use crate::ids::ChunkId;

/// Which legs a search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetrievalMode {
    /// Nearest neighbours of the query's embedding.
    #[default]
    Dense,
    /// BM25 over the chunks' text.
    Lexical,
    /// Both legs, merged by reciprocal rank fusion.
    Hybrid,
}

impl RetrievalMode {
    /// Its lower-case name: `dense`, `lexical` or `hybrid`.
    pub fn as_str(self) -> &'static str {
        match self {
            RetrievalMode::Dense => "dense",
            RetrievalMode::Lexical => "lexical",
            RetrievalMode::Hybrid => "hybrid",
        }
    }

    /// Whether the mode needs the query's embedding.
    pub fn needs_embedding(self) -> bool {
        self != RetrievalMode::Lexical
    }

    /// Whether the mode needs the query's text.
    pub fn needs_text(self) -> bool {
        self != RetrievalMode::Dense
    }
}

impl std::str::FromStr for RetrievalMode {
    type Err = InvalidInput;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "dense" => Ok(RetrievalMode::Dense),
            "lexical" => Ok(RetrievalMode::Lexical),
            "hybrid" => Ok(RetrievalMode::Hybrid),
            _ => Err(InvalidInput::Malformed {
                what: "retrieval mode",
                detail: format!("{s:?} is not dense, lexical or hybrid"),
            }),
        }
    }
}

/// How hybrid search merges its legs: each leg contributes
/// `weight / (rrf_k + rank)` (rank from 1) to every chunk it returned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fusion {
    /// The rank constant; 60 in the original paper (Cormack et al., 2009).
    pub rrf_k: f32,
    /// How many candidates each leg contributes; at least `k`.
    pub candidates: usize,
    /// Weight of the dense leg.
    pub dense_weight: f32,
    /// Weight of the lexical leg.
    pub lexical_weight: f32,
}

impl Default for Fusion {
    fn default() -> Self {
        Self {
            rrf_k: 60.0,
            candidates: 100,
            dense_weight: 1.0,
            lexical_weight: 1.0,
        }
    }
}

impl Fusion {
    /// Checks the constants are usable.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        let ok = self.rrf_k.is_finite()
            && self.rrf_k >= 0.0
            && [self.dense_weight, self.lexical_weight]
                .iter()
                .all(|w| w.is_finite() && *w >= 0.0);
        if ok {
            Ok(())
        } else {
            Err(InvalidInput::Malformed {
                what: "fusion settings",
                detail: format!("{self:?}: constants must be finite and non-negative"),
            })
        }
    }
}

/// One search over one or both legs.
#[derive(Debug, Clone, Copy)]
pub struct SearchRequest<'a> {
    /// Which legs to use.
    pub mode: RetrievalMode,
    /// The query's embedding; needed by dense and hybrid search.
    pub embedding: Option<&'a Embedding>,
    /// The query's text; needed by lexical and hybrid search.
    pub text: Option<&'a str>,
    /// How many hits to return.
    pub k: usize,
    /// How hybrid search merges its legs.
    pub fusion: Fusion,
}

impl<'a> SearchRequest<'a> {
    /// A dense search for the `k` nearest chunks.
    pub fn dense(embedding: &'a Embedding, k: usize) -> Self {
        Self {
            mode: RetrievalMode::Dense,
            embedding: Some(embedding),
            text: None,
            k,
            fusion: Fusion::default(),
        }
    }

    /// A BM25 search for the `k` best chunks.
    pub fn lexical(text: &'a str, k: usize) -> Self {
        Self {
            mode: RetrievalMode::Lexical,
            embedding: None,
            text: Some(text),
            k,
            fusion: Fusion::default(),
        }
    }

    /// A hybrid search with the default fusion.
    pub fn hybrid(embedding: &'a Embedding, text: &'a str, k: usize) -> Self {
        Self {
            mode: RetrievalMode::Hybrid,
            embedding: Some(embedding),
            text: Some(text),
            k,
            fusion: Fusion::default(),
        }
    }

    /// The same request with other fusion settings.
    pub fn with_fusion(mut self, fusion: Fusion) -> Self {
        self.fusion = fusion;
        self
    }

    /// The embedding, or an error naming the mode that needs it.
    pub fn require_embedding(&self) -> Result<&'a Embedding, InvalidInput> {
        self.embedding.ok_or(InvalidInput::Malformed {
            what: "search request",
            detail: format!("{} search needs the query's embedding", self.mode.as_str()),
        })
    }

    /// The text, or an error naming the mode that needs it.
    pub fn require_text(&self) -> Result<&'a str, InvalidInput> {
        self.text.ok_or(InvalidInput::Malformed {
            what: "search request",
            detail: format!("{} search needs the query's text", self.mode.as_str()),
        })
    }
}

/// Merges ranked lists by weighted reciprocal rank fusion and keeps the best `k`.
///
/// A chunk's fused score is the sum over the lists that hold it of
/// `weight / (rrf_k + rank)`, rank counted from 1; the hit kept is its first
/// occurrence, with the fused score. Ties go to the smaller chunk id, so the order
/// does not depend on the order of the lists.
pub fn reciprocal_rank_fusion(lists: &[(&[Hit], f32)], rrf_k: f32, k: usize) -> Vec<Hit> {
    let mut fused: HashMap<ChunkId, (f32, &Hit)> = HashMap::new();
    for (hits, weight) in lists {
        for (i, hit) in hits.iter().enumerate() {
            let add = weight / (rrf_k + (i + 1) as f32);
            fused
                .entry(hit.chunk_id)
                .and_modify(|(s, _)| *s += add)
                .or_insert((add, hit));
        }
    }
    let mut ranked: Vec<(f32, &Hit)> = fused.into_values().collect();
    ranked.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then_with(|| a.1.chunk_id.0.cmp(&b.1.chunk_id.0))
    });
    ranked
        .into_iter()
        .take(k)
        .map(|(score, hit)| Hit {
            score,
            ..hit.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::document::Span;
    use crate::ids::DocId;

    fn hit(id: u64) -> Hit {
        Hit {
            chunk_id: ChunkId(id),
            doc_id: DocId::new(format!("d{id}")),
            doc_version: 1,
            ordinal: 0,
            span: Span::new(0, 1),
            text: Arc::from("x"),
            score: 0.0,
        }
    }

    #[test]
    fn fusion_sums_reciprocal_ranks() {
        let dense = [hit(1), hit(2), hit(3)];
        let lexical = [hit(3), hit(4)];
        let fused = reciprocal_rank_fusion(&[(&dense, 1.0), (&lexical, 1.0)], 60.0, 10);
        let ids: Vec<u64> = fused.iter().map(|h| h.chunk_id.0).collect();
        // 3: 1/63 + 1/61; 1: 1/61; 4: 1/62; 2: 1/62 (tie broken by id).
        assert_eq!(ids, vec![3, 1, 2, 4]);
        assert!((fused[0].score - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-7);
        let top2 = reciprocal_rank_fusion(&[(&dense, 1.0), (&lexical, 1.0)], 60.0, 2);
        assert_eq!(top2.len(), 2);
    }

    #[test]
    fn weights_scale_a_leg() {
        let dense = [hit(1)];
        let lexical = [hit(2)];
        let fused = reciprocal_rank_fusion(&[(&dense, 1.0), (&lexical, 2.0)], 60.0, 10);
        assert_eq!(fused[0].chunk_id, ChunkId(2));
        let none = reciprocal_rank_fusion(&[], 60.0, 10);
        assert!(none.is_empty());
    }

    #[test]
    fn modes_parse_and_fusion_validates() {
        assert_eq!("hybrid".parse::<RetrievalMode>(), Ok(RetrievalMode::Hybrid));
        assert!("both".parse::<RetrievalMode>().is_err());
        assert!(Fusion::default().validate().is_ok());
        let bad = Fusion {
            rrf_k: f32::NAN,
            ..Fusion::default()
        };
        assert!(bad.validate().is_err());
    }
}
