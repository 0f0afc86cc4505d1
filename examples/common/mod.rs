//! What the quickstart and the CLI share: loading the real models, reading a
//! directory of text files into documents, and building the pipeline.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rag_acl::{Directory, Registration};
use rag_cache::{CacheConfig, SemanticCache};
use rag_core::{Acl, Citation, DocId, Document, Embedder, EmbedderTokens, Metadata, VectorIndex};
use rag_index::{DurableIndex, IndexConfig, RecoveryReport, StoreOptions};
use rag_infer::{EmbedderConfig, LocalGenerator, OnnxEmbedder, OnnxGenerator, assets};
use rag_pipeline::content_hash;
use rag_pipeline::{Abstention, Pipeline, PipelineConfig};
use rag_pipeline::{MarkdownChunker, RecursiveChunker};

/// Chunk budget in MiniLM tokens: under its 254, leaving room for heading paths.
pub const CHUNK_TOKENS: usize = 200;
/// Tokens repeated between neighbouring chunks.
pub const OVERLAP_TOKENS: usize = 24;
/// File extensions read as text.
const EXTENSIONS: [&str; 4] = ["md", "txt", "rst", "markdown"];

/// The pinned embedder and the local generator (`$RAG_SDK_GENERATOR`, else
/// `LocalGenerator::default()`), after loading ONNX Runtime.
pub fn models() -> Result<(Arc<OnnxEmbedder>, Arc<OnnxGenerator>)> {
    rag_infer::load_runtime(&assets::runtime_library())
        .context("ONNX Runtime missing: run `python3 tools/assets.py fetch` first")?;
    let embedder = Arc::new(OnnxEmbedder::new(EmbedderConfig::pinned_minilm())?);
    let generator = Arc::new(OnnxGenerator::new(LocalGenerator::from_env()?.config())?);
    Ok((embedder, generator))
}

/// A pipeline over `index` with the markdown chunker, the semantic cache and an
/// open directory (principals are taken as authenticated).
pub fn pipeline(
    index: Arc<dyn VectorIndex>,
    embedder: Arc<OnnxEmbedder>,
    generator: Option<Arc<OnnxGenerator>>,
) -> Result<Pipeline> {
    let embedder: Arc<dyn Embedder> = embedder;
    let chunker = MarkdownChunker::new(RecursiveChunker::new(
        CHUNK_TOKENS,
        OVERLAP_TOKENS,
        Arc::new(EmbedderTokens(embedder.clone())),
    )?);
    let mut b = Pipeline::builder()
        .chunker(Arc::new(chunker))
        .embedder(embedder)
        .index(index)
        .cache(Arc::new(SemanticCache::new(CacheConfig::default())?))
        .access(Arc::new(Directory::new(Registration::TrustClaims)))
        .config(PipelineConfig {
            abstention: Abstention {
                dense: Some(EmbedderConfig::MINILM_DENSE_FLOOR),
                ..Abstention::NEVER
            },
            context_tokens: LocalGenerator::from_env()?.passage_budget(),
            ..PipelineConfig::default()
        });
    if let Some(g) = generator {
        b = b.generator(g);
    }
    Ok(b.build()?)
}

/// A file left out, and why.
pub type Rejected = (PathBuf, String);

/// Opens (or creates) the durable store in `dir` for the embedder's model, and
/// says what recovery found.
pub fn open_store(
    dir: &Path,
    embedder: &dyn Embedder,
) -> Result<(Arc<DurableIndex>, RecoveryReport)> {
    let (store, report) = DurableIndex::open(
        dir,
        embedder.fingerprint().clone(),
        IndexConfig::default(),
        StoreOptions::default(),
    )
    .with_context(|| format!("opening the store in {}", dir.display()))?;
    Ok((Arc::new(store), report))
}

/// One line about a recovery.
pub fn describe_recovery(r: &RecoveryReport) -> String {
    let from = match r.checkpoint {
        Some(c) => format!(
            "checkpoint at write {c} plus {} log records",
            r.records_replayed
        ),
        None => format!("{} log records (no checkpoint yet)", r.records_replayed),
    };
    let cut = if r.bytes_cut > 0 {
        format!("; cut a torn log tail of {} bytes", r.bytes_cut)
    } else {
        String::new()
    };
    format!(
        "store at write {}, recovered from {from} in {:.2} s{cut}",
        r.last_sequence, r.seconds
    )
}

/// Gives each document the version it should be written at: the stored version if
/// its content is unchanged (so ingestion skips it), the next one if it changed,
/// 1 if it is new. Versions only move forward.
pub fn assign_versions(index: &dyn VectorIndex, docs: &mut [Document]) -> Result<()> {
    for d in docs {
        d.version = match index.document(&d.key())? {
            None => 1,
            Some(stored) => {
                d.version = stored.version;
                if stored.content_hash == Some(content_hash(d)) {
                    stored.version
                } else {
                    stored.version + 1
                }
            }
        };
    }
    Ok(())
}

/// Text files under `dir` (recursively, sorted), as documents of `acl`'s tenant
/// with `acl`, at version 1 (see [`assign_versions`]). The id is the path relative
/// to `dir`. Files that are not UTF-8 are returned apart with the typed error, and
/// nothing else is lost.
pub fn read_dir(dir: &Path, acl: &Acl) -> Result<(Vec<Document>, Vec<Rejected>)> {
    let mut files = Vec::new();
    collect(dir, &mut files)?;
    files.sort();
    let mut docs = Vec::new();
    let mut rejected = Vec::new();
    for path in files {
        let bytes = fs_err::read(&path)?;
        let id = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        match Document::from_bytes(
            acl.tenant.clone(),
            DocId::new(id.as_str()),
            1,
            bytes,
            Some(acl.clone()),
        ) {
            Ok(mut d) if !d.text.trim().is_empty() => {
                d.metadata = Metadata::default().with_source(path.display().to_string());
                docs.push(d);
            }
            Ok(_) => rejected.push((path, "empty file".to_owned())),
            Err(e) => rejected.push((path, e.to_string())),
        }
    }
    Ok((docs, rejected))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs_err::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            collect(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// `doc_id bytes a..b` for a citation.
pub fn cite(c: &Citation) -> String {
    format!(
        "{} bytes {}..{} (v{})",
        c.doc_id, c.span.start, c.span.end, c.doc_version
    )
}

/// Prints an answer's citations, numbered, or, for an answer made from passages
/// that cites none of them, which passages it was given and why none is cited.
pub fn print_citations(answer: &rag_core::Answer) {
    for (i, c) in answer.citations.iter().enumerate() {
        println!("  [{}] {}", i + 1, cite(c));
    }
    if answer.citations.is_empty() && !answer.provenance.is_empty() {
        let given: Vec<String> = answer.provenance.iter().map(cite).collect();
        println!(
            "  (cites nothing: no passage holds most of this answer's own words; it was given {})",
            given.join(", ")
        );
    }
}

/// A one-line progress bar on stderr.
pub fn progress(done: usize, total: usize, chunks: usize, seconds: f64) {
    let width = 30;
    let filled = done * width / total.max(1);
    eprint!(
        "\r[{}{}] {done}/{total} files, {chunks} chunks, {:.1} s",
        "#".repeat(filled),
        " ".repeat(width - filled),
        seconds
    );
    if done == total {
        eprintln!();
    }
}
