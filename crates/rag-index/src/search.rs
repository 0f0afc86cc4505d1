//! The read path: compile the caller's filter, plan, search, build hits.

use std::sync::Arc;

use rag_core::{
    AccessFilter, Embedding, Hit, InvalidInput, RetrievalMode, SearchRequest, SearchResult,
    SearchStrategy, reciprocal_rank_fusion,
};

use crate::error::{IndexError, Result};
use crate::filter::CompiledFilter;
use crate::index::HnswIndex;
use crate::kernels::{Scored, TopK, dot, prefetch};
use crate::lexical::Lexical;
use crate::state::State;

/// Which strategy a search may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchMode {
    /// Let the planner choose from the filter's cardinality.
    #[default]
    Auto,
    /// Always score every visible vector.
    Exact,
    /// Always walk the graph (falling back to a scan if it finds too few).
    Hnsw,
}

impl HnswIndex {
    /// Searches with the planner choosing the strategy.
    pub fn search_filtered(
        &self,
        query: &Embedding,
        k: usize,
        filter: &AccessFilter,
    ) -> Result<SearchResult> {
        self.search_with(query, k, filter, SearchMode::Auto)
    }

    /// Searches with a forced or planned strategy. The filter is applied inside the
    /// search in every mode.
    pub fn search_with(
        &self,
        query: &Embedding,
        k: usize,
        filter: &AccessFilter,
        mode: SearchMode,
    ) -> Result<SearchResult> {
        let q = self.check_query(query, k)?;
        let state = self.state.read();
        let compiled = self.compile(&state, filter);
        let visible = compiled.allowed.len() as usize;
        if visible == 0 {
            return Ok(empty());
        }
        let (scored, strategy, exhaustive) = self.dense(&state, &compiled, &q, k, mode)?;
        Ok(SearchResult {
            hits: hits(&state, scored),
            strategy,
            exhaustive,
            visible,
        })
    }

    /// A dense, lexical or hybrid search. Both legs of a hybrid search read the same
    /// version of the index, and each applies the filter inside its own search.
    pub fn search_request(
        &self,
        request: &SearchRequest<'_>,
        filter: &AccessFilter,
    ) -> Result<SearchResult> {
        let k = request.k;
        match request.mode {
            RetrievalMode::Dense => {
                self.search_with(request.require_embedding()?, k, filter, SearchMode::Auto)
            }
            RetrievalMode::Lexical | RetrievalMode::Hybrid => self.search_text(request, filter),
        }
    }

    /// Lexical and hybrid search.
    fn search_text(
        &self,
        request: &SearchRequest<'_>,
        filter: &AccessFilter,
    ) -> Result<SearchResult> {
        let k = request.k;
        let q = match request.mode {
            RetrievalMode::Hybrid => {
                request.fusion.validate()?;
                Some(self.check_query(request.require_embedding()?, k)?)
            }
            _ => None,
        };
        let text = self.check_text(request.require_text()?, k)?;
        let state = self.state.read();
        let lexical = state.lexical.clone().ok_or(IndexError::LexicalDisabled)?;
        let compiled = self.compile(&state, filter);
        let visible = compiled.allowed.len() as usize;
        if visible == 0 {
            return Ok(empty());
        }
        let Some(q) = q else {
            let scored = lexical_leg(&state, &lexical, &compiled, text, k)?;
            return Ok(SearchResult {
                hits: hits(&state, scored),
                strategy: SearchStrategy::Lexical,
                exhaustive: true,
                visible,
            });
        };
        let n = request.fusion.candidates.max(k).min(self.config.max_k);
        let (dense, _, exhaustive) = self.dense(&state, &compiled, &q, n, SearchMode::Auto)?;
        let dense = hits(&state, dense);
        let lexical = hits(&state, lexical_leg(&state, &lexical, &compiled, text, n)?);
        let fusion = request.fusion;
        Ok(SearchResult {
            hits: reciprocal_rank_fusion(
                &[
                    (&dense, fusion.dense_weight),
                    (&lexical, fusion.lexical_weight),
                ],
                fusion.rrf_k,
                k,
            ),
            strategy: SearchStrategy::Hybrid,
            exhaustive,
            visible,
        })
    }

    fn compile(&self, state: &State, filter: &AccessFilter) -> Arc<CompiledFilter> {
        self.filters
            .get_or_compile(filter, state.generation, || state.postings.compile(filter))
    }

