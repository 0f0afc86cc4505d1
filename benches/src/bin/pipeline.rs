//! Pipeline report: query latency of the retrieval path (cache miss: access, embed,
//! cache lookup, access-filtered search, extractive answer) and of the cache-hit path
//! (question memo, lookup, provenance re-check; beside the same pipeline without the
//! memo, which embeds the question again), cache lookup p99, and the ingest throughput
//! of the whole run (every chunk, as the graph grows) beside the raw embedding rate,
//! sampled on the same texts at R evenly spaced index sizes in the same run.
//!
//! `cargo run --release -p rag-benches --bin pipeline -- --json PATH [--chunks N]
//!  [--queries Q] [--threads T] [--groups G] [--rounds R] [--sample N] [--upsert-batch N]
//!  [--lexical true|false] [--expansion-add N] [--askers A] [--audit-dir DIR]
//!  [--spinning true|false]`
//!
//! The price of the audit log: a second pipeline over the same index and models
//! writes every answer to a synced `rag_acl::AuditLog` (in `--audit-dir`, a fresh
//! temporary directory by default) before returning it. Each question is asked of
//! both pipelines in turn (retrieval path, then cache-hit path), and A concurrent
//! askers run against each in alternating rounds, so drift weighs on both alike.
//!
//! Text is synthetic (short sentences from a fixed vocabulary, one chunk per
//! document); models, index, cache and pipeline are the real ones. Each document is
//! readable by one of G groups, and the asking principal is in one: the filter lets
//! 1/G of the chunks through.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use rag_benches::args::Args;
use rag_benches::timing::{median, percentile};
use rag_cache::{CacheConfig, SemanticCache};
use rag_core::{
    Acl, DocId, Document, Embedder, EmbedderTokens, Generation, GenerationRequest, Generator,
    Metadata, Principal, TokenControl, VectorIndexRead,
};
use rag_index::{HnswIndex, IndexConfig};
use rag_infer::{EmbedderConfig, OnnxEmbedder, SessionOptions, assets};
use rag_pipeline::RecursiveChunker;
use rag_pipeline::{Pipeline, PipelineConfig, QueryOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const WORDS: &[&str] = &[
    "index", "query", "answer", "budget", "policy", "vector", "graph", "search", "access",
    "tenant", "group", "report", "model", "energy", "water", "health", "market", "school",
    "family", "story", "field", "paper", "price", "light", "river", "mountain", "planet", "garden",
    "harbor", "engine", "signal", "window", "bridge", "forest", "island", "winter", "summer",
    "doctor", "teacher", "farmer", "pilot", "camera", "rocket", "violin", "coffee", "bread",
    "cheese", "salmon", "orange", "silver", "copper", "marble", "canvas", "ladder",
];

fn sentence(rng: &mut StdRng, words: usize) -> String {
    let mut s: Vec<&str> = (0..words)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect();
    s[0] = "the";
    s.join(" ") + "."
}

/// Answers instantly with a citation marker, so answers get cached: the report
/// measures the SDK's paths, not a language model.
struct CiteFirst;

impl Generator for CiteFirst {
    fn name(&self) -> &str {
        "cite-first"
    }
    fn context_window(&self) -> usize {
        2048
    }
    fn count_tokens(&self, text: &str) -> rag_core::Result<usize> {
        Ok(text.split_whitespace().count())
    }
    fn generate(
        &self,
        _: &GenerationRequest,
        on_token: &mut dyn FnMut(&str) -> TokenControl,
    ) -> rag_core::Result<Generation> {
        on_token("See [1].");
        Ok(Generation {
            text: "See [1].".into(),
            finish: rag_core::FinishReason::EndOfText,
            prompt_tokens: 0,
            generated_tokens: 1,
            time_to_first_token_s: 0.0,
            tokens_per_s: 0.0,
        })
    }
}

fn main() -> Result<()> {
    let args = Args::parse()?;
    let chunks: usize = args.get("chunks", 100_000)?;
    let queries: usize = args.get("queries", 300)?;
    let threads: usize = args.get("threads", 2)?;
    let groups: usize = args.get("groups", 10)?;
    let rounds: usize = args.get("rounds", 10usize)?.clamp(1, chunks / 2);
    let sample: usize = args
        .get("sample", 1_000usize)?
        .min(chunks / (2 * rounds))
        .max(1);
    if chunks < 8 || groups == 0 {
        bail!("need --chunks >= 8 and --groups >= 1");
    }

    rag_infer::load_runtime(&assets::runtime_library())?;
    let embedder = Arc::new(OnnxEmbedder::new(EmbedderConfig {
        session: SessionOptions {
            intra_threads: threads,
            spinning: args.get("spinning", false)?,
            ..SessionOptions::default()
        },
        ..EmbedderConfig::pinned_minilm()
    })?);
    let index = Arc::new(HnswIndex::new(
        embedder.fingerprint().clone(),
        IndexConfig::builder()
            .lexical(args.get("lexical", true)?)
            .expansion_add(args.get("expansion-add", IndexConfig::default().expansion_add)?)
            .build()?,
    )?);
    // Every pipeline of the report shares the models and the index; each has its
    // own cache.
    let build = |cache: &Arc<SemanticCache>,
                 audit: Option<Arc<rag_acl::AuditLog>>,
                 config: PipelineConfig|
     -> Result<Pipeline> {
        let dyn_embedder: Arc<dyn Embedder> = embedder.clone();
        let mut b = Pipeline::builder()
            .chunker(Arc::new(RecursiveChunker::new(
                200,
                16,
                Arc::new(EmbedderTokens(dyn_embedder.clone())),
            )?))
            .embedder(dyn_embedder)
            .index(index.clone())
            .generator(Arc::new(CiteFirst))
            .cache(cache.clone())
            .access(Arc::new(rag_acl::Directory::new(
                rag_acl::Registration::TrustClaims,
            )))
            .config(config);
        if let Some(audit) = audit {
            b = b.audit(audit);
        }
        Ok(b.build()?)
    };
    let config = PipelineConfig {
        upsert_batch: args.get("upsert-batch", PipelineConfig::default().upsert_batch)?,
        ..PipelineConfig::default()
    };
    let cache = Arc::new(SemanticCache::new(CacheConfig::default())?);
    let pipeline = build(&cache, None, config.clone())?;
    // The same pipeline without the question memo, so that a repeated question
    // runs the model before the cache answers: the baseline of the memo.
    let memoless_cache = Arc::new(SemanticCache::new(CacheConfig::default())?);
    let memoless = build(
        &memoless_cache,
        None,
        PipelineConfig {
            question_memo_entries: 0,
            ..config.clone()
        },
    )?;

    let audit_dir = match args.opt("audit-dir") {
        Some(d) => {
            fs_err::create_dir_all(d)?;
            tempfile::tempdir_in(d)?
        }
        None => tempfile::tempdir()?,
    };
    let audit_log = Arc::new(rag_acl::AuditLog::open(audit_dir.path().join("audit.log"))?);
    let audited_cache = Arc::new(SemanticCache::new(CacheConfig::default())?);
    let audited = build(&audited_cache, Some(audit_log.clone()), config)?;

    let mut rng = StdRng::seed_from_u64(7);
    let docs: Vec<Document> = (0..chunks)
        .map(|i| {
            let words = rng.random_range(10..16);
            Document {
                tenant: "bench".into(),
                id: DocId::new(format!("doc-{i}")),
                version: 1,
                text: sentence(&mut rng, words),
                metadata: Metadata::default(),
                acl: Some(Acl::new("bench").allow_group(format!("g{}", i % groups))),
            }
        })
        .collect();

    // The whole corpus goes in through `Pipeline::ingest`, in windows of `window`
    // documents. At `rounds` evenly spaced points the next `sample` documents are
    // first embedded raw (same texts, same batch size, no chunking or index), then
    // ingested. The ingest rate is that of the whole run, graph growth included; the
    // raw rate is the mean of the samples, spread over the run so that the machine's
    // drift (this 2-core machine moved by 10% within one run) weighs on both alike.
    let window = 5_000usize;
    let mut checkpoints: Vec<usize> = (0..rounds).map(|i| i * chunks / rounds).collect();
    let (mut round_reports, mut raw_rates, mut paired) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ingest_seconds, mut embed_seconds) = (0.0f64, 0.0f64);
    let mut pos = 0;
    while pos < chunks {
        if checkpoints.first() == Some(&pos) {
            checkpoints.remove(0);
            let slice = &docs[pos..pos + sample];
            let texts: Vec<&str> = slice.iter().map(|d| d.text.as_str()).collect();
            let t = Instant::now();
            for batch in texts.chunks(PipelineConfig::default().embed_batch) {
                embedder.embed(batch)?;
            }
            let raw = sample as f64 / t.elapsed().as_secs_f64();
            let t = Instant::now();
            let r = pipeline.ingest(slice.to_vec())?;
            let secs = t.elapsed().as_secs_f64();
            ingest_seconds += secs;
            embed_seconds += r.embed_seconds;
            let ingest = r.chunks as f64 / secs;
            eprintln!("round at {pos} chunks: raw {raw:.0}/s, ingest {ingest:.0}/s");
            round_reports.push(serde_json::json!({
                "index_chunks": pos, "raw_embed_chunks_per_s": raw,
                "ingest_chunks_per_s": ingest, "ingest_over_raw": ingest / raw,
            }));
            raw_rates.push(raw);
            paired.push(ingest / raw);
            pos += sample;
            continue;
        }
        let end = (pos + window)
            .min(checkpoints.first().copied().unwrap_or(chunks))
            .min(chunks);
        let t = Instant::now();
        let r = pipeline.ingest(docs[pos..end].to_vec())?;
        ingest_seconds += t.elapsed().as_secs_f64();
        embed_seconds += r.embed_seconds;
        pos = end;
        eprint!("\r  ingested {pos}   ");
    }
    eprintln!();
    let stats = index.stats();
    if stats.chunks != chunks {
        bail!("index holds {} chunks, expected {chunks}", stats.chunks);
    }
    let ingest_rate = chunks as f64 / ingest_seconds.max(1e-9);
    let raw_rate = raw_rates.iter().sum::<f64>() / raw_rates.len().max(1) as f64;
    eprintln!(
        "ingested {chunks} chunks in {ingest_seconds:.0} s ({:.0}% of it embedding)",
        100.0 * embed_seconds / ingest_seconds.max(1e-9)
    );

    let principal = Principal::new("bench", "reader").with_group("g0");
    let questions: Vec<String> = (0..queries)
        .map(|_| {
            let words = rng.random_range(6..10);
            sentence(&mut rng, words)
        })
        .collect();
    // Warm-up, outside the measured runs, on questions of its own (a question asked
    // here would be remembered by the question memo).
    let warm_up: Vec<String> = (0..5).map(|_| sentence(&mut rng, 8)).collect();
    for q in &warm_up {
        pipeline.query(
            &principal,
            q,
            &QueryOptions {
                bypass_cache: true,
                ..QueryOptions::default()
            },
        )?;
    }
    cache.clear();
    audited_cache.clear();
    memoless_cache.clear();
    let timed = |p: &Pipeline, q: &str| -> Result<(f64, rag_pipeline::QueryAnswer)> {
        let t = Instant::now();
        let a = p.query(&principal, q, &QueryOptions::default())?;
        Ok((t.elapsed().as_secs_f64() * 1e3, a))
    };
    let (mut miss, mut miss_audited) = (Vec::new(), Vec::new());
    let mut strategy = String::new();
    for q in &questions {
        let (ms, a) = timed(&pipeline, q)?;
        let (ms_audited, b) = timed(&audited, q)?;
        let (_, c) = timed(&memoless, q)?;
        if a.from_cache || b.from_cache || c.from_cache {
            bail!("a first-time question was served from the cache");
        }
        miss.push(ms);
        miss_audited.push(ms_audited);
        strategy = a.strategy.map(|s| s.to_string()).unwrap_or_default();
    }
    let (mut hit, mut hit_audited, mut lookup) = (Vec::new(), Vec::new(), Vec::new());
    let mut hit_memoless = Vec::new();
    for q in &questions {
        let (ms, a) = timed(&pipeline, q)?;
        let (ms_audited, b) = timed(&audited, q)?;
        let (ms_memoless, c) = timed(&memoless, q)?;
        if !a.from_cache || !b.from_cache || !c.from_cache {
            bail!("a repeated question missed the cache");
        }
        if !a.timings.iter().any(|t| t.stage == "embed_memo") {
            bail!("a repeated question ran the embedding model");
        }
        hit.push(ms);
        hit_audited.push(ms_audited);
        hit_memoless.push(ms_memoless);
        for s in &a.timings {
            if s.stage == "cache_lookup" {
                lookup.push(s.duration.as_secs_f64() * 1e3);
            }
        }
    }
    let records = rag_acl::verify(audit_log.path())?.records.len();
    if records != 2 * questions.len() {
        bail!(
            "the audit log holds {records} records, expected {}",
            2 * questions.len()
        );
    }

    // A concurrent askers, each asking fresh questions (retrieval path; the answer
    // is cached but never asked again), against each pipeline in alternating rounds.
    let askers: usize = args.get("askers", 8)?;
    let per_asker = (queries / askers).max(4);
    let principal = &principal;
    let concurrent = |p: &Pipeline, round: u64| -> Result<f64> {
        let t = Instant::now();
        std::thread::scope(|s| -> Result<()> {
            let handles: Vec<_> = (0..askers)
                .map(|i| {
                    s.spawn(move || -> Result<()> {
                        let mut rng = StdRng::seed_from_u64(1_000 * round + i as u64);
                        for _ in 0..per_asker {
                            let q = sentence(&mut rng, 8);
                            p.query(principal, &q, &QueryOptions::default())?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow::anyhow!("an asker panicked"))??;
            }
            Ok(())
        })?;
        Ok((askers * per_asker) as f64 / t.elapsed().as_secs_f64())
    };
    let (mut plain_qps, mut audited_qps) = (Vec::new(), Vec::new());
    for round in 0..3u64 {
        plain_qps.push(concurrent(&pipeline, 2 * round)?);
        audited_qps.push(concurrent(&audited, 2 * round + 1)?);
    }
    let (plain_qps, audited_qps) = (median(plain_qps), median(audited_qps));
    eprintln!(
        "{askers} askers: {plain_qps:.0} q/s unaudited, {audited_qps:.0} q/s audited ({:.2}x)",
        audited_qps / plain_qps
    );
    let report = serde_json::json!({
        "chunks": chunks,
        "retrieval_p50_ms": percentile(miss.clone(), 50.0),
        "retrieval_p99_ms": percentile(miss, 99.0),
        "cache_hit_p50_ms": percentile(hit.clone(), 50.0),
        "cache_hit_p99_ms": percentile(hit, 99.0),
        "cache_hit_without_memo_p50_ms": percentile(hit_memoless.clone(), 50.0),
        "cache_hit_without_memo_p99_ms": percentile(hit_memoless, 99.0),
        "audited_retrieval_p50_ms": percentile(miss_audited.clone(), 50.0),
        "audited_retrieval_p99_ms": percentile(miss_audited, 99.0),
        "audited_cache_hit_p50_ms": percentile(hit_audited.clone(), 50.0),
        "audited_cache_hit_p99_ms": percentile(hit_audited, 99.0),
        "askers": askers,
        "concurrent_qps": plain_qps,
        "audited_concurrent_qps": audited_qps,
        "audited_over_unaudited_concurrent": audited_qps / plain_qps,
        "cache_lookup_p50_ms": percentile(lookup.clone(), 50.0),
        "cache_lookup_p99_ms": percentile(lookup, 99.0),
        "ingest_chunks_per_s": ingest_rate,
        "raw_embed_chunks_per_s": raw_rate,
        "ingest_over_raw": ingest_rate / raw_rate,
        "ingest_seconds": ingest_seconds,
        "ingest_embed_seconds": embed_seconds,
        "ingest_over_raw_paired_median": median(paired),
        "rounds": round_reports,
        "queries": queries,
        "selectivity": 1.0 / groups as f64,
        "retrieval_strategy": strategy,
        "threads": threads,
        "cache": cache.stats().entries,
    });
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(path) = args.opt("json") {
        fs_err::write(path, &text)?;
    }
    println!("{text}");
    Ok(())
}
