//! Service load report: the example service (`rag-service`) on loopback HTTP
//! against the same question stream through the in-process facade, in one run.
//!
//! SciFact's corpus is ingested into two stores built alike (one behind the
//! service, one used in process), so both see the same questions in the same order
//! and their caches evolve alike. Questions are drawn from a Zipf distribution over
//! a pool of SciFact texts (the claims, then the corpus titles, up to `--pool`), so
//! the hottest few repeat and most do not. Each concurrency level runs
//! `--requests` questions through HTTP, then the same ones in process. Reported per
//! level: throughput, p50/p99 latency, cache hit ratio and errors; and the process
//! RSS after warm-up and after the run.
//!
//! `--soak-seconds S` then runs a soak: queries at concurrency 8 while files are
//! created, edited and deleted in a watched directory (every 25th file written is
//! not UTF-8: poison) and signed webhooks upsert documents; it samples RSS and the
//! queue depth each second and checks that the dead-letter store holds exactly the
//! poisoned files.
//!
//! `cargo run --release -p rag-benches --features service --bin load -- --json PATH
//!  [--docs 5183] [--pool 10000] [--requests 400] [--levels 1,4,16,64] [--zipf 1.1]
//!  [--generator echo|local|none] [--soak-seconds 0] [--dataset ../shared/datasets/scifact]`
//!
//! The default generator is the pipeline's echo double (it quotes the first
//! passage, instantly): the report measures the service and the pipeline around
//! generation, which is what HTTP adds to; `local` runs SmolLM2 (its cost alone is
//! the `generate` report's), `none` answers extractively (such answers are not
//! cached).
#![allow(clippy::print_stdout)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use rag::acl::{Directory, Registration, sign_webhook};
use rag::pipeline::PipelineConfig;
use rag::pipeline::testing::EchoGenerator;
use rag::{Document, Embedder, Principal, Rag};
use rag_benches::args::Args;
use rag_benches::beir;
use rag_service::{Config, Models, Service, watcher};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Zipf};
use serde_json::{Value, json};

const TENANT: &str = "acme";
const GROUP: &str = "staff";
const JWT_SECRET: &[u8] = b"load-report-secret-0123456789abcdef0123";
const HOOK_SECRET: &str = "load-report-webhook-secret-0123456789abcdef";

/// An embedder that remembers what it embedded while `on`: both stores ingest the
/// same chunks, so the corpus is embedded once. Off for the measured queries.
struct Memo {
    inner: Arc<dyn Embedder>,
    on: AtomicBool,
    seen: std::sync::Mutex<std::collections::HashMap<String, rag::Embedding>>,
}

impl Embedder for Memo {
    fn fingerprint(&self) -> &rag::ModelFingerprint {
        self.inner.fingerprint()
    }

    fn embed(&self, texts: &[&str]) -> rag::Result<Vec<rag::Embedding>> {
        if !self.on.load(Ordering::Relaxed) {
            return self.inner.embed(texts);
        }
        let missing: Vec<&str> = {
            let seen = self
                .seen
                .lock()
                .map_err(|_| rag::Error::backend(rag::Stage::Embed, "memo lock"))?;
            texts
                .iter()
                .copied()
                .filter(|t| !seen.contains_key(*t))
                .collect()
        };
        let fresh = if missing.is_empty() {
            Vec::new()
        } else {
            self.inner.embed(&missing)?
        };
        let mut seen = self
            .seen
            .lock()
            .map_err(|_| rag::Error::backend(rag::Stage::Embed, "memo lock"))?;
        for (t, e) in missing.iter().zip(fresh) {
            seen.insert((*t).to_owned(), e);
        }
        texts
            .iter()
            .map(|t| {
                seen.get(*t)
                    .cloned()
                    .ok_or_else(|| rag::Error::backend(rag::Stage::Embed, "memo miss"))
            })
            .collect()
    }

    fn device(&self) -> rag::Device {
        self.inner.device()
    }

    fn count_tokens(&self, text: &str) -> rag::Result<usize> {
        self.inner.count_tokens(text)
    }

    fn max_input_tokens(&self) -> usize {
        self.inner.max_input_tokens()
    }
}

/// One request's outcome.
#[derive(Clone, Copy)]
struct Sample {
    ms: f64,
    ok: bool,
    hit: bool,
}