    /// The dense leg: plan, then scan or walk.
    fn dense(
        &self,
        state: &State,
        compiled: &CompiledFilter,
        q: &[f32],
        k: usize,
        mode: SearchMode,
    ) -> Result<(Vec<Scored>, SearchStrategy, bool)> {
        let visible = compiled.allowed.len() as usize;
        let live = state.live.len() as usize;
        let exact_limit = self
            .config
            .exact_scan_max
            .max((self.config.exact_scan_fraction * live as f64) as usize);
        let use_exact = match mode {
            SearchMode::Exact => true,
            SearchMode::Hnsw => false,
            SearchMode::Auto => visible <= exact_limit,
        };
        let want = k.min(visible);
        if use_exact {
            return Ok((
                exact(state, compiled, q, k),
                SearchStrategy::ExactScan,
                true,
            ));
        }
        let selectivity = visible as f64 / live.max(1) as f64;
        if visible < live
            && let Some(mut beam) = self.post_filter_beam(selectivity, k)
        {
            // Widen once, then scan: never fewer than `want` hits unless fewer exist.
            for _ in 0..2 {
                let found = post_filtered(state, compiled, q, k, beam)?;
                if found.len() >= want {
                    return Ok((found, SearchStrategy::PostFilteredHnsw { beam }, false));
                }
                tracing::debug!(
                    found = found.len(),
                    want,
                    beam,
                    "post-filtered walk fell short"
                );
                beam = beam.saturating_mul(4).min(live.max(1));
            }
            return Ok((
                exact(state, compiled, q, k),
                SearchStrategy::ExactScan,
                true,
            ));
        }
        let expansion = self.expansion_for(selectivity, k);
        let found = graph(state, compiled, q, k, expansion, visible == live)?;
        if found.len() >= want {
            Ok((found, SearchStrategy::FilteredHnsw { expansion }, false))
        } else {
            tracing::debug!(found = found.len(), want, "graph walk fell short; scanning");
            Ok((
                exact(state, compiled, q, k),
                SearchStrategy::ExactScan,
                true,
            ))
        }
    }

    /// The beam a post-filtered walk starts with at `selectivity`, or `None` where the
    /// walk with the filter checked at each node is used instead: post-filtering is
    /// off, or the beam would pass `post_filter_max_beam`. A beam of `b` meets about
    /// `b × selectivity` visible chunks among those it keeps and more among those it
    /// passes on the way, so `oversample × k / selectivity` leaves margin for recall.
    fn post_filter_beam(&self, selectivity: f64, k: usize) -> Option<usize> {
        let c = &self.config;
        if c.post_filter_oversample <= 0.0 || selectivity <= 0.0 {
            return None;
        }
        let beam = (c.post_filter_oversample * k as f64 / selectivity).ceil();
        let beam = beam.max(c.expansion_search.max(k) as f64);
        (beam <= c.post_filter_max_beam as f64).then_some(beam as usize)
    }

    fn check_text<'t>(&self, text: &'t str, k: usize) -> Result<&'t str> {
        if text.trim().is_empty() {
            return Err(InvalidInput::EmptyText { what: "query text" }.into());
        }
        if text.len() > self.config.max_chunk_bytes {
            return Err(InvalidInput::TooLarge {
                what: "query text",
                actual: text.len(),
                max: self.config.max_chunk_bytes,
            }
            .into());
        }
        self.check_k(k)?;
        Ok(text)
    }

    fn check_query(&self, query: &Embedding, k: usize) -> Result<Vec<f32>> {
        if query.model() != self.fingerprint.id() {
            return Err(InvalidInput::ModelMismatch {
                expected: self.fingerprint.id(),
                actual: query.model(),
            }
            .into());
        }
        if query.dims() != self.fingerprint.dims() {
            return Err(InvalidInput::DimensionMismatch {
                expected: self.fingerprint.dims(),
                actual: query.dims(),
            }
            .into());
        }
        self.check_k(k)?;
        Ok(query.normalized())
    }

    fn check_k(&self, k: usize) -> Result<()> {
        if k == 0 || k > self.config.max_k {
            return Err(InvalidInput::InvalidK {
                k,
                max: self.config.max_k,
            }
            .into());
        }
        Ok(())
    }

    /// The beam for a filter that lets `selectivity` of the chunks through. Down to
    /// 10% the graph's own beam keeps recall (measured: 1.0 at 10% on 200k clustered
    /// vectors) while a wider one costs several times more; below that, allowed
    /// nodes get sparse along the walk and the beam grows with `sqrt(0.1 / s)`.
    fn expansion_for(&self, selectivity: f64, k: usize) -> usize {
        let base = self.config.expansion_search.max(k) as f64;
        let widen = (0.1 / selectivity.clamp(1e-6, 1.0)).sqrt().clamp(1.0, 8.0);
        (base * widen).ceil() as usize
    }
}

fn empty() -> SearchResult {
    SearchResult {
        hits: Vec::new(),
        strategy: SearchStrategy::Empty,
        exhaustive: true,
        visible: 0,
    }
}

/// Hits for scored slots, skipping any slot without a record.
fn hits(state: &State, scored: Vec<Scored>) -> Vec<Hit> {
    scored
        .into_iter()
        .filter_map(|s| {
            let rec = state.records.get(s.slot as usize)?.as_ref()?;
            Some(Hit {
                chunk_id: rec.chunk_id,
                doc_id: rec.doc.key.doc_id.clone(),
                doc_version: rec.doc.version,
                ordinal: rec.ordinal,
                span: rec.span,
                text: rec.text.clone(),
                score: s.score,
            })
        })
        .collect()
}

