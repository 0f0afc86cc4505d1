//! Verification keys, each pinned to one algorithm and to the tenants it may issue
//! tokens for, loaded from a JWKS.
//!
//! A JWKS key is accepted only with a `kid`, an `alg` of `RS256`, `ES256`, `EdDSA` or
//! `HS256` that fits its key type, and an `x-rag-tenants` member: an array of the
//! tenant ids the key may sign for, or `["*"]` for any tenant.
//!
//! ```json
//! {"keys": [{"kty": "oct", "kid": "svc", "alg": "HS256", "k": "…",
//!            "x-rag-tenants": ["acme"]}]}
//! ```

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use rag_core::TenantId;
use serde::Deserialize;

use super::error::JwtError;

/// The JWKS member that scopes a key to tenants.
pub const TENANTS_MEMBER: &str = "x-rag-tenants";
/// The shortest HS256 secret accepted, in bytes (RFC 7518 §3.2: the hash size).
pub const MIN_HMAC_SECRET: usize = 32;
/// The smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// The tenants a key may issue tokens for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantScope {
    /// Any tenant (a single-tenant deployment, or a trusted central issuer).
    Any,
    /// Only these.
    Only(BTreeSet<TenantId>),
}

impl TenantScope {
    /// Whether the scope includes `tenant`.
    pub fn allows(&self, tenant: &TenantId) -> bool {
        match self {
            TenantScope::Any => true,
            TenantScope::Only(set) => set.contains(tenant),
        }
    }
}

/// One verification key with its pinned algorithm and tenant scope.
#[derive(Clone)]
pub(crate) struct PinnedKey {
    pub(crate) algorithm: Algorithm,
    pub(crate) key: DecodingKey,
    pub(crate) scope: TenantScope,
}

/// The keys a verifier accepts, by `kid`.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, PinnedKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a JWKS file.
    pub fn from_jwks_file(path: impl AsRef<Path>) -> Result<Self, JwtError> {
        let path = path.as_ref();
        let text = fs_err::read_to_string(path).map_err(|source| JwtError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_jwks(&text)
    }

    /// Parses a JWKS document; every key must pass the rules in the module docs.
    pub fn from_jwks(json: &str) -> Result<Self, JwtError> {
        let raw: RawSet = serde_json::from_str(json).map_err(JwtError::Jwks)?;
        let mut set = KeySet::new();
        for value in raw.keys {
            let scope = scope_of(&value)?;
            let jwk: Jwk = serde_json::from_value(value).map_err(JwtError::Jwks)?;
            set.insert_jwk(&jwk, scope)?;
        }
        Ok(set)
    }

    /// Adds a JWK with a scope, applying the same rules as [`KeySet::from_jwks`].
    pub fn insert_jwk(&mut self, jwk: &Jwk, scope: TenantScope) -> Result<(), JwtError> {
        let kid = jwk
            .common
            .key_id
            .clone()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| invalid("", "a key needs a kid"))?;
        let algorithm = match jwk.common.key_algorithm {
            Some(KeyAlgorithm::RS256) => Algorithm::RS256,
            Some(KeyAlgorithm::ES256) => Algorithm::ES256,
            Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
            Some(KeyAlgorithm::HS256) => Algorithm::HS256,
            Some(other) => {
                return Err(invalid(
                    &kid,
                    &format!("algorithm {other:?} is not accepted"),
                ));
            }
            None => return Err(invalid(&kid, "a key must pin its alg")),
        };
        check_material(&kid, algorithm, &jwk.algorithm)?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| invalid(&kid, &e.to_string()))?;
        self.insert(kid, algorithm, key, scope)
    }

    /// Adds a decoding key under `kid`, pinned to `algorithm` and `scope`.
    pub fn insert(
        &mut self,
        kid: impl Into<String>,
        algorithm: Algorithm,
        key: DecodingKey,
        scope: TenantScope,
    ) -> Result<(), JwtError> {
        let kid = kid.into();
        if !matches!(
            algorithm,
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA | Algorithm::HS256
        ) {
            return Err(invalid(
                &kid,
                &format!("algorithm {algorithm:?} is not accepted"),
            ));
        }
        if key.family() != algorithm.family() {
            return Err(invalid(&kid, "the key does not fit its algorithm"));
        }
        if algorithm == Algorithm::HS256
            && key
                .try_get_as_bytes()
                .map_or(true, |b| b.len() < MIN_HMAC_SECRET)
        {
            return Err(invalid(&kid, "HS256 secret under 32 bytes"));
        }
        if self.keys.contains_key(&kid) {
            return Err(invalid(&kid, "duplicate kid"));
        }
        self.keys.insert(
            kid,
            PinnedKey {
                algorithm,
                key,
                scope,
            },
        );
        Ok(())
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(crate) fn get(&self, kid: &str) -> Option<&PinnedKey> {
        self.keys.get(kid)
    }
}

fn invalid(kid: &str, reason: &str) -> JwtError {
    JwtError::InvalidKey {
        kid: kid.chars().take(64).collect(),
        reason: reason.to_owned(),
    }
}

fn scope_of(value: &serde_json::Value) -> Result<TenantScope, JwtError> {
    let kid = value.get("kid").and_then(|k| k.as_str()).unwrap_or("");
    let Some(list) = value.get(TENANTS_MEMBER) else {
        return Err(invalid(kid, &format!("a key needs {TENANTS_MEMBER}")));
    };
    let names = list
        .as_array()
        .ok_or_else(|| invalid(kid, &format!("{TENANTS_MEMBER} must be an array")))?;
    let mut tenants = BTreeSet::new();
    for name in names {
        match name.as_str() {
            Some("*") if names.len() == 1 => return Ok(TenantScope::Any),
            Some(t) if !t.is_empty() && t != "*" => {
                tenants.insert(TenantId::new(t));
            }
            _ => {
                return Err(invalid(
                    kid,
                    &format!("{TENANTS_MEMBER} holds tenant ids, or only \"*\""),
                ));
            }
        }
    }
    if tenants.is_empty() {
        return Err(invalid(kid, &format!("{TENANTS_MEMBER} is empty")));
    }
    Ok(TenantScope::Only(tenants))
}

fn check_material(
    kid: &str,
    algorithm: Algorithm,
    params: &AlgorithmParameters,
) -> Result<(), JwtError> {
    let decoded_len = |s: &str| {
        URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map(|b| b.len())
    };
    match (algorithm, params) {
        (Algorithm::RS256, AlgorithmParameters::RSA(rsa)) => {
            let bytes = decoded_len(&rsa.n).map_err(|_| invalid(kid, "bad modulus"))?;
            if bytes * 8 < MIN_RSA_BITS {
                return Err(invalid(kid, "RSA modulus under 2048 bits"));
            }
            Ok(())
        }
        (Algorithm::ES256, AlgorithmParameters::EllipticCurve(ec))
            if ec.curve == EllipticCurve::P256 =>
        {
            Ok(())
        }
        (Algorithm::EdDSA, AlgorithmParameters::OctetKeyPair(okp))
            if okp.curve == EllipticCurve::Ed25519 =>
        {
            Ok(())
        }
        (Algorithm::HS256, AlgorithmParameters::OctetKey(oct)) => {
            let bytes = decoded_len(&oct.value).map_err(|_| invalid(kid, "bad secret"))?;
            if bytes < MIN_HMAC_SECRET {
                return Err(invalid(kid, "HS256 secret under 32 bytes"));
            }
            Ok(())
        }
        _ => Err(invalid(kid, "the key type or curve does not fit its alg")),
    }
}
