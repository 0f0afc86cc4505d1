//! A command-line tool on the SDK's public API, keeping its index in a durable
//! store (write-ahead log and checkpoints) in a state directory between runs.
//!
//! ```text
//! cargo run --release -p rag-examples --example rag -- [--state DIR] COMMAND
//!   ingest DIR [--tenant T] [--group G]    add or update the text files under DIR
//!   query QUESTION... [--tenant T] [--user U] [--groups G1,G2] [--mode dense|lexical|hybrid]
//!   snapshot DIR                            export the index to DIR (a backup)
//!   restore DIR                             replace the state with the snapshot in DIR
//!   stats                                   counters, store and health
//! ```
#![allow(clippy::print_stdout)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rag_core::pipeline::QueryOptions;
use rag_core::{Acl, Principal, VectorIndex};
use rag_index::{DurableIndex, HnswIndex, IndexConfig, StoreOptions};

/// Files per ingest call (and per progress update).
const INGEST_BATCH: usize = 16;

struct Cli {
    state: PathBuf,
    command: String,
    positional: Vec<String>,
    options: Vec<(String, String)>,
}

impl Cli {
    fn parse() -> Result<Self> {
        let mut state = PathBuf::from(".rag-state");
        let mut command = None;
        let mut positional = Vec::new();
        let mut options = Vec::new();
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                let value = it
                    .next()
                    .with_context(|| format!("--{name} needs a value"))?;
                if name == "state" {
                    state = PathBuf::from(value);
                } else {
                    options.push((name.to_owned(), value));
                }
            } else if command.is_none() {
                command = Some(a);
            } else {
                positional.push(a);
            }
        }
        let Some(command) = command else {
            bail!(
                "usage: rag [--state DIR] ingest DIR | query QUESTION | snapshot DIR | restore DIR | stats"
            );
        };
        Ok(Self {
            state,
            command,
            positional,
            options,
        })
    }

    fn opt<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map_or(default, |(_, v)| v.as_str())
    }

    fn arg(&self, what: &str) -> Result<&str> {
        self.positional
            .first()
            .map(String::as_str)
            .with_context(|| format!("{} needs {what}", self.command))
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse()?;
    match cli.command.as_str() {
        "restore" => {
            // Verify the snapshot fully, build a new store from it beside the old
            // one, and only then swap them.
            let from = PathBuf::from(cli.arg("a snapshot directory")?);
            let index = HnswIndex::restore(&from, None, IndexConfig::default())?;
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
        "snapshot" => {
            let to = PathBuf::from(cli.arg("a target directory")?);
            // The store's newest checkpoint plus its log: open it (recovering) and
            // export the index as one snapshot.
            let (embedder, _) = common::models()?;
            let (store, _) = common::open_store(&cli.state, embedder.as_ref())?;
            fs_err::create_dir_all(&to)?;
            let r = store.index().snapshot(&to)?;
            println!("wrote {} bytes to {}", r.bytes, to.display());
            return Ok(());
        }
        _ => {}
    }

    let (embedder, generator) = common::models()?;
    let (index, recovery) = common::open_store(&cli.state, embedder.as_ref())?;
    eprintln!("{}", common::describe_recovery(&recovery));
    match cli.command.as_str() {
        "ingest" => {
            let dir = PathBuf::from(cli.arg("a directory")?);
            let acl = Acl::new(cli.opt("tenant", "local")).allow_group(cli.opt("group", "readers"));
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
        "query" => {
            if cli.positional.is_empty() {
                bail!("query needs a question");
            }
            let question = cli.positional.join(" ");
            let mut principal = Principal::new(cli.opt("tenant", "local"), cli.opt("user", "cli"));
            for g in cli
                .opt("groups", "readers")
                .split(',')
                .filter(|g| !g.is_empty())
            {
                principal = principal.with_group(g);
            }
            let options = QueryOptions {
                mode: Some(cli.opt("mode", "dense").parse()?),
                ..QueryOptions::default()
            };
            let pipeline = common::pipeline(index, embedder, Some(generator))?;
            let a = pipeline.query(&principal, &question, &options)?;
            println!("{}", a.answer.text);
            for (i, c) in a.answer.citations.iter().enumerate() {
                println!("  [{}] {}", i + 1, common::cite(c));
            }
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
        "stats" => {
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
        other => bail!("unknown command {other:?}"),
    }
    Ok(())
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
