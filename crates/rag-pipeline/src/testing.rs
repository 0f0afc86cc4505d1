//! Deterministic test doubles: [`HashEmbedder`] and the brute-force [`FlatIndex`],
//! the oracle that real indexes are checked against.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

use rag_core::ContentHash;
use rag_core::Metadata;
use rag_core::{AccessFilter, Acl};
use rag_core::{ChunkId, DocKey};
use rag_core::{Device, DocumentInfo, Embedder, IndexStats, VectorIndex, VectorIndexRead};
use rag_core::{DocumentUpdate, WriteOp, WriteReport};
use rag_core::{Embedding, ModelFingerprint};
use rag_core::{Error, InvalidInput, Result};
use rag_core::{Hit, SearchResult, SearchStrategy};

/// Embeds text as a hashed bag of lowercase words: texts sharing words are close.
/// Counts the texts it embeds (clones share the count).
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    fingerprint: ModelFingerprint,
    texts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl HashEmbedder {
    /// An embedder of `dims` dimensions.
    pub fn new(dims: usize) -> Result<Self> {
        Ok(Self {
            fingerprint: ModelFingerprint::new("hash-embedder", dims, "v1")?,
            texts: Default::default(),
        })
    }

    /// Texts embedded so far.
    pub fn texts_embedded(&self) -> usize {
        self.texts.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn embed_one(&self, text: &str) -> Result<Embedding> {
        let dims = self.fingerprint.dims();
        let mut v = vec![0f32; dims];
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            let d = Sha256::digest(word.to_lowercase().as_bytes());
            let idx = (u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
                % dims as u64) as usize;
            v[idx] += if d[8] & 1 == 0 { 1.0 } else { -1.0 };
        }
        if v.iter().all(|x| *x == 0.0) {
            v[0] = 1.0;
        }
        Ok(Embedding::new(self.fingerprint.id(), v)?)
    }
}

impl Embedder for HashEmbedder {
    fn fingerprint(&self) -> &ModelFingerprint {
        &self.fingerprint
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Embedding>> {
        self.texts
            .fetch_add(texts.len(), std::sync::atomic::Ordering::SeqCst);
        texts.iter().map(|t| self.embed_one(t)).collect()
    }

    fn device(&self) -> Device {
        Device::Cpu
    }

    fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(text.split_whitespace().count())
    }

    fn max_input_tokens(&self) -> usize {
        usize::MAX
    }
}

#[derive(Debug, Clone, PartialEq)]
struct FlatChunk {
    id: ChunkId,
    ordinal: u32,
    span: rag_core::Span,
    text: Arc<str>,
    vector: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq)]
struct FlatDoc {
    version: u64,
    acl: Option<Acl>,
    metadata: Metadata,
    content_hash: Option<ContentHash>,
    chunks: Vec<FlatChunk>,
}

/// A brute-force index: scores every stored chunk with [`AccessFilter::permits`].
/// Slow and obviously correct; the oracle for property tests.
#[derive(Debug)]
pub struct FlatIndex {
    fingerprint: ModelFingerprint,
    state: Mutex<(BTreeMap<DocKey, FlatDoc>, u64)>,
}

impl FlatIndex {
    /// An empty index for `fingerprint`.
    pub fn new(fingerprint: ModelFingerprint) -> Self {
        Self {
            fingerprint,
            state: Mutex::new((BTreeMap::new(), 0)),
        }
    }

    fn check(&self, e: &Embedding) -> Result<Vec<f32>, InvalidInput> {
        if e.model() != self.fingerprint.id() {
            return Err(InvalidInput::ModelMismatch {
                expected: self.fingerprint.id(),
                actual: e.model(),
            });
        }
        if e.dims() != self.fingerprint.dims() {
            return Err(InvalidInput::DimensionMismatch {
                expected: self.fingerprint.dims(),
                actual: e.dims(),
            });
        }
        Ok(e.normalized())
    }

