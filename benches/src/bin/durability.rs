//! Durability report: what the write-ahead log costs and what it buys, side by
//! side in one run.
//!
//! `cargo run --release -p rag-benches --bin durability -- --json PATH [--writes N]
//!  [--writers W] [--chunks N] [--log-records N] [--ingest-docs N] [--embed-chunks N]
//!  [--kills K] [--dir DIR]`
//!
//! * the machine's own `fdatasync` p50 (a 2 KiB append then `fdatasync`, as a log
//!   record of one 384-d chunk);
//! * one writer upserting precomputed one-chunk documents with `Fsync`, `Os` and in
//!   memory (no log): per-write p50/p99 and writes/s;
//! * W concurrent writers with `Fsync` (group commit);
//! * pipeline ingest of real text (SciFact abstracts, else this repository's docs)
//!   with `Fsync` against in memory, interleaved rounds;
//! * recovery of N chunks (a checkpoint plus `--log-records` log records) against
//!   re-embedding them, the embedding rate measured in the same run on
//!   `--embed-chunks` real chunks and extrapolated;
//! * the longest write during a checkpoint of the N-chunk store, beside the longest
//!   outside it;
//! * the crash test with K SIGKILLs (`rag_benches::crash`).
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rag_benches::args::Args;
use rag_benches::crash;
use rag_benches::timing::{median, percentile};
use rag_core::{
    Acl, Chunk, DocId, DocKey, Document, DocumentUpdate, EmbeddedChunk, Embedder, EmbedderTokens,
    Embedding, Metadata, ModelFingerprint, VectorIndex, VectorIndexRead,
};
use rag_index::{Durability, DurableIndex, HnswIndex, IndexConfig, StoreOptions};
use rag_infer::{EmbedderConfig, OnnxEmbedder, assets};
use rag_pipeline::Pipeline;
use rag_pipeline::RecursiveChunker;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

const DIMS: usize = 384;

#[derive(Debug, Serialize)]
struct Report {
    fdatasync_p50_ms: f64,
    fsync_write_p50_ms: f64,
    fsync_write_p99_ms: f64,
    os_write_p50_ms: f64,
    memory_write_p50_ms: f64,
    writes_per_s_fsync: f64,
    writes_per_s_os: f64,
    writes_per_s_memory: f64,
    writes_per_s_fsync_8_writers: f64,
    writers: usize,
    ingest_fsync_over_memory: f64,
    ingest_chunks: usize,
    ingest_memory_chunks_per_s: f64,
    ingest_fsync_chunks_per_s: f64,
    recovery_chunks: usize,
    recovery_log_records: u64,
    recovery_100k_s: f64,
    embed_chunks_per_s: f64,
    reembed_100k_s: f64,
    recovery_speedup: f64,
    checkpoint_seconds: f64,
    checkpoint_writer_stall_max_ms: f64,
    writer_max_ms_outside_checkpoint: f64,
    crash_kills: usize,
    crash_violations: usize,
    crash_acknowledged: u64,
    crash_in_flight_present: usize,
    crash_seconds: f64,
}

fn fingerprint() -> ModelFingerprint {
    ModelFingerprint::new("durability-synthetic", DIMS, "bench").unwrap_or_else(|_| unreachable!())
}

