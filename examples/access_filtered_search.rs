//! Access-filtered search over a real corpus: ingest BEIR SciFact (or this repository's
//! Markdown docs when the dataset is absent) with per-document ACLs, resolve principals
//! through a directory with nested groups, search, audit every call, snapshot and restore.
//!
//! The embedder here is the deterministic `HashEmbedder` test double; the ONNX
//! embedder of `rag-infer` plugs into the same `Embedder` trait.
//!
//! `cargo run --release -p rag-examples --example access_filtered_search [-- DATASET_DIR]`
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use rag_acl::{AuditAction, AuditEvent, AuditLog, Directory, Outcome, Registration};
use rag_core::testing::HashEmbedder;
use rag_core::{
    AccessResolver, Acl, Chunk, ChunkId, DocId, DocumentUpdate, EmbeddedChunk, Embedder, Metadata,
    Principal, Span, TenantId, VectorIndex,
};
use rag_index::{HnswIndex, IndexConfig};

/// (id, title, text) of each document.
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
    println!(
        "{} not found; indexing this repository's docs instead",
        path.display()
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut docs = Vec::new();
    for p in [root.join("README.md"), root.join("docs/ARCHITECTURE.md")] {
        if let Ok(text) = fs_err::read_to_string(&p) {
            for (i, para) in text
                .split("\n\n")
                .filter(|p| !p.trim().is_empty())
                .enumerate()
            {
                docs.push((
                    format!("{}#{i}", p.display()),
                    String::new(),
                    para.to_owned(),
                ));
            }
        }
    }
    Ok(docs)
}

fn main() -> Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/scifact")
        });
    let corpus = load_corpus(&dir)?;
    let embedder = HashEmbedder::new(256)?;
    let index = HnswIndex::new(embedder.fingerprint().clone(), IndexConfig::default())?;

    // Two labs of one tenant: even documents belong to lab-a, odd ones to lab-b;
    // every tenth is restricted to the reviewers group, and none is readable by interns.
    let t = Instant::now();
    let mut updates = Vec::with_capacity(corpus.len());
    for (i, (id, title, text)) in corpus.iter().enumerate() {
        let body = format!("{title} {text}").trim().to_owned();
        if body.is_empty() {
            continue;
        }
        let lab = if i % 2 == 0 { "lab-a" } else { "lab-b" };
        let mut acl = Acl::new("uni").deny_group("interns");
        acl = if i % 10 == 0 {
            acl.allow_group("reviewers")
        } else {
            acl.allow_group(lab)
        };
        let doc_id = DocId::new(id);
        updates.push(DocumentUpdate {
            doc_id: doc_id.clone(),
            version: 1,
            acl: Some(acl),
            metadata: Metadata::default().with_title(title.clone()),
            chunks: vec![EmbeddedChunk {
                chunk: Chunk {
                    id: ChunkId::derive(&doc_id, 0),
                    ordinal: 0,
                    span: Span::new(0, body.len()),
                    text: body.clone(),
                },
                embedding: embedder.embed(&[&body])?.remove(0),
            }],
        });
    }
    let report = index.upsert(updates)?;
    println!(
        "ingested {} documents in {:.2} s",
        report.documents_upserted,
        t.elapsed().as_secs_f64()
    );

    let directory = Directory::new(Registration::Open);
    let uni = TenantId::new("uni");
    directory.nest_group(&uni, &"lab-a-senior".into(), &"lab-a".into());
    directory.grant_role(&uni, &"pi".into(), &"reviewers".into());
    let audit_dir = tempfile::tempdir()?;
    let audit = AuditLog::open(audit_dir.path().join("audit.log"))?;

    let question = "vitamin D deficiency and bone fractures";
    let q = embedder.embed(&[question])?.remove(0);
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
        audit.append(AuditEvent {
            action: AuditAction::Search,
            tenant: Some(principal.tenant.to_string()),
            actor: Some(principal.user.to_string()),
            resources: r.hits.iter().map(|h| h.doc_id.to_string()).collect(),
            outcome: Outcome::Ok,
        })?;
        println!(
            "\n{} of {} sees {} documents ({}):",
            principal.user, principal.tenant, r.visible, r.strategy
        );
        for h in &r.hits {
            let preview: String = h.text.chars().take(90).collect();
            println!("  {:.3}  {}  {preview}", h.score, h.doc_id);
        }
    }

    let snap = tempfile::tempdir()?;
    let t = Instant::now();
    let written = index.snapshot(snap.path())?;
    let restored = HnswIndex::restore(
        snap.path(),
        Some(embedder.fingerprint()),
        IndexConfig::default(),
    )?;
    println!(
        "\nsnapshot of {} chunks ({} bytes) written and restored in {:.2} s; {} documents back",
        written.manifest.chunks,
        written.bytes,
        t.elapsed().as_secs_f64(),
        restored.stats().documents
    );
    let verified = rag_acl::verify(audit.path()).context("audit log")?;
    println!(
        "audit log: {} records, chain intact, head {}",
        verified.records.len(),
        &verified.head[..16]
    );
    Ok(())
}
