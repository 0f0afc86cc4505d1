//! The pipeline over test doubles: ingestion, unchanged-document skipping, access,
//! citations, cache use and invalidation, degradation, bad input, metrics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use rag_core::{
    AccessFilter, Acl, Answer, AnswerCache, CacheKey, DocId, DocKey, Document, Embedder, Error,
    InvalidInput, Metadata, Principal, VectorIndexRead, WordCounter,
};
use rag_pipeline::RecursiveChunker;
use rag_pipeline::testing::{
    EchoGenerator, FlatIndex, HashEmbedder, OpenResolver, ScriptedGenerator,
};
use rag_pipeline::{
    Degradation, HealthStatus, Pipeline, PipelineConfig, QueryOptions, QuestionPolicy,
};

/// A cache double: exact question text match per scope, counting invalidations.
#[derive(Default)]
struct MapCache {
    entries: Mutex<Vec<(Vec<f32>, AccessFilter, Answer)>>,
    invalidated: Mutex<Vec<DocKey>>,
}

impl AnswerCache for MapCache {
    fn lookup(
        &self,
        key: &CacheKey<'_>,
        _: &dyn VectorIndexRead,
    ) -> rag_core::Result<Option<Answer>> {
        Ok(self
            .entries
            .lock()
            .unwrap()
            .iter()
            .find(|(q, s, _)| q.as_slice() == key.question.values() && s == key.scope)
            .map(|(_, _, a)| a.clone()))
    }
    fn store(&self, key: &CacheKey<'_>, answer: &Answer) -> rag_core::Result<()> {
        self.entries.lock().unwrap().push((
            key.question.values().to_vec(),
            key.scope.clone(),
            answer.clone(),
        ));
        Ok(())
    }
    fn invalidate(&self, docs: &BTreeSet<DocKey>) -> rag_core::Result<usize> {
        self.invalidated
            .lock()
            .unwrap()
            .extend(docs.iter().cloned());
        let mut e = self.entries.lock().unwrap();
        let before = e.len();
        e.retain(|(_, s, a)| {
            !a.sources()
                .any(|c| docs.contains(&DocKey::new(s.tenant().clone(), c.doc_id.clone())))
        });
        Ok(before - e.len())
    }
}

fn doc(id: &str, version: u64, text: &str, acl: Option<Acl>) -> Document {
    Document {
        tenant: acl
            .as_ref()
            .map_or_else(|| "acme".into(), |a| a.tenant.clone()),
        id: DocId::new(id),
        version,
        text: text.into(),
        metadata: Metadata::default(),
        acl,
    }
}

struct Setup {
    pipeline: Pipeline,
    cache: Arc<MapCache>,
}

fn setup(config: PipelineConfig, generator: Option<EchoGenerator>) -> Setup {
    setup_with(
        config,
        generator.map(|g| Arc::new(g) as Arc<dyn rag_core::Generator>),
    )
}

fn setup_with(config: PipelineConfig, generator: Option<Arc<dyn rag_core::Generator>>) -> Setup {
    let embedder = Arc::new(HashEmbedder::new(64).unwrap());
    let cache = Arc::new(MapCache::default());
    let mut b = Pipeline::builder()
        .chunker(Arc::new(
            RecursiveChunker::new(32, 4, Arc::new(WordCounter)).unwrap(),
        ))
        .index(Arc::new(FlatIndex::new(embedder.fingerprint().clone())))
        .embedder(embedder)
        .cache(cache.clone())
        .access(Arc::new(OpenResolver))
        .config(config);
    if let Some(g) = generator {
        b = b.generator(g);
    }
    Setup {
        pipeline: b.build().unwrap(),
        cache,
    }
}

fn corpus() -> Vec<Document> {
    vec![
        doc(
            "expenses",
            1,
            "Expenses are approved by the team lead within five days.",
            Some(Acl::new("acme").allow_group("staff")),
        ),
        doc(
            "salaries",
            1,
            "Salaries are reviewed by human resources every spring.",
            Some(Acl::new("acme").allow_group("hr")),
        ),
        doc(
            "globex-expenses",
            1,
            "Globex expenses are approved by the finance director.",
            Some(Acl::new("globex").allow_group("staff")),
        ),
        doc(
            "orphan",
            1,
            "Expenses of the orphan document, no ACL.",
            None,
        ),
    ]
}

