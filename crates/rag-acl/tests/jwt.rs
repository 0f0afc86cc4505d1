//! JWT to principal: every refusal the SDK promises, each in its own test, against
//! real keys (fixtures made with `openssl genpkey`, test-only) and real signatures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use proptest::prelude::*;
use rag_acl::jwt::{JwtConfig, JwtError, JwtVerifier, KeySet, MAX_LEEWAY};
use rag_core::{Operation, ServiceRole, TenantId, authorize};
use serde_json::{Value, json};

const RSA: &[u8] = include_bytes!("keys/rsa.pem");
const RSA_PUB: &[u8] = include_bytes!("keys/rsa.pub.pem");
const EC: &[u8] = include_bytes!("keys/ec.pem");
const ED: &[u8] = include_bytes!("keys/ed.pem");
const SECRET: &[u8] = b"an hs256 secret of at least thirty-two bytes";
const ISS: &str = "https://idp.test";
const AUD: &str = "rag-service";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn signing_key(alg: Algorithm) -> EncodingKey {
    match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(RSA).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(EC).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(ED).unwrap(),
        Algorithm::HS256 => EncodingKey::from_secret(SECRET).unwrap(),
        other => panic!("no fixture for {other:?}"),
    }
}

fn kid(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::RS256 => "rsa",
        Algorithm::ES256 => "ec",
        Algorithm::EdDSA => "ed",
        _ => "hmac",
    }
}

/// The public JWK of a fixture, with its kid, pinned alg and tenant scope.
fn jwk(alg: Algorithm, tenants: Value) -> Value {
    let mut jwk = Jwk::from_encoding_key(&signing_key(alg), alg).unwrap();
    jwk.common.key_id = Some(kid(alg).into());
    let mut v = serde_json::to_value(&jwk).unwrap();
    v["x-rag-tenants"] = tenants;
    v
}

fn jwks() -> String {
    json!({"keys": [
        jwk(Algorithm::RS256, json!(["acme", "globex"])),
        jwk(Algorithm::ES256, json!(["acme"])),
        jwk(Algorithm::EdDSA, json!(["*"])),
        jwk(Algorithm::HS256, json!(["acme"])),
    ]})
    .to_string()
}

fn verifier() -> JwtVerifier {
    JwtVerifier::new(
        JwtConfig::new(ISS, AUD),
        KeySet::from_jwks(&jwks()).unwrap(),
    )
    .unwrap()
}

fn claims() -> Value {
    json!({
        "iss": ISS, "aud": AUD, "sub": "alice", "tenant": "acme",
        "exp": now() + 600, "nbf": now() - 10, "iat": now() - 10,
        "groups": ["eng"], "roles": ["auditor"], "rag_roles": ["reader", "ingester", "owner"],
    })
}

fn token(alg: Algorithm, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid(alg).into());
    encode(&header, claims, &signing_key(alg)).unwrap()
}

/// A token with a hand-written header and signature segment.
fn forged(header: Value, claims: &Value, signature: &str) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{h}.{c}.{signature}")
}

fn with(mut c: Value, key: &str, v: Value) -> Value {
    c[key] = v;
    c
}

fn without(mut c: Value, key: &str) -> Value {
    c.as_object_mut().unwrap().remove(key);
    c
}

#[test]
fn valid_tokens_of_each_algorithm_map_to_the_principal_and_grants() {
    let v = verifier();
    for alg in [
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::HS256,
    ] {
        let got = v
            .verify(&token(alg, &claims()))
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(got.principal.tenant.as_str(), "acme");
        assert_eq!(got.principal.user.as_str(), "alice");
        assert!(got.principal.groups.contains(&"eng".into()));
        assert!(got.principal.roles.contains(&"auditor".into()));
        // "owner" is no service role: it grants nothing.
        let roles: Vec<_> = got.grants.roles.iter().copied().collect();
        assert_eq!(roles, [ServiceRole::Reader, ServiceRole::Ingester]);
        let acme = TenantId::new("acme");
        assert!(authorize(&got.grants, &acme, Operation::Ingest).is_ok());
        assert!(authorize(&got.grants, &acme, Operation::Erase).is_err());
        assert!(authorize(&got.grants, &TenantId::new("globex"), Operation::Query).is_err());
    }
}

