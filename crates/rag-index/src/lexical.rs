//! The lexical leg: a tantivy BM25 index over the chunks' text, keyed by slot.
//!
//! Each tantivy document holds one chunk's analysed text and its slot as a fast field.
//! Slots are never reused within one [`State`](crate::state::State) (compaction builds
//! a new state and a new lexical index), so a slot names one chunk text for the life
//! of the index it is in. A search passes the caller's compiled filter to tantivy as a
//! collector predicate: a matching chunk is scored into the top-k only if its slot is
//! visible, so the filter is applied inside the search, and a document without a slot
//! value, or with an unpublished or removed one, is never returned.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tantivy::collector::{FilterCollector, TopDocs};
use tantivy::query::BooleanQuery;
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::error::{IndexError, Result};
use crate::filter::CompiledFilter;

const SLOT: &str = "slot";
const TEXT: &str = "text";
const ANALYZER: &str = "rag_en";
/// The indexing buffer of the single writer thread (tantivy's minimum is 15 MB).
const WRITER_BUDGET: usize = 32 << 20;

/// Lucene's English stop words (`EnglishAnalyzer.ENGLISH_STOP_WORDS_SET`), the list
/// the BM25 references on BEIR collections were computed with.
const STOP_WORDS: [&str; 33] = [
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
];

/// The analyser for chunk text and queries: split on non-alphanumerics, drop tokens
/// over 40 bytes, lower-case, drop stop words, Snowball English stemming.
fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(StopWordFilter::remove(STOP_WORDS.map(String::from)))
        .filter(Stemmer::new(Language::English))
        .build()
}

/// A BM25 index of chunk texts by slot.
pub(crate) struct Lexical {
    /// The analyser, cloned per query (its stop-word set is shared, not rebuilt).
    analyzer: TextAnalyzer,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    /// Operations were written since the last commit.
    dirty: AtomicBool,
    slot: Field,
    text: Field,
}

impl std::fmt::Debug for Lexical {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lexical").finish_non_exhaustive()
    }
}

fn err(op: &'static str) -> impl FnOnce(tantivy::TantivyError) -> IndexError {
    move |e| IndexError::Lexical {
        op,
        message: e.to_string(),
    }
}

