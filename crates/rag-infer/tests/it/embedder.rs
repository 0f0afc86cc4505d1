//! The ONNX embedder on the real all-MiniLM-L6-v2 int8 model.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use rag_core::{Device, Embedder};
use rag_infer::{EmbedderConfig, InferError, OnnxEmbedder, SessionOptions};

use crate::runtime;

fn embedder() -> Option<&'static OnnxEmbedder> {
    static E: OnceLock<OnnxEmbedder> = OnceLock::new();
    runtime()?;
    Some(E.get_or_init(|| OnnxEmbedder::new(EmbedderConfig::pinned_minilm()).unwrap()))
}

fn cos(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[test]
fn matches_python_onnxruntime_on_100_sentences() {
    let Some(e) = embedder() else { return };
    let cache = rag_infer::assets::cache_dir();
    let python = cache.join("pyenv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/reference_embeddings.py");
    let out = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new(&python)
        .arg(&script)
        .arg(rag_infer::assets::minilm_dir())
        .arg(data("sentences.json"))
        .arg(out.path())
        .status()
        .unwrap_or_else(|err| panic!("running {}: {err}", python.display()));
    assert!(status.success(), "reference script failed");
    let reference: Vec<serde_json::Value> =
        serde_json::from_str(&fs_err::read_to_string(out.path()).unwrap()).unwrap();
    let sentences: Vec<String> =
        serde_json::from_str(&fs_err::read_to_string(data("sentences.json")).unwrap()).unwrap();
    assert_eq!(sentences.len(), 100);
    let texts: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let ours = e.embed_raw(&texts).unwrap();
    let tokens = e.input_lengths(&texts).unwrap();
    let mut worst = (1.0f32, 0usize);
    for (i, (r, v)) in reference.iter().zip(&ours).enumerate() {
        let want: Vec<f32> = r["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(
            tokens[i] as u64,
            r["tokens"].as_u64().unwrap(),
            "token count of #{i}"
        );
        let c = cos(&want, v);
        if c < worst.0 {
            worst = (c, i);
        }
    }
    eprintln!(
        "worst cosine to the Python reference: {:.6} (sentence #{})",
        worst.0, worst.1
    );
    assert!(
        worst.0 >= 0.999,
        "sentence #{} has cosine {}",
        worst.1,
        worst.0
    );
    assert!(
        tokens.contains(&256),
        "no sentence reached the truncation limit"
    );
}

#[test]
fn related_pairs_score_higher_than_unrelated() {
    let Some(e) = embedder() else { return };
    let pairs = [
        (
            "The cat sat on the mat.",
            "A feline rested on the rug.",
            "Stock markets fell sharply on Monday.",
        ),
        (
            "How do I reset my password?",
            "Password reset instructions are sent by email.",
            "Bake at 180°C for 25 minutes.",
        ),
        (
            "Vitamin D deficiency is linked to bone fractures.",
            "Low vitamin D levels increase fracture risk.",
            "The train to Berlin departs at 9:15.",
        ),
        (
            "Rust guarantees memory safety.",
            "Borrow checking prevents data races.",
            "Goal! The striker scored.",
        ),
    ];
    for (a, b, c) in pairs {
        let v = e.embed_raw(&[a, b, c]).unwrap();
        let (rel, unrel) = (cos(&v[0], &v[1]), cos(&v[0], &v[2]));
        assert!(
            rel > unrel + 0.1,
            "{a:?}: related {rel} vs unrelated {unrel}"
        );
    }
}

#[test]
fn batching_does_not_change_results_and_reports_device() {
    let Some(e) = embedder() else { return };
    let texts = ["short", "a somewhat longer sentence about retrieval", "x"];
    let together = e.embed_raw(&texts).unwrap();
    for (t, v) in texts.iter().zip(&together) {
        let alone = e.embed_raw(&[t]).unwrap().remove(0);
        assert!(cos(&alone, v) > 0.9999);
    }
    assert_eq!(e.device(), Device::Cpu);
    assert_eq!(e.fingerprint().dims(), 384);
    let norms: Vec<f32> = together
        .iter()
        .map(|v| v.iter().map(|x| x * x).sum::<f32>().sqrt())
        .collect();
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-4));
    assert!(e.embed_raw(&[]).unwrap().is_empty());
}

#[test]
fn huge_input_is_truncated_with_bounded_work() {
    let Some(e) = embedder() else { return };
    let huge = "retrieval ".repeat(5_000_000); // 50 MB
    let t = std::time::Instant::now();
    let v = e.embed_raw(&[&huge]).unwrap();
    assert_eq!(v[0].len(), 384);
    assert_eq!(e.input_lengths(&[&huge]).unwrap()[0], 256);
    assert!(t.elapsed().as_secs() < 30);
}