#[test]
fn quick_tour() {
    let s = setup(PipelineConfig::default(), Some(EchoGenerator::default()));
    let r = s.pipeline.ingest(corpus()).unwrap();
    assert_eq!((r.documents, r.upserted, r.unchanged), (4, 4, 0));
    let ann = Principal::new("acme", "ann").with_group("staff");
    let a = s
        .pipeline
        .query(&ann, "Who approves expenses?", &QueryOptions::default())
        .unwrap();
    assert!(!a.from_cache);
    assert!(a.answer.text.starts_with("[1]:"));
    let cited: Vec<&str> = a
        .answer
        .citations
        .iter()
        .map(|c| c.doc_id.as_str())
        .collect();
    assert_eq!(cited, vec!["expenses"]);
    let stages: Vec<&str> = a.timings.iter().map(|t| t.stage).collect();
    assert_eq!(
        stages,
        [
            "access",
            "embed",
            "cache_lookup",
            "retrieve",
            "context",
            "generate",
            "cache_store"
        ]
    );
    // The same question again is served by the cache.
    let again = s
        .pipeline
        .query(&ann, "Who approves expenses?", &QueryOptions::default())
        .unwrap();
    assert!(again.from_cache);
    assert_eq!(again.answer, a.answer);
}

#[test]
fn citations_are_always_visible_and_strangers_get_nothing() {
    let s = setup(PipelineConfig::default(), Some(EchoGenerator::default()));
    s.pipeline.ingest(corpus()).unwrap();
    let cases = [
        (
            Principal::new("acme", "ann").with_group("staff"),
            vec!["expenses"],
        ),
        (
            Principal::new("acme", "hal").with_group("hr"),
            vec!["salaries"],
        ),
        (
            Principal::new("globex", "gus").with_group("staff"),
            vec!["globex-expenses"],
        ),
        (Principal::new("acme", "bob"), vec![]),
        (Principal::new("initech", "ann").with_group("staff"), vec![]),
    ];
    for (p, visible) in cases {
        let a = s
            .pipeline
            .query(&p, "expenses approved salaries", &QueryOptions::default())
            .unwrap();
        let filter = AccessFilter::for_principal(&p);
        for c in &a.answer.citations {
            assert!(
                visible.contains(&c.doc_id.as_str()),
                "{} leaked to {}",
                c.doc_id,
                p.user
            );
        }
        if visible.is_empty() {
            assert!(a.answer.citations.is_empty());
            assert!(a.answer.text.contains("No documents you have access to"));
            assert!(!a.answer.text.contains("Globex") && !a.answer.text.contains("orphan"));
        } else {
            assert!(!a.answer.citations.is_empty());
        }
        assert_eq!(a.visible, visible.len(), "{filter:?}");
    }
}

#[test]
fn unchanged_documents_cost_nothing_and_changes_invalidate() {
    let s = setup(PipelineConfig::default(), Some(EchoGenerator::default()));
    s.pipeline.ingest(corpus()).unwrap();
    let again = s.pipeline.ingest(corpus()).unwrap();
    assert_eq!((again.unchanged, again.upserted, again.chunks), (4, 0, 0));
    assert_eq!(again.embed_seconds, 0.0);

    let ann = Principal::new("acme", "ann").with_group("staff");
    let q = "Who approves expenses?";
    s.pipeline.query(&ann, q, &QueryOptions::default()).unwrap();
    let mut edited = corpus();
    edited[0] = doc(
        "expenses",
        2,
        "Expenses are approved by the department head.",
        Some(Acl::new("acme").allow_group("staff")),
    );
    let r = s.pipeline.ingest(edited).unwrap();
    assert_eq!((r.upserted, r.unchanged, r.cache_invalidated), (1, 3, 1));
    let a = s.pipeline.query(&ann, q, &QueryOptions::default()).unwrap();
    assert!(!a.from_cache);
    assert!(
        a.answer.text.contains("department head"),
        "{}",
        a.answer.text
    );
    assert_eq!(a.answer.citations[0].doc_version, 2);

    s.pipeline.delete(&DocKey::new("acme", "expenses")).unwrap();
    assert!(
        s.cache
            .invalidated
            .lock()
            .unwrap()
            .contains(&DocKey::new("acme", "expenses"))
    );
    let a = s.pipeline.query(&ann, q, &QueryOptions::default()).unwrap();
    assert!(a.answer.citations.is_empty());
}

