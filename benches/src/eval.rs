//! Retrieval evaluation through the SDK's public API: index a BEIR collection
//! (optionally split into passages), run every judged query in a mode, aggregate
//! chunk hits to documents (a document ranks where its best chunk ranks), and score
//! the rankings.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use rag_core::{
    AccessFilter, Acl, Chunk, ChunkId, Chunker, DocId, DocKey, Document, DocumentUpdate,
    EmbeddedChunk, Embedder, Embedding, Fusion, Metadata, Principal, RetrievalMode, SearchRequest,
    Span, VectorIndex,
};
use rag_pipeline::RecursiveChunker;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::beir::Collection;
use crate::metrics::{mrr_at, ndcg_at, recall_at};

/// Documents per upsert.
const UPSERT_BATCH: usize = 512;
/// Texts per embedding call (and per progress line).
const EMBED_BATCH: usize = 256;

/// The one principal the evaluation searches as; every document allows its group.
/// The tenant the collection is indexed under.
pub const TENANT: &str = "eval";

pub fn reader() -> (Acl, AccessFilter) {
    let acl = Acl::new(TENANT).allow_group("readers");
    let filter =
        AccessFilter::for_principal(&Principal::new(TENANT, "evaluator").with_group("readers"));
    (acl, filter)
}

/// Chunks of every document: whole documents when `chunker` is `None` (the
/// embedder then truncates long ones), else the chunker's passages.
pub fn chunk_corpus(
    collection: &Collection,
    chunker: Option<&RecursiveChunker>,
) -> Result<Vec<(DocId, Vec<Chunk>)>> {
    let mut out = Vec::with_capacity(collection.corpus.len());
    for d in &collection.corpus {
        let text = d.full_text();
        if text.trim().is_empty() {
            continue;
        }
        let id = DocId::new(d.id.as_str());
        let key = DocKey::new(TENANT, id.clone());
        let chunks = match chunker {
            None => vec![Chunk {
                id: ChunkId::derive(&key, 0),
                ordinal: 0,
                span: Span::new(0, text.len()),
                text,
                context: None,
            }],
            Some(c) => c.chunk(&Document {
                tenant: key.tenant.clone(),
                id: id.clone(),
                version: 1,
                text,
                metadata: Metadata::default(),
                acl: None,
            })?,
        };
        if !chunks.is_empty() {
            out.push((id, chunks));
        }
    }
    Ok(out)
}

