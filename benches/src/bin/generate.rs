//! Generation report: time to first token at a 512-token prompt, decode tokens/s, and
//! the prefill's FLOP rate beside the machine's own large-matrix-product rate, both
//! measured in this run with the same ONNX Runtime.
//!
//! `cargo run --release -p rag-benches --bin generate -- --json PATH [--generator smollm2|qwen]
//!  [--weights q4|q8|fp32] [--spinning true|false]`
#![allow(clippy::print_stdout)]

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ndarray::Array2;
use ort::value::Tensor;
use rag_benches::args::Args;
use rag_benches::timing::median;
use rag_core::{ChatMessage, GenerationRequest, Role, SamplingParams, TokenControl};
use rag_infer::{
    GeneratorConfig, LocalGenerator, OnnxGenerator, SessionOptions, assets, build_session,
};

/// Matmul FLOPs of a llama decoder prefill of `s` tokens (attention over the full
/// `s x s` score matrix, as the graph computes it; the output head at one position).
fn prefill_flops(cfg: &serde_json::Value, s: f64) -> f64 {
    let g = |k: &str| cfg[k].as_f64().unwrap_or(0.0);
    let (h, ffn, layers, heads, kv, d, vocab) = (
        g("hidden"),
        1536.0f64.max(g("ffn")),
        g("layers"),
        g("heads"),
        g("kv_heads"),
        g("head_dim"),
        g("vocab"),
    );
    let per_layer = h * h * 2.0 + h * kv * d * 2.0 + h * ffn * 3.0;
    2.0 * per_layer * layers * s + layers * heads * 4.0 * s * s * d + 2.0 * h * vocab
}

fn main() -> Result<()> {
    let args = Args::parse()?;
    let local = LocalGenerator::from_name(args.opt("generator").unwrap_or("smollm2"))?;
    let threads: usize = args.get(
        "threads",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    )?;
    let prompt_tokens: usize = args.get("prompt-tokens", 512)?;
    rag_infer::load_runtime(&assets::runtime_library())?;
    let session = SessionOptions {
        intra_threads: threads,
        spinning: args.get("spinning", true)?,
        ..SessionOptions::default()
    };
    let base = match (local, args.opt("weights")) {
        (LocalGenerator::SmolLm2, Some(w)) => GeneratorConfig::smollm2(w),
        (LocalGenerator::Qwen25Coder, Some(w)) => GeneratorConfig::qwen2_5_coder(w),
        (l, None) => l.config(),
        (other, Some(_)) => bail!("no weight choice for {}", other.name()),
    };
    let config = GeneratorConfig {
        session: session.clone(),
        ..base
    };
    let model_cfg: serde_json::Value = serde_json::from_str(&fs_err::read_to_string(
        config.model_dir.join("config.json"),
    )?)?;
    let model = config.name.clone().unwrap_or_default();
    let weights = model_cfg["weights"].as_str().unwrap_or("?").to_owned();
    let g = OnnxGenerator::new(config)?;

    // A chat whose prompt is exactly `prompt_tokens` tokens.
    let filler =
        "Retrieval augmented generation grounds answers in documents that the reader may check. ";
    let chat = |n: usize| {
        g.prompt_ids(&[ChatMessage {
            role: Role::User,
            content: filler.repeat(n) + "Summarise.",
        }])
    };
    let mut n = 1;
    while chat(n)?.len() < prompt_tokens {
        n += 1;
    }
    let mut ids = chat(n)?;
    ids.truncate(prompt_tokens);
    g.time_prefill(&ids)?; // warm-up
    let ttft_s = median(
        (0..5)
            .map(|_| g.time_prefill(&ids))
            .collect::<Result<Vec<_>, _>>()?,
    );

    // Decode speed: greedy, a prompt that invites a long answer.
    let request = GenerationRequest {
        messages: vec![ChatMessage {
            role: Role::User,
            content: "Write a long story about a dragon who learns to read.".into(),
        }],
        params: SamplingParams {
            max_new_tokens: 128,
            ..Default::default()
        },
        deadline: None,
    };
    let mut rates = Vec::new();
    let mut generated = 0;
    for _ in 0..3 {
        let out = g.generate_text(&request, &mut |_| TokenControl::Continue)?;
        generated = out.generated_tokens;
        rates.push(out.tokens_per_s);
    }
    let decode = median(rates);

    // The machine's own large-matrix-product rate, same runtime and threads.
    let python = assets::cache_dir().join("pyenv/bin/python");
    let dir = tempfile::tempdir()?;
    let mm = dir.path().join("matmul.onnx");
    let n_mm = 1024usize;
    let status = Command::new(&python)
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/matmul_model.py"))
        .arg(&mm)
        .arg(n_mm.to_string())
        .status()
        .with_context(|| format!("running {}", python.display()))?;
    if !status.success() {
        bail!("matmul model script failed");
    }
    let mut s = build_session(&mm, &session)?;
    let a = Array2::<f32>::from_elem((n_mm, n_mm), 0.5);
    let mut times = Vec::new();
    for _ in 0..7 {
        let input = Tensor::from_array(a.clone())?;
        let t = Instant::now();
        s.run(ort::inputs!["a" => input])?;
        times.push(t.elapsed().as_secs_f64());
    }
    let gemm_gflops = 2.0 * (n_mm as f64).powi(3) / median(times) / 1e9;
    let flops = prefill_flops(&model_cfg, ids.len() as f64);
    let report = serde_json::json!({
        "prompt_tokens": ids.len(),
        "ttft_ms": ttft_s * 1e3,
        "decode_tokens_per_s": decode,
        "decode_tokens_measured": generated,
        "prefill_gflops": flops / ttft_s / 1e9,
        "prefill_gflop": flops / 1e9,
        "machine_gemm_gflops": gemm_gflops,
        "generator": local.name(),
        "model": model,
        "weights": weights,
        "threads": threads,
    });
    eprintln!(
        "{model}: ttft {:.0} ms at {} tokens ({:.1} GFLOP/s prefill vs {:.1} GFLOP/s machine gemm), decode {:.1} tok/s over {} tokens",
        ttft_s * 1e3,
        ids.len(),
        flops / ttft_s / 1e9,
        gemm_gflops,
        decode,
        generated
    );
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(path) = args.opt("json") {
        fs_err::write(path, &text)?;
    }
    println!("{text}");
    Ok(())
}