#[test]
fn alg_none_is_refused() {
    let header = json!({"alg": "none", "typ": "JWT", "kid": "rsa"});
    for sig in ["", "AAAA"] {
        let err = verifier()
            .verify(&forged(header.clone(), &claims(), sig))
            .unwrap_err();
        assert!(
            matches!(err, JwtError::AlgorithmNotAllowed { ref alg } if alg == "none"),
            "{err:?}"
        );
    }
    let header = json!({"alg": "None", "kid": "hmac"});
    let err = verifier()
        .verify(&forged(header, &claims(), ""))
        .unwrap_err();
    assert!(
        matches!(err, JwtError::AlgorithmNotAllowed { .. }),
        "{err:?}"
    );
}

#[test]
fn hs256_signed_with_the_rsa_public_key_as_secret_is_refused() {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa".into());
    let t = encode(
        &header,
        &claims(),
        &EncodingKey::from_secret(RSA_PUB).unwrap(),
    )
    .unwrap();
    let err = verifier().verify(&t).unwrap_err();
    assert!(
        matches!(err, JwtError::AlgorithmNotAllowed { ref alg } if alg == "HS256"),
        "{err:?}"
    );
}

#[test]
fn an_expired_token_is_refused() {
    let c = with(claims(), "exp", json!(now() - 3600));
    let err = verifier().verify(&token(Algorithm::RS256, &c)).unwrap_err();
    assert!(matches!(err, JwtError::Expired), "{err:?}");
}

#[test]
fn a_token_expired_within_the_leeway_is_still_accepted_and_beyond_it_is_not() {
    // The default leeway is 30 s.
    let v = verifier();
    let c = with(claims(), "exp", json!(now() - 5));
    assert!(v.verify(&token(Algorithm::HS256, &c)).is_ok());
    let c = with(claims(), "exp", json!(now() - 120));
    assert!(matches!(
        v.verify(&token(Algorithm::HS256, &c)),
        Err(JwtError::Expired)
    ));
}

#[test]
fn a_token_not_yet_valid_is_refused() {
    let c = with(claims(), "nbf", json!(now() + 3600));
    let err = verifier().verify(&token(Algorithm::ES256, &c)).unwrap_err();
    assert!(matches!(err, JwtError::NotYetValid), "{err:?}");
}

#[test]
fn a_wrong_audience_is_refused() {
    for aud in [json!("another-service"), json!(["another", "yet-another"])] {
        let c = with(claims(), "aud", aud);
        let err = verifier().verify(&token(Algorithm::RS256, &c)).unwrap_err();
        assert!(matches!(err, JwtError::WrongAudience), "{err:?}");
    }
}

#[test]
fn a_missing_audience_is_refused() {
    let c = without(claims(), "aud");
    let err = verifier().verify(&token(Algorithm::RS256, &c)).unwrap_err();
    assert!(
        matches!(err, JwtError::MissingClaim(ref c) if c == "aud"),
        "{err:?}"
    );
}

#[test]
fn missing_exp_nbf_or_iss_are_refused() {
    for claim in ["exp", "nbf", "iss"] {
        let c = without(claims(), claim);
        let err = verifier().verify(&token(Algorithm::EdDSA, &c)).unwrap_err();
        assert!(
            matches!(err, JwtError::MissingClaim(ref c) if c == claim),
            "{claim}: {err:?}"
        );
    }
}

#[test]
fn a_wrong_issuer_is_refused() {
    let c = with(claims(), "iss", json!("https://evil.test"));
    let err = verifier().verify(&token(Algorithm::RS256, &c)).unwrap_err();
    assert!(matches!(err, JwtError::WrongIssuer), "{err:?}");
}

#[test]
fn an_unknown_kid_is_refused() {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rotated-away".into());
    let t = encode(&header, &claims(), &signing_key(Algorithm::RS256)).unwrap();
    let err = verifier().verify(&t).unwrap_err();
    assert!(matches!(err, JwtError::UnknownKid), "{err:?}");
}

