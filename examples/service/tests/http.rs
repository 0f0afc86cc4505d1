//! The service in process over loopback HTTP, on the pipeline's doubles (a hash
//! embedder, an echo generator): tokens, tenant isolation in answers, streams,
//! documents and dead letters, and JSON errors. The same checks on the real models
//! and real clients run in `.ci/run` (`examples/service/e2e/run.py`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};
use rag::pipeline::testing::{EchoGenerator, HashEmbedder};
use rag_service::{Config, Models, Service, router};
use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::{Value, json};

const SECRETS: [(&str, &[u8]); 2] = [
    ("acme", b"acme-test-secret-0123456789abcdef0123"),
    ("globex", b"globex-test-secret-0123456789abcdef01"),
];

fn token(tenant: &str, sub: &str, roles: &[&str]) -> String {
    let secret = SECRETS.iter().find(|(t, _)| *t == tenant).unwrap().1;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(tenant.to_owned());
    let claims = json!({"iss": "https://idp.test", "aud": "rag", "sub": sub, "tenant": tenant,
        "groups": ["staff"], "rag_roles": roles, "nbf": now - 5, "exp": now + 600});
    encode(&header, &claims, &EncodingKey::from_secret(secret).unwrap()).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

struct Running {
    base: String,
    service: Arc<Service>,
    _dir: tempfile::TempDir,
}

fn start() -> Running {
    start_with(Arc::new(EchoGenerator::default()))
}

fn start_with(generator: Arc<dyn rag::Generator>) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<Value> = SECRETS
        .iter()
        .map(|(t, s)| json!({"kty": "oct", "kid": t, "alg": "HS256", "k": b64(s), "x-rag-tenants": [t]}))
        .collect();
    std::fs::write(
        dir.path().join("keys.json"),
        json!({"keys": keys}).to_string(),
    )
    .unwrap();
    let mut config = Config::parse(
        "listen = \"127.0.0.1:0\"\nstate_dir = \"state\"\n[auth]\nissuer = \"https://idp.test\"\naudience = \"rag\"\njwks_file = \"keys.json\"\n",
    )
    .unwrap();
    config.resolve(dir.path());
    config.validate().unwrap();
    let metrics = rag_service::metrics::install().unwrap();
    let service = Service::new(config, metrics).unwrap();
    service
        .start(|| {
            Ok(Models {
                embedder: Arc::new(HashEmbedder::new(64)?),
                generator: Some(generator),
                dense_floor: None,
                context_tokens: None,
            })
        })
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let app = router(Arc::clone(&service));
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    Running {
        base: format!("http://{addr}"),
        service,
        _dir: dir,
    }
}