#[test]
fn degrades_to_smaller_retrieval_then_extractive_answers() {
    let s = setup(
        PipelineConfig::default(),
        Some(EchoGenerator {
            failing: true,
            words: 0,
        }),
    );
    s.pipeline.ingest(corpus()).unwrap();
    let ann = Principal::new("acme", "ann").with_group("staff");
    let a = s
        .pipeline
        .query(&ann, "Who approves expenses?", &QueryOptions::default())
        .unwrap();
    assert!(
        matches!(&a.degradations[..], [Degradation::Extractive { reason }] if reason.contains("generation failed"))
    );
    assert!(a.answer.text.contains("[1] Expenses are approved"));
    assert_eq!(a.answer.citations[0].doc_id, DocId::new("expenses"));
    // Extractive answers are not cached.
    assert!(s.cache.entries.lock().unwrap().is_empty());

    // A budget spent before retrieval: fewer chunks, then no generation.
    let s = setup(PipelineConfig::default(), Some(EchoGenerator::default()));
    s.pipeline.ingest(corpus()).unwrap();
    let options = QueryOptions {
        latency_budget: Some(Duration::from_nanos(1)),
        ..QueryOptions::default()
    };
    let a = s
        .pipeline
        .query(&ann, "Who approves expenses?", &options)
        .unwrap();
    assert_eq!(
        a.degradations[0],
        Degradation::SmallerRetrieval { from: 4, to: 2 }
    );
    assert!(
        matches!(&a.degradations[1], Degradation::Extractive { reason } if reason.contains("budget"))
    );
    assert!(!a.answer.citations.is_empty());

    // No generator at all: extractive, and health says degraded.
    let s = setup(PipelineConfig::default(), None);
    s.pipeline.ingest(corpus()).unwrap();
    let a = s
        .pipeline
        .query(&ann, "expenses", &QueryOptions::default())
        .unwrap();
    assert!(matches!(
        &a.degradations[..],
        [Degradation::Extractive { .. }]
    ));
    let h = s.pipeline.health();
    assert_eq!(h.status, HealthStatus::Degraded);
    assert!(h.reasons.iter().any(|r| r.contains("no generator")));
}

#[test]
fn bad_input_is_typed_and_loses_nothing() {
    let s = setup(PipelineConfig::default(), Some(EchoGenerator::default()));
    s.pipeline.ingest(corpus()).unwrap();
    let ann = Principal::new("acme", "ann").with_group("staff");
    let err = |r: rag_core::Result<_>| match r {
        Err(Error::InvalidInput(i)) => i,
        other => panic!("expected invalid input, got {other:?}"),
    };
    assert!(matches!(
        err(s
            .pipeline
            .query(&ann, "  ", &QueryOptions::default())
            .map(|_| ())),
        InvalidInput::EmptyText { .. }
    ));
    let huge = "expenses ".repeat(1000);
    assert!(matches!(
        err(s
            .pipeline
            .query(&ann, &huge, &QueryOptions::default())
            .map(|_| ())),
        InvalidInput::TooLarge { .. }
    ));
    let dup = vec![doc("x", 1, "a", None), doc("x", 2, "b", None)];
    assert!(matches!(
        err(s.pipeline.ingest(dup).map(|_| ())),
        InvalidInput::DuplicateDocument { .. }
    ));
    assert!(matches!(
        err(s
            .pipeline
            .ingest(vec![doc("y", 1, " \n", None)])
            .map(|_| ())),
        InvalidInput::EmptyText { .. }
    ));
    let bytes = b"valid start \xff\xfe then garbage".to_vec();
    let bad = Document::from_bytes("acme".into(), DocId::new("z"), 1, bytes, None).unwrap_err();
    assert!(
        matches!(bad, InvalidInput::Malformed { ref detail, .. } if detail.contains("byte 12"))
    );
    assert!(matches!(
        s.pipeline.delete(&DocKey::new("acme", "never-ingested")),
        Err(Error::NotFound { .. })
    ));
    // Nothing accepted before was lost.
    assert_eq!(s.pipeline.admin_index().stats().documents, 4);

    let truncating = setup(
        PipelineConfig {
            question_policy: QuestionPolicy::Truncate,
            ..PipelineConfig::default()
        },
        Some(EchoGenerator::default()),
    );
    truncating.pipeline.ingest(corpus()).unwrap();
    assert!(
        truncating
            .pipeline
            .query(&ann, &huge, &QueryOptions::default())
            .is_ok()
    );
}

/// A cheap embedder for volume tests: the vector depends on the text's length only.
struct LenEmbedder(rag_core::ModelFingerprint);