    fn to_flat(&self, u: DocumentUpdate) -> Result<FlatDoc> {
        let mut chunks = Vec::with_capacity(u.chunks.len());
        for c in u.chunks {
            let v = self.check(&c.embedding)?;
            chunks.push(FlatChunk {
                id: c.chunk.id,
                ordinal: c.chunk.ordinal,
                span: c.chunk.span,
                text: Arc::from(c.chunk.text),
                vector: v,
            });
        }
        Ok(FlatDoc {
            version: u.version,
            acl: u.acl,
            metadata: u.metadata,
            content_hash: u.content_hash,
            chunks,
        })
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl VectorIndexRead for FlatIndex {
    fn fingerprint(&self) -> &ModelFingerprint {
        &self.fingerprint
    }

    fn search(&self, query: &Embedding, k: usize, filter: &AccessFilter) -> Result<SearchResult> {
        if k == 0 {
            return Err(InvalidInput::InvalidK { k, max: usize::MAX }.into());
        }
        let q = self.check(query)?;
        let guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut hits = Vec::new();
        for (key, doc) in guard.0.iter() {
            if &key.tenant != filter.tenant() || !filter.permits(doc.acl.as_ref()) {
                continue;
            }
            let doc_id = &key.doc_id;
            for c in &doc.chunks {
                hits.push(Hit {
                    chunk_id: c.id,
                    doc_id: doc_id.clone(),
                    doc_version: doc.version,
                    ordinal: c.ordinal,
                    span: c.span,
                    text: c.text.clone(),
                    score: dot(&q, &c.vector),
                });
            }
        }
        let visible = hits.len();
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(a.chunk_id.cmp(&b.chunk_id))
        });
        hits.truncate(k);
        Ok(SearchResult {
            hits,
            strategy: if visible == 0 {
                SearchStrategy::Empty
            } else {
                SearchStrategy::ExactScan
            },
            exhaustive: true,
            visible,
        })
    }

    fn document(&self, key: &DocKey) -> Result<Option<DocumentInfo>> {
        let guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(guard.0.get(key).map(|d| DocumentInfo {
            version: d.version,
            acl: d.acl.clone(),
            metadata: d.metadata.clone(),
            content_hash: d.content_hash,
            chunk_ids: d.chunks.iter().map(|c| c.id).collect(),
        }))
    }

    fn stats(&self) -> IndexStats {
        let guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let chunks = guard.0.values().map(|d| d.chunks.len()).sum();
        IndexStats {
            documents: guard.0.len(),
            chunks,
            generation: guard.1,
            sequence: guard.1,
            tombstones: 0,
        }
    }
}

impl VectorIndex for FlatIndex {
    fn apply(&self, op: WriteOp) -> Result<WriteReport> {
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (docs, generation) = &mut *guard;
        let mut report = WriteReport::default();
        let mut remove = |docs: &mut BTreeMap<DocKey, FlatDoc>, keys: Vec<DocKey>| {
            for key in keys {
                if let Some(old) = docs.remove(&key) {
                    report.documents_deleted += 1;
                    report.chunks_removed += old.chunks.len();
                }
            }
        };
        match op {
            WriteOp::Upsert(updates) => {
                let mut seen = BTreeSet::new();
                let mut flat = Vec::new();
                for u in updates {
                    if !seen.insert(u.key()) {
                        return Err(InvalidInput::DuplicateDocument { doc_id: u.doc_id }.into());
                    }
                    rag_core::check_key(&u.tenant, &u.doc_id, u.acl.as_ref())?;
                    let key = u.key();
                    let (doc_id, version) = (u.doc_id.clone(), u.version);
                    let doc = self.to_flat(u)?;
                    match docs.get(&key) {
                        Some(old)
                            if old.version > version || (old.version == version && old != &doc) =>
                        {
                            return Err(InvalidInput::StaleVersion {
                                doc_id,
                                stored: old.version,
                                given: version,
                            }
                            .into());
                        }
                        Some(old) if old == &doc => report.documents_unchanged += 1,
                        _ => flat.push((key, doc)),
                    }
                }
                for (id, doc) in flat {
                    report.chunks_added += doc.chunks.len();
                    report.documents_upserted += 1;
                    if let Some(old) = docs.insert(id, doc) {
                        report.chunks_removed += old.chunks.len();
                    }
                }
            }
            WriteOp::Delete(key) | WriteOp::Erase(key) => {
                if !docs.contains_key(&key) {
                    return Err(Error::unknown_document(&key.doc_id));
                }
                remove(docs, vec![key]);
            }
            WriteOp::DeleteWhere { tenant, predicate }
            | WriteOp::EraseWhere { tenant, predicate } => {
                let victims: Vec<DocKey> = docs
                    .iter()
                    .filter(|(k, d)| k.tenant == tenant && predicate.matches(&d.metadata))
                    .map(|(k, _)| k.clone())
                    .collect();
                remove(docs, victims);
            }
        }
        if report.documents_upserted + report.documents_deleted > 0 {
            *generation += 1;
        }
        report.generation = *generation;
        report.sequence = *generation;
        Ok(report)
    }
}

/// Resolves every principal to [`AccessFilter::for_principal`]: no directory.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenResolver;

impl rag_core::AccessResolver for OpenResolver {
    fn resolve(&self, principal: &rag_core::Principal) -> Result<AccessFilter> {
        Ok(AccessFilter::for_principal(principal))
    }
}