#[test]
fn two_tenants_over_http_never_see_each_other() {
    let s = start();
    let http = Client::new();
    let call = |method: reqwest::Method, path: &str, tok: Option<&str>, body: Option<Value>| {
        let mut r = http.request(method, format!("{}{path}", s.base));
        if let Some(t) = tok {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().unwrap();
        let status = resp.status();
        let id = resp
            .headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = resp.json().unwrap_or(Value::Null);
        (status, body, id)
    };
    use reqwest::Method;
    let acme_ing = token("acme", "bot", &["ingester"]);
    let globex_ing = token("globex", "bot", &["ingester"]);
    let ann = token("acme", "ann", &["reader"]);
    let bob = token("globex", "bob", &["reader"]);

    // The same id in two tenants is two documents.
    for (tok, text) in [
        (&acme_ing, "acme vault code is ZEBRA"),
        (&globex_ing, "globex vault code is OTTER"),
    ] {
        let (st, body, _) = call(
            Method::PUT,
            "/v1/documents/vault?ack=applied",
            Some(tok),
            Some(json!({"text": text, "groups": ["staff"]})),
        );
        assert_eq!(st, StatusCode::OK, "{body}");
        assert!(body["sequence"].as_u64().unwrap() >= 1);
    }
    for _ in 0..2 {
        for (tok, theirs) in [(&ann, "OTTER"), (&bob, "ZEBRA")] {
            let (st, body, _) = call(
                Method::POST,
                "/v1/query",
                Some(tok),
                Some(json!({"question": "vault code"})),
            );
            assert_eq!(st, StatusCode::OK);
            assert!(!body.to_string().contains(theirs), "{body}");
            assert_eq!(body["citations"][0]["document"], "vault", "{body}");
        }
    }
    // Streams: sources, tokens, done; nothing of the other tenant.
    let text = http
        .post(format!("{}/v1/query", s.base))
        .bearer_auth(&bob)
        .header("accept", "text/event-stream")
        .json(&json!({"question": "vault code", "bypass_cache": true}))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(text.starts_with("event: sources"), "{text}");
    assert!(
        text.contains("event: token") && text.contains("event: done"),
        "{text}"
    );
    assert!(text.contains("OTTER") && !text.contains("ZEBRA"), "{text}");

    // Tokens and roles.
    let (st, body, id) = call(
        Method::POST,
        "/v1/query",
        None,
        Some(json!({"question": "q"})),
    );
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(
        body["error"]["request_id"].as_str(),
        id.as_deref(),
        "the error carries the request id"
    );
    let (st, _, _) = call(
        Method::PUT,
        "/v1/documents/x",
        Some(&ann),
        Some(json!({"text": "t", "groups": ["staff"]})),
    );
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, _) = call(Method::DELETE, "/v1/documents/vault", Some(&acme_ing), None);
    assert_eq!(st, StatusCode::ACCEPTED, "acme deletes its own");
    s.service.queue().unwrap().drain(Duration::from_secs(10));
    let (st, _, _) = call(Method::GET, "/v1/documents/vault", Some(&bob), None);
    assert_eq!(
        st,
        StatusCode::OK,
        "globex's document of the same id is untouched"
    );
    let (st, _, _) = call(Method::GET, "/v1/documents/vault", Some(&ann), None);
    assert_eq!(st, StatusCode::NOT_FOUND);

    // A rejected change is a dead letter of its tenant only.
    let (st, body, _) = call(
        Method::PUT,
        "/v1/documents/stale?ack=applied",
        Some(&acme_ing),
        Some(json!({"text": "second", "groups": ["staff"], "version": 5})),
    );
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body, _) = call(
        Method::PUT,
        "/v1/documents/stale?ack=applied",
        Some(&acme_ing),
        Some(json!({"text": "first", "groups": ["staff"], "version": 4})),
    );
    assert_eq!(
        st,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a stale version is dead-lettered: {body}"
    );
    let (_, acme_dead, _) = call(Method::GET, "/v1/dead-letters", Some(&acme_ing), None);
    assert_eq!(
        acme_dead["dead_letters"].as_array().unwrap().len(),
        1,
        "{acme_dead}"
    );
    let (_, globex_dead, _) = call(Method::GET, "/v1/dead-letters", Some(&globex_ing), None);
    assert_eq!(globex_dead["dead_letters"], json!([]));
    let letter = acme_dead["dead_letters"][0]["id"].as_u64().unwrap();
    let (st, _, _) = call(
        Method::POST,
        &format!("/v1/dead-letters/{letter}/redrive"),
        Some(&globex_ing),
        None,
    );
    assert_eq!(
        st,
        StatusCode::NOT_FOUND,
        "another tenant's dead letter is not found"
    );
    let (st, _, _) = call(Method::GET, "/v1/dead-letters", Some(&ann), None);
    assert_eq!(st, StatusCode::FORBIDDEN, "readers do not see dead letters");

    // Probes.
    let (st, body, _) = call(Method::GET, "/readyz", None, None);
    assert_eq!(st, StatusCode::OK, "{body}");
    s.service.begin_shutdown();
    let (st, body, _) = call(Method::GET, "/readyz", None, None);
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["reasons"][0], "shutting down");
}

#[test]
fn a_client_that_disconnects_mid_stream_stops_generation() {
    use std::io::{BufRead, BufReader, Write};
    let generator = rag::pipeline::testing::ScriptedGenerator::new(500)
        .delays(Duration::ZERO, Duration::from_millis(10))
        .shared();
    let s = start_with(generator.clone());
    let ing = token("acme", "bot", &["ingester"]);
    let resp = Client::new()
        .put(format!("{}/v1/documents/doc?ack=applied", s.base))
        .bearer_auth(&ing)
        .json(&json!({"text": "the spare key is in the top drawer", "groups": ["staff"]}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    let body = json!({"question": "where is the spare key?"}).to_string();
    write!(
        conn,
        "POST /v1/query HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\
         accept: text/event-stream\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        token("acme", "ann", &["reader"]),
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut tokens = 0;
    let mut line = String::new();
    while tokens < 5 {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the stream ended early"
        );
        if line.starts_with("event: token") {
            tokens += 1;
        }
    }
    let at_close = generator.produced();
    conn.shutdown(std::net::Shutdown::Both).unwrap();
    drop(reader);
    drop(conn);
    let started = std::time::Instant::now();
    while generator.running() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "generation did not stop"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let after = generator.produced() - at_close;
    println!("pieces generated after the client went away: {after}");
    assert!(
        after <= 3,
        "{after} pieces were generated after the client went away"
    );
    assert!(
        generator.produced() < 100,
        "generation ran on: {}",
        generator.produced()
    );
}
