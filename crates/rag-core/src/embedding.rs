//! Embeddings and the fingerprint of the model that made them.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::error::InvalidInput;

/// A short id of an embedding model, derived from its [`ModelFingerprint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelId(pub u64);

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "model:{:016x}", self.0)
    }
}

/// What identifies an embedding model's vector space: its name, dimensions and a
/// checksum of its weights, tokenizer and pooling. Two vectors are comparable only
/// when their fingerprints agree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelFingerprint {
    name: String,
    dims: usize,
    checksum: String,
}

impl ModelFingerprint {
    /// Creates a fingerprint; `dims` must be at least 1 and `name` non-empty.
    pub fn new(
        name: impl Into<String>,
        dims: usize,
        checksum: impl Into<String>,
    ) -> Result<Self, InvalidInput> {
        let name = name.into();
        if name.trim().is_empty() {
            return Err(InvalidInput::EmptyId { what: "model" });
        }
        if dims == 0 {
            return Err(InvalidInput::EmptyVector);
        }
        Ok(Self {
            name,
            dims,
            checksum: checksum.into(),
        })
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of dimensions of its vectors.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// The checksum of the model's files and settings.
    pub fn checksum(&self) -> &str {
        &self.checksum
    }

    /// The short id that embeddings carry.
    pub fn id(&self) -> ModelId {
        let mut h = Sha256::new();
        for part in [self.name.as_bytes(), self.checksum.as_bytes()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.update((self.dims as u64).to_le_bytes());
        let d = h.finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        ModelId(u64::from_le_bytes(b))
    }
}

/// A dense vector from a known model. Construction rejects empty, non-finite and
/// zero vectors, so every `Embedding` in the SDK is usable.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    model: ModelId,
    values: Box<[f32]>,
}

impl Embedding {
    /// Validates and wraps a vector made by `model`.
    pub fn new(model: ModelId, values: impl Into<Box<[f32]>>) -> Result<Self, InvalidInput> {
        let values = values.into();
        if values.is_empty() {
            return Err(InvalidInput::EmptyVector);
        }
        if let Some(position) = values.iter().position(|v| !v.is_finite()) {
            return Err(InvalidInput::NonFinite { position });
        }
        let norm_sq: f64 = values.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        if norm_sq <= f64::from(f32::MIN_POSITIVE) {
            return Err(InvalidInput::ZeroVector);
        }
        Ok(Self { model, values })
    }

    /// The model that made the vector.
    pub fn model(&self) -> ModelId {
        self.model
    }

    /// The components.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Number of dimensions.
    pub fn dims(&self) -> usize {
        self.values.len()
    }

    /// A copy scaled to unit length (cosine similarity becomes a dot product).
    pub fn normalized(&self) -> Vec<f32> {
        let norm = self
            .values
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        self.values
            .iter()
            .map(|&v| (f64::from(v) / norm) as f32)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_vectors() {
        let m = ModelId(1);
        assert_eq!(
            Embedding::new(m, vec![]).unwrap_err(),
            InvalidInput::EmptyVector
        );
        assert_eq!(
            Embedding::new(m, vec![1.0, f32::NAN]).unwrap_err(),
            InvalidInput::NonFinite { position: 1 }
        );
        assert_eq!(
            Embedding::new(m, vec![f32::INFINITY]).unwrap_err(),
            InvalidInput::NonFinite { position: 0 }
        );
        assert_eq!(
            Embedding::new(m, vec![0.0; 4]).unwrap_err(),
            InvalidInput::ZeroVector
        );
    }

    #[test]
    fn normalizes_to_unit_length() {
        let e = Embedding::new(ModelId(1), vec![3.0, 4.0]).unwrap();
        let n = e.normalized();
        assert!((n[0] - 0.6).abs() < 1e-6 && (n[1] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn fingerprint_id_depends_on_every_field() {
        let a = ModelFingerprint::new("m", 4, "abc").unwrap();
        let b = ModelFingerprint::new("m", 5, "abc").unwrap();
        let c = ModelFingerprint::new("m", 4, "abd").unwrap();
        let d = ModelFingerprint::new("n", 4, "abc").unwrap();
        assert_ne!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
        assert_ne!(a.id(), d.id());
        assert!(ModelFingerprint::new("m", 0, "x").is_err());
    }
}
