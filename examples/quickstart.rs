//! Quickstart: ingest a directory of text and markdown files with the real models,
//! then answer questions with citations as two principals, through the SDK's
//! pipeline (chunk, embed, access-filtered retrieval, generation, semantic cache).
//!
//! `cargo run --release -p rag-examples --example quickstart [DIR] [QUESTION...]`
//!
//! DIR defaults to this repository's `docs/` and README. Every file is readable by
//! group `readers` of tenant `local`: `ann` is in it, `eve` is not. The index is a
//! durable store in `$RAG_SDK_STATE` (default `target/quickstart-store`): a second
//! run recovers it and embeds only what changed.
#![allow(clippy::print_stdout)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use rag_core::{Acl, Principal, RetrievalMode};
use rag_pipeline::QueryOptions;

const QUESTIONS: [&str; 3] = [
    "How does the index apply access control during a search?",
    "What does restore check before it loads a snapshot?",
    "When does the semantic cache refuse to serve a cached answer?",
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (dirs, questions): (Vec<PathBuf>, Vec<String>) = match args.split_first() {
        Some((dir, rest)) => (
            vec![PathBuf::from(dir)],
            if rest.is_empty() {
                QUESTIONS.map(String::from).to_vec()
            } else {
                vec![rest.join(" ")]
            },
        ),
        None => (
            vec![root.join("docs")],
            QUESTIONS.map(String::from).to_vec(),
        ),
    };

    let t = Instant::now();
    let (embedder, generator) = common::models()?;
    println!("models loaded in {:.1} s", t.elapsed().as_secs_f64());
    let state = std::env::var_os("RAG_SDK_STATE")
        .map_or_else(|| root.join("target/quickstart-store"), PathBuf::from);
    let (index, recovery) = common::open_store(&state, embedder.as_ref())?;
    println!(
        "{} ({})",
        common::describe_recovery(&recovery),
        state.display()
    );
    let pipeline = common::pipeline(index.clone(), embedder, Some(generator))?;

    let acl = Acl::new("local").allow_group("readers");
    let mut docs = Vec::new();
    for dir in &dirs {
        let (mut found, rejected) = common::read_dir(dir, &acl)?;
        for (path, why) in rejected {
            println!("skipped {}: {why}", path.display());
        }
        docs.append(&mut found);
    }
    if args.is_empty() {
        let (readme, _) = common::read_dir(&root, &acl)?;
        docs.extend(readme.into_iter().filter(|d| d.id.as_str() == "README.md"));
    }
    common::assign_versions(index.as_ref(), &mut docs)?;
    let report = pipeline.ingest(docs)?;
    println!(
        "ingested {} documents as {} chunks in {:.1} s ({:.1} s embedding); {} unchanged",
        report.upserted, report.chunks, report.seconds, report.embed_seconds, report.unchanged
    );

    let ann = Principal::new("local", "ann").with_group("readers");
    let eve = Principal::new("local", "eve");
    for question in &questions {
        println!("\nQ: {question}");
        let a = pipeline.query(&ann, question, &QueryOptions::default())?;
        println!("ann: {}", a.answer.text);
        common::print_citations(&a.answer);
        let stages: Vec<String> = a
            .timings
            .iter()
            .map(|s| format!("{} {:.0} ms", s.stage, s.duration.as_secs_f64() * 1e3))
            .collect();
        println!(
            "  ({}; {}{})",
            a.strategy.map_or("cache".to_owned(), |s| s.to_string()),
            stages.join(", "),
            if a.degradations.is_empty() {
                String::new()
            } else {
                format!("; degraded: {:?}", a.degradations)
            }
        );
        let e = pipeline.query(&eve, question, &QueryOptions::default())?;
        println!(
            "eve: {} ({} citations)",
            e.answer.text,
            e.answer.citations.len()
        );
    }

    // The first question again: served from the cache, citations re-checked.
    let again = pipeline.query(&ann, &questions[0], &QueryOptions::default())?;
    println!(
        "\nrepeated question served from cache: {} in {:.1} ms",
        again.from_cache,
        again
            .timings
            .iter()
            .map(|s| s.duration.as_secs_f64())
            .sum::<f64>()
            * 1e3
    );
    let hybrid = pipeline.query(
        &ann,
        "Parquet snapshot manifest sha256",
        &QueryOptions {
            mode: Some(RetrievalMode::Hybrid),
            bypass_cache: true,
            ..QueryOptions::default()
        },
    )?;
    println!(
        "hybrid retrieval ({}): cites {}",
        hybrid.strategy.map_or("-".into(), |s| s.to_string()),
        hybrid
            .answer
            .citations
            .first()
            .map_or("nothing".into(), common::cite)
    );
    let health = pipeline.health();
    println!("health: {:?} {:?}", health.status, health.reasons);
    Ok(())
}
