//! Loading the ONNX Runtime library and building sessions on a chosen device.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use rag_core::Device;

use crate::error::{InferError, Result};

static LOADED: OnceLock<(PathBuf, ort::environment::Environment)> = OnceLock::new();

/// Loads the ONNX Runtime shared library at `path` into this process (once; a second
/// call with the same path is a no-op). A missing or unusable library is an error,
/// never a panic.
pub fn load_runtime(path: &Path) -> Result<()> {
    let path = fs_err::canonicalize(path).map_err(|_| InferError::RuntimeMissing {
        path: path.to_path_buf(),
    })?;
    if let Some((loaded, _)) = LOADED.get() {
        if *loaded == path {
            return Ok(());
        }
        return Err(InferError::RuntimeConflict {
            loaded: loaded.clone(),
            requested: path,
        });
    }
    let builder = ort::init_from(&path).map_err(|e| InferError::RuntimeLoad {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let env = builder
        .with_name("rag-sdk")
        .build()
        .map_err(|e| InferError::RuntimeLoad {
            path: path.clone(),
            message: e.to_string(),
        })?;
    // The environment lives for the rest of the process, like the library.
    let _ = LOADED.set((path, env));
    Ok(())
}

/// Whether a runtime library has been loaded.
pub fn runtime_loaded() -> bool {
    LOADED.get().is_some()
}

/// Settings for building sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    /// Where to run.
    pub device: Device,
    /// Threads per session for one operator (CPU).
    pub intra_threads: usize,
    /// Whether idle intra-op threads busy-wait for the next operator (ONNX Runtime's
    /// `session.intra_op.allow_spinning`). Off by default, and so for the embedder:
    /// between two runs the spinning threads hold on to cores that the index, the
    /// host application or another session need (pipeline ingest on 2 cores went
    /// from 0.82 to 0.92 of the raw embedding rate with it off, the raw rate
    /// unchanged). [`GeneratorConfig`](crate::GeneratorConfig) turns it on.
    pub spinning: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            intra_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            spinning: false,
        }
    }
}

/// Builds a session for `model` on the requested device. CUDA is registered with
/// `error_on_failure`, so a missing GPU or provider is an error, not a silent CPU run.
pub fn build_session(model: &Path, options: &SessionOptions) -> Result<Session> {
    let Some((_, env)) = LOADED.get() else {
        return Err(InferError::RuntimeMissing {
            path: PathBuf::from("(no runtime loaded: call load_runtime first)"),
        });
    };
    if !model.exists() {
        return Err(InferError::ModelMissing {
            path: model.to_path_buf(),
        });
    }
    let mut builder = Session::builder(env)
        .map_err(|e| InferError::ort("session builder", e))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| InferError::ort("optimization level", e))?
        .with_intra_threads(options.intra_threads.max(1))
        .map_err(|e| InferError::ort("intra threads", e))?
        .with_intra_op_spinning(options.spinning)
        .map_err(|e| InferError::ort("intra-op spinning", e))?;
    match options.device {
        Device::Cpu => {}
        Device::Cuda { ordinal } => {
            builder = register_cuda(builder, ordinal)?;
        }
    }
    builder
        .commit_from_file(model)
        .map_err(|e| InferError::ort("load model", e))
}

#[cfg(feature = "cuda")]
fn register_cuda(
    builder: ort::session::builder::SessionBuilder,
    ordinal: u32,
) -> Result<ort::session::builder::SessionBuilder> {
    let ep = ort::ep::CUDA::default()
        .with_device_id(ordinal as i32)
        .build()
        .error_on_failure();
    builder
        .with_execution_providers([ep])
        .map_err(|e| InferError::DeviceUnavailable {
            reason: format!("CUDA device {ordinal}: {e}"),
        })
}

#[cfg(not(feature = "cuda"))]
fn register_cuda(
    _builder: ort::session::builder::SessionBuilder,
    ordinal: u32,
) -> Result<ort::session::builder::SessionBuilder> {
    Err(InferError::DeviceUnavailable {
        reason: format!(
            "CUDA device {ordinal} requested, but rag-infer was built without the `cuda` feature"
        ),
    })
}

/// `model.onnx` and `tokenizer.json` of a model directory, both required.
pub(crate) fn model_files(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let model = dir.join("model.onnx");
    let tokenizer = dir.join("tokenizer.json");
    for p in [&model, &tokenizer] {
        if !p.exists() {
            return Err(InferError::ModelMissing { path: p.clone() });
        }
    }
    Ok((model, tokenizer))
}