impl Embedder for LenEmbedder {
    fn fingerprint(&self) -> &rag_core::ModelFingerprint {
        &self.0
    }
    fn embed(&self, texts: &[&str]) -> rag_core::Result<Vec<rag_core::Embedding>> {
        texts
            .iter()
            .map(|t| {
                Ok(rag_core::Embedding::new(
                    self.0.id(),
                    vec![1.0, t.len() as f32],
                )?)
            })
            .collect()
    }
    fn device(&self) -> rag_core::Device {
        rag_core::Device::Cpu
    }
    fn count_tokens(&self, text: &str) -> rag_core::Result<usize> {
        Ok(text.split_whitespace().count())
    }
    fn max_input_tokens(&self) -> usize {
        512
    }
}

#[test]
fn a_50_mb_document_is_chunked_and_stored() {
    let embedder = Arc::new(LenEmbedder(
        rag_core::ModelFingerprint::new("len", 2, "v1").unwrap(),
    ));
    let pipeline = Pipeline::builder()
        .chunker(Arc::new(
            RecursiveChunker::new(256, 16, Arc::new(WordCounter)).unwrap(),
        ))
        .index(Arc::new(FlatIndex::new(embedder.fingerprint().clone())))
        .embedder(embedder)
        .access(Arc::new(OpenResolver))
        .build()
        .unwrap();
    let text =
        "Memory stays bounded while a long document is split into passages. ".repeat(800_000);
    assert!(text.len() > 50 << 20);
    let r = pipeline
        .ingest(vec![doc(
            "big",
            1,
            &text,
            Some(Acl::new("acme").allow_group("staff")),
        )])
        .unwrap();
    assert_eq!(r.upserted, 1);
    assert!(r.chunks > 30_000, "{} chunks", r.chunks);
    let info = pipeline
        .admin_index()
        .document(&DocKey::new("acme", "big"))
        .unwrap()
        .unwrap();
    assert_eq!(info.chunk_ids.len(), r.chunks);
}

#[test]
fn builder_checks_the_parts_fit_and_metrics_are_recorded() {
    let embedder = Arc::new(HashEmbedder::new(64).unwrap());
    let other = HashEmbedder::new(32).unwrap();
    let mismatch = Pipeline::builder()
        .chunker(Arc::new(
            RecursiveChunker::new(32, 4, Arc::new(WordCounter)).unwrap(),
        ))
        .index(Arc::new(FlatIndex::new(other.fingerprint().clone())))
        .embedder(embedder.clone())
        .access(Arc::new(OpenResolver))
        .build();
    assert!(matches!(
        mismatch,
        Err(Error::InvalidInput(InvalidInput::ModelMismatch { .. }))
    ));
    let no_index = Pipeline::builder()
        .embedder(embedder)
        .access(Arc::new(OpenResolver))
        .build();
    assert!(matches!(
        no_index,
        Err(Error::InvalidInput(InvalidInput::Config { .. }))
    ));

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let s = setup(PipelineConfig::default(), Some(EchoGenerator::default()));
        s.pipeline.ingest(corpus()).unwrap();
        let ann = Principal::new("acme", "ann").with_group("staff");
        for _ in 0..2 {
            s.pipeline
                .query(&ann, "expenses", &QueryOptions::default())
                .unwrap();
        }
    });
    let snap = snapshotter.snapshot().into_vec();
    let find = |name: &str, label: Option<(&str, &str)>| {
        snap.iter()
            .filter(|(k, _, _, _)| {
                k.key().name() == name
                    && label.is_none_or(|(n, v)| {
                        k.key().labels().any(|l| l.key() == n && l.value() == v)
                    })
            })
            .map(|(_, _, _, v)| v)
            .collect::<Vec<_>>()
    };
    assert!(matches!(
        find("rag_requests_total", Some(("stage", "retrieve")))[..],
        [DebugValue::Counter(1)]
    ));
    assert!(!find("rag_request_duration_seconds", Some(("stage", "generate"))).is_empty());
    assert!(matches!(find("rag_cache_hit_ratio", None)[..], [DebugValue::Gauge(r)] if r.0 == 0.5));
    assert!(matches!(find("rag_index_chunks", None)[..], [DebugValue::Gauge(c)] if c.0 == 4.0));
}

