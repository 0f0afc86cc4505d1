//! Remote generation report: the same SmolLM2 prompt answered in-process, by this
//! SDK's OpenAI-compatible server (ONNX Runtime, q4) and by llama.cpp's server
//! (`llama-cpp-python[server]`, the GGUF Q4_1 the assets fetch), each streamed and
//! not, through `OpenAiGenerator`; then a peak-EWMA balancer over both servers with
//! four concurrent askers, and the same after llama.cpp's server is killed.
//!
//! `cargo run --release -p rag-benches --features remote --bin remote -- --python PATH/bin/python
//!  [--requests 10] [--json PATH]` (PATH: a venv with `llama-cpp-python[server]`;
//! without `--python` only the SDK's own server is measured)
#![allow(clippy::print_stdout)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rag_benches::args::Args;
use rag_benches::timing::median;
use rag_core::{ChatMessage, GenerationRequest, Generator, Role, SamplingParams, TokenControl};
use rag_infer::{GeneratorConfig, OnnxGenerator, assets};
use rag_remote::server::{ServerConfig, spawn};
use rag_remote::{Backend, Balancer, BalancerConfig, OpenAiConfig, OpenAiGenerator, Strategy};
use serde_json::json;

fn request() -> GenerationRequest {
    let passages = "[1] The launch code word for the spring release is BLUEBIRD.\n\n\
                    [2] Salary bands are reviewed by human resources every March.\n\n\
                    [3] Office hours are nine to five. Expenses need a receipt.";
    GenerationRequest::new(
        vec![
            ChatMessage {
                role: Role::System,
                content: "Answer from the numbered passages only and cite them like [1].".into(),
            },
            ChatMessage {
                role: Role::User,
                content: format!("Context:\n{passages}\n\nQuestion: What is the launch code word?"),
            },
        ],
        SamplingParams {
            max_new_tokens: 48,
            ..SamplingParams::default()
        },
    )
}

#[derive(Default)]
struct Runs {
    ttft_ms: Vec<f64>,
    total_ms: Vec<f64>,
    decode_tps: Vec<f64>,
    pieces_match: bool,
    text: String,
}

fn measure(g: &dyn Generator, n: usize) -> Result<Runs> {
    let mut r = Runs {
        pieces_match: true,
        ..Runs::default()
    };
    for _ in 0..n {
        let started = Instant::now();
        let mut first = None;
        let mut pieces = String::new();
        let mut count = 0usize;
        let out = g.generate(&request(), &mut |p| {
            first.get_or_insert_with(|| started.elapsed());
            pieces.push_str(p);
            count += 1;
            TokenControl::Continue
        })?;
        let total = started.elapsed();
        let ttft = first.unwrap_or(total);
        r.ttft_ms.push(ttft.as_secs_f64() * 1e3);
        r.total_ms.push(total.as_secs_f64() * 1e3);
        // Decode rate from the generator's token count, for streamed answers only.
        let tokens = out.generated_tokens;
        let decode_s = (total - ttft).as_secs_f64();
        if count > 1 && tokens > 1 && decode_s > 0.0 {
            r.decode_tps.push((tokens - 1) as f64 / decode_s);
        }
        r.pieces_match &= pieces == out.text;
        r.text = out.text;
    }
    Ok(r)
}

fn summary(name: &str, r: &Runs) -> serde_json::Value {
    let v = json!({
        "name": name,
        "ttft_p50_ms": median(r.ttft_ms.clone()),
        "total_p50_ms": median(r.total_ms.clone()),
        // Only streamed answers have a decode phase to time.
        "decode_tokens_per_s_p50": (!r.decode_tps.is_empty()).then(|| median(r.decode_tps.clone())),
        "pieces_concatenate_to_text": r.pieces_match,
        "answer": r.text,
    });
    let decode = v["decode_tokens_per_s_p50"]
        .as_f64()
        .map_or_else(|| "n/a".to_owned(), |d| format!("{d:.1}"));
    println!(
        "{name:<28} ttft p50 {:>7.1} ms  total p50 {:>7.1} ms  decode {decode:>6} tok/s  pieces==text {}  answer {:?}",
        v["ttft_p50_ms"].as_f64().unwrap_or(0.0),
        v["total_p50_ms"].as_f64().unwrap_or(0.0),
        r.pieces_match,
        r.text.chars().take(80).collect::<String>()
    );
    v
}

