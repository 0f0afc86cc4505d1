//! A command-line tool on the SDK's public API, keeping its index in a durable
//! store (write-ahead log and checkpoints) in a state directory between runs.
//!
//! ```text
//! cargo run --release -p rag-examples --example rag -- [--state DIR] COMMAND
//!   ingest DIR [--tenant T] (--group G | --user U)...   add or update the text files under DIR
//!   query QUESTION... [--tenant T] [--user U] [--group G]... [--mode dense|lexical|hybrid]
//!   snapshot DIR                            export the index to DIR (a backup)
//!   restore DIR                             replace the state with the snapshot in DIR
//!   stats                                   counters, store and health
//! ```
//!
//! Unknown flags are errors. Files are readable only by the groups and users that
//! `ingest` names (at least one is required); `query` holds no group unless given one.
#![allow(clippy::print_stdout)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use rag_core::{Acl, Principal, RetrievalMode, VectorIndexRead};
use rag_index::{DurableIndex, HnswIndex, IndexConfig, StoreOptions};
use rag_pipeline::QueryOptions;

/// Files per ingest call (and per progress update).
const INGEST_BATCH: usize = 16;

/// A RAG index on the SDK's public API, kept in a durable store between runs.
#[derive(Debug, Parser)]
#[command(name = "rag")]
struct Cli {
    /// The store's directory.
    #[arg(long, global = true, default_value = ".rag-state")]
    state: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Adds or updates the text files under DIR.
    Ingest {
        /// The directory to read.
        dir: PathBuf,
        /// The tenant the files belong to.
        #[arg(long, default_value = "local")]
        tenant: String,
        /// A group that may read the files (repeat or separate with commas).
        #[arg(long = "group", value_delimiter = ',')]
        groups: Vec<String>,
        /// A user who may read the files (repeat or separate with commas).
        #[arg(long = "user", value_delimiter = ',')]
        users: Vec<String>,
    },
    /// Answers a question with citations.
    Query {
        /// The question.
        #[arg(required = true, num_args = 1..)]
        question: Vec<String>,
        /// The asker's tenant.
        #[arg(long, default_value = "local")]
        tenant: String,
        /// The asker.
        #[arg(long, default_value = "cli")]
        user: String,
        /// A group the asker holds (repeat or separate with commas); none by default.
        #[arg(long = "group", value_delimiter = ',')]
        groups: Vec<String>,
        /// dense, lexical or hybrid.
        #[arg(long, default_value = "dense")]
        mode: String,
    },
    /// Exports the index to DIR (a backup).
    Snapshot {
        /// The target directory.
        dir: PathBuf,
    },
    /// Replaces the state with the snapshot in DIR.
    Restore {
        /// The snapshot directory.
        dir: PathBuf,
    },
    /// Counters, store and health.
    Stats,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Restore { dir: from } => {
            // Verify the snapshot fully, build a new store from it beside the old
            // one, and only then swap them.
            let index = HnswIndex::restore(from, None, IndexConfig::default())?;
            let fresh = sibling(&cli.state, "restoring")?;
            let (store, _) = DurableIndex::create_from(&fresh, &index, StoreOptions::default())?;
            let s = store.stats();
            drop(store);
            let old = sibling(&cli.state, "replaced")?;
            if cli.state.exists() {
                fs_err::rename(&cli.state, &old)?;
            }
            fs_err::rename(&fresh, &cli.state)?;
            if old.exists() {
                fs_err::remove_dir_all(&old)?;
            }
            println!(
                "restored {} documents, {} chunks into {}",
                s.documents,
                s.chunks,
                cli.state.display()
            );
            return Ok(());
        }
        Command::Snapshot { dir: to } => {
            // The store's newest checkpoint plus its log: open it (recovering) and
            // export the index as one snapshot.
            let (embedder, _) = common::models()?;
            let (store, _) = common::open_store(&cli.state, embedder.as_ref())?;
            fs_err::create_dir_all(to)?;
            let r = store.index().snapshot(to)?;
            println!("wrote {} bytes to {}", r.bytes, to.display());
            return Ok(());
        }
        _ => {}
    }

    // Refused before any model is loaded.
    if let Command::Ingest {
        tenant,
        groups,
        users,
        ..
    } = &cli.command
    {
        readers(tenant, groups, users)?;
    }
    let (embedder, generator) = common::models()?;
    let (index, recovery) = common::open_store(&cli.state, embedder.as_ref())?;
    eprintln!("{}", common::describe_recovery(&recovery));
    match cli.command {
        Command::Ingest {
            dir,
            tenant,
            groups,
            users,
        } => {
            let acl = readers(&tenant, &groups, &users)?;
            let pipeline = common::pipeline(index.clone(), embedder, None)?;
            let (mut docs, rejected) = common::read_dir(&dir, &acl)?;
            common::assign_versions(index.as_ref(), &mut docs)?;
            for (path, why) in &rejected {
                eprintln!("skipped {}: {why}", path.display());
            }
            let t = Instant::now();
            let total = docs.len();
            let (mut done, mut chunks, mut unchanged) = (0, 0, 0);
            let mut docs = docs.into_iter().peekable();
            while docs.peek().is_some() {
                let batch: Vec<_> = docs.by_ref().take(INGEST_BATCH).collect();
                done += batch.len();
                let r = pipeline.ingest(batch)?;
                chunks += r.chunks;
                unchanged += r.unchanged;
                common::progress(done, total, chunks, t.elapsed().as_secs_f64());
            }
            let s = index.stats();
            println!(
                "{total} files ({unchanged} unchanged, {} rejected): {chunks} chunks embedded; index holds {} documents, {} chunks",
                rejected.len(),
                s.documents,
                s.chunks
            );
        }
        Command::Query {
            question,
            tenant,
            user,
            groups,
            mode,
        } => {
            let question = question.join(" ");
            let principal = groups
                .iter()
                .filter(|g| !g.is_empty())
                .fold(Principal::new(tenant, user), |p, g| {
                    p.with_group(g.as_str())
                });
            let options = QueryOptions {
                mode: Some(mode.parse::<RetrievalMode>()?),
                ..QueryOptions::default()
            };
            let pipeline = common::pipeline(index, embedder, Some(generator))?;
            let a = pipeline.query(&principal, &question, &options)?;
            println!("{}", a.answer.text);
            common::print_citations(&a.answer);
            for s in &a.timings {
                eprintln!(
                    "  {:>12} {:>8.1} ms",
                    s.stage,
                    s.duration.as_secs_f64() * 1e3
                );
            }
            for d in &a.degradations {
                eprintln!("  degraded: {d:?}");
            }
        }
        Command::Stats => {
            let pipeline = common::pipeline(index.clone(), embedder, Some(generator))?;
            let s = index.stats();
            let h = pipeline.health();
            println!(
                "documents {}  chunks {}  generation {}  tombstones {}  last write {}  log {} bytes",
                s.documents,
                s.chunks,
                s.generation,
                s.tombstones,
                s.sequence,
                index.log_bytes()
            );
            println!(
                "health {:?}; embedder {} on {:?}; generator {:?}; reasons {:?}",
                h.status, h.embedder, h.embedder_device, h.generator, h.reasons
            );
        }
        Command::Snapshot { .. } | Command::Restore { .. } => {}
    }
    Ok(())
}

