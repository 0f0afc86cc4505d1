//! [`OnnxEmbedder`]: batched sentence embeddings with ONNX Runtime.

use std::path::{Path, PathBuf};

use ndarray::Array2;
use ort::session::Session;
use ort::value::{Tensor, ValueType};
use rag_core::{Device, Embedder, Embedding, ModelFingerprint};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::assets::{minilm_dir, pinned_sha256, sha256_file, verify_file};
use crate::error::{InferError, Result};
use crate::pool::SessionPool;
use crate::runtime::{SessionOptions, build_session, model_files};

/// How token states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the attended tokens (sentence-transformers' default).
    Mean,
    /// The first token's state.
    Cls,
}

/// Settings of an [`OnnxEmbedder`].
#[derive(Debug, Clone)]
pub struct EmbedderConfig {
    /// Directory with `model.onnx` and `tokenizer.json`.
    pub model_dir: PathBuf,
    /// Name recorded in the fingerprint (defaults to the directory name).
    pub name: Option<String>,
    /// Pooling.
    pub pooling: Pooling,
    /// Scale each vector to unit length.
    pub normalize: bool,
    /// Tokens kept per text (longer texts are truncated).
    pub max_tokens: usize,
    /// Most tokens (padded batch size × length) in one model call.
    pub batch_tokens: usize,
    /// Most texts in one model call.
    pub max_batch: usize,
    /// Sessions in the pool.
    pub sessions: usize,
    /// Session and device settings.
    pub session: SessionOptions,
    /// sha256 of `model.onnx` and `tokenizer.json` to check before loading.
    pub checksums: Option<(String, String)>,
}

impl EmbedderConfig {
    /// Defaults for the model in `model_dir`: mean pooling, unit vectors, 256 tokens.
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        Self {
            model_dir: model_dir.into(),
            name: None,
            pooling: Pooling::Mean,
            normalize: true,
            max_tokens: 256,
            batch_tokens: 16_384,
            max_batch: 256,
            sessions: 1,
            session: SessionOptions::default(),
            checksums: None,
        }
    }

    /// The dense-retrieval abstention floor for the pinned all-MiniLM-L6-v2: below
    /// this cosine similarity of the best passage, a question is not answered from
    /// the passages (`rag_pipeline::Abstention::dense`).
    ///
    /// Calibrated with `cargo run --release -p rag-benches --bin answers --
    /// --limit 300 --unanswerable 100` on `squad-dev-open` (seed 11), by the rule
    /// of docs/EVALUATION.md: the 5th percentile of the best passage's score for
    /// answerable questions (0.4125), rounded down to 0.41. At 0.41 the report
    /// measured abstention on 5% of answerable questions and on 82% of the same
    /// questions asked with their article removed (0.40 gave 3% and 74%). One
    /// collection only: recalibrate on the host's own documents.
    pub const MINILM_DENSE_FLOOR: f32 = 0.41;

    /// The pinned all-MiniLM-L6-v2 in the asset cache, with its checksums.
    pub fn pinned_minilm() -> Self {
        let pin = |f: &str| pinned_sha256(&format!("all-MiniLM-L6-v2/{f}")).unwrap_or_default();
        Self {
            name: Some("all-MiniLM-L6-v2-int8".into()),
            checksums: Some((pin("model.onnx"), pin("tokenizer.json"))),
            ..Self::new(minilm_dir())
        }
    }
}

/// What the model takes and gives.
#[derive(Debug, Clone)]
struct Interface {
    token_type_ids: bool,
    output: String,
    /// Whether the output is already one vector per text.
    pooled: bool,
}

/// Sentence embeddings from an ONNX model and a Hugging Face `tokenizer.json`.
#[derive(Debug)]
pub struct OnnxEmbedder {
    tokenizer: Tokenizer,
    /// The same tokenizer without truncation, for counting.
    counter: Tokenizer,
    /// Special tokens the tokenizer adds around an input.
    specials: usize,
    pool: SessionPool,
    interface: Interface,
    config: EmbedderConfig,
    fingerprint: ModelFingerprint,
}

fn interface(session: &Session, path: &Path) -> Result<Interface> {
    let bad = |reason: String| InferError::ModelInterface {
        path: path.to_path_buf(),
        reason,
    };
    let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
    for needed in ["input_ids", "attention_mask"] {
        if !inputs.contains(&needed) {
            return Err(bad(format!("no input {needed:?} (inputs: {inputs:?})")));
        }
    }
    let outputs = session.outputs();
    let chosen = outputs
        .iter()
        .find(|o| o.name() == "sentence_embedding")
        .or_else(|| outputs.iter().find(|o| o.name() == "last_hidden_state"))
        .or_else(|| outputs.first())
        .ok_or_else(|| bad("no outputs".into()))?;
    let rank = match chosen.dtype() {
        ValueType::Tensor { shape, .. } => shape.len(),
        other => {
            return Err(bad(format!(
                "output {} is not a tensor: {other:?}",
                chosen.name()
            )));
        }
    };
    if rank != 2 && rank != 3 {
        return Err(bad(format!(
            "output {} has rank {rank}, expected 2 or 3",
            chosen.name()
        )));
    }
    Ok(Interface {
        token_type_ids: inputs.contains(&"token_type_ids"),
        output: chosen.name().to_owned(),
        pooled: rank == 2,
    })
}

