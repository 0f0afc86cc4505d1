//! Errors of the inference crate.

use std::path::PathBuf;

/// `Result` with [`InferError`].
pub type Result<T, E = InferError> = std::result::Result<T, E>;

/// What went wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InferError {
    /// The ONNX Runtime shared library is not at the path given.
    #[error(
        "ONNX Runtime library not found at {path}; run `python3 tools/assets.py fetch` or pass the path to libonnxruntime.so"
    )]
    RuntimeMissing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The library exists but cannot be used (not a library, wrong version, ...).
    #[error("ONNX Runtime library at {path} cannot be loaded: {message}")]
    RuntimeLoad {
        /// The library.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A different ONNX Runtime library is already loaded in this process.
    #[error("ONNX Runtime is already loaded from {loaded}; cannot load {requested} as well")]
    RuntimeConflict {
        /// The library in use.
        loaded: PathBuf,
        /// The one asked for.
        requested: PathBuf,
    },
    /// A model file is missing.
    #[error(
        "model file {path} is missing; run `python3 tools/assets.py fetch` (with `--generator NAME` for an opt-in generator)"
    )]
    ModelMissing {
        /// The file.
        path: PathBuf,
    },
    /// A generator name that [`crate::LocalGenerator`] does not know.
    #[error("unknown generator {name:?}; known: {known}")]
    UnknownGenerator {
        /// The name given.
        name: String,
        /// The names that are known, comma-separated.
        known: String,
    },
    /// A file's sha256 differs from its pin.
    #[error("{path}: sha256 {actual} differs from the pinned {expected}")]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// Pinned.
        expected: String,
        /// Found.
        actual: String,
    },
    /// The model lacks inputs or outputs this SDK needs.
    #[error("model {path} does not have the expected interface: {reason}")]
    ModelInterface {
        /// The model.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// The tokenizer failed to load or to encode.
    #[error("tokenizer: {message}")]
    Tokenizer {
        /// Its message.
        message: String,
    },
    /// ONNX Runtime failed.
    #[error("onnx runtime {op}: {message}")]
    Ort {
        /// What was being done.
        op: &'static str,
        /// Its message.
        message: String,
    },
    /// The requested device is not available in this build or on this machine.
    #[error("device unavailable: {reason}")]
    DeviceUnavailable {
        /// Why.
        reason: String,
    },
    /// The prompt does not fit the model's context window.
    #[error(
        "prompt of {tokens} tokens exceeds the context window of {window} (with {reserved} reserved for the answer)"
    )]
    PromptTooLong {
        /// Prompt tokens.
        tokens: usize,
        /// Window.
        window: usize,
        /// Tokens kept for generation.
        reserved: usize,
    },
    /// The caller's input was rejected.
    #[error(transparent)]
    Input(#[from] rag_core::InvalidInput),
    /// File system failure.
    #[error("I/O on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl InferError {
    pub(crate) fn ort(op: &'static str, e: impl std::fmt::Display) -> Self {
        InferError::Ort {
            op,
            message: e.to_string(),
        }
    }

    pub(crate) fn tokenizer(e: impl std::fmt::Display) -> Self {
        InferError::Tokenizer {
            message: e.to_string(),
        }
    }
}

impl From<InferError> for rag_core::Error {
    fn from(e: InferError) -> Self {
        match e {
            InferError::Input(i) => rag_core::Error::InvalidInput(i),
            InferError::PromptTooLong { tokens, window, .. } => {
                rag_core::Error::InvalidInput(rag_core::InvalidInput::TooLarge {
                    what: "prompt (tokens)",
                    actual: tokens,
                    max: window,
                })
            }
            InferError::DeviceUnavailable { .. } => rag_core::Error::Unsupported {
                feature: "requested device",
            },
            other => rag_core::Error::backend(rag_core::Stage::Embed, other),
        }
    }
}
