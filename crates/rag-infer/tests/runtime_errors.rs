//! Loading a missing or unusable ONNX Runtime library is a typed error, not a panic.
//! (A binary of its own: a process can load only one runtime.)
#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

use rag_infer::{EmbedderConfig, InferError, OnnxEmbedder, load_runtime};

#[test]
fn missing_and_unusable_runtime_libraries() {
    let err = load_runtime(std::path::Path::new("/nonexistent/libonnxruntime.so")).unwrap_err();
    assert!(matches!(err, InferError::RuntimeMissing { .. }), "{err}");
    assert!(err.to_string().contains("tools/assets.py fetch"));

    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libonnxruntime.so");
    fs_err::write(&fake, b"not a shared library").unwrap();
    let err = load_runtime(&fake).unwrap_err();
    assert!(matches!(err, InferError::RuntimeLoad { .. }), "{err}");

    // No runtime loaded: building an embedder fails cleanly.
    let model_dir = dir.path();
    fs_err::write(model_dir.join("model.onnx"), b"x").unwrap();
    fs_err::write(model_dir.join("tokenizer.json"), b"{}").unwrap();
    assert!(OnnxEmbedder::new(EmbedderConfig::new(model_dir)).is_err());
}
