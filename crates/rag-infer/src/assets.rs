//! The asset cache: where `tools/assets.py fetch` puts the runtime and models, and
//! the sha256 pins of `assets/manifest.json`, compiled in.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{InferError, Result};

const MANIFEST: &str = include_str!("../../../assets/manifest.json");

/// The asset cache directory: `$RAG_SDK_CACHE`, else `$XDG_CACHE_HOME/rag-sdk`, else
/// `~/.cache/rag-sdk` (the same rule as `tools/assets.py`).
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RAG_SDK_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("rag-sdk")
}

/// The pinned sha256 of the cache-relative file `rel` (as `to` in the manifest).
pub fn pinned_sha256(rel: &str) -> Option<String> {
    let manifest: serde_json::Value = serde_json::from_str(MANIFEST).ok()?;
    let optional = manifest["optional_packages"]["gpu"].as_array();
    manifest["packages"]
        .as_array()?
        .iter()
        .chain(optional.into_iter().flatten())
        .flat_map(|p| p["files"].as_array().into_iter().flatten())
        .find(|f| f["to"] == rel)
        .and_then(|f| f["sha256"].as_str().map(str::to_owned))
}

/// Hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let io = |source| InferError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs_err::File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            InferError::ModelMissing {
                path: path.to_path_buf(),
            }
        } else {
            io(e)
        }
    })?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Checks a file against an expected sha256; returns the hash.
pub fn verify_file(path: &Path, expected: &str) -> Result<String> {
    let actual = sha256_file(path)?;
    if actual != expected {
        return Err(InferError::ChecksumMismatch {
            path: path.to_path_buf(),
            expected: expected.to_owned(),
            actual,
        });
    }
    Ok(actual)
}

/// The pinned ONNX Runtime library in the cache.
pub fn runtime_library() -> PathBuf {
    cache_dir().join("onnxruntime/libonnxruntime.so")
}

/// The pinned CUDA build of ONNX Runtime in the cache (`fetch --gpu`), with its
/// provider libraries beside it.
pub fn gpu_runtime_library() -> PathBuf {
    cache_dir().join("onnxruntime-gpu/libonnxruntime.so")
}

/// The pinned all-MiniLM-L6-v2 directory in the cache (`model.onnx`, `tokenizer.json`).
pub fn minilm_dir() -> PathBuf {
    cache_dir().join("all-MiniLM-L6-v2")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_pins_the_models() {
        assert_eq!(
            pinned_sha256("all-MiniLM-L6-v2/model.onnx").map(|s| s.len()),
            Some(64)
        );
        assert!(pinned_sha256("onnxruntime/libonnxruntime.so").is_some());
        assert!(pinned_sha256("onnxruntime-gpu/libonnxruntime_providers_cuda.so").is_some());
        assert!(pinned_sha256("nope").is_none());
    }

    #[test]
    fn checksum_mismatch_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.onnx");
        fs_err::write(&p, b"not a model").unwrap();
        match verify_file(&p, &"0".repeat(64)) {
            Err(InferError::ChecksumMismatch { path, .. }) => assert_eq!(path, p),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            verify_file(&dir.path().join("missing.onnx"), "x"),
            Err(InferError::ModelMissing { .. })
        ));
    }
}
