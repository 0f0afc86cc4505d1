//! Answering a question: resolve access, embed, cache lookup, filtered retrieval,
//! context assembly, generation under a latency budget, cache store.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use super::{Pipeline, QuestionPolicy, memo, observe, prompt};
use crate::stream::{QueryEvent, TextFilter};
use rag_core::CacheKey;
use rag_core::{AccessFilter, Principal};
use rag_core::{Answer, GenerationRequest, SamplingParams, TokenControl};
use rag_core::{AnswerDecision, AnswerRecord, AuditFailure};
use rag_core::{Error, InvalidInput, Result, Stage};
use rag_core::{RetrievalMode, SearchRequest};
use rag_core::{SearchResult, SearchStrategy};

/// Per-query choices; `None` takes the pipeline's setting.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryOptions {
    /// Chunks to retrieve.
    pub top_k: Option<usize>,
    /// Dense, lexical or hybrid retrieval.
    pub mode: Option<RetrievalMode>,
    /// The latency budget.
    pub latency_budget: Option<Duration>,
    /// Skip the cache (neither read nor written).
    pub bypass_cache: bool,
}

/// A step taken to stay within the latency budget or to survive a failure, in the
/// order they are tried.
#[derive(Debug, Clone, PartialEq)]
pub enum Degradation {
    /// Retrieval asked for fewer chunks because the budget was half spent.
    SmallerRetrieval {
        /// Chunks asked for normally.
        from: usize,
        /// Chunks asked for.
        to: usize,
    },
    /// Generation stopped after part of the answer was streamed (a failure or the
    /// latency budget): the answer is the part shown, uncached.
    Truncated {
        /// Why generation stopped, as for [`Degradation::Extractive`].
        reason: String,
    },
    /// The answer quotes the top chunks instead of being generated.
    Extractive {
        /// Why generation was not used: the kind of failure, never a backend's
        /// message (the error itself is logged at debug).
        reason: String,
    },
}

impl Degradation {
    /// A short name for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Degradation::SmallerRetrieval { .. } => "smaller_retrieval",
            Degradation::Truncated { .. } => "truncated",
            Degradation::Extractive { .. } => "extractive",
        }
    }
}

/// How long one stage took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageTiming {
    /// `access`, `embed`, `cache_lookup`, `retrieve`, `context`, `generate` or `cache_store`.
    pub stage: &'static str,
    /// Its duration.
    pub duration: Duration,
}

/// Which case an answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    /// The generator answered from the passages (or the cache served such an answer).
    Generated,
    /// The top passages are quoted: generation was not possible (see the
    /// degradations).
    Extractive,
    /// Passages were found, but none relevant enough
    /// ([`PipelineConfig::abstention`](super::PipelineConfig::abstention)): the answer
    /// says the documents the caller may read do not answer the question, without
    /// generating and without citations.
    Abstained,
    /// The caller may read nothing that matches.
    NothingVisible,
    /// The caller stopped a streamed answer; the answer holds what was streamed
    /// before, and is not cached.
    Cancelled,
}

/// An answer with how it was made.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryAnswer {
    /// Text and citations (document, version, chunk, span).
    pub answer: Answer,
    /// Which case it is.
    pub kind: AnswerKind,
    /// The best retrieved passage's score (what abstention compares), when
    /// retrieval ran and found something.
    pub top_score: Option<f32>,
    /// Whether the cache served it.
    pub from_cache: bool,
    /// How retrieval ran; `None` when the cache answered.
    pub strategy: Option<SearchStrategy>,
    /// Chunks the caller may see.
    pub visible: usize,
    /// Stages in order, with their durations.
    pub timings: Vec<StageTiming>,
    /// Degradation steps taken, in order.
    pub degradations: Vec<Degradation>,
}

/// What has been recorded in the audit sink for the question being answered.
struct AuditState<'a> {
    question: &'a str,
    at: SystemTime,
    recorded: Vec<rag_core::Citation>,
    wrote: bool,
}

