//! The crash test of the durable store: a child process writes through a real
//! store and reports each acknowledged write; the parent kills it with SIGKILL at
//! a random moment, reopens the store and checks it against a model of the
//! acknowledged writes.
//!
//! The child runs [`THREADS`] writers at once (so kills land in group commits), on
//! a store with tiny segments and a tiny checkpoint threshold (so they land in
//! segment rolls and checkpoints too). Writer `t` applies its own deterministic
//! sequence of writes ([`op`]) on keys only it touches, and prints `ack t i` after
//! write `i` returned. After a kill, writer `t`'s keys must hold exactly the state
//! after its first `n` writes, where `n` is the number of acknowledged writes or
//! one more (the write in flight): never anything else, never half of a batch.
//! Exact-mode search over the recovered store must equal a brute-force index
//! built from the model, for principals of both tenants.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rag_core::{
    AccessFilter, Acl, AttrValue, Chunk, ChunkId, DeletePredicate, DocKey, DocumentUpdate,
    EmbeddedChunk, Embedding, Error, Metadata, ModelFingerprint, Principal, Span, VectorIndex,
    VectorIndexRead, WriteOp,
};
use rag_index::{DurableIndex, IndexConfig, SearchMode, StoreOptions};
use rag_pipeline::testing::FlatIndex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Concurrent writers in the child.
pub const THREADS: usize = 4;
const DIMS: usize = 8;
const KEYS: usize = 10;
const TENANTS: [&str; 2] = ["acme", "globex"];
const GROUPS: [&str; 3] = ["eng", "ops", "hr"];
/// Environment variables that make a process the child.
pub const ENV_DIR: &str = "RAG_CRASH_DIR";
const ENV_SEED: &str = "RAG_CRASH_SEED";
const ENV_STARTS: &str = "RAG_CRASH_STARTS";

pub fn fingerprint() -> ModelFingerprint {
    ModelFingerprint::new("crash-model", DIMS, "v1").unwrap_or_else(|_| unreachable!())
}

pub fn config() -> IndexConfig {
    IndexConfig::builder()
        .exact_scan_max(16)
        .exact_scan_fraction(0.0)
        .compaction_min(32)
        .build()
        .unwrap_or_else(|_| unreachable!())
}

/// Tiny segments and checkpoints, so that kills land in rolls and checkpoints.
pub fn options() -> StoreOptions {
    StoreOptions {
        segment_bytes: 4 << 10,
        checkpoint_bytes: 48 << 10,
        ..StoreOptions::default()
    }
}

fn key(thread: usize, k: usize) -> DocKey {
    DocKey::new(TENANTS[k % 2], format!("t{thread}-k{k}"))
}

fn update(rng: &mut StdRng, thread: usize, k: usize, version: u64) -> DocumentUpdate {
    let key = key(thread, k);
    let acl = if rng.random_range(0..8) == 0 {
        None
    } else {
        let mut acl = Acl::new(key.tenant.clone()).allow_group(GROUPS[rng.random_range(0..3)]);
        if rng.random_bool(0.3) {
            acl = acl.deny_user("mallory");
        }
        Some(acl)
    };
    let chunks = (0..rng.random_range(1..4u32))
        .map(|c| {
            let mut v: Vec<f32> = (0..DIMS).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            v[c as usize % DIMS] += 2.0;
            let text = format!("{} v{version} chunk {c}", key.doc_id);
            EmbeddedChunk {
                chunk: Chunk {
                    id: ChunkId::derive(&key, c),
                    ordinal: c,
                    span: Span::new(0, text.len()),
                    text,
                    context: None,
                },
                embedding: Embedding::new(fingerprint().id(), v).unwrap_or_else(|_| unreachable!()),
            }
        })
        .collect();
    DocumentUpdate {
        tenant: key.tenant.clone(),
        doc_id: key.doc_id.clone(),
        version,
        acl,
        metadata: Metadata::default()
            .with_attr("thread", AttrValue::Int(thread as i64))
            .with_attr("bucket", AttrValue::Int(k as i64 % 3)),
        content_hash: None,
        chunks,
    }
}