#[test]
fn erase_drops_the_document_and_the_cached_answers_citing_it() {
    let s = setup(PipelineConfig::default(), Some(EchoGenerator::default()));
    s.pipeline.ingest(corpus()).unwrap();
    let ann = Principal::new("acme", "ann").with_group("staff");
    let q = "Who approves expenses?";
    let first = s.pipeline.query(&ann, q, &QueryOptions::default()).unwrap();
    assert!(
        first
            .answer
            .citations
            .iter()
            .any(|c| c.doc_id.as_str() == "expenses")
    );
    assert!(
        s.pipeline
            .query(&ann, q, &QueryOptions::default())
            .unwrap()
            .from_cache
    );
    let key = DocKey::new("acme", "expenses");
    s.pipeline.erase(&key).unwrap();
    assert!(s.cache.invalidated.lock().unwrap().contains(&key));
    assert!(s.pipeline.admin_index().document(&key).unwrap().is_none());
    let after = s.pipeline.query(&ann, q, &QueryOptions::default()).unwrap();
    assert!(!after.from_cache);
    assert!(
        after
            .answer
            .citations
            .iter()
            .all(|c| c.doc_id.as_str() != "expenses")
    );
    // Erasing it again, or another tenant's document of that id: not found.
    assert!(matches!(
        s.pipeline.erase(&key),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        s.pipeline.erase(&DocKey::new("globex", "expenses")),
        Err(Error::NotFound { .. })
    ));
}

/// Hole 7: the pipeline's public read path handed out the unfiltered index, whose
/// `document` returns any document's ACL, title and attributes. Reads for a
/// principal filter; another tenant's document and a hidden one look missing.
#[test]
fn document_reads_are_filtered_for_the_principal() {
    let s = setup(PipelineConfig::default(), None);
    s.pipeline.ingest(corpus()).unwrap();
    let staff = Principal::new("acme", "sam").with_group("staff");
    let hr = Principal::new("acme", "hana").with_group("hr");
    let globex = Principal::new("globex", "gus").with_group("staff");
    let read = |p: &Principal, id: &str| s.pipeline.document(p, &DocId::new(id)).unwrap();
    assert!(read(&staff, "expenses").is_some());
    assert!(
        read(&staff, "salaries").is_none(),
        "a hidden document's metadata leaked"
    );
    assert!(read(&hr, "salaries").is_some());
    assert!(
        read(&globex, "expenses").is_none(),
        "another tenant's document leaked"
    );
    assert!(read(&globex, "globex-expenses").is_some());
    assert!(
        read(&staff, "orphan").is_none(),
        "a document without an ACL is nobody's"
    );
    assert!(read(&staff, "missing").is_none());
}

/// A generator whose errors quote the prompt (as an HTTP client's might), with a
/// marker string to look for.
struct QuotingGenerator;

const MARKER: &str = "MARKER-7f3a";

impl rag_core::Generator for QuotingGenerator {
    fn name(&self) -> &str {
        "quoting"
    }
    fn context_window(&self) -> usize {
        2048
    }
    fn count_tokens(&self, text: &str) -> rag_core::Result<usize> {
        if text == "health probe" {
            return Err(Error::backend(
                rag_core::Stage::Generate,
                format!("{MARKER}: tokenizer service said no"),
            ));
        }
        Ok(text.split_whitespace().count())
    }
    fn generate(
        &self,
        request: &rag_core::GenerationRequest,
        _: &mut dyn FnMut(&str) -> rag_core::TokenControl,
    ) -> rag_core::Result<rag_core::Generation> {
        let prompt: String = request
            .messages
            .iter()
            .map(|m| m.content.as_str())
            .collect();
        Err(Error::backend(
            rag_core::Stage::Generate,
            format!("{MARKER}: upstream 500 for prompt {prompt:?}"),
        ))
    }
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Hole 8: a backend's error text (which can quote the prompt, and so document
/// text) was logged at WARN and copied into health reasons. Above debug, in health
/// and in metric labels, only the kind of failure appears.
#[test]
fn backend_error_text_stays_out_of_logs_health_and_metrics() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (answer, health) = tracing::subscriber::with_default(subscriber, || {
        metrics::with_local_recorder(&recorder, || {
            let embedder = Arc::new(HashEmbedder::new(64).unwrap());
            let pipeline = Pipeline::builder()
                .chunker(Arc::new(
                    RecursiveChunker::new(32, 4, Arc::new(WordCounter)).unwrap(),
                ))
                .index(Arc::new(FlatIndex::new(embedder.fingerprint().clone())))
                .embedder(embedder)
                .generator(Arc::new(QuotingGenerator))
                .access(Arc::new(OpenResolver))
                .build()
                .unwrap();
            pipeline.ingest(corpus()).unwrap();
            let hana = Principal::new("acme", "hana").with_group("hr");
            let a = pipeline
                .query(
                    &hana,
                    "When are salaries reviewed?",
                    &QueryOptions::default(),
                )
                .unwrap();
            (a, pipeline.health())
        })
    });
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("answering extractively"),
        "the test saw no logs: {logs}"
    );
    assert!(
        !logs.contains(MARKER),
        "backend text logged above debug: {logs}"
    );
    assert!(
        !logs.contains("human resources"),
        "document text logged: {logs}"
    );
    for r in &health.reasons {
        assert!(!r.contains(MARKER), "backend text in health: {r}");
    }
    assert!(health.reasons.iter().any(|r| r.contains("generator fails")));
    for d in &answer.degradations {
        if let Degradation::Extractive { reason } = d {
            assert!(!reason.contains(MARKER), "{reason}");
        }
    }
    for (key, _, _, _) in snapshotter.snapshot().into_vec() {
        for l in key.key().labels() {
            assert!(!l.value().contains(MARKER), "metric label {l:?}");
        }
    }
}