struct Level {
    rps: f64,
    p50: f64,
    p99: f64,
    hit_ratio: f64,
    errors: usize,
}

fn summarize(samples: &[Sample], wall: Duration) -> Level {
    let mut ms: Vec<f64> = samples.iter().filter(|s| s.ok).map(|s| s.ms).collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if ms.is_empty() {
            f64::NAN
        } else {
            ms[((ms.len() - 1) as f64 * p).round() as usize]
        }
    };
    let ok = samples.iter().filter(|s| s.ok).count();
    Level {
        rps: ok as f64 / wall.as_secs_f64(),
        p50: pct(0.5),
        p99: pct(0.99),
        hit_ratio: samples.iter().filter(|s| s.ok && s.hit).count() as f64 / ok.max(1) as f64,
        errors: samples.len() - ok,
    }
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn token() -> Result<String> {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(TENANT.into());
    let now = now_s();
    let claims = json!({"iss": "https://idp.load", "aud": "rag", "sub": "ann", "tenant": TENANT,
        "groups": [GROUP], "rag_roles": ["ingester"], "nbf": now - 5, "exp": now + 86_400});
    Ok(encode(
        &header,
        &claims,
        &EncodingKey::from_secret(JWT_SECRET)?,
    )?)
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Runs `questions` with `concurrency` workers through `ask`; returns the samples
/// and the wall time.
async fn drive<F, Fut>(
    questions: Arc<Vec<String>>,
    concurrency: usize,
    ask: F,
) -> (Vec<Sample>, Duration)
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = (bool, bool)> + Send,
{
    let ask = Arc::new(ask);
    let cursor = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (ask, cursor, questions) = (
            Arc::clone(&ask),
            Arc::clone(&cursor),
            Arc::clone(&questions),
        );
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = cursor.fetch_add(1, Ordering::Relaxed);
                let Some(q) = questions.get(i) else { break };
                let t = Instant::now();
                let (ok, hit) = ask(q.clone()).await;
                out.push(Sample {
                    ms: t.elapsed().as_secs_f64() * 1e3,
                    ok,
                    hit,
                });
            }
            out
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await.unwrap_or_default());
    }
    (samples, started.elapsed())
}

struct Setup {
    base: String,
    service: Arc<Service>,
    baseline: Rag,
    token: String,
    watched: PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup(docs: &[beir::CorpusDoc], generator: &str) -> Result<Setup> {
    let dir = tempfile::tempdir()?;
    let watched = dir.path().join("watched");
    std::fs::create_dir_all(&watched)?;
    let jwks = json!({"keys": [{"kty": "oct", "kid": TENANT, "alg": "HS256", "k": b64(JWT_SECRET),
        "x-rag-tenants": [TENANT]}]});
    std::fs::write(dir.path().join("keys.json"), jwks.to_string())?;
    std::fs::write(dir.path().join("hook.secret"), HOOK_SECRET)?;
    let mut config = Config::parse(&format!(
        "listen = \"127.0.0.1:0\"\nstate_dir = \"service\"\n\
         [limits]\nmax_concurrent_requests = 1024\n\
         [auth]\nissuer = \"https://idp.load\"\naudience = \"rag\"\njwks_file = \"keys.json\"\n\
         [[webhooks]]\ntenant = \"{TENANT}\"\nsecret_file = \"hook.secret\"\n\
         [[watch]]\ndir = \"watched\"\ntenant = \"{TENANT}\"\ngroups = [\"{GROUP}\"]\ndebounce_ms = 100\n"
    ))?;
    config.resolve(dir.path());
    config.validate()?;
    let metrics = rag_service::metrics::install()?;
    let service = Service::new(config, metrics)?;
    let mut models = Models::local(generator == "local")?;
    if generator == "echo" {
        models.generator = Some(Arc::new(EchoGenerator::default()));
    }
    let memo = Arc::new(Memo {
        inner: Arc::clone(&models.embedder),
        on: AtomicBool::new(true),
        seen: std::sync::Mutex::default(),
    });
    models.embedder = memo.clone();
    let m = models.clone();
    let s = Arc::clone(&service);
    tokio::task::spawn_blocking(move || s.start(|| Ok(m))).await??;

    // The in-process baseline: the same models, a store of its own, built alike.
    let mut pc = PipelineConfig::default();
    pc.abstention.dense = models.dense_floor;
    pc.context_tokens = models.context_tokens;
    let mut builder = Rag::builder()
        .embedder(Arc::clone(&models.embedder))
        .config(pc)
        .directory(Arc::new(Directory::new(Registration::TrustClaims)));
    if let Some(g) = models.generator {
        builder = builder.generator(g);
    }
    let baseline = builder.open(dir.path().join("baseline"))?;

    let documents: Vec<Document> = docs
        .iter()
        .map(|d| Document::new(TENANT, d.id.as_str(), d.full_text()).readable_by_group(GROUP))
        .collect();
    let t = Instant::now();
    let rag = service.rag().context("the service did not start")?;
    for part in documents.chunks(256) {
        rag.ingest(part.to_vec()).await?;
        baseline.ingest(part.to_vec()).await?;
    }
    memo.on.store(false, Ordering::Relaxed);
    if let Ok(mut seen) = memo.seen.lock() {
        seen.clear();
    }
    println!(
        "ingested {} documents into both stores in {:.1} s",
        documents.len(),
        t.elapsed().as_secs_f64()
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let s = Arc::clone(&service);
    tokio::spawn(async move {
        let _ = rag_service::serve(listener, s, std::future::pending()).await;
    });
    Ok(Setup {
        base,
        service,
        baseline,
        token: token()?,
        watched,
        _dir: dir,
    })
}

fn http_asker(
    client: reqwest::Client,
    url: String,
    token: String,
) -> impl Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = (bool, bool)> + Send>>
+ Send
+ Sync
+ 'static {
    move |q: String| {
        let req = client
            .post(url.clone())
            .bearer_auth(&token)
            .json(&json!({"question": q}));
        Box::pin(async move {
            match req.send().await {
                Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                    Ok(v) => (true, v["from_cache"].as_bool().unwrap_or(false)),
                    Err(_) => (false, false),
                },
                _ => (false, false),
            }
        })
    }
}