fn unit(rng: &mut StdRng) -> Vec<f32> {
    let v: Vec<f32> = (0..DIMS).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

/// One-chunk documents `range`, with precomputed vectors.
fn docs(rng: &mut StdRng, range: std::ops::Range<usize>) -> Vec<DocumentUpdate> {
    range
        .map(|i| {
            let key = DocKey::new("bench", format!("d{i}"));
            let text = format!(
                "document {i}: a chunk of about a hundred bytes of text for the log record"
            );
            DocumentUpdate {
                tenant: key.tenant.clone(),
                doc_id: key.doc_id.clone(),
                version: 1,
                acl: Some(Acl::new("bench").allow_group(format!("g{}", i % 10))),
                metadata: Metadata::default(),
                content_hash: None,
                chunks: vec![EmbeddedChunk {
                    chunk: Chunk::whole(&key, text),
                    embedding: Embedding::new(fingerprint().id(), unit(rng))
                        .unwrap_or_else(|_| unreachable!()),
                }],
            }
        })
        .collect()
}

fn store(dir: &Path, durability: Durability) -> Result<DurableIndex> {
    store_of(dir, durability, fingerprint())
}

fn store_of(dir: &Path, durability: Durability, model: ModelFingerprint) -> Result<DurableIndex> {
    Ok(DurableIndex::open(
        dir,
        model,
        IndexConfig::default(),
        StoreOptions {
            durability,
            checkpoint_bytes: u64::MAX,
            ..StoreOptions::default()
        },
    )?
    .0)
}

fn fdatasync_p50(dir: &Path, n: usize) -> Result<f64> {
    let path = dir.join("fdatasync-probe");
    let mut f = fs_err::File::create(&path)?;
    let block = vec![7u8; 2048];
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    fs_err::remove_file(&path)?;
    Ok(median(times))
}

/// Per-write latencies (ms) and writes/s of one writer.
fn one_writer(index: &dyn VectorIndex, updates: Vec<DocumentUpdate>) -> Result<(Vec<f64>, f64)> {
    let start = Instant::now();
    let mut times = Vec::with_capacity(updates.len());
    let n = updates.len();
    for u in updates {
        let t = Instant::now();
        index.upsert(vec![u])?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((times, n as f64 / start.elapsed().as_secs_f64()))
}

/// Documents of real text: SciFact abstracts when the collection is there, else
/// this repository's markdown.
fn real_documents(limit: usize) -> Result<Vec<Document>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let scifact = root.join("../shared/datasets/scifact");
    let texts: Vec<(String, String)> = if scifact.join("corpus.jsonl").is_file() {
        let c = rag_benches::beir::load(&scifact, "test")?;
        c.corpus
            .iter()
            .take(limit)
            .map(|d| (d.id.clone(), d.full_text()))
            .collect()
    } else {
        let mut out = Vec::new();
        for e in fs_err::read_dir(root.join("docs"))? {
            let p = e?.path();
            out.push((p.display().to_string(), fs_err::read_to_string(&p)?));
        }
        out.push((
            "README.md".into(),
            fs_err::read_to_string(root.join("README.md"))?,
        ));
        out
    };
    Ok(texts
        .into_iter()
        .map(|(id, text)| Document {
            tenant: "bench".into(),
            id: DocId::new(id),
            version: 1,
            text,
            metadata: Metadata::default(),
            acl: Some(Acl::new("bench").allow_group("readers")),
        })
        .collect())
}

fn pipeline(embedder: Arc<dyn Embedder>, index: Arc<dyn VectorIndex>) -> Result<Pipeline> {
    Ok(Pipeline::builder()
        .chunker(Arc::new(RecursiveChunker::new(
            200,
            16,
            Arc::new(EmbedderTokens(embedder.clone())),
        )?))
        .embedder(embedder)
        .index(index)
        .access(Arc::new(rag_acl::Directory::new(
            rag_acl::Registration::TrustClaims,
        )))
        .build()?)
}

fn main() -> Result<()> {
    if std::env::var_os(crash::ENV_DIR).is_some() {
        return crash::child();
    }
    let args = Args::parse()?;
    let json = PathBuf::from(args.opt("json").context("--json PATH is required")?);
    let writes: usize = args.get("writes", 400)?;
    let writers: usize = args.get("writers", 8)?;
    let chunks: usize = args.get("chunks", 100_000)?;
    let log_records: usize = args.get("log-records", 10_000)?.min(chunks);
    let ingest_docs: usize = args.get("ingest-docs", 300)?;
    let embed_chunks: usize = args.get("embed-chunks", 2_000)?;
    let kills: usize = args.get("kills", 300)?;
    let scratch = tempfile::tempdir_in(args.opt("dir").unwrap_or("."))?;
    let root = scratch.path();
    let mut rng = StdRng::seed_from_u64(11);

    println!("fdatasync probe");
    let fdatasync_p50_ms = fdatasync_p50(root, 200)?;

    println!("one writer, {writes} writes per mode");
    let batch = docs(&mut rng, 0..writes);
    let memory = HnswIndex::new(fingerprint(), IndexConfig::default())?;
    let (mem_t, writes_per_s_memory) = one_writer(&memory, batch.clone())?;
    let os = store(&root.join("os"), Durability::Os)?;
    let (os_t, writes_per_s_os) = one_writer(&os, batch.clone())?;
    let fsync = store(&root.join("fsync"), Durability::Fsync)?;
    let (fs_t, writes_per_s_fsync) = one_writer(&fsync, batch)?;
    drop((memory, os, fsync));

    println!("{writers} writers with Fsync");
    let group = store(&root.join("group"), Durability::Fsync)?;
    let per = writes.max(writers) / writers * 2;
    let sets: Vec<Vec<DocumentUpdate>> = (0..writers)
        .map(|w| docs(&mut rng, 100_000 + w * per..100_000 + (w + 1) * per))
        .collect();
    let start = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let hs: Vec<_> = sets
            .into_iter()
            .map(|set| {
                let group = &group;
                s.spawn(move || -> Result<()> {
                    for u in set {
                        group.upsert(vec![u])?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in hs {
            h.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
        }
        Ok(())
    })?;
    let writes_per_s_fsync_8_writers = (per * writers) as f64 / start.elapsed().as_secs_f64();
    drop(group);

    println!("pipeline ingest of real text, Fsync against memory");
    rag_infer::load_runtime(&assets::runtime_library())?;
    let embedder: Arc<dyn Embedder> = Arc::new(OnnxEmbedder::new(EmbedderConfig::pinned_minilm())?);
    let texts = real_documents(ingest_docs)?;
    let (mut mem_rates, mut fs_rates, mut ingest_chunks) = (Vec::new(), Vec::new(), 0);
    for round in 0..2 {
        for durable in [false, true] {
            let index: Arc<dyn VectorIndex> = if durable {
                Arc::new(store_of(
                    &root.join(format!("ingest-{round}")),
                    Durability::Fsync,
                    embedder.fingerprint().clone(),
                )?)
            } else {
                Arc::new(HnswIndex::new(
                    embedder.fingerprint().clone(),
                    IndexConfig::default(),
                )?)
            };
            let p = pipeline(embedder.clone(), index)?;
            let t = Instant::now();
            let r = p.ingest(texts.clone())?;
            let rate = r.chunks as f64 / t.elapsed().as_secs_f64();
            ingest_chunks = r.chunks;
            if durable {
                fs_rates.push(rate);
            } else {
                mem_rates.push(rate);
            }
        }
    }
    let ingest_memory_chunks_per_s = median(mem_rates);
    let ingest_fsync_chunks_per_s = median(fs_rates);

    println!("raw embedding rate on {embed_chunks} real chunks");
    let chunker = RecursiveChunker::new(200, 16, Arc::new(EmbedderTokens(embedder.clone())))?;
    let mut passages: Vec<String> = Vec::new();
    for d in real_documents(usize::MAX)? {
        for c in rag_core::Chunker::chunk(&chunker, &d)? {
            passages.push(c.text);
        }
        if passages.len() >= embed_chunks {
            break;
        }
    }
    while passages.len() < embed_chunks {
        let again = passages.clone();
        passages.extend(again);
    }
    passages.truncate(embed_chunks);
    let t = Instant::now();
    for b in passages.chunks(32) {
        let refs: Vec<&str> = b.iter().map(String::as_str).collect();
        embedder.embed(&refs)?;
    }
    let embed_chunks_per_s = embed_chunks as f64 / t.elapsed().as_secs_f64();
    let reembed_100k_s = chunks as f64 / embed_chunks_per_s;

    println!("recovery of {chunks} chunks ({log_records} in the log)");
    let rdir = root.join("recovery");
    {
        let s = store(&rdir, Durability::Os)?;
        let base = chunks - log_records;
        let mut i = 0;
        while i < base {
            let n = 1000.min(base - i);
            s.upsert(docs(&mut rng, i..i + n))?;
            i += n;
        }
        s.checkpoint()?;
        for u in docs(&mut rng, base..chunks) {
            s.upsert(vec![u])?;
        }
    }
    let t = Instant::now();
    let (s, recovery) = DurableIndex::open(
        &rdir,
        fingerprint(),
        IndexConfig::default(),
        StoreOptions::default(),
    )?;
    let recovery_100k_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        s.stats().chunks == chunks,
        "recovered {} chunks",
        s.stats().chunks
    );

    println!("writer stall during a checkpoint of {chunks} chunks");
    let stop = AtomicBool::new(false);
    let window = std::sync::Mutex::new((Instant::now(), Instant::now()));
    let extra = docs(&mut rng, 500_000..520_000);
    let (checkpoint_seconds, samples) =
        std::thread::scope(|sc| -> Result<(f64, Vec<(Instant, f64)>)> {
            let writer = sc.spawn(|| -> Result<Vec<(Instant, f64)>> {
                let mut samples = Vec::new();
                for u in extra {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let t = Instant::now();
                    s.upsert(vec![u])?;
                    samples.push((t, t.elapsed().as_secs_f64() * 1e3));
                }
                Ok(samples)
            });
            std::thread::sleep(Duration::from_millis(500));
            let t0 = Instant::now();
            let c = s.checkpoint()?;
            let t1 = Instant::now();
            if let Ok(mut w) = window.lock() {
                *w = (t0, t1);
            }
            std::thread::sleep(Duration::from_millis(500));
            stop.store(true, Ordering::Relaxed);
            let samples = writer
                .join()
                .map_err(|_| anyhow::anyhow!("writer panicked"))??;
            Ok((c.seconds, samples))
        })?;
    let (t0, t1) = *window.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let overlaps = |start: Instant, ms: f64| {
        let end = start + Duration::from_secs_f64(ms / 1e3);
        start < t1 && end > t0
    };
    let checkpoint_writer_stall_max_ms = samples
        .iter()
        .filter(|(st, ms)| overlaps(*st, *ms))
        .map(|(_, ms)| *ms)
        .fold(0.0, f64::max);
    let writer_max_ms_outside_checkpoint = samples
        .iter()
        .filter(|(st, ms)| !overlaps(*st, *ms))
        .map(|(_, ms)| *ms)
        .fold(0.0, f64::max);
    drop(s);

    println!("crash test, {kills} kills");
    let exe = std::env::current_exe()?;
    let cdir = root.join("crash");
    let c = crash::run(&cdir, kills, 20261201, 400, || {
        std::process::Command::new(&exe)
    })?;

    let report = Report {
        fdatasync_p50_ms,
        fsync_write_p50_ms: median(fs_t.clone()),
        fsync_write_p99_ms: percentile(fs_t, 99.0),
        os_write_p50_ms: median(os_t),
        memory_write_p50_ms: median(mem_t),
        writes_per_s_fsync,
        writes_per_s_os,
        writes_per_s_memory,
        writes_per_s_fsync_8_writers,
        writers,
        ingest_fsync_over_memory: ingest_fsync_chunks_per_s / ingest_memory_chunks_per_s,
        ingest_chunks,
        ingest_memory_chunks_per_s,
        ingest_fsync_chunks_per_s,
        recovery_chunks: chunks,
        recovery_log_records: recovery.records_replayed,
        recovery_100k_s,
        embed_chunks_per_s,
        reembed_100k_s,
        recovery_speedup: reembed_100k_s / recovery_100k_s,
        checkpoint_seconds,
        checkpoint_writer_stall_max_ms,
        writer_max_ms_outside_checkpoint,
        crash_kills: c.kills,
        crash_violations: c.violations,
        crash_acknowledged: c.acknowledged,
        crash_in_flight_present: c.in_flight_present,
        crash_seconds: c.seconds,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    for f in &c.failures {
        println!("crash violation: {f}");
    }
    fs_err::write(&json, serde_json::to_vec_pretty(&report)?)?;
    Ok(())
}