impl Lexical {
    /// An empty index in memory.
    pub fn new() -> Result<Self> {
        let mut schema = Schema::builder();
        let slot = schema.add_u64_field(SLOT, INDEXED | FAST);
        let text = schema.add_text_field(
            TEXT,
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(ANALYZER)
                    .set_index_option(IndexRecordOption::WithFreqs),
            ),
        );
        let index = Index::create_in_ram(schema.build());
        let analyzer = analyzer();
        index.tokenizers().register(ANALYZER, analyzer.clone());
        let writer = index
            .writer_with_num_threads(1, WRITER_BUDGET)
            .map_err(err("open writer"))?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(err("open reader"))?;
        Ok(Self {
            analyzer,
            reader,
            dirty: AtomicBool::new(false),
            writer: Mutex::new(writer),
            slot,
            text,
        })
    }

    /// Adds chunks and removes slots. They reach searches at the next
    /// [`refresh`](Self::refresh), which the next search runs: a tantivy commit costs
    /// milliseconds (measured: 2.4 ms in release, 10 ms in debug builds), so a burst
    /// of writes pays for one. Added slots stay invisible until the state publishes
    /// them anyway, and removed ones are invisible once unpublished.
    pub fn apply(&self, add: &[(u32, &str)], remove: &[u32]) -> Result<()> {
        if add.is_empty() && remove.is_empty() {
            return Ok(());
        }
        let writer = self.writer.lock();
        for &s in remove {
            writer.delete_term(self.slot_term(s));
        }
        for (i, &(s, text)) in add.iter().enumerate() {
            let mut doc = TantivyDocument::default();
            doc.add_u64(self.slot, u64::from(s));
            doc.add_text(self.text, text);
            if let Err(e) = writer.add_document(doc) {
                // A delete covers the documents added before it, so none of this
                // batch can shadow a later chunk given the same slot.
                for &(s, _) in &add[..i] {
                    writer.delete_term(self.slot_term(s));
                }
                self.dirty.store(true, Ordering::Release);
                return Err(err("add")(e));
            }
        }
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Commits pending writes and reloads the searcher, if any are pending.
    pub fn refresh(&self) -> Result<()> {
        if !self.dirty.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut writer = self.writer.lock();
        if !self.dirty.load(Ordering::Acquire) {
            // Another search committed while this one waited.
            return Ok(());
        }
        writer.commit().map_err(err("commit"))?;
        self.reader.reload().map_err(err("reload"))?;
        self.dirty.store(false, Ordering::Release);
        Ok(())
    }

    fn slot_term(&self, slot: u32) -> Term {
        Term::from_field_u64(self.slot, u64::from(slot))
    }

    /// The analysed terms of `text`, in order, repeats kept (a repeated query word
    /// weighs more, as in the BM25 references).
    fn terms(&self, text: &str) -> Vec<Term> {
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(text);
        let mut terms = Vec::new();
        while stream.advance() {
            terms.push(Term::from_field_text(self.text, &stream.token().text));
        }
        terms
    }

    /// The `k` best visible chunks for `text` by BM25, as `(slot, score)`, best first.
    pub fn search(
        &self,
        text: &str,
        k: usize,
        filter: &Arc<CompiledFilter>,
    ) -> Result<Vec<(u32, f32)>> {
        let terms = self.terms(text);
        if terms.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        self.refresh()?;
        let query = BooleanQuery::new_multiterms_query(terms);
        let visible = filter.clone();
        let collector = FilterCollector::new(
            SLOT.to_owned(),
            move |slot: u64| u32::try_from(slot).is_ok_and(|s| visible.contains(s)),
            TopDocs::with_limit(k).order_by_score(),
        );
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &collector).map_err(err("search"))?;
        let mut out = Vec::with_capacity(top.len());
        for (score, address) in top {
            let column = searcher
                .segment_reader(address.segment_ord)
                .fast_fields()
                .u64(SLOT)
                .map_err(err("read slot"))?;
            let slot = column
                .first(address.doc_id)
                .and_then(|s| u32::try_from(s).ok());
            // Checked again here so nothing tantivy returns can bypass the filter.
            if let Some(slot) = slot.filter(|s| filter.contains(*s)) {
                out.push((slot, score));
            }
        }
        Ok(out)
    }

    /// Chunks indexed, removed ones not yet merged away excluded.
    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.refresh().unwrap();
        self.reader.searcher().num_docs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(slots: &[u32]) -> Arc<CompiledFilter> {
        Arc::new(CompiledFilter::new(slots.iter().copied().collect()))
    }

    #[test]
    fn stems_drops_stop_words_and_filters_by_slot() {
        let lex = Lexical::new().unwrap();
        lex.apply(
            &[
                (0, "The cats were running in the garden"),
                (1, "A cat runs"),
                (2, "Dogs bark at night"),
            ],
            &[],
        )
        .unwrap();
        let hits = lex.search("running cat", 10, &all(&[0, 1, 2])).unwrap();
        let slots: Vec<u32> = hits.iter().map(|h| h.0).collect();
        assert_eq!(slots.len(), 2);
        assert!(slots.contains(&0) && slots.contains(&1));
        // Slot 1 is not visible: it is never returned, even as the only match left.
        let hits = lex.search("runs", 10, &all(&[0, 2])).unwrap();
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![0]);
        assert!(
            lex.search("the of and", 10, &all(&[0, 1, 2]))
                .unwrap()
                .is_empty()
        );
        assert!(lex.search("cat", 10, &all(&[])).unwrap().is_empty());
    }

    #[test]
    fn removal_and_replacement_in_one_commit() {
        let lex = Lexical::new().unwrap();
        lex.apply(&[(0, "alpha beta"), (1, "beta gamma")], &[])
            .unwrap();
        lex.apply(&[(2, "gamma delta")], &[0]).unwrap();
        lex.refresh().unwrap();
        assert_eq!(lex.len(), 2);
        let hits = lex
            .search("alpha beta gamma", 10, &all(&[0, 1, 2]))
            .unwrap();
        let mut slots: Vec<u32> = hits.iter().map(|h| h.0).collect();
        slots.sort();
        assert_eq!(slots, vec![1, 2]);
    }
}
