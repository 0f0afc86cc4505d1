//! Bearer tokens to principals (feature `jwt`): a [`JwtVerifier`] checks a JWT
//! against a [`KeySet`] and maps its claims to a [`Principal`] and the [`Grants`]
//! that [`rag_core::authorize`] checks.
//!
//! The rules, all enforced, none optional:
//! - a token over [`JwtConfig::max_token_bytes`] (8 KiB by default) is refused before
//!   it is parsed;
//! - the header must name a known `kid`, and its `alg` must be the one pinned to that
//!   key (`none`, and an HS256 token under an RSA key, are refused);
//! - `exp`, `nbf`, `iss` and `aud` are required and checked, with a leeway of at most
//!   [`MAX_LEEWAY`];
//! - the token's tenant must be one its key may issue for;
//! - the crypto backend is checked when the verifier is built.
//!
//! ```
//! use rag_acl::jwt::{JwtConfig, JwtVerifier, KeySet};
//!
//! let jwks = r#"{"keys": [{"kty": "oct", "kid": "svc", "alg": "HS256",
//!   "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA", "x-rag-tenants": ["acme"]}]}"#;
//! let verifier = JwtVerifier::new(JwtConfig::new("https://idp.example", "rag"), KeySet::from_jwks(jwks)?)?;
//! assert!(verifier.verify("not.a.token").is_err());
//! # Ok::<(), rag_acl::jwt::JwtError>(())
//! ```

mod error;
mod keys;
mod mapping;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode};
use rag_core::{Grants, Principal};
use serde::Deserialize;
use serde_json::{Map, Value};

pub use error::JwtError;
pub use keys::{KeySet, MIN_HMAC_SECRET, MIN_RSA_BITS, TENANTS_MEMBER, TenantScope};
pub use mapping::ClaimMapping;

/// The largest leeway a verifier accepts for `exp` and `nbf`.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// The default limit on a token's length.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;

/// What a verifier checks tokens against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// The one accepted `iss`.
    pub issuer: String,
    /// The `aud` this service answers to.
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`; at most [`MAX_LEEWAY`].
    pub leeway: Duration,
    /// Tokens longer than this are refused unparsed.
    pub max_token_bytes: usize,
    /// Which claims become the principal.
    pub mapping: ClaimMapping,
}

impl JwtConfig {
    /// A configuration for `issuer` and `audience` with a 30 s leeway, the 8 KiB
    /// limit and the default claim mapping.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway: Duration::from_secs(30),
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            mapping: ClaimMapping::default(),
        }
    }
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// Who the caller is, for access filtering.
    pub principal: Principal,
    /// What the caller may do in its tenant.
    pub grants: Grants,
    /// The token's `exp`, in seconds since the Unix epoch.
    pub expires_at: u64,
}

/// Verifies bearer tokens; cheap to share across threads.
#[derive(Debug, Clone)]
pub struct JwtVerifier {
    config: JwtConfig,
    keys: KeySet,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<Value>,
    kid: Option<Value>,
    crit: Option<Value>,
}

impl JwtVerifier {
    /// A verifier; fails if the configuration is unusable or no crypto backend is
    /// installed.
    pub fn new(config: JwtConfig, keys: KeySet) -> Result<Self, JwtError> {
        if CryptoProvider::try_get_default().is_none() {
            return Err(JwtError::NoCryptoBackend);
        }
        if config.issuer.is_empty() || config.audience.is_empty() {
            return Err(JwtError::Config("issuer and audience must be set".into()));
        }
        if config.leeway > MAX_LEEWAY {
            return Err(JwtError::Config(format!(
                "leeway {:?} is over {MAX_LEEWAY:?}",
                config.leeway
            )));
        }
        if config.max_token_bytes == 0 {
            return Err(JwtError::Config("max_token_bytes must be positive".into()));
        }
        if keys.is_empty() {
            return Err(JwtError::Config("no keys".into()));
        }
        Ok(Self { config, keys })
    }

    /// The configuration.
    pub fn config(&self) -> &JwtConfig {
        &self.config
    }

    /// Verifies `token` (without a `Bearer ` prefix) and maps its claims.
    pub fn verify(&self, token: &str) -> Result<Authenticated, JwtError> {
        if token.len() > self.config.max_token_bytes {
            return Err(JwtError::TooLarge {
                len: token.len(),
                max: self.config.max_token_bytes,
            });
        }
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("a JWT has three segments"));
        };
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| JwtError::Malformed("header is not base64url"))?;
        let header: RawHeader = serde_json::from_slice(&header)
            .map_err(|_| JwtError::Malformed("header is not a JSON object"))?;
        if header.crit.is_some() {
            return Err(JwtError::CriticalHeader);
        }
        let alg = match header.alg {
            Some(Value::String(s)) => s,
            _ => return Err(JwtError::Malformed("header has no alg")),
        };
        let kid = match header.kid {
            Some(Value::String(s)) => s,
            None => return Err(JwtError::MissingKid),
            Some(_) => return Err(JwtError::Malformed("kid is not a string")),
        };
        let key = self.keys.get(&kid).ok_or(JwtError::UnknownKid)?;
        if alg != format!("{:?}", key.algorithm) {
            return Err(JwtError::AlgorithmNotAllowed {
                alg: alg.chars().take(16).collect(),
            });
        }

        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        let data = decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| map_error(e.into_kind()))?;

        let (principal, grants) = self.config.mapping.map(&data.claims)?;
        if !key.scope.allows(&principal.tenant) {
            return Err(JwtError::TenantNotAllowed);
        }
        let expires_at = data
            .claims
            .get("exp")
            .and_then(Value::as_f64)
            .filter(|e| *e >= 0.0)
            .ok_or_else(|| JwtError::BadClaim("exp".into()))? as u64;
        Ok(Authenticated {
            principal,
            grants,
            expires_at,
        })
    }
}

fn map_error(kind: ErrorKind) -> JwtError {
    match kind {
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(c) => JwtError::MissingClaim(c),
        ErrorKind::InvalidClaimFormat(c) => JwtError::BadClaim(c),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            JwtError::AlgorithmNotAllowed { alg: String::new() }
        }
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => JwtError::BadSignature,
        _ => JwtError::Malformed("the token does not decode"),
    }
}