fn inprocess_asker(
    rag: Rag,
) -> impl Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = (bool, bool)> + Send>>
+ Send
+ Sync
+ 'static {
    let principal = Principal::new(TENANT, "ann").with_group(GROUP);
    move |q: String| {
        let (rag, principal) = (rag.clone(), principal.clone());
        Box::pin(async move {
            match rag.query(&principal, &q).await {
                Ok(a) => (true, a.from_cache),
                Err(_) => (false, false),
            }
        })
    }
}

fn draw(pool: &[String], n: usize, s: f64, seed: u64) -> Result<Vec<String>> {
    let zipf = Zipf::new(pool.len() as f64, s).context("zipf")?;
    let mut rng = StdRng::seed_from_u64(seed);
    Ok((0..n)
        .map(|_| pool[(zipf.sample(&mut rng) as usize).clamp(1, pool.len()) - 1].clone())
        .collect())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args = Args::parse()?;
    let dataset = PathBuf::from(args.opt("dataset").unwrap_or(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/datasets/scifact"
    )));
    let n_docs: usize = args.get("docs", 5183)?;
    let pool_size: usize = args.get("pool", 10_000)?;
    let requests: usize = args.get("requests", 400)?;
    let warmup: usize = args.get("warmup", 50)?;
    let s: f64 = args.get("zipf", 1.1)?;
    let soak_s: u64 = args.get("soak-seconds", 0)?;
    let generator = args.opt("generator").unwrap_or("echo").to_owned();
    if !matches!(generator.as_str(), "echo" | "local" | "none") {
        bail!("--generator {generator}: use echo, local or none");
    }
    let levels: Vec<usize> = args
        .opt("levels")
        .unwrap_or("1,4,16,64")
        .split(',')
        .map(|x| x.trim().parse().context("--levels"))
        .collect::<Result<_>>()?;

    let collection = beir::load(&dataset, "test")
        .with_context(|| format!("loading SciFact from {}", dataset.display()))?;
    let docs: Vec<beir::CorpusDoc> = collection.corpus.iter().take(n_docs).cloned().collect();
    let mut pool: Vec<String> = collection.queries.iter().map(|(_, q)| q.clone()).collect();
    for d in &collection.corpus {
        if pool.len() >= pool_size {
            break;
        }
        if !d.title.trim().is_empty() {
            pool.push(d.title.clone());
        }
    }
    pool.truncate(pool_size);
    println!(
        "question pool: {} SciFact texts ({} claims, then titles)",
        pool.len(),
        collection.queries.len()
    );

    let setup = setup(&docs, &generator).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let url = format!("{}/v1/query", setup.base);
    let http = Arc::new(http_asker(client.clone(), url.clone(), setup.token.clone()));
    let local = Arc::new(inprocess_asker(setup.baseline.clone()));

    let w = Arc::new(draw(&pool, warmup, s, 7)?);
    let h = Arc::clone(&http);
    let l = Arc::clone(&local);
    drive(Arc::clone(&w), 4, move |q| h(q)).await;
    drive(w, 4, move |q| l(q)).await;
    let rss_warm = rss_mb();

    let mut rows = Vec::new();
    for (i, &c) in levels.iter().enumerate() {
        let qs = Arc::new(draw(&pool, requests, s, 100 + i as u64)?);
        let h = Arc::clone(&http);
        let (hs, hw) = drive(Arc::clone(&qs), c, move |q| h(q)).await;
        let l = Arc::clone(&local);
        let (ls, lw) = drive(qs, c, move |q| l(q)).await;
        let (a, b) = (summarize(&hs, hw), summarize(&ls, lw));
        println!(
            "concurrency {c:>2}: http {:>7.1} q/s p50 {:>7.2} ms p99 {:>7.2} ms hits {:.2} errors {} | in-process {:>7.1} q/s p50 {:>7.2} ms p99 {:>7.2} ms | ratio {:.2}, p50 overhead {:+.2} ms",
            a.rps,
            a.p50,
            a.p99,
            a.hit_ratio,
            a.errors,
            b.rps,
            b.p50,
            b.p99,
            a.rps / b.rps,
            a.p50 - b.p50
        );
        rows.push(json!({
            "concurrency": c, "rps": a.rps, "p50_ms": a.p50, "p99_ms": a.p99,
            "cache_hit_ratio": a.hit_ratio, "errors": a.errors,
            "inprocess_rps": b.rps, "inprocess_p50_ms": b.p50, "inprocess_p99_ms": b.p99,
            "inprocess_cache_hit_ratio": b.hit_ratio, "inprocess_errors": b.errors,
            "rps_over_inprocess": a.rps / b.rps, "p50_overhead_ms": a.p50 - b.p50,
        }));
    }
    let rss_after = rss_mb();
    println!(
        "RSS after warm-up {rss_warm:.0} MB, after the run {rss_after:.0} MB ({:+.1}%)",
        (rss_after / rss_warm - 1.0) * 100.0
    );

    let soak = if soak_s > 0 {
        Some(soak(&setup, &client, &pool, s, Duration::from_secs(soak_s)).await?)
    } else {
        None
    };
    let report = json!({
        "docs": docs.len(), "pool": pool.len(), "requests_per_level": requests, "zipf_s": s,
        "generator": generator,
        "levels": rows, "rss_after_warmup_mb": rss_warm, "rss_after_mb": rss_after,
        "rss_growth": rss_after / rss_warm - 1.0, "soak": soak,
    });
    if let Some(path) = args.opt("json") {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

/// The soak: queries at concurrency 8 beside file and webhook ingest.
async fn soak(
    setup: &Setup,
    client: &reqwest::Client,
    pool: &[String],
    s: f64,
    length: Duration,
) -> Result<Value> {
    let queue = Arc::clone(setup.service.queue().context("no queue")?);
    let _watcher = watcher::spawn(&setup.service.config().watch, Arc::clone(&queue))?;
    let stop = Arc::new(AtomicBool::new(false));
    let queries = Arc::new(AtomicUsize::new(0));
    let query_errors = Arc::new(AtomicUsize::new(0));
    let rss_start = rss_mb();

    // Queries.
    let mut tasks = Vec::new();
    for worker in 0..8u64 {
        let (client, url, token) = (
            client.clone(),
            format!("{}/v1/query", setup.base),
            setup.token.clone(),
        );
        let (stop, queries, errors) = (
            Arc::clone(&stop),
            Arc::clone(&queries),
            Arc::clone(&query_errors),
        );
        let qs = draw(pool, 100_000, s, 1000 + worker)?;
        tasks.push(tokio::spawn(async move {
            for q in qs {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let ok = match client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"question": q}))
                    .send()
                    .await
                {
                    Ok(r) => r.status().is_success(),
                    Err(_) => false,
                };
                queries.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    // Files: create, edit, delete; every 25th write is poison.
    let watched = setup.watched.clone();
    let texts: Vec<String> = pool.iter().take(500).cloned().collect();
    let stop_files = Arc::clone(&stop);
    let files = tokio::task::spawn_blocking(move || -> Result<(usize, BTreeSet<String>)> {
        let mut written = 0usize;
        let mut poisoned = BTreeSet::new();
        let mut i = 0usize;
        while !stop_files.load(Ordering::Relaxed) {
            i += 1;
            if i.is_multiple_of(25) {
                let name = format!("poison-{i}.md");
                std::fs::write(watched.join(&name), b"caf\xe9 \xff\xfe not text")?;
                poisoned.insert(name);
            } else if i.is_multiple_of(7) {
                let _ = std::fs::remove_file(watched.join(format!("note-{}.md", (i / 7) % 40)));
            } else {
                let text = &texts[i % texts.len()];
                std::fs::write(
                    watched.join(format!("note-{}.md", i % 40)),
                    format!("Note {i}: {text}"),
                )?;
                written += 1;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok((written, poisoned))
    });

    // Webhooks.
    let (client_h, base, stop_h) = (client.clone(), setup.base.clone(), Arc::clone(&stop));
    let hooks = tokio::spawn(async move {
        let (mut sent, mut refused) = (0usize, 0usize);
        let mut i = 0usize;
        while !stop_h.load(Ordering::Relaxed) {
            i += 1;
            let body = json!({"changes": [{"op": "upsert", "id": format!("hook-{}", i % 100), "groups": [GROUP],
                "text": format!("Webhook note {i} about the soak run's document {}.", i % 100)}]})
            .to_string();
            let sig =
                sign_webhook(HOOK_SECRET.as_bytes(), now_s(), body.as_bytes()).unwrap_or_default();
            let ok = client_h
                .post(format!("{base}/v1/webhooks/documents"))
                .header("x-rag-tenant", TENANT)
                .header(rag::acl::SIGNATURE_HEADER, sig)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 202);
            sent += 1;
            refused += usize::from(!ok);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        (sent, refused)
    });

    // Samples each second.
    let started = Instant::now();
    let (mut rss_max, mut depth_max, mut rss_series) = (0f64, 0usize, Vec::new());
    while started.elapsed() < length {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let r = rss_mb();
        rss_max = rss_max.max(r);
        depth_max = depth_max.max(queue.depth());
        rss_series.push(r);
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let (written, poisoned) = files.await??;
    let (hooks_sent, hooks_refused) = hooks.await.unwrap_or((0, 0));
    // Let the watcher's last events reach the queue, then drain it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let q = Arc::clone(&queue);
    let left = tokio::task::spawn_blocking(move || q.drain(Duration::from_secs(60))).await?;
    let dead: BTreeSet<String> = queue
        .dead_letters()
        .iter()
        .map(|d| d.change.key().doc_id.as_str().to_owned())
        .collect();
    let rss_end = rss_mb();
    // RSS over the second half against the first, to see growth past warm-up.
    let half = rss_series.len() / 2;
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
    let report = json!({
        "seconds": length.as_secs(), "queries": queries.load(Ordering::Relaxed),
        "query_errors": query_errors.load(Ordering::Relaxed),
        "files_written": written, "poisoned": poisoned.len(), "webhooks": hooks_sent,
        "webhook_errors": hooks_refused, "dead_letters": dead.len(),
        "dead_letters_match_poison": dead == poisoned, "queue_left_after_drain": left,
        "queue_depth_max": depth_max, "rss_start_mb": rss_start, "rss_end_mb": rss_end, "rss_max_mb": rss_max,
        "rss_first_half_mean_mb": mean(&rss_series[..half]), "rss_second_half_mean_mb": mean(&rss_series[half..]),
        "rss_each_minute_mb": rss_series.iter().step_by(60).copied().collect::<Vec<f64>>(),
        "index_end": setup.service.rag().map(|r| { let st = r.pipeline().admin_index().stats(); json!({"documents": st.documents, "chunks": st.chunks, "tombstones": st.tombstones}) }),
    });
    println!("soak: {report}");
    Ok(report)
}
