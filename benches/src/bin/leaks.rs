//! The leak oracle at scale: randomized queries (dense, lexical, hybrid; cached and
//! uncached) through the real pipeline, index, cache and directory, with ACL edits,
//! revocations, deletes and erasures interleaved, each checked against a brute-force
//! model of who may read what. What is checked per query: every passage the answer
//! was made from, every document named in its text, and every passage that reached
//! the generator's prompt must be readable by the asker at that moment.
//!
//! `cargo run --release -p rag-benches --bin leaks -- --queries 100000 --json PATH`
#![allow(clippy::print_stdout)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Parser;
use rag_acl::{Directory, Registration};
use rag_benches::recording::Recording;
use rag_cache::{CacheConfig, SemanticCache};
use rag_core::{
    Acl, DocKey, Document, Embedder, GroupId, Metadata, Principal, RetrievalMode, TenantId, UserId,
    WordCounter,
};
use rag_index::{HnswIndex, IndexConfig};
use rag_pipeline::RecursiveChunker;
use rag_pipeline::testing::{EchoGenerator, HashEmbedder};
use rag_pipeline::{Pipeline, PipelineConfig, QueryOptions};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Randomized queries against a brute-force model of access.
#[derive(Debug, Parser)]
struct Cli {
    /// Queries to run.
    #[arg(long, default_value_t = 100_000)]
    queries: u64,
    /// Documents per tenant at the start.
    #[arg(long, default_value_t = 60)]
    docs: usize,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to write the JSON report.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Report {
    queries: u64,
    leaks: u64,
    modes: BTreeMap<String, u64>,
    cached_answers: u64,
    revocations: u64,
    grants: u64,
    acl_edits: u64,
    deletes: u64,
    erasures: u64,
    seconds: f64,
}

const TENANTS: [&str; 2] = ["acme", "globex"];
const GROUPS: [&str; 4] = ["eng", "hr", "ops", "board"];
const USERS: [&str; 5] = ["ann", "bob", "cy", "dee", "eve"];
const WORDS: [&str; 12] = [
    "budget", "salary", "merger", "roadmap", "incident", "vacation", "audit", "launch", "contract",
    "hiring", "security", "pricing",
];

/// The brute-force model: documents with their ACLs, users with their groups.
#[derive(Default)]
struct Model {
    docs: BTreeMap<DocKey, (u64, Acl)>,
    members: BTreeMap<(String, String), BTreeSet<String>>,
}

impl Model {
    fn may_read(&self, tenant: &str, user: &str, key: &DocKey) -> bool {
        let Some((_, acl)) = self.docs.get(key) else {
            return false;
        };
        if acl.tenant.as_str() != tenant || key.tenant.as_str() != tenant {
            return false;
        }
        let groups = self
            .members
            .get(&(tenant.to_owned(), user.to_owned()))
            .cloned()
            .unwrap_or_default();
        let holds = |t: &rag_core::PermissionTag| match t {
            rag_core::PermissionTag::User(u) => u.as_str() == user,
            rag_core::PermissionTag::Group(g) => groups.contains(g.as_str()),
            rag_core::PermissionTag::Role(_) => false,
        };
        acl.allow.iter().any(holds) && !acl.deny.iter().any(holds)
    }
}

/// Every document's text carries a marker naming it, so any text can be traced
/// back to the documents it came from.
fn marker(tenant: &str, id: &str) -> String {
    format!("mk{tenant}x{id}z")
}

fn text_of(rng: &mut StdRng, tenant: &str, id: &str) -> String {
    let words: Vec<&str> = (0..12)
        .map(|_| *WORDS.choose(rng).unwrap_or(&"x"))
        .collect();
    format!(
        "{} {} {}",
        marker(tenant, id),
        words.join(" "),
        marker(tenant, id)
    )
}

fn random_acl(rng: &mut StdRng, tenant: &str) -> Acl {
    let mut acl = Acl::new(tenant);
    for g in GROUPS {
        if rng.random_bool(0.3) {
            acl = acl.allow_group(g);
        }
    }
    if rng.random_bool(0.3) {
        acl = acl.allow_user(*USERS.choose(rng).unwrap_or(&"ann"));
    }
    if rng.random_bool(0.2) {
        acl = acl.deny_user(*USERS.choose(rng).unwrap_or(&"eve"));
    }
    if rng.random_bool(0.1) {
        acl = acl.deny_group(*GROUPS.choose(rng).unwrap_or(&"ops"));
    }
    acl
}

/// The documents a text names through their markers.
fn named(text: &str, model: &Model) -> Vec<DocKey> {
    model
        .docs
        .keys()
        .filter(|k| text.contains(&marker(k.tenant.as_str(), k.doc_id.as_str())))
        .cloned()
        .collect()
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut rng = StdRng::seed_from_u64(cli.seed);
    let embedder = Arc::new(HashEmbedder::new(64)?);
    let index = Arc::new(HnswIndex::new(
        embedder.fingerprint().clone(),
        IndexConfig::builder()
            .exact_scan_max(16)
            .exact_scan_fraction(0.0)
            .build()?,
    )?);
    let directory = Arc::new(Directory::new(Registration::Required));
    let generator = Arc::new(Recording::new(Arc::new(EchoGenerator {
        failing: false,
        words: 24,
    })));
    let pipeline = Pipeline::builder()
        .chunker(Arc::new(RecursiveChunker::new(
            256,
            8,
            Arc::new(WordCounter),
        )?))
        .index(index.clone())
        .embedder(embedder.clone())
        .generator(generator.clone())
        .cache(Arc::new(SemanticCache::new(CacheConfig::default())?))
        .access(directory.clone())
        .config(PipelineConfig {
            top_k: 6,
            ..PipelineConfig::default()
        })
        .build()?;

    let mut model = Model::default();
    for t in TENANTS {
        for u in USERS {
            let groups: BTreeSet<String> = GROUPS
                .iter()
                .filter(|_| rng.random_bool(0.4))
                .map(|g| (*g).to_owned())
                .collect();
            directory.add_user(
                &TenantId::new(t),
                &UserId::new(u),
                groups.iter().map(|g| GroupId::new(g.as_str())),
            );
            model.members.insert((t.to_owned(), u.to_owned()), groups);
        }
    }
    let mut next_id = 0usize;
    let mut write = |rng: &mut StdRng, model: &mut Model, key: Option<DocKey>| -> Result<()> {
        let key = key.unwrap_or_else(|| {
            next_id += 1;
            DocKey::new(
                *TENANTS.choose(rng).unwrap_or(&"acme"),
                format!("d{next_id}"),
            )
        });
        let version = model.docs.get(&key).map_or(1, |(v, _)| v + 1);
        let acl = random_acl(rng, key.tenant.as_str());
        let text = text_of(rng, key.tenant.as_str(), key.doc_id.as_str());
        pipeline.ingest(vec![Document {
            tenant: key.tenant.clone(),
            id: key.doc_id.clone(),
            version,
            text,
            metadata: Metadata::default(),
            acl: Some(acl.clone()),
        }])?;
        model.docs.insert(key, (version, acl));
        Ok(())
    };
    for _ in 0..cli.docs * TENANTS.len() {
        write(&mut rng, &mut model, None)?;
    }

    let mut report = Report {
        queries: 0,
        leaks: 0,
        modes: BTreeMap::new(),
        cached_answers: 0,
        revocations: 0,
        grants: 0,
        acl_edits: 0,
        deletes: 0,
        erasures: 0,
        seconds: 0.0,
    };
    let mut asked: Vec<(&str, &str, RetrievalMode, String)> = Vec::new();
    let started = Instant::now();
    while report.queries < cli.queries {
        // One change to the world every 20 queries or so.
        if rng.random_bool(0.05) {
            let pick = model.docs.keys().cloned().collect::<Vec<_>>();
            match rng.random_range(0..6) {
                0 | 1 => {
                    if let Some(k) = pick.choose(&mut rng).cloned() {
                        write(&mut rng, &mut model, Some(k))?;
                        report.acl_edits += 1;
                    }
                }
                2 => {
                    let (t, u, g) = (
                        *TENANTS.choose(&mut rng).unwrap_or(&"acme"),
                        *USERS.choose(&mut rng).unwrap_or(&"ann"),
                        *GROUPS.choose(&mut rng).unwrap_or(&"eng"),
                    );
                    if directory.remove_from_group(&t.into(), &u.into(), &g.into()) {
                        report.revocations += 1;
                    }
                    if let Some(m) = model.members.get_mut(&(t.to_owned(), u.to_owned())) {
                        m.remove(g);
                    }
                }
                3 => {
                    let (t, u, g) = (
                        *TENANTS.choose(&mut rng).unwrap_or(&"acme"),
                        *USERS.choose(&mut rng).unwrap_or(&"ann"),
                        *GROUPS.choose(&mut rng).unwrap_or(&"eng"),
                    );
                    directory.add_user(&t.into(), &u.into(), [g.into()]);
                    model
                        .members
                        .entry((t.to_owned(), u.to_owned()))
                        .or_default()
                        .insert(g.to_owned());
                    report.grants += 1;
                }
                4 => {
                    if let Some(k) = pick.choose(&mut rng) {
                        pipeline.delete(k)?;
                        model.docs.remove(k);
                        report.deletes += 1;
                        write(&mut rng, &mut model, None)?;
                    }
                }
                _ => {
                    if let Some(k) = pick.choose(&mut rng) {
                        pipeline.erase(k)?;
                        model.docs.remove(k);
                        report.erasures += 1;
                        write(&mut rng, &mut model, None)?;
                    }
                }
            }
        }
        // Half the time an earlier ask is replayed (same asker, mode and question), so
        // that the cache answers many; otherwise a fresh one.
        let (tenant, user, mode, question) = match asked.choose(&mut rng) {
            Some(ask) if rng.random_bool(0.5) => ask.clone(),
            _ => {
                let tenant = *TENANTS.choose(&mut rng).unwrap_or(&"acme");
                let user = *USERS.choose(&mut rng).unwrap_or(&"ann");
                let mode = *[
                    RetrievalMode::Dense,
                    RetrievalMode::Lexical,
                    RetrievalMode::Hybrid,
                ]
                .choose(&mut rng)
                .unwrap_or(&RetrievalMode::Dense);
                let words: Vec<&str> = (0..3)
                    .map(|_| *WORDS.choose(&mut rng).unwrap_or(&"x"))
                    .collect();
                let mut q = words.join(" ");
                if rng.random_bool(0.2)
                    && let Some(k) = model
                        .docs
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .choose(&mut rng)
                {
                    // Quote a document's marker: a question aimed at one document,
                    // often another tenant's or a hidden one.
                    q.push(' ');
                    q.push_str(&marker(k.tenant.as_str(), k.doc_id.as_str()));
                }
                let ask = (tenant, user, mode, q);
                if asked.len() < 2_000 {
                    asked.push(ask.clone());
                } else {
                    let i = rng.random_range(0..asked.len());
                    asked[i] = ask.clone();
                }
                ask
            }
        };
        let options = QueryOptions {
            mode: Some(mode),
            bypass_cache: rng.random_bool(0.1),
            ..QueryOptions::default()
        };
        generator.take_prompts();
        let a = pipeline.query(&Principal::new(tenant, user), &question, &options)?;
        report.queries += 1;
        *report.modes.entry(mode.as_str().to_owned()).or_default() += 1;
        report.cached_answers += u64::from(a.from_cache);

        let mut seen: Vec<DocKey> = a
            .answer
            .sources()
            .map(|c| DocKey::new(tenant, c.doc_id.clone()))
            .collect();
        seen.extend(named(&a.answer.text, &model));
        for p in &generator.take_prompts() {
            // The asker's own question (which may quote a marker) is not a passage.
            let passages = p.rsplit_once("Question: ").map_or(p.as_str(), |(c, _)| c);
            seen.extend(named(passages, &model));
        }
        for k in seen {
            if !model.may_read(tenant, user, &k) {
                report.leaks += 1;
                eprintln!(
                    "LEAK: {tenant}/{user} saw {k:?} ({mode:?}, from_cache={})",
                    a.from_cache
                );
            }
        }
        if report.queries.is_multiple_of(10_000) {
            eprintln!(
                "{} queries, {} leaks, {:.0} q/s",
                report.queries,
                report.leaks,
                report.queries as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    let json = serde_json::to_string_pretty(&report)?;
    println!("{json}");
    if let Some(path) = &cli.json {
        fs_err::write(path, &json)?;
    }
    if report.leaks > 0 {
        bail!("{} leaks", report.leaks);
    }
    Ok(())
}