/// Writer `thread`'s write number `i`: deterministic in (seed, thread, i). Versions
/// are `i + 1`, so they only move forward on every key.
pub fn op(seed: u64, thread: usize, i: u64) -> WriteOp {
    let mut rng =
        StdRng::seed_from_u64(seed ^ ((thread as u64) << 48) ^ i.wrapping_mul(0x9e37_79b9));
    let roll = rng.random_range(0..100);
    let version = i + 1;
    if roll < 72 {
        // One to three documents in one batch: applied whole or not at all.
        let n = rng.random_range(1..4);
        let mut ks: Vec<usize> = (0..KEYS).collect();
        let mut docs = Vec::new();
        for _ in 0..n {
            let k = ks.swap_remove(rng.random_range(0..ks.len()));
            docs.push(update(&mut rng, thread, k, version));
        }
        WriteOp::Upsert(docs)
    } else if roll < 86 {
        WriteOp::Delete(key(thread, rng.random_range(0..KEYS)))
    } else if roll < 96 {
        WriteOp::DeleteWhere {
            tenant: TENANTS[rng.random_range(0..2)].into(),
            predicate: DeletePredicate::All(vec![
                DeletePredicate::AttrEquals {
                    key: "thread".into(),
                    value: AttrValue::Int(thread as i64),
                },
                DeletePredicate::AttrEquals {
                    key: "bucket".into(),
                    value: AttrValue::Int(rng.random_range(0..3)),
                },
            ]),
        }
    } else {
        WriteOp::Erase(key(thread, rng.random_range(0..KEYS)))
    }
}

/// One writer's documents, as its writes define them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model(BTreeMap<DocKey, DocumentUpdate>);

impl Model {
    pub fn apply(&mut self, op: WriteOp) {
        match op {
            WriteOp::Upsert(docs) => {
                for d in docs {
                    self.0.insert(d.key(), d);
                }
            }
            WriteOp::Delete(k) | WriteOp::Erase(k) => {
                self.0.remove(&k);
            }
            WriteOp::DeleteWhere { tenant, predicate }
            | WriteOp::EraseWhere { tenant, predicate } => {
                self.0
                    .retain(|k, d| !(k.tenant == tenant && predicate.matches(&d.metadata)));
            }
        }
    }

    /// The first key where the store and the model differ, described.
    fn difference(&self, store: &DurableIndex, thread: usize) -> Result<String> {
        for k in 0..KEYS {
            let key = key(thread, k);
            let got = store
                .document(&key)?
                .map(|g| (g.version, g.chunk_ids.len()));
            let want = self.0.get(&key).map(|w| (w.version, w.chunks.len()));
            if got != want {
                return Ok(format!(
                    "{key}: stored {got:?}, expected {want:?} (version, chunks)"
                ));
            }
        }
        Ok("documents agree; ACL or metadata differ".into())
    }