#[test]
fn a_token_without_kid_is_refused() {
    let t = encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &signing_key(Algorithm::HS256),
    )
    .unwrap();
    assert!(matches!(verifier().verify(&t), Err(JwtError::MissingKid)));
}

#[test]
fn a_bad_signature_is_refused() {
    let good = token(Algorithm::RS256, &claims());
    // The signature of other claims, pasted under these.
    let other = token(Algorithm::RS256, &with(claims(), "sub", json!("mallory")));
    let (head, _) = good.rsplit_once('.').unwrap();
    let (_, sig) = other.rsplit_once('.').unwrap();
    let err = verifier().verify(&format!("{head}.{sig}")).unwrap_err();
    assert!(matches!(err, JwtError::BadSignature), "{err:?}");
    // Claims edited after signing.
    let (h, rest) = good.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let edited = URL_SAFE_NO_PAD.encode(with(claims(), "tenant", json!("globex")).to_string());
    let err = verifier()
        .verify(&format!("{h}.{edited}.{sig}"))
        .unwrap_err();
    assert!(matches!(err, JwtError::BadSignature), "{err:?}");
    // Signed by another HMAC secret under the configured kid.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("hmac".into());
    let t = encode(
        &header,
        &claims(),
        &EncodingKey::from_secret(&[7u8; 48]).unwrap(),
    )
    .unwrap();
    assert!(matches!(verifier().verify(&t), Err(JwtError::BadSignature)));
}

#[test]
fn a_token_over_8_kib_is_refused_before_parsing() {
    let groups: Vec<String> = (0..600).map(|i| format!("group-{i}")).collect();
    let c = with(claims(), "groups", json!(groups));
    let t = token(Algorithm::HS256, &c);
    assert!(t.len() > 8 * 1024);
    let err = verifier().verify(&t).unwrap_err();
    assert!(
        matches!(err, JwtError::TooLarge { max: 8192, .. }),
        "{err:?}"
    );
    // Garbage of that size is refused the same way, not parsed.
    let junk = "a".repeat(1 << 20);
    assert!(matches!(
        verifier().verify(&junk),
        Err(JwtError::TooLarge { .. })
    ));
}

#[test]
fn claims_naming_a_tenant_the_key_may_not_issue_for_are_refused() {
    let c = with(claims(), "tenant", json!("globex"));
    // ES256 and HS256 keys may sign for acme only; RS256 for acme and globex; EdDSA for any.
    for alg in [Algorithm::ES256, Algorithm::HS256] {
        let err = verifier().verify(&token(alg, &c)).unwrap_err();
        assert!(
            matches!(err, JwtError::TenantNotAllowed),
            "{alg:?}: {err:?}"
        );
    }
    for alg in [Algorithm::RS256, Algorithm::EdDSA] {
        let got = verifier().verify(&token(alg, &c)).unwrap();
        assert_eq!(got.principal.tenant.as_str(), "globex");
        assert_eq!(got.grants.tenant.as_str(), "globex");
    }
}

#[test]
fn claims_of_the_wrong_shape_are_refused() {
    let cases = [
        without(claims(), "tenant"),
        with(claims(), "tenant", json!("")),
        with(claims(), "tenant", json!(["acme"])),
        with(claims(), "sub", json!(42)),
        with(claims(), "groups", json!("eng")),
        with(claims(), "groups", json!([""])),
        with(claims(), "roles", json!([{"name": "x"}])),
        with(claims(), "rag_roles", json!("admin")),
        with(claims(), "exp", json!("tomorrow")),
    ];
    for c in cases {
        let r = verifier().verify(&token(Algorithm::HS256, &c));
        assert!(
            matches!(r, Err(JwtError::MissingClaim(_) | JwtError::BadClaim(_))),
            "{c}: {r:?}"
        );
    }
}