fn client(base: &str, model: &str, stream: bool) -> Result<OpenAiGenerator> {
    let mut c = OpenAiConfig::new(base, model);
    c.stream = stream;
    c.context_window = 2048;
    c.request_timeout = Duration::from_secs(120);
    Ok(OpenAiGenerator::new(c)?)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Llama(Child);

impl Drop for Llama {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_llama(python: &str, log: &std::path::Path) -> Result<(Llama, String)> {
    let port = free_port()?;
    let gguf = assets::cache_dir().join("SmolLM2-135M-Instruct/model.Q4_1.gguf");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let child = Command::new(python)
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(&gguf)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--n_ctx",
            "2048",
        ])
        .args([
            "--n_threads",
            &threads.to_string(),
            "--model_alias",
            "smollm2",
        ])
        // By default it cuts a running answer short when another request arrives.
        .args(["--interrupt_requests", "False"])
        .stdout(Stdio::from(fs_err::File::create(log)?.into_parts().0))
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {python} -m llama_cpp.server"))?;
    let llama = Llama(child);
    let base = format!("http://127.0.0.1:{port}");
    let probe = client(&base, "smollm2", true)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while probe.probe().is_err() {
        if Instant::now() > deadline {
            bail!(
                "llama.cpp's server did not come up in 120 s (log: {})",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok((llama, base))
}

/// Runs `askers` × `each` requests; returns failures, the median latency and how
/// many answers differ from `expected` (each backend's own single-request answer).
fn balanced(b: &Balancer, askers: usize, each: usize, expected: &[String]) -> (usize, f64, usize) {
    let failures = AtomicUsize::new(0);
    let odd = AtomicUsize::new(0);
    let totals = parking_lot::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..askers {
            s.spawn(|| {
                for _ in 0..each {
                    let t = Instant::now();
                    match b.generate(&request(), &mut |_| TokenControl::Continue) {
                        Ok(out) => {
                            totals.lock().push(t.elapsed().as_secs_f64() * 1e3);
                            if !expected.contains(&out.text) {
                                odd.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Err(e) => {
                            let mut chain = e.to_string();
                            let mut source = std::error::Error::source(&e);
                            while let Some(s) = source {
                                chain.push_str(&format!(": {s}"));
                                source = s.source();
                            }
                            eprintln!("request failed: {chain}");
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            });
        }
    });
    (
        failures.into_inner(),
        median(totals.into_inner()),
        odd.into_inner(),
    )
}

fn shares(b: &Balancer) -> serde_json::Value {
    b.status()
        .iter()
        .map(|s| {
            json!({"name": s.name, "requests": s.requests, "errors": s.errors,
                   "ejections": s.ejections, "admission": format!("{:?}", s.admission),
                   "latency_estimate_ms": s.latency_s * 1e3})
        })
        .collect()
}

fn main() -> Result<()> {
    let args = Args::parse()?;
    let n: usize = args.get("requests", 10)?;
    rag_infer::load_runtime(&assets::runtime_library())?;
    let local: Arc<dyn Generator> = Arc::new(OnnxGenerator::new(GeneratorConfig::smollm2("q4"))?);
    let mut report = json!({"requests_per_case": n, "max_new_tokens": 48});
    let mut rows = Vec::new();

    // Warm the model once, then the in-process baseline.
    measure(local.as_ref(), 1)?;
    rows.push(summary(
        "in-process (ONNX q4)",
        &measure(local.as_ref(), n)?,
    ));

    let ours = spawn(
        "127.0.0.1:0".parse()?,
        Arc::clone(&local),
        ServerConfig::default(),
    )?;
    let ours_stream = client(&ours.base_url(), "", true)?;
    rows.push(summary("sdk server, streamed", &measure(&ours_stream, n)?));
    rows.push(summary(
        "sdk server, whole",
        &measure(&client(&ours.base_url(), "", false)?, n)?,
    ));

    let Some(python) = args.opt("python") else {
        report["results"] = json!(rows);
        println!("(no --python: llama.cpp's server not measured)");
        return write(&args, &report);
    };
    let log = std::env::temp_dir().join("rag-llama-server.log");
    let (llama, llama_base) = start_llama(python, &log)?;
    let llama_stream = client(&llama_base, "smollm2", true)?;
    measure(&llama_stream, 1)?;
    let llama_runs = measure(&llama_stream, n)?;
    let expected = [measure(&ours_stream, 1)?.text, llama_runs.text.clone()];
    rows.push(summary("llama.cpp server, streamed", &llama_runs));
    rows.push(summary(
        "llama.cpp server, whole",
        &measure(&client(&llama_base, "smollm2", false)?, n)?,
    ));
    report["results"] = json!(rows);

    let backends = vec![
        Backend::openai("sdk-onnx", client(&ours.base_url(), "", true)?),
        Backend::openai("llama.cpp", client(&llama_base, "smollm2", true)?),
    ];
    let config = BalancerConfig {
        strategy: Strategy::PeakEwma,
        ejection: Duration::from_secs(2),
        probe_interval: Duration::from_millis(500),
        ..BalancerConfig::default()
    };
    let b = Arc::new(Balancer::new("smollm2-mixed", backends, config)?);
    let _prober = b.spawn_prober()?;
    let (failures, p50, odd) = balanced(&b, 4, n, &expected);
    println!(
        "balancer (peak-EWMA, 4 askers x {n}): failures {failures}, other answers {odd}, total p50 {p50:.1} ms, {}",
        shares(&b)
    );
    report["balancer"] = json!({"failures": failures, "other_answers": odd, "total_p50_ms": p50, "backends": shares(&b)});

    drop(llama);
    let (failures, p50, odd) = balanced(&b, 4, n, &expected);
    println!(
        "after killing llama.cpp's server: failures {failures}, other answers {odd}, total p50 {p50:.1} ms, {}",
        shares(&b)
    );
    report["balancer_after_kill"] = json!({"failures": failures, "other_answers": odd, "total_p50_ms": p50, "backends": shares(&b)});
    write(&args, &report)
}

fn write(args: &Args, report: &serde_json::Value) -> Result<()> {
    if let Some(path) = args.opt("json") {
        fs_err::write(path, serde_json::to_string_pretty(report)?)?;
    }
    Ok(())
}