/// Streams an answer made whole (cached, extractive, abstained, nothing found):
/// its sources (unless already sent), then its text as one piece.
fn send_whole(
    sink: &mut dyn FnMut(QueryEvent<'_>) -> TokenControl,
    answer: &Answer,
    with_sources: bool,
) {
    if with_sources {
        let sources: Vec<_> = answer.sources().cloned().collect();
        if sink(QueryEvent::Retrieved { sources: &sources }) == TokenControl::Stop {
            return;
        }
    }
    sink(QueryEvent::Token(&answer.text));
}

/// How generation ended.
enum Generated {
    /// A whole answer.
    Done(Answer),
    /// Part of an answer was streamed before generation stopped.
    Truncated(Answer, String),
    /// The caller stopped the stream.
    Cancelled(Answer),
    /// Nothing was streamed; the answer falls back to quoting.
    Failed(String),
}

struct Clock {
    start: Instant,
    budget: Duration,
    timings: Vec<StageTiming>,
}

impl Clock {
    fn run<T>(&mut self, stage: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let t = Instant::now();
        let out = f();
        let duration = t.elapsed();
        observe::stage(stage, out.is_ok(), duration);
        self.timings.push(StageTiming { stage, duration });
        out
    }

    fn spent(&self) -> f64 {
        self.start.elapsed().as_secs_f64() / self.budget.as_secs_f64()
    }
}

impl Pipeline {
    fn check_question<'q>(&self, question: &'q str) -> Result<&'q str> {
        let q = question.trim();
        if q.is_empty() {
            return Err(InvalidInput::EmptyText { what: "question" }.into());
        }
        let max = self.config.max_question_bytes;
        if q.len() <= max {
            return Ok(q);
        }
        match self.config.question_policy {
            QuestionPolicy::Reject => Err(InvalidInput::TooLarge {
                what: "question",
                actual: q.len(),
                max,
            }
            .into()),
            QuestionPolicy::Truncate => {
                let mut end = max;
                while !q.is_char_boundary(end) {
                    end -= 1;
                }
                Ok(&q[..end])
            }
        }
    }

    /// Answers `question` for `principal` with citations it may read. A principal
    /// who may see nothing relevant gets an answer saying so, without citations.
    pub fn query(
        &self,
        principal: &Principal,
        question: &str,
        options: &QueryOptions,
    ) -> Result<QueryAnswer> {
        self.query_stream(principal, question, options, &mut |_| {
            TokenControl::Continue
        })
    }

    /// [`Pipeline::query`], reporting as it goes: first the passages retrieved
    /// ([`QueryEvent::Retrieved`]), then the answer's text piece by piece
    /// ([`QueryEvent::Token`]; the pieces concatenate to the returned answer's
    /// text). Returning [`TokenControl::Stop`] from `on_event` stops generation
    /// within one token; the answer is then [`AnswerKind::Cancelled`] and not
    /// cached.
    pub fn query_stream(
        &self,
        principal: &Principal,
        question: &str,
        options: &QueryOptions,
        on_event: &mut dyn FnMut(QueryEvent<'_>) -> TokenControl,
    ) -> Result<QueryAnswer> {
        let span = tracing::info_span!("rag.query.process");
        let _enter = span.enter();
        let start = Instant::now();
        let asked_at = SystemTime::now();
        let mut audit = AuditState {
            question,
            at: asked_at,
            recorded: Vec::new(),
            wrote: false,
        };
        let result = self.query_inner(principal, question, options, start, on_event, &mut audit);
        // Answers were recorded before they left; refusals and failures here.
        let result = if audit.wrote {
            result
        } else {
            self.audit_answer(principal, question, asked_at, result)
        };
        observe::stage("query", result.is_ok(), start.elapsed());
        if let Ok(a) = &result {
            for d in &a.degradations {
                metrics::counter!(observe::DEGRADATIONS, "step" => d.label()).increment(1);
            }
        }
        result
    }

    /// Records the answer (or the refusal) in the audit sink before it is
    /// returned; an answer whose record cannot be written is refused unless the
    /// configuration says otherwise.
    fn audit_answer(
        &self,
        principal: &Principal,
        question: &str,
        at: SystemTime,
        result: Result<QueryAnswer>,
    ) -> Result<QueryAnswer> {
        let Some(sink) = &self.audit else {
            return result;
        };
        let (decision, served, from_cache) = match &result {
            Ok(a) => {
                let served: Vec<_> = a.answer.sources().cloned().collect();
                let decision = match a.kind {
                    AnswerKind::Abstained => AnswerDecision::Abstained,
                    AnswerKind::NothingVisible => AnswerDecision::NothingVisible,
                    // A cancelled answer still showed its sources and some text.
                    AnswerKind::Generated | AnswerKind::Extractive | AnswerKind::Cancelled => {
                        AnswerDecision::Answered
                    }
                };
                (decision, served, a.from_cache)
            }
            Err(Error::Denied { .. }) => (AnswerDecision::Denied, Vec::new(), false),
            // Nothing was served: bad input or a failed stage.
            Err(_) => return result,
        };
        let record = AnswerRecord {
            tenant: principal.tenant.clone(),
            user: principal.user.clone(),
            at,
            question_sha256: AnswerRecord::hash_question(question.trim()),
            served,
            from_cache,
            decision,
        };
        match (self.write_record(sink.as_ref(), &record), result) {
            // A refusal stays a refusal.
            (_, Err(denied)) => Err(denied),
            (Ok(()), ok) => ok,
            (Err(e), Ok(_)) => Err(e),
        }
    }

    /// Writes `record`; `Err` only when it failed and the configuration refuses
    /// answers without their record.
    fn write_record(&self, sink: &dyn rag_core::AuditSink, record: &AnswerRecord) -> Result<()> {
        let t = Instant::now();
        let written = sink.record(record);
        observe::stage("audit", written.is_ok(), t.elapsed());
        match (written, self.config.audit_failure) {
            (Ok(()), _) => Ok(()),
            (Err(e), AuditFailure::Refuse) => {
                tracing::error!(error = %e.summary(), "audit record not written: answer refused");
                Err(e)
            }
            (Err(e), AuditFailure::Answer) => {
                tracing::error!(error = %e.summary(), "audit record not written: answering anyway");
                metrics::counter!(observe::AUDIT_FAILURES).increment(1);
                Ok(())
            }
        }
    }

    /// [`Pipeline::audit_before_sending`] for a whole answer about to be sent.
    fn audit_whole(
        &self,
        state: &mut AuditState<'_>,
        principal: &Principal,
        answer: &Answer,
        from_cache: bool,
    ) -> Result<()> {
        let served: Vec<_> = answer.sources().cloned().collect();
        self.audit_before_sending(
            state,
            principal,
            &served,
            AnswerDecision::Answered,
            from_cache,
        )
    }

    /// Records what is about to leave (before the first event of an answer, and
    /// again before passages not yet recorded), so that no passage reaches a caller,
    /// streamed or not, without its audit record.
    fn audit_before_sending(
        &self,
        state: &mut AuditState<'_>,
        principal: &Principal,
        served: &[rag_core::Citation],
        decision: AnswerDecision,
        from_cache: bool,
    ) -> Result<()> {
        let Some(sink) = &self.audit else {
            return Ok(());
        };
        if state.wrote && served.iter().all(|c| state.recorded.contains(c)) {
            return Ok(());
        }
        let record = AnswerRecord {
            tenant: principal.tenant.clone(),
            user: principal.user.clone(),
            at: state.at,
            question_sha256: AnswerRecord::hash_question(state.question.trim()),
            served: served.to_vec(),
            from_cache,
            decision,
        };
        self.write_record(sink.as_ref(), &record)?;
        state.wrote = true;
        state.recorded.extend(served.iter().cloned());
        Ok(())
    }

    fn query_inner(
        &self,
        principal: &Principal,
        question: &str,
        options: &QueryOptions,
        start: Instant,
        sink: &mut dyn FnMut(QueryEvent<'_>) -> TokenControl,
        audit: &mut AuditState<'_>,
    ) -> Result<QueryAnswer> {
        let question = self.check_question(question)?;
        let mut clock = Clock {
            start,
            budget: options.latency_budget.unwrap_or(self.config.latency_budget),
            timings: Vec::new(),
        };
        let filter = clock.run("access", || self.access.resolve(principal))?;
        tracing::debug!(tenant = %filter.tenant(), user = %principal.user, "resolved");
        let mode = options.mode.unwrap_or(self.config.mode);
        // The embedder is always given the normalised text, so that a remembered
        // embedding is exactly the one the model would compute.
        let text = memo::normalise(question);
        let remembered = self.memo.get(&filter, &text);
        let embedding = match remembered {
            Some(e) => clock.run("embed_memo", || Ok(e))?,
            None => clock.run("embed", || {
                let mut vectors = self.embedder.embed(&[text.as_str()])?;
                match (vectors.pop(), vectors.is_empty()) {
                    (Some(v), true) => {
                        self.memo.put(&filter, text.clone(), &v);
                        Ok(v)
                    }
                    (v, _) => Err(Error::backend(
                        Stage::Embed,
                        format!(
                            "the embedder returned {} vectors for one question",
                            vectors.len() + usize::from(v.is_some())
                        ),
                    )),
                }
            })?,
        };
        let top_k = options.top_k.unwrap_or(self.config.top_k);
        let key = CacheKey {
            question: &embedding,
            scope: &filter,
            generator: self.generator.as_ref().map_or("extractive", |g| g.name()),
            settings: self.answer_settings(mode, top_k),
        };
        let cache = self.cache.as_ref().filter(|_| !options.bypass_cache);
        if let Some(cache) = cache {
            let hit = clock.run("cache_lookup", || cache.lookup(&key, self.index.as_ref()))?;
            self.count_lookup(hit.is_some());
            if let Some(answer) = hit {
                self.audit_whole(audit, principal, &answer, true)?;
                send_whole(sink, &answer, true);
                return Ok(QueryAnswer {
                    answer,
                    kind: AnswerKind::Generated,
                    top_score: None,
                    from_cache: true,
                    strategy: None,
                    visible: 0,
                    timings: clock.timings,
                    degradations: Vec::new(),
                });
            }
        }

        let mut degradations = Vec::new();
        let k = if clock.spent() >= self.config.shrink_retrieval_after && top_k > 1 {
            degradations.push(Degradation::SmallerRetrieval {
                from: top_k,
                to: top_k / 2,
            });
            top_k / 2
        } else {
            top_k
        };
        let result = clock.run("retrieve", || {
            let _s = tracing::info_span!("rag.retrieval.search", k, mode = mode.as_str()).entered();
            self.retrieve(mode, &embedding, question, k, &filter)
        })?;
        let Some(top_score) = result.hits.first().map(|h| h.score) else {
            let answer = prompt::nothing_found();
            self.audit_before_sending(
                audit,
                principal,
                &[],
                AnswerDecision::NothingVisible,
                false,
            )?;
            send_whole(sink, &answer, true);
            return Ok(QueryAnswer {
                answer,
                kind: AnswerKind::NothingVisible,
                top_score: None,
                from_cache: false,
                strategy: Some(result.strategy),
                visible: result.visible,
                timings: clock.timings,
                degradations,
            });
        };
        if self
            .config
            .abstention
            .floor(mode)
            .is_some_and(|floor| top_score < floor)
        {
            let answer = prompt::abstained();
            self.audit_before_sending(audit, principal, &[], AnswerDecision::Abstained, false)?;
            send_whole(sink, &answer, true);
            return Ok(QueryAnswer {
                answer,
                kind: AnswerKind::Abstained,
                top_score: Some(top_score),
                from_cache: false,
                strategy: Some(result.strategy),
                visible: result.visible,
                timings: clock.timings,
                degradations,
            });
        }

        let mut sent_sources = false;
        let generated = match &self.generator {
            None => Generated::Failed("no generator is configured".to_owned()),
            Some(_) if clock.spent() >= 1.0 => {
                Generated::Failed("the latency budget was spent before generation".to_owned())
            }
            Some(g) => {
                let context = clock.run("context", || {
                    let _s = tracing::info_span!("rag.context.build").entered();
                    prompt::build(
                        g.as_ref(),
                        &self.config.system_prompt,
                        question,
                        &result.hits,
                        self.config.max_answer_tokens,
                        self.config.context_tokens,
                    )
                })?;
                let provenance = prompt::provenance(&context.used);
                self.audit_before_sending(
                    audit,
                    principal,
                    &provenance,
                    AnswerDecision::Answered,
                    false,
                )?;
                sent_sources = true;
                if sink(QueryEvent::Retrieved {
                    sources: &provenance,
                }) == TokenControl::Stop
                {
                    Generated::Cancelled(Answer {
                        text: String::new(),
                        citations: Vec::new(),
                        provenance,
                    })
                } else {
                    self.generate(g.as_ref(), &mut clock, &context, provenance, sink)
                }
            }
        };
        let _assemble = tracing::info_span!("rag.response.assemble").entered();
        let mut kind = AnswerKind::Generated;
        let answer = match generated {
            Generated::Done(answer) => {
                // An answer made under budget pressure (fewer chunks) is not what
                // the key promises a later asker: serve it, cache it not.
                if let Some(cache) = cache.filter(|_| degradations.is_empty()) {
                    clock.run("cache_store", || cache.store(&key, &answer))?;
                }
                answer
            }
            Generated::Truncated(answer, reason) => {
                tracing::warn!(%reason, "answer truncated after streaming began");
                degradations.push(Degradation::Truncated { reason });
                answer
            }
            Generated::Cancelled(answer) => {
                kind = AnswerKind::Cancelled;
                answer
            }
            Generated::Failed(reason) => {
                tracing::warn!(%reason, "answering extractively");
                degradations.push(Degradation::Extractive { reason });
                kind = AnswerKind::Extractive;
                let answer = prompt::extractive(&result.hits, 3);
                self.audit_whole(audit, principal, &answer, false)?;
                send_whole(sink, &answer, !sent_sources);
                answer
            }
        };
        Ok(QueryAnswer {
            answer,
            kind,
            top_score: Some(top_score),
            from_cache: false,
            strategy: Some(result.strategy),
            visible: result.visible,
            timings: clock.timings,
            degradations,
        })
    }

    /// Generates from `context`, streaming cleaned pieces to `sink`.
    fn generate(
        &self,
        g: &dyn rag_core::Generator,
        clock: &mut Clock,
        context: &prompt::Context,
        provenance: Vec<rag_core::Citation>,
        sink: &mut dyn FnMut(QueryEvent<'_>) -> TokenControl,
    ) -> Generated {
        let deadline = clock.start + clock.budget;
        let mut overran = false;
        let mut cancelled = false;
        let mut filter = TextFilter::new(context.used.len());
        let out = clock.run("generate", || {
            let _s = tracing::info_span!("rag.generation.create").entered();
            g.generate(
                &GenerationRequest {
                    messages: context.messages.clone(),
                    params: SamplingParams {
                        max_new_tokens: self.config.max_answer_tokens,
                        ..self.config.sampling.clone()
                    },
                    deadline: Some(deadline),
                },
                &mut |piece| {
                    if Instant::now() >= deadline {
                        overran = true;
                        return TokenControl::Stop;
                    }
                    if let Some(shown) = filter.push(piece)
                        && sink(QueryEvent::Token(&shown)) == TokenControl::Stop
                    {
                        cancelled = true;
                        return TokenControl::Stop;
                    }
                    TokenControl::Continue
                },
            )
        });
        let answer = |filter: &TextFilter, provenance: Vec<rag_core::Citation>| {
            let (_, citations) = prompt::citations(filter.raw(), &context.question, &context.used);
            Answer {
                text: filter.text().to_owned(),
                citations,
                provenance,
            }
        };
        // A generator that stopped itself at the request's deadline overran too.
        let overran = overran
            || matches!(&out, Ok(g) if g.finish == rag_core::FinishReason::Cancelled && !cancelled);
        match out {
            Ok(_) if cancelled => Generated::Cancelled(answer(&filter, provenance)),
            Ok(_) if overran && filter.emitted_any() => Generated::Truncated(
                answer(&filter, provenance),
                "generation overran the latency budget".to_owned(),
            ),
            Ok(_) if overran => {
                Generated::Failed("generation overran the latency budget".to_owned())
            }
            Ok(out) => {
                // A generator that did not stream (or streamed a prefix) is given
                // the rest of its text now.
                if let Some(rest) = out.text.strip_prefix(filter.raw()) {
                    let rest = rest.to_owned();
                    if let Some(shown) = filter.push(&rest) {
                        sink(QueryEvent::Token(&shown));
                    }
                } else {
                    tracing::debug!("the generator's text differs from what it streamed");
                }
                if let Some(shown) = filter.finish() {
                    sink(QueryEvent::Token(&shown));
                }
                if filter.text().is_empty() {
                    Generated::Failed("the generator returned no text".to_owned())
                } else {
                    Generated::Done(answer(&filter, provenance))
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "generation failed");
                let reason = format!("generation failed ({})", e.summary());
                if filter.emitted_any() {
                    if let Some(shown) = filter.finish() {
                        sink(QueryEvent::Token(&shown));
                    }
                    Generated::Truncated(answer(&filter, provenance), reason)
                } else {
                    Generated::Failed(reason)
                }
            }
        }
    }

    /// The cache key's settings: the prompt template, mode, fusion, `top_k` and
    /// the generation settings.
    fn answer_settings(&self, mode: RetrievalMode, top_k: usize) -> u64 {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.prompt_fingerprint.to_le_bytes());
        h.update([mode as u8]);
        h.update((top_k as u64).to_le_bytes());
        h.update(format!("{:?}", self.config.fusion).as_bytes());
        h.update((self.config.max_answer_tokens as u64).to_le_bytes());
        h.update(format!("{:?}", self.config.sampling).as_bytes());
        h.update(format!("{:?}", self.config.abstention).as_bytes());
        let d = h.finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        u64::from_le_bytes(b)
    }

    fn retrieve(
        &self,
        mode: RetrievalMode,
        embedding: &rag_core::Embedding,
        question: &str,
        k: usize,
        filter: &AccessFilter,
    ) -> Result<SearchResult> {
        let request = SearchRequest {
            mode,
            embedding: Some(embedding),
            text: Some(question),
            k,
            fusion: self.config.fusion,
        };
        self.index.retrieve(&request, filter)
    }

    fn count_lookup(&self, hit: bool) {
        let lookups = self.cache_lookups.fetch_add(1, Ordering::Relaxed) + 1;
        let hits = self.cache_hits.fetch_add(u64::from(hit), Ordering::Relaxed) + u64::from(hit);
        let result = if hit { "hit" } else { "miss" };
        metrics::counter!(observe::CACHE_LOOKUPS, "result" => result).increment(1);
        metrics::gauge!(observe::CACHE_HIT_RATIO).set(hits as f64 / lookups as f64);
    }
}