#[test]
fn missing_files_wrong_checksums_and_wrong_interfaces_are_typed_errors() {
    if runtime().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Missing model.
    let err = OnnxEmbedder::new(EmbedderConfig::new(dir.path())).unwrap_err();
    assert!(matches!(err, InferError::ModelMissing { .. }), "{err}");
    // Wrong checksum: a file that is not the pinned model.
    let src = rag_infer::assets::minilm_dir();
    fs_err::write(dir.path().join("model.onnx"), b"garbage").unwrap();
    fs_err::copy(
        src.join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let pinned = EmbedderConfig::pinned_minilm();
    let err = OnnxEmbedder::new(EmbedderConfig {
        model_dir: dir.path().into(),
        ..pinned
    })
    .unwrap_err();
    match err {
        InferError::ChecksumMismatch { path, .. } => assert!(path.ends_with("model.onnx")),
        other => panic!("{other}"),
    }
    // A model without the expected inputs.
    fs_err::copy(data("identity.onnx"), dir.path().join("model.onnx")).unwrap();
    let err = OnnxEmbedder::new(EmbedderConfig::new(dir.path())).unwrap_err();
    assert!(matches!(err, InferError::ModelInterface { .. }), "{err}");
    // A corrupt model without pins.
    fs_err::write(dir.path().join("model.onnx"), b"garbage").unwrap();
    let err = OnnxEmbedder::new(EmbedderConfig::new(dir.path())).unwrap_err();
    assert!(matches!(err, InferError::Ort { .. }), "{err}");
}

#[test]
fn cuda_without_the_feature_is_an_error_not_a_cpu_fallback() {
    if runtime().is_none() || cfg!(feature = "cuda") {
        return;
    }
    let config = EmbedderConfig {
        session: SessionOptions {
            device: Device::Cuda { ordinal: 0 },
            intra_threads: 1,
            spinning: false,
        },
        ..EmbedderConfig::pinned_minilm()
    };
    let err = OnnxEmbedder::new(config).unwrap_err();
    assert!(matches!(err, InferError::DeviceUnavailable { .. }), "{err}");
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_registration_never_falls_back_to_cpu() {
    if runtime().is_none() {
        return;
    }
    let config = EmbedderConfig {
        session: SessionOptions {
            device: Device::Cuda { ordinal: 0 },
            intra_threads: 1,
            spinning: false,
        },
        ..EmbedderConfig::pinned_minilm()
    };
    let has_gpu = std::path::Path::new("/dev/nvidia0").exists();
    match OnnxEmbedder::new(config) {
        Ok(e) => {
            assert!(has_gpu, "CUDA session created on a machine without a GPU");
            assert_eq!(e.device(), Device::Cuda { ordinal: 0 });
        }
        Err(err) => {
            assert!(!has_gpu, "CUDA failed on a GPU machine: {err}");
            eprintln!("CUDA refused as expected without a GPU: {err}");
        }
    }
}

#[test]
fn counts_tokens_without_truncation_and_chunks_to_the_model_budget() {
    let Some(e) = embedder() else { return };
    // [CLS] and [SEP] are the model's; the budget is what is left of 256.
    assert_eq!(e.max_input_tokens(), 254);
    assert_eq!(e.count_tokens("hello world").unwrap(), 2);
    assert_eq!(e.count_tokens("").unwrap(), 0);
    // Far past the 256-token truncation: counted whole.
    let long = "retrieval ".repeat(1000);
    assert_eq!(e.count_tokens(&long).unwrap(), 1000);
    // A chunker budgeted with the model's own tokenizer never makes an input the
    // model would truncate, and its spans are exact.
    let text = "Sentences about graphs and indexes. ".repeat(300) + &"Ωmega".repeat(400);
    let chunker =
        rag_pipeline::RecursiveChunker::new(200, 20, std::sync::Arc::new(CountWith(e))).unwrap();
    let spans = chunker.split(&text).unwrap();
    assert!(spans.len() > 10);
    for r in spans {
        let piece = &text[r];
        let n = e.count_tokens(piece).unwrap();
        assert!((1..=200).contains(&n), "{n} tokens");
    }
}

struct CountWith(&'static OnnxEmbedder);

impl rag_core::TokenCounter for CountWith {
    fn count(&self, text: &str) -> rag_core::Result<usize> {
        self.0.count_tokens(text)
    }
}