    /// Whether the store holds exactly this writer's documents.
    fn matches(&self, store: &DurableIndex, thread: usize) -> Result<bool> {
        for k in 0..KEYS {
            let key = key(thread, k);
            let got = store.document(&key)?;
            let want = self.0.get(&key);
            let same = match (got, want) {
                (None, None) => true,
                (Some(g), Some(w)) => {
                    g.version == w.version
                        && g.acl == w.acl
                        && g.metadata == w.metadata
                        && g.chunk_ids == w.chunks.iter().map(|c| c.chunk.id).collect::<Vec<_>>()
                }
                _ => false,
            };
            if !same {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The child: opens the store and runs the writers from `starts` until killed
/// (or `limit` writes each). Never returns normally before then.
pub fn child() -> Result<()> {
    let dir = std::env::var(ENV_DIR).context("no store directory")?;
    let seed: u64 = std::env::var(ENV_SEED)?.parse()?;
    let starts: Vec<u64> = std::env::var(ENV_STARTS)?
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let (store, _) = DurableIndex::open(&dir, fingerprint(), config(), options())?;
    let mut stdout = std::io::stdout();
    // End whatever line the process printed before (a harness's "test NAME ... ").
    writeln!(stdout)?;
    let out = std::sync::Mutex::new(stdout);
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = starts
            .iter()
            .enumerate()
            .map(|(t, &start)| {
                let (store, out) = (&store, &out);
                s.spawn(move || -> Result<()> {
                    for i in start..start + 100_000 {
                        if let Err(e) = store.write(op(seed, t, i)) {
                            // Deleting a key the writer's history removed already is
                            // expected; anything else ends the child with an error.
                            let e = Error::from(e);
                            if !matches!(e, Error::NotFound { .. }) {
                                return Err(e.into());
                            }
                        }
                        let mut o = out
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        writeln!(o, "ack {t} {i}")?;
                        o.flush()?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
        }
        Ok(())
    })
}

/// What a crash run found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CrashReport {
    pub kills: usize,
    pub violations: usize,
    /// Writes acknowledged across all rounds.
    pub acknowledged: u64,
    /// Kills after which the write in flight turned out to be durable.
    pub in_flight_present: usize,
    /// Log records recovery replayed, all rounds together.
    pub records_replayed: u64,
    /// Torn tails cut.
    pub torn_tails: usize,
    pub seconds: f64,
    /// What each violation was.
    pub failures: Vec<String>,
}

/// Runs `kills` rounds of write, SIGKILL, recover, check in `dir`. `spawn` builds
/// the child command (the environment is added here).
pub fn run(
    dir: &Path,
    kills: usize,
    seed: u64,
    max_delay_ms: u64,
    spawn: impl Fn() -> Command,
) -> Result<CrashReport> {
    let start = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut applied = [0u64; THREADS];
    let mut models = vec![Model::default(); THREADS];
    let mut report = CrashReport::default();
    for round in 0..kills {
        let starts: Vec<String> = applied.iter().map(u64::to_string).collect();
        let mut child = spawn()
            .env(ENV_DIR, dir)
            .env(ENV_SEED, seed.to_string())
            .env(ENV_STARTS, starts.join(","))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning the writer")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let reader = std::thread::spawn(move || {
            let mut acked: Vec<Option<u64>> = vec![None; THREADS];
            // An ack may follow other output on its line (a test harness prints
            // "test NAME ... " without a newline before running the child).
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                for ack in line.split("ack ").skip(1) {
                    let mut parts = ack.split_whitespace();
                    let t: Option<usize> = parts.next().and_then(|x| x.parse().ok());
                    let i: Option<u64> = parts.next().and_then(|x| x.parse().ok());
                    if let (Some(t), Some(i)) = (t, i)
                        && t < THREADS
                    {
                        acked[t] = Some(acked[t].map_or(i, |a| a.max(i)));
                    }
                }
            }
            acked
        });
        // The kill lands at a random moment: during start-up and recovery, group
        // commits, segment rolls or checkpoints.
        std::thread::sleep(Duration::from_millis(
            rng.random_range(5..max_delay_ms.max(6)),
        ));
        if let Some(status) = child.try_wait()? {
            bail!("round {round}: the writer exited by itself ({status})");
        }
        child.kill()?;
        child.wait()?;
        report.kills += 1;
        let acked = reader
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))?;

        let (store, recovery) = DurableIndex::open(dir, fingerprint(), config(), options())
            .with_context(|| format!("round {round}: recovery failed"))?;
        report.records_replayed += recovery.records_replayed;
        report.torn_tails += usize::from(recovery.bytes_cut > 0);
        let mut violated = false;
        for t in 0..THREADS {
            let acked_count = acked[t].map_or(applied[t], |i| i + 1);
            report.acknowledged += acked_count - applied[t];
            let mut model = models[t].clone();
            for i in applied[t]..acked_count {
                model.apply(op(seed, t, i));
            }
            if model.matches(&store, t)? {
                models[t] = model;
                applied[t] = acked_count;
                continue;
            }
            // The write in flight may have become durable before the kill.
            let mut with_next = model.clone();
            with_next.apply(op(seed, t, acked_count));
            if with_next.matches(&store, t)? {
                models[t] = with_next;
                applied[t] = acked_count + 1;
                report.in_flight_present += 1;
                continue;
            }
            violated = true;
            report.failures.push(format!(
                "round {round}: writer {t} matches neither {acked_count} nor {} writes: {}; with the next: {}; ops {:?}",
                acked_count + 1,
                model.difference(&store, t)?,
                with_next.difference(&store, t)?,
                (acked_count.saturating_sub(2)..acked_count + 2)
                    .map(|i| describe(&op(seed, t, i)))
                    .collect::<Vec<_>>()
            ));
            // Carry on from what the store holds, so later rounds still check.
            models[t] = model;
            applied[t] = acked_count;
        }
        if !violated && let Some(f) = exact_mismatch(&store, &models)? {
            violated = true;
            report.failures.push(format!("round {round}: {f}"));
        }
        report.violations += usize::from(violated);
        if violated {
            // Later rounds would only repeat it: stop here.
            drop(store);
            break;
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

fn describe(op: &WriteOp) -> String {
    match op {
        WriteOp::Upsert(d) => format!(
            "upsert {:?}",
            d.iter()
                .map(|d| (d.doc_id.to_string(), d.version))
                .collect::<Vec<_>>()
        ),
        WriteOp::Delete(k) => format!("delete {k}"),
        WriteOp::Erase(k) => format!("erase {k}"),
        WriteOp::DeleteWhere { tenant, .. } => format!("delete-where {tenant}"),
        WriteOp::EraseWhere { tenant, .. } => format!("erase-where {tenant}"),
    }
}

/// Exact-mode search on the store against a brute-force index of the models.
fn exact_mismatch(store: &DurableIndex, models: &[Model]) -> Result<Option<String>> {
    let oracle = FlatIndex::new(fingerprint());
    let docs: Vec<DocumentUpdate> = models.iter().flat_map(|m| m.0.values().cloned()).collect();
    if !docs.is_empty() {
        oracle.upsert(docs)?;
    }
    if store.stats().documents != oracle.stats().documents {
        return Ok(Some(format!(
            "{} documents stored, {} expected",
            store.stats().documents,
            oracle.stats().documents
        )));
    }
    for tenant in TENANTS {
        for (user, group) in [
            ("ann", "eng"),
            ("bob", "ops"),
            ("mallory", "hr"),
            ("cy", "none"),
        ] {
            let filter =
                AccessFilter::for_principal(&Principal::new(tenant, user).with_group(group));
            for q in 0..DIMS {
                let mut v = vec![0.1f32; DIMS];
                v[q] = 1.0;
                let e = Embedding::new(fingerprint().id(), v)?;
                let got = store
                    .index()
                    .search_with(&e, 8, &filter, SearchMode::Exact)?;
                let want = oracle.search(&e, 8, &filter)?;
                let ids = |r: &rag_core::SearchResult| {
                    let mut v: Vec<(String, u64)> = r
                        .hits
                        .iter()
                        .map(|h| (h.doc_id.to_string(), (h.score * 1e4).round() as u64))
                        .collect();
                    v.sort();
                    v
                };
                if got.visible != want.visible || ids(&got) != ids(&want) {
                    return Ok(Some(format!(
                        "exact search for {user}@{tenant} differs: {:?} vs {:?}",
                        ids(&got),
                        ids(&want)
                    )));
                }
            }
        }
    }
    Ok(None)
}
