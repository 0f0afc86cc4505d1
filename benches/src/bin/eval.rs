//! Retrieval quality on a test collection in the BEIR layout: nDCG@10, Recall@100
//! and MRR@10 of dense, lexical and hybrid search, with indexing time and queries/s.
//!
//! `cargo run --release -p rag-benches --bin eval -- --dataset DIR --json PATH
//!  [--mode dense|lexical|hybrid|all] [--split test] [--passage-tokens N]
//!  [--overlap N] [--rrf-k K] [--dense-weight W] [--lexical-weight W]
//!  [--max-queries N] [--embed-cache DIR] [--threads N] [--expansion-add N]`
//!
//! Documents are `title + " " + text`. With `--passage-tokens 0` each document is one
//! chunk, truncated by the embedder at 256 tokens; otherwise documents are split into
//! passages of at most N tokens and a document ranks where its best passage ranks.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use rag_benches::args::Args;
use rag_benches::beir;
use rag_benches::eval::{ModeResult, chunk_corpus, embed_cached, insert, run_mode};
use rag_core::{Embedder, EmbedderTokens, Fusion, RetrievalMode, VectorIndexRead};
use rag_index::{HnswIndex, IndexConfig};
use rag_infer::{EmbedderConfig, OnnxEmbedder, SessionOptions, assets};
use rag_pipeline::RecursiveChunker;

fn main() -> Result<()> {
    let args = Args::parse()?;
    let Some(dataset) = args.opt("dataset") else {
        bail!("--dataset DIR is required (a collection in the BEIR layout)");
    };
    let dataset = PathBuf::from(dataset);
    let modes: Vec<RetrievalMode> = match args.opt("mode").unwrap_or("all") {
        "all" => vec![
            RetrievalMode::Dense,
            RetrievalMode::Lexical,
            RetrievalMode::Hybrid,
        ],
        m => vec![m.parse()?],
    };
    let split = args.opt("split").unwrap_or("test");
    let passage_tokens: usize = args.get("passage-tokens", 0)?;
    let overlap: usize = args.get("overlap", 0)?;
    let threads: usize = args.get("threads", 2)?;
    let max_queries: usize = args.get("max-queries", usize::MAX)?;
    let fusion = Fusion {
        rrf_k: args.get("rrf-k", 60.0)?,
        dense_weight: args.get("dense-weight", 1.0)?,
        lexical_weight: args.get("lexical-weight", 1.0)?,
        ..Fusion::default()
    };
    fusion.validate()?;
    let cache = args
        .opt("embed-cache")
        .map(PathBuf::from)
        .unwrap_or_else(|| assets::cache_dir().join("eval-embeddings"));

    let mut collection = beir::load(&dataset, split)?;
    collection.queries.truncate(max_queries);
    eprintln!(
        "{}: {} documents, {} judged queries ({split})",
        collection.name,
        collection.corpus.len(),
        collection.queries.len()
    );

    rag_infer::load_runtime(&assets::runtime_library())?;
    let embedder: Arc<dyn Embedder> = Arc::new(OnnxEmbedder::new(EmbedderConfig {
        session: SessionOptions {
            intra_threads: threads,
            ..SessionOptions::default()
        },
        ..EmbedderConfig::pinned_minilm()
    })?);

    let started = Instant::now();
    let chunker = if passage_tokens == 0 {
        None
    } else {
        if passage_tokens > embedder.max_input_tokens() {
            bail!(
                "--passage-tokens {passage_tokens} is over the embedder's {} input tokens",
                embedder.max_input_tokens()
            );
        }
        Some(RecursiveChunker::new(
            passage_tokens,
            overlap,
            Arc::new(EmbedderTokens(embedder.clone())),
        )?)
    };
    let docs = chunk_corpus(&collection, chunker.as_ref())?;
    let chunk_seconds = started.elapsed().as_secs_f64();
    let n_docs = docs.len();
    let texts: Vec<&str> = docs
        .iter()
        .flat_map(|(_, cs)| cs.iter().map(|c| c.text.as_str()))
        .collect();
    let n_chunks = texts.len();
    eprintln!("{n_docs} documents in {n_chunks} chunks (chunked in {chunk_seconds:.1} s)");
    let t = Instant::now();
    let (embeddings, computed) = embed_cached(embedder.as_ref(), &texts, Some(&cache))?;
    let embed_seconds = t.elapsed().as_secs_f64();
    drop(texts);
    let index = HnswIndex::new(
        embedder.fingerprint().clone(),
        IndexConfig::builder()
            .expansion_add(args.get("expansion-add", IndexConfig::default().expansion_add)?)
            .build()?,
    )?;
    let insert_seconds = insert(&index, docs, embeddings)?;
    eprintln!(
        "embeddings {} in {embed_seconds:.1} s; inserted in {insert_seconds:.1} s",
        if computed {
            "computed"
        } else {
            "read from cache"
        }
    );

    // Enough chunks that ~100 distinct documents remain after aggregation.
    let per_doc = n_chunks as f64 / n_docs.max(1) as f64;
    let k_chunks = ((100.0 * per_doc).ceil() as usize + 50).min(index.config().max_k);
    let mut results: Vec<ModeResult> = Vec::new();
    for mode in modes {
        let r = run_mode(
            &collection,
            &index,
            Some(embedder.as_ref()),
            mode,
            fusion,
            k_chunks,
        )?;
        eprintln!(
            "{:>8}: nDCG@10 {:.4}  Recall@100 {:.4}  MRR@10 {:.4}  {:.1} q/s",
            r.mode, r.ndcg_10, r.recall_100, r.mrr_10, r.qps
        );
        results.push(r);
    }
    let report = serde_json::json!({
        "dataset": collection.name,
        "docs": n_docs,
        "chunks": n_chunks,
        "queries": collection.queries.len(),
        "passage_tokens": passage_tokens,
        "overlap_tokens": overlap,
        "k_chunks": k_chunks,
        "fusion": {"rrf_k": fusion.rrf_k, "dense_weight": fusion.dense_weight,
                   "lexical_weight": fusion.lexical_weight},
        "index_seconds": chunk_seconds + embed_seconds + insert_seconds,
        "chunk_seconds": chunk_seconds,
        "embed_seconds": embed_seconds,
        "embeddings_from_cache": !computed,
        "insert_seconds": insert_seconds,
        "embed_chunks_per_s": if computed { Some(n_chunks as f64 / embed_seconds) } else { None },
        "index_stats": {"documents": index.stats().documents, "chunks": index.stats().chunks},
        "results": results,
    });
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(path) = args.opt("json") {
        fs_err::write(path, &text)?;
    }
    println!("{text}");
    Ok(())
}