#[test]
fn critical_header_extensions_and_malformed_tokens_are_refused() {
    let header = json!({"alg": "HS256", "kid": "hmac", "crit": ["exp"]});
    let err = verifier()
        .verify(&forged(header, &claims(), "AAAA"))
        .unwrap_err();
    assert!(matches!(err, JwtError::CriticalHeader), "{err:?}");
    for t in ["", "a.b", "a.b.c.d", "!!.b.c", "e30.e30.", "bnVsbA.e30.e30"] {
        assert!(
            matches!(
                verifier().verify(t),
                Err(JwtError::Malformed(_) | JwtError::MissingKid)
            ),
            "{t:?}"
        );
    }
}

#[test]
fn key_sets_that_do_not_pin_alg_and_tenants_are_refused() {
    let mut no_alg = jwk(Algorithm::RS256, json!(["acme"]));
    no_alg.as_object_mut().unwrap().remove("alg");
    let mut no_kid = jwk(Algorithm::RS256, json!(["acme"]));
    no_kid.as_object_mut().unwrap().remove("kid");
    let mut no_tenants = jwk(Algorithm::RS256, json!(["acme"]));
    no_tenants.as_object_mut().unwrap().remove("x-rag-tenants");
    let mut wrong_family = jwk(Algorithm::ES256, json!(["acme"]));
    wrong_family["alg"] = json!("RS256");
    let mut short_secret = jwk(Algorithm::HS256, json!(["acme"]));
    short_secret["k"] = json!(URL_SAFE_NO_PAD.encode(b"short"));
    let mut hs512 = jwk(Algorithm::HS256, json!(["acme"]));
    hs512["alg"] = json!("HS512");
    let cases = [
        no_alg,
        no_kid,
        no_tenants,
        wrong_family,
        short_secret,
        hs512,
        jwk(Algorithm::RS256, json!([])),
        jwk(Algorithm::RS256, json!(["*", "acme"])),
        jwk(Algorithm::RS256, json!("acme")),
    ];
    for key in cases {
        let set = json!({"keys": [key.clone()]}).to_string();
        let r = KeySet::from_jwks(&set);
        assert!(
            matches!(r, Err(JwtError::InvalidKey { .. })),
            "{key}: {r:?}"
        );
    }
    let dup =
        json!({"keys": [jwk(Algorithm::RS256, json!(["a"])), jwk(Algorithm::RS256, json!(["b"]))]});
    assert!(KeySet::from_jwks(&dup.to_string()).is_err());
    assert!(matches!(
        KeySet::from_jwks("{\"keys\": 3}"),
        Err(JwtError::Jwks(_))
    ));
}

#[test]
fn a_verifier_refuses_an_unbounded_leeway_or_an_empty_audience() {
    let keys = KeySet::from_jwks(&jwks()).unwrap();
    let mut c = JwtConfig::new(ISS, AUD);
    c.leeway = MAX_LEEWAY + Duration::from_secs(1);
    assert!(matches!(
        JwtVerifier::new(c, keys.clone()),
        Err(JwtError::Config(_))
    ));
    assert!(matches!(
        JwtVerifier::new(JwtConfig::new(ISS, ""), keys.clone()),
        Err(JwtError::Config(_))
    ));
    assert!(matches!(
        JwtVerifier::new(JwtConfig::new(ISS, AUD), KeySet::new()),
        Err(JwtError::Config(_))
    ));
}

#[test]
fn a_key_set_file_loads_and_a_missing_one_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks()).unwrap();
    assert_eq!(KeySet::from_jwks_file(&path).unwrap().len(), 4);
    assert!(matches!(
        KeySet::from_jwks_file(dir.path().join("absent")),
        Err(JwtError::Io { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Changing any one byte of a valid token either fails verification or (when
    /// the change decodes to the same bytes) yields exactly the same caller.
    #[test]
    fn any_one_byte_change_is_refused_or_harmless(pos in 0usize..10_000, byte in 0x21u8..0x7f) {
        let v = verifier();
        let good = token(Algorithm::HS256, &claims());
        let expected = v.verify(&good).unwrap();
        let mut bytes = good.into_bytes();
        let i = pos % bytes.len();
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        let t = String::from_utf8(bytes).unwrap();
        if let Ok(got) = v.verify(&t) {
            prop_assert_eq!(got, expected);
        }
    }
}