/// A generator that answers by quoting the first context passage it was given
/// (`[1]: ...`), one word per token; or fails, when built failing.
#[derive(Debug, Clone, Default)]
pub struct EchoGenerator {
    /// Every call fails with a transient error.
    pub failing: bool,
    /// Words quoted (8 when 0).
    pub words: usize,
}

impl rag_core::Generator for EchoGenerator {
    fn name(&self) -> &str {
        "echo"
    }

    fn context_window(&self) -> usize {
        2048
    }

    fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(text.split_whitespace().count())
    }

    fn generate(
        &self,
        request: &rag_core::GenerationRequest,
        on_token: &mut dyn FnMut(&str) -> rag_core::TokenControl,
    ) -> Result<rag_core::Generation> {
        use rag_core::{FinishReason, Generation, TokenControl};
        if self.failing {
            return Err(Error::Transient {
                stage: rag_core::Stage::Generate,
                source: "echo generator set to fail".into(),
            });
        }
        let prompt = request
            .messages
            .last()
            .map(|m| m.content.as_str())
            .unwrap_or_default();
        let passage = prompt
            .lines()
            .find_map(|l| l.strip_prefix("[1] "))
            .unwrap_or("nothing");
        let words = if self.words == 0 { 8 } else { self.words };
        let mut text = String::from("[1]:");
        let mut finish = FinishReason::EndOfText;
        let mut generated = 0;
        if on_token(&text) == TokenControl::Stop {
            finish = FinishReason::Cancelled;
        }
        for w in passage
            .split_whitespace()
            .take(words)
            .take_while(|_| finish != FinishReason::Cancelled)
        {
            let piece = format!(" {w}");
            generated += 1;
            text.push_str(&piece);
            if on_token(&piece) == TokenControl::Stop {
                finish = FinishReason::Cancelled;
                break;
            }
        }
        Ok(Generation {
            text,
            finish,
            prompt_tokens: self.count_tokens(prompt)?,
            generated_tokens: generated,
            time_to_first_token_s: 0.0,
            tokens_per_s: 0.0,
        })
    }
}

/// A generator that streams a script: `pieces` when given, else ` w0`, ` w1`, …
/// (`tokens` of them), after a `first` delay and an `each` delay between pieces;
/// failing (while [`ScriptedGenerator::set_failing`] is on) before its first piece or,
/// with `fail_after`, after that many. It counts calls and pieces made, and says
/// whether a generation is running, so tests can see cancellation reach it.
#[derive(Debug, Default)]
pub struct ScriptedGenerator {
    /// A label for tests that hold several (not the generator's name).
    pub label: String,
    /// Pieces to stream (default: ` w0` … ` w{tokens-1}`).
    pub pieces: Option<Vec<String>>,
    /// Pieces of the default script.
    pub tokens: usize,
    /// Delay before the first piece.
    pub first: std::time::Duration,
    /// Delay between pieces.
    pub each: std::time::Duration,
    /// With `failing`: fail after this many pieces instead of before the first.
    pub fail_after: Option<usize>,
    /// Fail every call with a caller error (`InvalidInput`).
    pub invalid_input: bool,
    failing: std::sync::atomic::AtomicBool,
    calls: std::sync::atomic::AtomicUsize,
    produced: std::sync::atomic::AtomicUsize,
    running: std::sync::atomic::AtomicUsize,
}

impl ScriptedGenerator {
    /// The default script of `tokens` pieces, without delays.
    pub fn new(tokens: usize) -> Self {
        Self {
            tokens,
            ..Self::default()
        }
    }

    /// The default script, labelled.
    pub fn named(label: &str, tokens: usize) -> Self {
        Self {
            label: label.to_owned(),
            ..Self::new(tokens)
        }
    }

    /// In an `Arc`.
    pub fn shared(self) -> Arc<Self> {
        Arc::new(self)
    }

    /// Streams exactly these pieces.
    pub fn with_pieces(pieces: &[&str]) -> Self {
        Self {
            tokens: pieces.len(),
            pieces: Some(pieces.iter().map(|p| (*p).to_owned()).collect()),
            ..Self::default()
        }
    }

    /// Sets the delays.
    pub fn delays(mut self, first: std::time::Duration, each: std::time::Duration) -> Self {
        self.first = first;
        self.each = each;
        self
    }

    /// Fails after `pieces` pieces while failing (see `set_failing`).
    pub fn failing_after(mut self, pieces: usize) -> Self {
        self.fail_after = Some(pieces);
        self
    }