/// The ACL of ingested files: the named groups and users of `tenant`; naming nobody
/// is an error (the files would be readable by no one).
fn readers(tenant: &str, groups: &[String], users: &[String]) -> Result<Acl> {
    let groups: Vec<&String> = groups.iter().filter(|g| !g.trim().is_empty()).collect();
    let users: Vec<&String> = users.iter().filter(|u| !u.trim().is_empty()).collect();
    if groups.is_empty() && users.is_empty() {
        bail!("name who may read these files: --group G or --user U (repeatable)");
    }
    let acl = groups
        .into_iter()
        .fold(Acl::new(tenant), |a, g| a.allow_group(g.as_str()));
    Ok(users.into_iter().fold(acl, |a, u| a.allow_user(u.as_str())))
}

/// `DIR.suffix` beside `dir`, which must not exist yet.
fn sibling(dir: &Path, suffix: &str) -> Result<PathBuf> {
    let name = dir
        .file_name()
        .with_context(|| format!("{} has no file name", dir.display()))?
        .to_string_lossy()
        .into_owned();
    let p = dir.with_file_name(format!("{name}.{suffix}"));
    if p.exists() {
        bail!(
            "{} exists (left by an interrupted restore?); remove it first",
            p.display()
        );
    }
    Ok(p)
}
