//! Access-filtered retrieval and answering over a real corpus with real models.
//!
//! Ingests BEIR SciFact (from `../shared/datasets/scifact`, or a directory given as the
//! first argument; without a corpus it says so and stops) with
//! per-document ACLs, embeds it with all-MiniLM-L6-v2 (ONNX Runtime), resolves four
//! principals through a directory with nested groups and role grants, retrieves
//! inside each one's access filter, answers with SmolLM2-135M-Instruct citing the
//! retrieved chunks, audits every call in a hash-chained log, and snapshots and
//! restores the index.
//!
//! ```sh
//! python3 tools/assets.py fetch     # runtime and models, pinned by sha256
//! cargo run --release -p rag-examples --example access_filtered_search [-- DIR] [--all]
//! ```
//! Without `--all` the first 1,000 documents are indexed (about 80 s on 2 cores).
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use rag_acl::{AuditAction, AuditEvent, AuditLog, Directory, Outcome, Registration};
use rag_core::{
    AccessResolver, Acl, ChatMessage, Chunk, ChunkId, DocId, DocKey, DocumentUpdate, EmbeddedChunk,
    Embedder, GenerationRequest, Metadata, Principal, Role, SamplingParams, Span, TenantId,
    TokenControl, VectorIndex, VectorIndexRead,
};
use rag_index::{HnswIndex, IndexConfig};
use rag_infer::{EmbedderConfig, LocalGenerator, OnnxEmbedder, OnnxGenerator, assets};

