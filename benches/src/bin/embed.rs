//! Embedding throughput report: rag-infer against Python onnxruntime on the same
//! model, tokenizer, inputs and thread count, at ~16 and ~128 tokens per text and
//! batches of 1, 32 and 256.
//!
//! Rounds alternate between the two, medians are reported.
//!
//! `cargo run --release -p rag-benches --bin embed -- --json PATH [--threads N] [--seconds S] [--rounds R]
//!  [--spinning true|false]`
#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rag_benches::args::Args;
use rag_benches::timing::median;
use rag_infer::{EmbedderConfig, OnnxEmbedder, SessionOptions, assets};
use serde::Serialize;

#[derive(Serialize, Clone)]
struct Row {
    #[serde(rename = "impl")]
    implementation: String,
    tokens: usize,
    batch: usize,
    threads: usize,
    sentences_per_s: f64,
    tokens_per_s: f64,
}

const WORDS: &[&str] = &[
    "the", "model", "search", "data", "index", "query", "answer", "time", "system", "user", "file",
    "graph", "world", "water", "health", "study", "result", "cell", "group", "level", "power",
    "market", "energy", "school", "family", "story", "field", "paper", "price", "light",
];

/// `count` texts of exactly `tokens` tokens (with [CLS] and [SEP]) for this tokenizer.
fn texts(e: &OnnxEmbedder, tokens: usize, count: usize) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let words: Vec<&str> = (0..tokens.saturating_sub(2))
            .map(|j| WORDS[(i * 7 + j * 13 + j * j) % WORDS.len()])
            .collect();
        out.push(words.join(" "));
    }
    let refs: Vec<&str> = out.iter().map(String::as_str).collect();
    let counts = e.input_lengths(&refs)?;
    if counts.iter().any(|&c| c != tokens) {
        bail!(
            "generated texts do not have {tokens} tokens: {:?}",
            &counts[..4.min(counts.len())]
        );
    }
    Ok(out)
}

/// Sentences per second embedding `batch` texts at a time for about `seconds`.
fn measure(e: &OnnxEmbedder, refs: &[&str], batch: usize, seconds: f64) -> Result<f64> {
    e.embed_raw(&refs[..batch])?;
    let (mut done, mut i) = (0usize, 0usize);
    let start = Instant::now();
    loop {
        if i + batch > refs.len() {
            i = 0;
        }
        e.embed_raw(&refs[i..i + batch])?;
        i += batch;
        done += batch;
        if start.elapsed().as_secs_f64() >= seconds && done >= 3 * batch {
            return Ok(done as f64 / start.elapsed().as_secs_f64());
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse()?;
    let threads: usize = args.get(
        "threads",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    )?;
    let seconds: f64 = args.get("seconds", 1.5)?;
    let rounds: usize = args.get("rounds", 3)?;
    rag_infer::load_runtime(&assets::runtime_library())?;
    let config = EmbedderConfig {
        batch_tokens: 256 * 128,
        max_batch: 256,
        session: SessionOptions {
            intra_threads: threads,
            spinning: args.get("spinning", false)?,
            ..SessionOptions::default()
        },
        ..EmbedderConfig::pinned_minilm()
    };
    let e = OnnxEmbedder::new(config)?;

    // Cases and their inputs.
    let mut cases = Vec::new();
    let mut inputs = Vec::new();
    for tokens in [16usize, 128] {
        for batch in [1usize, 32, 256] {
            let pool = texts(&e, tokens, batch.max(64))?;
            cases.push(serde_json::json!({"tokens": tokens, "batch": batch, "texts": pool}));
            inputs.push((tokens, batch, pool));
        }
    }
    // The Python worker, if its environment is there.
    let python = assets::cache_dir().join("pyenv/bin/python");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/embed_bench.py");
    let dir = tempfile::tempdir()?;
    let mut worker = None;
    let mut note = None;
    if python.exists() {
        let cases_path = dir.path().join("inputs.json");
        fs_err::write(
            &cases_path,
            serde_json::to_vec(&serde_json::json!({"cases": cases}))?,
        )?;
        let mut child = Command::new(&python)
            .arg(&script)
            .arg(assets::minilm_dir())
            .arg(&cases_path)
            .arg(threads.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", python.display()))?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("worker stdout")?);
        worker = Some((child, stdin, stdout.lines()));
    } else {
        note = Some(format!(
            "python-onnxruntime skipped: {} not found (run tools/assets.py fetch)",
            python.display()
        ));
    }

    // Rounds alternate between the two implementations; medians are reported.
    let mut rows = Vec::new();
    for (index, (tokens, batch, pool)) in inputs.iter().enumerate() {
        let (tokens, batch) = (*tokens, *batch);
        let refs: Vec<&str> = pool.iter().map(String::as_str).collect();
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            ours.push(measure(&e, &refs, batch, seconds)?);
            if let Some((_, stdin, lines)) = worker.as_mut() {
                writeln!(stdin, "{index} {seconds}")?;
                stdin.flush()?;
                let line = lines.next().context("worker ended early")??;
                let v: serde_json::Value = serde_json::from_str(&line)?;
                theirs.push(v["sentences_per_s"].as_f64().unwrap_or(0.0));
            }
        }
        let mut push = |name: &str, xs: Vec<f64>| {
            if xs.is_empty() {
                return 0.0;
            }
            let sps = median(xs);
            rows.push(Row {
                implementation: name.into(),
                tokens,
                batch,
                threads,
                sentences_per_s: sps,
                tokens_per_s: sps * tokens as f64,
            });
            sps
        };
        let a = push("rag-infer", ours);
        let b = push("python-onnxruntime", theirs);
        eprintln!(
            "tokens {tokens:>3} batch {batch:>3}: rag-infer {a:>8.1}/s  python-onnxruntime {b:>8.1}/s  ratio {:.2}x",
            a / b
        );
    }
    if let Some((mut child, stdin, _)) = worker {
        drop(stdin);
        child.wait()?;
    }
    let report =
        serde_json::json!({"device": "cpu", "threads": threads, "note": note, "results": rows});
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(path) = args.opt("json") {
        fs_err::write(path, &text)?;
    }
    println!("{text}");
    Ok(())
}