    /// Turns failing on or off.
    pub fn set_failing(&self, on: bool) {
        self.failing.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Calls so far.
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Pieces made so far, over all calls.
    pub fn produced(&self) -> usize {
        self.produced.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether a generation is running now.
    pub fn running(&self) -> bool {
        self.running.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    /// The text of a whole answer.
    pub fn full_text(&self) -> String {
        (0..self.tokens).map(|i| self.piece(i)).collect()
    }

    fn piece(&self, i: usize) -> String {
        match &self.pieces {
            Some(p) => p.get(i).cloned().unwrap_or_default(),
            None => format!(" w{i}"),
        }
    }
}

impl rag_core::Generator for ScriptedGenerator {
    fn name(&self) -> &str {
        "scripted"
    }

    fn context_window(&self) -> usize {
        4096
    }

    fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(text.split_whitespace().count())
    }

    fn generate(
        &self,
        request: &rag_core::GenerationRequest,
        on_token: &mut dyn FnMut(&str) -> rag_core::TokenControl,
    ) -> Result<rag_core::Generation> {
        use rag_core::{FinishReason, Generation, Stage, TokenControl};
        use std::sync::atomic::Ordering::SeqCst;
        self.calls.fetch_add(1, SeqCst);
        if self.invalid_input {
            return Err(InvalidInput::Malformed {
                what: "generation request",
                detail: "scripted".into(),
            }
            .into());
        }
        let failing = self.failing.load(SeqCst);
        if failing && self.fail_after.is_none() {
            return Err(Error::Transient {
                stage: Stage::Generate,
                source: "the scripted generator is failing".into(),
            });
        }
        self.running.fetch_add(1, SeqCst);
        let started = std::time::Instant::now();
        std::thread::sleep(self.first);
        let n = self.tokens.min(request.params.max_new_tokens);
        let mut text = String::new();
        let mut finish = if n < self.tokens {
            FinishReason::MaxTokens
        } else {
            FinishReason::EndOfText
        };
        let mut made = 0;
        let mut result = Ok(());
        for i in 0..n {
            if i > 0 {
                std::thread::sleep(self.each);
            }
            // Like the real generators: stop at the request's deadline.
            if request
                .deadline
                .is_some_and(|d| std::time::Instant::now() >= d)
            {
                finish = FinishReason::Cancelled;
                break;
            }
            if failing && self.fail_after == Some(i) {
                result = Err(Error::Backend {
                    stage: Stage::Generate,
                    source: "the scripted generator failed mid-answer".into(),
                });
                break;
            }
            let piece = self.piece(i);
            self.produced.fetch_add(1, SeqCst);
            made += 1;
            text.push_str(&piece);
            if on_token(&piece) == TokenControl::Stop {
                finish = FinishReason::Cancelled;
                break;
            }
        }
        self.running.fetch_sub(1, SeqCst);
        result?;
        let total = started.elapsed().as_secs_f64();
        Ok(Generation {
            text,
            finish,
            prompt_tokens: 1,
            generated_tokens: made,
            time_to_first_token_s: self.first.as_secs_f64(),
            tokens_per_s: made as f64 / total.max(1e-9),
        })
    }
}

/// A [`FlatIndex`] whose writes fail on demand: the next `fail_writes` writes fail
/// as transient before applying (an index briefly down), and while
/// `fail_after_publish` is set every write applies and then fails (a log sync that
/// failed after the write was published).
#[derive(Debug)]
pub struct FaultyIndex {
    /// The index underneath.
    pub inner: FlatIndex,
    /// Writes still to fail before applying.
    pub fail_writes: std::sync::atomic::AtomicUsize,
    /// Whether writes fail after applying.
    pub fail_after_publish: std::sync::atomic::AtomicBool,
}

impl FaultyIndex {
    /// A faulty index that does not fail yet.
    pub fn new(fingerprint: ModelFingerprint) -> Self {
        Self {
            inner: FlatIndex::new(fingerprint),
            fail_writes: Default::default(),
            fail_after_publish: Default::default(),
        }
    }
}

impl VectorIndexRead for FaultyIndex {
    fn fingerprint(&self) -> &ModelFingerprint {
        self.inner.fingerprint()
    }
    fn search(&self, q: &Embedding, k: usize, f: &AccessFilter) -> Result<SearchResult> {
        self.inner.search(q, k, f)
    }
    fn document(&self, key: &DocKey) -> Result<Option<DocumentInfo>> {
        self.inner.document(key)
    }
    fn stats(&self) -> IndexStats {
        self.inner.stats()
    }
}

impl VectorIndex for FaultyIndex {
    fn apply(&self, op: WriteOp) -> Result<WriteReport> {
        use std::sync::atomic::Ordering::SeqCst;
        let transient = |what: &'static str| Error::Transient {
            stage: rag_core::Stage::Index,
            source: what.into(),
        };
        if self
            .fail_writes
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(transient("the index is briefly unavailable"));
        }
        let report = self.inner.apply(op)?;
        if self.fail_after_publish.load(SeqCst) {
            return Err(transient("published, then the log sync failed"));
        }
        Ok(report)
    }
}