/// Issue 11: below the floor the pipeline abstains: no generation, no citations,
/// `kind` says so; at or above it, it answers.
#[test]
fn weak_passages_abstain_and_strong_ones_answer() {
    use rag_pipeline::{Abstention, AnswerKind};
    let config = |floor| PipelineConfig {
        abstention: Abstention {
            dense: Some(floor),
            ..Abstention::NEVER
        },
        ..PipelineConfig::default()
    };
    let staff = Principal::new("acme", "sam").with_group("staff");
    let s = setup(config(0.9), Some(EchoGenerator::default()));
    s.pipeline.ingest(corpus()).unwrap();
    let weak = s
        .pipeline
        .query(&staff, "zebra quantum violin", &QueryOptions::default())
        .unwrap();
    assert_eq!(weak.kind, AnswerKind::Abstained, "{weak:?}");
    assert!(weak.answer.citations.is_empty() && weak.answer.provenance.is_empty());
    assert!(weak.top_score.is_some_and(|t| t < 0.9));
    assert!(!weak.timings.iter().any(|t| t.stage == "generate"));
    let strong = s
        .pipeline
        .query(
            &staff,
            "Expenses are approved by the team lead within five days.",
            &QueryOptions::default(),
        )
        .unwrap();
    assert_eq!(strong.kind, AnswerKind::Generated, "{strong:?}");
    assert!(!strong.answer.citations.is_empty());
    // Without a floor the same weak question is answered from what was found.
    let never = setup(PipelineConfig::default(), Some(EchoGenerator::default()));
    never.pipeline.ingest(corpus()).unwrap();
    let a = never
        .pipeline
        .query(&staff, "zebra quantum violin", &QueryOptions::default())
        .unwrap();
    assert_eq!(a.kind, AnswerKind::Generated);
}

/// `words` pieces with citation markers split over them: " [1" + "]" cites
/// passage 1, "[9]" none; failing after `fail_after` pieces when given.
fn marked(words: usize, fail_after: Option<usize>) -> Arc<ScriptedGenerator> {
    let pieces: Vec<String> = (0..words)
        .map(|i| match i {
            1 => " [1".to_owned(),
            2 => "] and [9]".to_owned(),
            // Words of the passage it is asked about, so its citation checks out.
            _ => format!(" {}", ["team", "lead", "within", "five", "days"][i % 5]),
        })
        .collect();
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let mut g = ScriptedGenerator::with_pieces(&refs);
    if let Some(n) = fail_after {
        g = g.failing_after(n);
        g.set_failing(true);
    }
    g.shared()
}

#[derive(Debug, PartialEq)]
enum Seen {
    Retrieved(Vec<rag_core::Citation>),
    Token(String),
}

fn stream(s: &Setup, stop_after_tokens: Option<usize>) -> (Vec<Seen>, rag_pipeline::QueryAnswer) {
    let ann = Principal::new("acme", "ann").with_group("staff");
    let mut seen = Vec::new();
    let mut tokens = 0;
    let a = s
        .pipeline
        .query_stream(
            &ann,
            "Who approves expenses?",
            &QueryOptions::default(),
            &mut |e| {
                match e {
                    rag_pipeline::QueryEvent::Retrieved { sources } => {
                        seen.push(Seen::Retrieved(sources.to_vec()))
                    }
                    rag_pipeline::QueryEvent::Token(t) => {
                        tokens += 1;
                        seen.push(Seen::Token(t.to_owned()));
                        if Some(tokens) == stop_after_tokens {
                            return rag_core::TokenControl::Stop;
                        }
                    }
                }
                rag_core::TokenControl::Continue
            },
        )
        .unwrap();
    (seen, a)
}