/// The lexical leg, as scored slots in BM25 order.
fn lexical_leg(
    state: &State,
    lexical: &Lexical,
    compiled: &Arc<CompiledFilter>,
    text: &str,
    k: usize,
) -> Result<Vec<Scored>> {
    Ok(lexical
        .search(text, k, compiled)?
        .into_iter()
        .filter_map(|(slot, score)| {
            let rec = state.records.get(slot as usize)?.as_ref()?;
            Some(Scored {
                score,
                tie: rec.chunk_id.0,
                slot,
            })
        })
        .collect())
}

fn exact(state: &State, compiled: &CompiledFilter, q: &[f32], k: usize) -> Vec<Scored> {
    let mut top = TopK::new(k);
    scan(&mut top, state, q, &compiled.allowed);
    top.into_sorted()
}

/// Scores `slots` against `q` from the vector store into `top`.
fn scan(top: &mut TopK, state: &State, q: &[f32], slots: &roaring::RoaringBitmap) {
    score_slots(top, state, q, slots.iter());
}

/// Scores each slot against `q` from the vector store into `top`, prefetching the
/// vectors a few slots ahead.
fn score_slots(top: &mut TopK, state: &State, q: &[f32], slots: impl Iterator<Item = u32> + Clone) {
    let mut ahead = slots.clone();
    for slot in ahead.by_ref().take(AHEAD) {
        prefetch(state.vectors.get(slot));
    }
    for slot in slots {
        if let Some(next) = ahead.next() {
            prefetch(state.vectors.get(next));
        }
        let score = dot(q, state.vectors.get(slot));
        if score >= top.threshold()
            && let Some(Some(rec)) = state.records.get(slot as usize)
        {
            top.push(Scored {
                score,
                tie: rec.chunk_id.0,
                slot,
            });
        }
    }
}

/// How many vectors ahead a scan prefetches.
const AHEAD: usize = 4;

/// Walks the graph unfiltered with a beam of `beam` and scores every visible chunk
/// the walk met from the vector store: the best `k`.
fn post_filtered(
    state: &State,
    compiled: &CompiledFilter,
    q: &[f32],
    k: usize,
    beam: usize,
) -> Result<Vec<Scored>> {
    let allowed = compiled.contains_fn();
    let unindexed = &state.deferred.unindexed;
    // The walk hands each node over once (its visited set). Slots are only
    // collected inside the library's callback and scored after it returns; the
    // filter is checked here, inside the search, for every slot.
    let mut met = Vec::with_capacity(beam);
    state.hnsw.search_visiting(q, beam, |slot| {
        if allowed(slot) && !unindexed.contains(slot) {
            met.push(slot);
        }
    })?;
    let mut top = TopK::new(k);
    score_slots(&mut top, state, q, met.iter().copied());
    if !unindexed.is_empty() {
        scan(&mut top, state, q, &(&compiled.allowed & unindexed));
    }
    Ok(top.into_sorted())
}

fn graph(
    state: &State,
    compiled: &CompiledFilter,
    q: &[f32],
    k: usize,
    expansion: usize,
    sees_everything: bool,
) -> Result<Vec<Scored>> {
    let allowed = compiled.contains_fn();
    // A beam of `expansion` needs `count = expansion` only when it is wider than the
    // graph's own; otherwise asking for `k` gives the same walk and less to sort.
    let count = if expansion > state.hnsw.expansion() {
        expansion
    } else {
        k
    };
    let mut found = Vec::new();
    if sees_everything {
        // Every published chunk is allowed: a plain walk is the filtered walk, unless
        // it meets nodes a concurrent writer has not published yet. Any result outside
        // the filter sends the search down the filtered path.
        found = state.hnsw.search_unfiltered(q, count)?;
        if found.iter().any(|(slot, _)| !allowed(*slot)) {
            found.clear();
        }
    }
    if found.is_empty() {
        found = state.hnsw.search(q, count, &allowed)?;
    }
    let mut top = TopK::new(k);
    // The graph's own inner products are used: re-scoring from the vector store
    // would read a second copy of every hit's vector (measured: ~10% of an
    // unfiltered query at 200k vectors).
    let unindexed = &state.deferred.unindexed;
    for (slot, score) in found {
        // Checked again here so no graph result can bypass the filter. Slots still
        // waiting for the graph are scored below (one may be in it already, while
        // a snapshot's deferred inserts are applied).
        if !allowed(slot) || unindexed.contains(slot) {
            continue;
        }
        if let Some(Some(rec)) = state.records.get(slot as usize) {
            top.push(Scored {
                score,
                tie: rec.chunk_id.0,
                slot,
            });
        }
    }
    if !unindexed.is_empty() {
        // Published while a snapshot held the graph still: scanned.
        scan(&mut top, state, q, &(&compiled.allowed & unindexed));
    }
    Ok(top.into_sorted())
}