impl OnnxEmbedder {
    /// Loads the model and tokenizer of `config.model_dir`. Files that the asset
    /// manifest pins are checked against their sha256 first. The ONNX Runtime library
    /// must be loaded ([`crate::load_runtime`]).
    pub fn new(config: EmbedderConfig) -> Result<Self> {
        if config.max_tokens < 2 || config.batch_tokens < config.max_tokens || config.max_batch == 0
        {
            return Err(rag_core::InvalidInput::Config {
                reason: "need max_tokens >= 2, batch_tokens >= max_tokens, max_batch >= 1".into(),
            }
            .into());
        }
        let dir = &config.model_dir;
        let (model, tokenizer_path) = model_files(dir)?;
        let (model_sha, tokenizer_sha) = match &config.checksums {
            Some((m, t)) => (verify_file(&model, m)?, verify_file(&tokenizer_path, t)?),
            None => (sha256_file(&model)?, sha256_file(&tokenizer_path)?),
        };
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(InferError::tokenizer)?;
        // The shipped tokenizer.json pads and truncates to a fixed 128; batches are
        // padded to their longest text here instead, and texts cut at max_tokens.
        tokenizer.with_padding(None);
        let mut counter = tokenizer.clone();
        counter
            .with_truncation(None)
            .map_err(InferError::tokenizer)?;
        let specials = tokenizer
            .encode("", true)
            .map_err(InferError::tokenizer)?
            .len();
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: config.max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(InferError::tokenizer)?;
        let sessions = (0..config.sessions.max(1))
            .map(|_| build_session(&model, &config.session))
            .collect::<Result<Vec<_>>>()?;
        let interface = interface(&sessions[0], &model)?;
        let pool = SessionPool::new(sessions);
        let checksum = format!(
            "model:{model_sha} tokenizer:{tokenizer_sha} pooling:{:?} normalize:{} max_tokens:{}",
            config.pooling, config.normalize, config.max_tokens
        );
        let name = config.name.clone().unwrap_or_else(|| {
            dir.file_name().map_or_else(
                || "onnx-embedder".into(),
                |n| n.to_string_lossy().into_owned(),
            )
        });
        let mut embedder = Self {
            tokenizer,
            counter,
            specials,
            pool,
            interface,
            config,
            fingerprint: ModelFingerprint::new(name.clone(), 1, checksum.clone())?,
        };
        let dims = embedder
            .embed_raw(&["dimension probe"])?
            .first()
            .map_or(0, Vec::len);
        embedder.fingerprint = ModelFingerprint::new(name, dims, checksum)?;
        Ok(embedder)
    }

    /// The settings.
    pub fn config(&self) -> &EmbedderConfig {
        &self.config
    }

    /// Token counts of `texts` as the model reads them: special tokens included,
    /// after truncation (what a batch would cost).
    pub fn input_lengths(&self, texts: &[&str]) -> Result<Vec<usize>> {
        let enc = self.encode(texts)?;
        Ok(enc.iter().map(|e| e.len()).collect())
    }

    /// Tokenizes on the calling thread: a parallel `encode_batch` would put rayon's
    /// threads in contention with ONNX Runtime's, and WordPiece is cheap beside the
    /// model (see the `embed` report).
    fn encode(&self, texts: &[&str]) -> Result<Vec<tokenizers::Encoding>> {
        texts
            .iter()
            .map(|t| self.tokenizer.encode(self.bounded(t), true))
            .collect::<Result<_, _>>()
            .map_err(InferError::tokenizer)
    }