/// (id, title, text) of each document; empty when `dir` has no `corpus.jsonl`.
fn load_corpus(dir: &Path) -> Result<Vec<(String, String, String)>> {
    let path = dir.join("corpus.jsonl");
    if path.exists() {
        let text = fs_err::read_to_string(&path)?;
        return text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l)?;
                let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                Ok((s("_id"), s("title"), s("text")))
            })
            .collect();
    }
    Ok(Vec::new())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let all = args.iter().any(|a| a == "--all");
    let dir = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/scifact")
        });
    let mut corpus = load_corpus(&dir)?;
    if corpus.is_empty() {
        // Medical questions answered from some other collection would be invented.
        println!(
            "no SciFact corpus at {} (expected corpus.jsonl): nothing to index, no questions asked",
            dir.display()
        );
        return Ok(());
    }
    if !all {
        corpus.truncate(1000);
    }

    rag_infer::load_runtime(&assets::runtime_library())
        .context("ONNX Runtime missing: run `python3 tools/assets.py fetch` first")?;
    let embedder = OnnxEmbedder::new(EmbedderConfig::pinned_minilm())?;
    let generator = OnnxGenerator::new(LocalGenerator::from_env()?.config())?;
    let index = HnswIndex::new(embedder.fingerprint().clone(), IndexConfig::default())?;

    // Two labs of one tenant: even documents belong to lab-a, odd ones to lab-b; every
    // tenth is restricted to the reviewers group; interns are denied everything.
    let t = Instant::now();
    let bodies: Vec<String> = corpus
        .iter()
        .map(|(_, title, text)| format!("{title} {text}").trim().to_owned())
        .collect();
    let mut updates = Vec::with_capacity(corpus.len());
    for (start, batch) in bodies.chunks(64).enumerate().map(|(i, b)| (i * 64, b)) {
        let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
        let vectors = embedder.embed(&refs)?;
        for (offset, (body, embedding)) in batch.iter().zip(vectors).enumerate() {
            let i = start + offset;
            if body.is_empty() {
                continue;
            }
            let lab = if i % 2 == 0 { "lab-a" } else { "lab-b" };
            let acl = Acl::new("uni").deny_group("interns");
            let acl = if i % 10 == 0 {
                acl.allow_group("reviewers")
            } else {
                acl.allow_group(lab)
            };
            let doc_id = DocId::new(&corpus[i].0);
            let key = DocKey::new(acl.tenant.clone(), doc_id.clone());
            updates.push(DocumentUpdate {
                tenant: key.tenant.clone(),
                doc_id,
                version: 1,
                acl: Some(acl),
                metadata: Metadata::default().with_title(corpus[i].1.clone()),
                content_hash: None,
                chunks: vec![EmbeddedChunk {
                    chunk: Chunk {
                        id: ChunkId::derive(&key, 0),
                        ordinal: 0,
                        span: Span::new(0, body.len()),
                        text: body.clone(),
                        context: None,
                    },
                    embedding,
                }],
            });
        }
    }
    let report = index.upsert(updates)?;
    println!(
        "ingested {} documents with {} in {:.1} s",
        report.documents_upserted,
        embedder.fingerprint().name(),
        t.elapsed().as_secs_f64()
    );

    let directory = Directory::new(Registration::TrustClaims);
    let uni = TenantId::new("uni");
    directory.nest_group(&uni, &"lab-a-senior".into(), &"lab-a".into());
    directory.grant_role(&uni, &"pi".into(), &"reviewers".into());
    let audit_dir = tempfile::tempdir()?;
    let audit = AuditLog::open(audit_dir.path().join("audit.log"))?;

    let question = "Does vitamin D deficiency increase the risk of bone fractures?";
    let q = embedder.embed(&[question])?.remove(0);
    println!("\nquestion: {question}");
    for principal in [
        Principal::new("uni", "ada").with_group("lab-a-senior"),
        Principal::new("uni", "bo")
            .with_group("lab-b")
            .with_role("pi"),
        Principal::new("uni", "cy")
            .with_group("lab-a")
            .with_group("interns"),
        Principal::new("other-uni", "dee").with_group("lab-a"),
    ] {
        let filter = directory.resolve(&principal)?;
        let r = index.search(&q, 3, &filter)?;
        // Audited (and synced) before anything is shown.
        audit.append(AuditEvent::new(
            AuditAction::Search,
            Some(principal.tenant.to_string()),
            Some(principal.user.to_string()),
            r.hits
                .iter()
                .map(|h| format!("{}#{}", h.doc_id, h.chunk_id))
                .collect(),
            Outcome::Ok,
        ))?;
        println!(
            "\n{} of {} may read {} documents ({}):",
            principal.user, principal.tenant, r.visible, r.strategy
        );
        for (n, h) in r.hits.iter().enumerate() {
            let preview: String = h.text.chars().take(90).collect();
            println!("  [{}] {:.3}  {}  {preview}", n + 1, h.score, h.doc_id);
        }
        let relevant = r
            .hits
            .first()
            .is_some_and(|h| h.score >= EmbedderConfig::MINILM_DENSE_FLOOR);
        let answer = if !relevant {
            "Nothing you may read answers this.".to_owned()
        } else {
            let context: String = r
                .hits
                .iter()
                .enumerate()
                .map(|(n, h)| {
                    format!(
                        "[{}] {}\n",
                        n + 1,
                        h.text.chars().take(600).collect::<String>()
                    )
                })
                .collect();
            let request = GenerationRequest {
                messages: vec![
                    ChatMessage { role: Role::System, content: "Answer in one or two sentences using only the numbered sources, citing them like [1].".into() },
                    ChatMessage { role: Role::User, content: format!("Sources:\n{context}\nQuestion: {question}") },
                ],
                params: SamplingParams { max_new_tokens: 80, ..Default::default() },
                deadline: None,
            };
            let g = generator.generate_text(&request, &mut |_| TokenControl::Continue)?;
            format!(
                "{} ({} prompt tokens, first token {:.2} s, {:.0} tok/s)",
                g.text.trim(),
                g.prompt_tokens,
                g.time_to_first_token_s,
                g.tokens_per_s
            )
        };
        println!("  answer: {answer}");
    }

    let snap = tempfile::tempdir()?;
    let t = Instant::now();
    let written = index.snapshot(snap.path())?;
    let restored = HnswIndex::restore(
        snap.path(),
        Some(embedder.fingerprint()),
        IndexConfig::default(),
    )?;
    let again = restored.search(
        &q,
        3,
        &directory.resolve(&Principal::new("uni", "ada").with_group("lab-a-senior"))?,
    )?;
    println!(
        "\nsnapshot of {} chunks ({} bytes) written and restored in {:.2} s; {} documents back, top hit after restore {}",
        written.manifest.chunks,
        written.bytes,
        t.elapsed().as_secs_f64(),
        restored.stats().documents,
        again
            .hits
            .first()
            .map_or("none".into(), |h| h.doc_id.to_string()),
    );
    let verified = rag_acl::verify(audit.path()).context("audit log")?;
    println!(
        "audit log: {} records, chain intact, head {}",
        verified.records.len(),
        &verified.head[..16]
    );
    Ok(())
}