fn text_of(seen: &[Seen]) -> String {
    seen.iter()
        .filter_map(|e| match e {
            Seen::Token(t) => Some(t.as_str()),
            Seen::Retrieved(_) => None,
        })
        .collect()
}

#[test]
fn a_streamed_answer_reports_sources_first_and_its_pieces_make_the_final_text() {
    let g = marked(12, None);
    let s = setup_with(PipelineConfig::default(), Some(g.clone()));
    s.pipeline.ingest(corpus()).unwrap();
    let (seen, a) = stream(&s, None);
    let Seen::Retrieved(sources) = &seen[0] else {
        panic!("the first event is not the sources: {seen:?}")
    };
    assert_eq!(sources, &a.answer.provenance);
    assert!(seen[1..].iter().all(|e| matches!(e, Seen::Token(_))));
    assert_eq!(text_of(&seen), a.answer.text);
    // The out-of-range marker never reached the stream; [1] did and cites.
    assert!(
        a.answer.text.starts_with("team [1] and  five"),
        "{}",
        a.answer.text
    );
    assert!(!text_of(&seen).contains("[9"));
    assert_eq!(a.answer.citations.len(), 1);
    assert_eq!(a.kind, rag_pipeline::AnswerKind::Generated);
    assert_eq!(
        s.cache.entries.lock().unwrap().len(),
        1,
        "a whole answer is cached"
    );
    // The cached answer streams the same way.
    let (again, b) = stream(&s, None);
    assert!(b.from_cache);
    assert!(matches!(&again[0], Seen::Retrieved(_)));
    assert_eq!(text_of(&again), a.answer.text);
}

#[test]
fn a_stream_stopped_after_3_tokens_stops_the_generator_and_is_not_cached() {
    let g = marked(200, None);
    let s = setup_with(PipelineConfig::default(), Some(g.clone()));
    s.pipeline.ingest(corpus()).unwrap();
    let (seen, a) = stream(&s, Some(3));
    let tokens = seen.iter().filter(|e| matches!(e, Seen::Token(_))).count();
    assert_eq!(tokens, 3);
    assert!(
        g.produced() <= 4,
        "the generator made {} pieces after a stop at 3",
        g.produced()
    );
    assert_eq!(a.kind, rag_pipeline::AnswerKind::Cancelled);
    assert_eq!(text_of(&seen), a.answer.text);
    assert!(
        s.cache.entries.lock().unwrap().is_empty(),
        "a cancelled answer was cached"
    );
    let again = s
        .pipeline
        .query(
            &Principal::new("acme", "ann").with_group("staff"),
            "Who approves expenses?",
            &QueryOptions::default(),
        )
        .unwrap();
    assert!(!again.from_cache);
}

#[test]
fn a_generator_failing_mid_stream_leaves_the_streamed_part_marked_truncated() {
    let g = marked(20, Some(5));
    let s = setup_with(PipelineConfig::default(), Some(g.clone()));
    s.pipeline.ingest(corpus()).unwrap();
    let (seen, a) = stream(&s, None);
    assert_eq!(text_of(&seen), a.answer.text);
    assert!(a.answer.text.starts_with("team [1]"), "{}", a.answer.text);
    assert!(
        matches!(a.degradations.as_slice(), [Degradation::Truncated { .. }]),
        "{:?}",
        a.degradations
    );
    assert!(s.cache.entries.lock().unwrap().is_empty());
    // Failing before the first piece: the extractive answer is what streams.
    let g = marked(20, Some(0));
    let s = setup_with(PipelineConfig::default(), Some(g));
    s.pipeline.ingest(corpus()).unwrap();
    let (seen, a) = stream(&s, None);
    assert_eq!(a.kind, rag_pipeline::AnswerKind::Extractive);
    assert_eq!(text_of(&seen), a.answer.text);
}

#[test]
fn a_generator_stopping_itself_at_the_deadline_gives_a_truncated_uncached_answer() {
    let g = ScriptedGenerator::new(200)
        .delays(Duration::ZERO, Duration::from_millis(20))
        .shared();
    let config = PipelineConfig {
        latency_budget: Duration::from_millis(300),
        ..PipelineConfig::default()
    };
    let s = setup_with(config, Some(g.clone()));
    s.pipeline.ingest(corpus()).unwrap();
    let (seen, a) = stream(&s, None);
    assert!(g.produced() < 200, "the generator ignored the deadline");
    assert_eq!(text_of(&seen), a.answer.text);
    assert!(
        matches!(a.degradations.as_slice(), [Degradation::Truncated { .. }]),
        "{:?}",
        a.degradations
    );
    assert!(
        s.cache.entries.lock().unwrap().is_empty(),
        "a cut answer was cached"
    );
}