    /// A prefix of `text` long enough for `max_tokens` tokens, so that a huge input
    /// costs bounded memory (a WordPiece token covers at most 100 characters).
    fn bounded<'t>(&self, text: &'t str) -> &'t str {
        let max_bytes = self.config.max_tokens * 100 * 4;
        if text.len() <= max_bytes {
            return text;
        }
        let mut end = max_bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        &text[..end]
    }

    /// Embeddings as plain vectors, in input order.
    pub fn embed_raw(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self.encode(texts)?;
        // Longest first, so each batch pads to lengths close to its own.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].len()));
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        let mut start = 0;
        while start < order.len() {
            let longest = encodings[order[start]].len().max(1);
            let fit = (self.config.batch_tokens / longest).clamp(1, self.config.max_batch);
            let end = (start + fit).min(order.len());
            let batch = &order[start..end];
            let vectors =
                self.run_batch(batch.iter().map(|&i| &encodings[i]), batch.len(), longest)?;
            for (&i, v) in batch.iter().zip(vectors) {
                out[i] = v;
            }
            start = end;
        }
        Ok(out)
    }

    fn run_batch<'e>(
        &self,
        encodings: impl Iterator<Item = &'e tokenizers::Encoding>,
        batch: usize,
        len: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let mut ids = Array2::<i64>::zeros((batch, len));
        let mut mask = Array2::<i64>::zeros((batch, len));
        for (row, e) in encodings.enumerate() {
            for (col, (&id, &m)) in e.get_ids().iter().zip(e.get_attention_mask()).enumerate() {
                ids[[row, col]] = i64::from(id);
                mask[[row, col]] = i64::from(m);
            }
        }
        let mask_rows = mask.clone();
        let ids = Tensor::from_array(ids).map_err(|e| InferError::ort("input tensor", e))?;
        let mask = Tensor::from_array(mask).map_err(|e| InferError::ort("input tensor", e))?;
        let iface = &self.interface;
        self.pool.with(|session| {
            let outputs = if iface.token_type_ids {
                let types = Tensor::from_array(Array2::<i64>::zeros((batch, len)))
                    .map_err(|e| InferError::ort("input tensor", e))?;
                session.run(ort::inputs![
                    "input_ids" => ids,
                    "attention_mask" => mask,
                    "token_type_ids" => types
                ])
            } else {
                session.run(ort::inputs!["input_ids" => ids, "attention_mask" => mask])
            }
            .map_err(|e| InferError::ort("run", e))?;
            let value = outputs
                .get(&iface.output)
                .ok_or_else(|| InferError::ort("run", format!("no output {}", iface.output)))?;
            let (shape, data) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| InferError::ort("read output", e))?;
            pool_rows(shape, data, &mask_rows, iface.pooled, self.config.pooling)
                .map(|rows| self.finish(rows))
        })
    }

    fn finish(&self, mut rows: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
        if self.config.normalize {
            for r in &mut rows {
                let norm = r.iter().map(|x| x * x).sum::<f32>().sqrt();
                if norm > 0.0 {
                    r.iter_mut().for_each(|x| *x /= norm);
                }
            }
        }
        rows
    }
}

/// One vector per row from a `[batch, dims]` or `[batch, tokens, dims]` output.
fn pool_rows(
    shape: &[i64],
    data: &[f32],
    mask: &Array2<i64>,
    pooled: bool,
    pooling: Pooling,
) -> Result<Vec<Vec<f32>>> {
    let bad = |what: String| InferError::ort("read output", what);
    let dims = usize::try_from(*shape.last().ok_or_else(|| bad("empty shape".into()))?)
        .map_err(|_| bad("negative dimension".into()))?;
    let batch = mask.nrows();
    if pooled {
        if shape != [batch as i64, dims as i64] || data.len() != batch * dims {
            return Err(bad(format!("unexpected output shape {shape:?}")));
        }
        return Ok(data.chunks(dims).map(<[f32]>::to_vec).collect());
    }
    let tokens = mask.ncols();
    if shape != [batch as i64, tokens as i64, dims as i64] || data.len() != batch * tokens * dims {
        return Err(bad(format!("unexpected output shape {shape:?}")));
    }
    let mut rows = Vec::with_capacity(batch);
    for b in 0..batch {
        let states = &data[b * tokens * dims..(b + 1) * tokens * dims];
        let mut v = vec![0f32; dims];
        match pooling {
            Pooling::Cls => v.copy_from_slice(&states[..dims]),
            Pooling::Mean => {
                let mut n = 0f32;
                for t in 0..tokens {
                    if mask[[b, t]] != 0 {
                        n += 1.0;
                        for (acc, x) in v.iter_mut().zip(&states[t * dims..(t + 1) * dims]) {
                            *acc += x;
                        }
                    }
                }
                let n = n.max(1.0);
                v.iter_mut().for_each(|x| *x /= n);
            }
        }
        rows.push(v);
    }
    Ok(rows)
}

impl Embedder for OnnxEmbedder {
    fn fingerprint(&self) -> &ModelFingerprint {
        &self.fingerprint
    }

    fn embed(&self, texts: &[&str]) -> rag_core::Result<Vec<Embedding>> {
        let id = self.fingerprint.id();
        self.embed_raw(texts)?
            .into_iter()
            .map(|v| Ok(Embedding::new(id, v)?))
            .collect()
    }

    fn device(&self) -> Device {
        self.config.session.device
    }

    fn count_tokens(&self, text: &str) -> rag_core::Result<usize> {
        Ok(self
            .counter
            .encode(text, false)
            .map_err(InferError::tokenizer)?
            .len())
    }

    fn max_input_tokens(&self) -> usize {
        self.config.max_tokens.saturating_sub(self.specials)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_pooling_ignores_padding() {
        // batch 2, tokens 2, dims 2; the second row has one padded token.
        let data = [1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 99.0, 99.0];
        let mask = Array2::from_shape_vec((2, 2), vec![1, 1, 1, 0]).unwrap();
        let rows = pool_rows(&[2, 2, 2], &data, &mask, false, Pooling::Mean).unwrap();
        assert_eq!(rows, vec![vec![2.0, 3.0], vec![10.0, 20.0]]);
        let rows = pool_rows(&[2, 2, 2], &data, &mask, false, Pooling::Cls).unwrap();
        assert_eq!(rows, vec![vec![1.0, 2.0], vec![10.0, 20.0]]);
        assert!(pool_rows(&[2, 3, 2], &data, &mask, false, Pooling::Mean).is_err());
    }
}
