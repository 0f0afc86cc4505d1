//! Why a token was refused.

use std::path::PathBuf;

/// Why a bearer token or a key set was refused. Messages never echo token content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The token is longer than the configured limit; nothing of it was parsed.
    #[error("token of {len} bytes is over the {max}-byte limit")]
    TooLarge {
        /// Bytes given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The token is not three base64url segments with a JSON header and claims.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header's algorithm is `none`, unknown, or not the one pinned to its key
    /// (an HS256 token under an RSA key's `kid` is refused here).
    #[error("algorithm {alg:?} is not accepted for this key")]
    AlgorithmNotAllowed {
        /// The header's `alg`, cut to 16 characters.
        alg: String,
    },
    /// The header names no `kid`.
    #[error("token header has no kid")]
    MissingKid,
    /// No configured key has the header's `kid`.
    #[error("no configured key has the token's kid")]
    UnknownKid,
    /// The header carries `crit` extensions, none of which are understood.
    #[error("token header has critical extensions")]
    CriticalHeader,
    /// The signature does not verify under the key.
    #[error("bad token signature")]
    BadSignature,
    /// `exp` is past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `aud` does not name this service.
    #[error("token audience is not this service")]
    WrongAudience,
    /// `iss` is not the configured issuer.
    #[error("token issuer is not the configured one")]
    WrongIssuer,
    /// A required claim is absent (`exp`, `nbf`, `iss`, `aud`, or a mapped claim).
    #[error("token lacks required claim {0:?}")]
    MissingClaim(String),
    /// A claim has the wrong type, is empty, or is over its limits.
    #[error("token claim {0:?} is invalid")]
    BadClaim(String),
    /// The token names a tenant its signing key may not issue for.
    #[error("the signing key may not issue tokens for this tenant")]
    TenantNotAllowed,
    /// No jsonwebtoken crypto backend is installed (exactly one of its features
    /// must be on); checked when the verifier is built, never on first use.
    #[error("no JWT crypto backend is installed")]
    NoCryptoBackend,
    /// A configured key is unusable.
    #[error("key {kid:?}: {reason}")]
    InvalidKey {
        /// The key's id.
        kid: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The verifier's configuration is invalid.
    #[error("invalid JWT configuration: {0}")]
    Config(String),
    /// Reading a key file failed.
    #[error("reading key set {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A key set file is not a JWKS.
    #[error("key set is not a JWKS: {0}")]
    Jwks(#[source] serde_json::Error),
}

impl From<JwtError> for rag_core::Error {
    fn from(e: JwtError) -> Self {
        match e {
            JwtError::NoCryptoBackend
            | JwtError::InvalidKey { .. }
            | JwtError::Config(_)
            | JwtError::Io { .. }
            | JwtError::Jwks(_) => rag_core::Error::Backend {
                stage: rag_core::Stage::Access,
                source: Box::new(e),
            },
            other => rag_core::Error::Denied {
                reason: other.to_string(),
            },
        }
    }
}