/// Embeddings of `texts`, read from `cache` when a file for exactly this model and
/// these texts is there, else computed (with progress on stderr) and written to it.
/// Returns whether they were computed.
pub fn embed_cached(
    embedder: &dyn Embedder,
    texts: &[&str],
    cache: Option<&Path>,
) -> Result<(Vec<Embedding>, bool)> {
    let fp = embedder.fingerprint();
    let mut h = Sha256::new();
    h.update(fp.name().as_bytes());
    h.update(fp.checksum().as_bytes());
    for t in texts {
        h.update((t.len() as u64).to_le_bytes());
        h.update(t.as_bytes());
    }
    let key = hex::encode(&h.finalize()[..12]);
    let dims = fp.dims();
    let file = cache.map(|c| c.join(format!("{key}.f32")));
    if let Some(f) = &file
        && let Ok(bytes) = fs_err::read(f)
        && bytes.len() == texts.len() * dims * 4
    {
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let out = values
            .chunks_exact(dims)
            .map(|v| Embedding::new(fp.id(), v.to_vec()))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok((out, false));
    }
    let start = Instant::now();
    let mut out = Vec::with_capacity(texts.len());
    for (i, batch) in texts.chunks(EMBED_BATCH).enumerate() {
        out.extend(embedder.embed(batch)?);
        let done = (i * EMBED_BATCH + batch.len()) as f64;
        eprint!(
            "\r  embedded {done}/{} ({:.1}/s)   ",
            texts.len(),
            done / start.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().flush();
    }
    eprintln!();
    if let Some(f) = &file {
        if let Some(parent) = f.parent() {
            fs_err::create_dir_all(parent)?;
        }
        let mut bytes = Vec::with_capacity(texts.len() * dims * 4);
        for e in &out {
            for x in e.values() {
                bytes.extend_from_slice(&x.to_le_bytes());
            }
        }
        let tmp = f.with_extension("tmp");
        fs_err::write(&tmp, bytes)?;
        fs_err::rename(&tmp, f)?;
    }
    Ok((out, true))
}

/// Upserts the chunked, embedded corpus; returns the seconds it took.
pub fn insert(
    index: &dyn VectorIndex,
    docs: Vec<(DocId, Vec<Chunk>)>,
    embeddings: Vec<Embedding>,
) -> Result<f64> {
    let (acl, _) = reader();
    let start = Instant::now();
    let mut embeddings = embeddings.into_iter();
    let mut batch = Vec::with_capacity(UPSERT_BATCH);
    for (doc_id, chunks) in docs {
        let chunks = chunks
            .into_iter()
            .map(|chunk| {
                let embedding = embeddings.next().context("fewer embeddings than chunks")?;
                Ok(EmbeddedChunk { chunk, embedding })
            })
            .collect::<Result<Vec<_>>>()?;
        batch.push(DocumentUpdate {
            tenant: acl.tenant.clone(),
            doc_id,
            version: 1,
            acl: Some(acl.clone()),
            metadata: Metadata::default(),
            content_hash: None,
            chunks,
        });
        if batch.len() == UPSERT_BATCH {
            index.upsert(std::mem::take(&mut batch))?;
        }
    }
    if !batch.is_empty() {
        index.upsert(batch)?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Scores of one mode over the judged queries.
#[derive(Debug, Clone, Serialize)]
pub struct ModeResult {
    pub mode: &'static str,
    #[serde(rename = "ndcg@10")]
    pub ndcg_10: f64,
    #[serde(rename = "recall@100")]
    pub recall_100: f64,
    #[serde(rename = "mrr@10")]
    pub mrr_10: f64,
    /// Queries per second, embedding the query included, on one thread.
    pub qps: f64,
}

/// Runs every judged query in `mode` (retrieving `k_chunks` chunks each, and each
/// hybrid leg that many candidates) and averages the metrics.
pub fn run_mode(
    collection: &Collection,
    index: &dyn VectorIndex,
    embedder: Option<&dyn Embedder>,
    mode: RetrievalMode,
    fusion: Fusion,
    k_chunks: usize,
) -> Result<ModeResult> {
    let (_, filter) = reader();
    let (mut ndcg, mut recall, mut mrr) = (0.0, 0.0, 0.0);
    let mut seconds = 0.0;
    for (qid, text) in &collection.queries {
        let start = Instant::now();
        let embedding = match (mode.needs_embedding(), embedder) {
            (true, Some(e)) => Some(e.embed(&[text.as_str()])?.remove(0)),
            (true, None) => anyhow::bail!("{} search needs an embedder", mode.as_str()),
            (false, _) => None,
        };
        let request = SearchRequest {
            mode,
            embedding: embedding.as_ref(),
            text: Some(text),
            k: k_chunks,
            fusion: Fusion {
                candidates: k_chunks,
                ..fusion
            },
        };
        let result = index.retrieve(&request, &filter)?;
        seconds += start.elapsed().as_secs_f64();
        let mut seen = HashSet::new();
        let ranking: Vec<String> = result
            .hits
            .iter()
            .filter(|h| seen.insert(h.doc_id.clone()))
            .map(|h| h.doc_id.as_str().to_owned())
            .collect();
        let judged = &collection.qrels[qid];
        ndcg += ndcg_at(&ranking, judged, 10);
        recall += recall_at(&ranking, judged, 100);
        mrr += mrr_at(&ranking, judged, 10);
    }
    let n = collection.queries.len().max(1) as f64;
    Ok(ModeResult {
        mode: mode.as_str(),
        ndcg_10: ndcg / n,
        recall_100: recall / n,
        mrr_10: mrr / n,
        qps: collection.queries.len() as f64 / seconds.max(1e-9),
    })
}