#[test]
fn writes_and_questions_need_the_service_role_for_the_tenant() {
    use rag_core::{Grants, ServiceRole};
    let s = setup(PipelineConfig::default(), Some(EchoGenerator::default()));
    let reader = Grants::new("acme", [ServiceRole::Reader]);
    let ingester = Grants::new("acme", [ServiceRole::Ingester]);
    let admin = Grants::new("acme", [ServiceRole::Admin]);
    let acme_docs: Vec<Document> = corpus()
        .into_iter()
        .filter(|d| d.tenant.as_str() == "acme")
        .collect();
    fn denied<T>(r: rag_core::Result<T>) -> bool {
        matches!(r, Err(Error::Denied { .. }))
    }
    assert!(denied(s.pipeline.ingest_as(&reader, acme_docs.clone())));
    assert_eq!(
        s.pipeline.admin_index().stats().documents,
        0,
        "a refused ingest wrote"
    );
    // One document of another tenant refuses the whole batch.
    assert!(denied(s.pipeline.ingest_as(&ingester, corpus())));
    assert_eq!(s.pipeline.admin_index().stats().documents, 0);
    assert_eq!(
        s.pipeline.ingest_as(&ingester, acme_docs).unwrap().upserted,
        3
    );
    let ann = Principal::new("acme", "ann").with_group("staff");
    let o = QueryOptions::default();
    assert!(
        s.pipeline
            .query_as(&reader, &ann, "Who approves expenses?", &o)
            .is_ok()
    );
    let globex_reader = Grants::new("globex", [ServiceRole::Reader]);
    assert!(denied(s.pipeline.query_as(
        &globex_reader,
        &ann,
        "Who approves expenses?",
        &o
    )));
    let id = DocId::new("expenses");
    assert!(denied(s.pipeline.delete_as(&reader, &id)));
    assert!(denied(s.pipeline.erase_as(&ingester, &id)));
    s.pipeline.delete_as(&ingester, &id).unwrap();
    s.pipeline
        .erase_as(&admin, &DocId::new("salaries"))
        .unwrap();
    assert_eq!(s.pipeline.admin_index().stats().documents, 1);
}

#[test]
fn a_repeated_question_skips_the_embedding_model_within_one_access_set() {
    for memo in [1024, 0] {
        let embedder = Arc::new(HashEmbedder::new(64).unwrap());
        let config = PipelineConfig {
            question_memo_entries: memo,
            ..PipelineConfig::default()
        };
        let pipeline = Pipeline::builder()
            .chunker(Arc::new(
                RecursiveChunker::new(32, 4, Arc::new(WordCounter)).unwrap(),
            ))
            .index(Arc::new(FlatIndex::new(embedder.fingerprint().clone())))
            .embedder(embedder.clone())
            .cache(Arc::new(MapCache::default()))
            .access(Arc::new(OpenResolver))
            .generator(Arc::new(EchoGenerator::default()))
            .config(config)
            .build()
            .unwrap();
        pipeline.ingest(corpus()).unwrap();
        let embedded = || embedder.texts_embedded();
        let ann = Principal::new("acme", "ann").with_group("staff");
        let bob = Principal::new("acme", "bob").with_group("hr");
        let ask = |p: &Principal, q: &str| pipeline.query(p, q, &QueryOptions::default()).unwrap();

        let before = embedded();
        let first = ask(&ann, "Who approves expenses?");
        assert_eq!(embedded(), before + 1);
        // The same text up to whitespace: the memo answers, then the answer cache.
        let again = ask(&ann, "  Who approves\n expenses?  ");
        let stages: Vec<&str> = again.timings.iter().map(|t| t.stage).collect();
        assert!(again.from_cache);
        assert_eq!(again.answer, first.answer);
        if memo > 0 {
            assert_eq!(
                embedded(),
                before + 1,
                "the model ran for a remembered question"
            );
            assert_eq!(stages[..3], ["access", "embed_memo", "cache_lookup"]);
        } else {
            assert_eq!(embedded(), before + 2);
            assert_eq!(stages[..3], ["access", "embed", "cache_lookup"]);
        }
        // Another access set does not share the memo (nor the cache).
        let n = embedded();
        let other = ask(&bob, "Who approves expenses?");
        assert_eq!(embedded(), n + 1);
        assert!(!other.from_cache);
        // Other words are another question.
        ask(&ann, "Who approves salaries?");
        assert_eq!(embedded(), n + 2);
    }
}
