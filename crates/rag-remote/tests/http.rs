//! Remote generation over real HTTP on loopback: the crate's OpenAI-compatible
//! server over generator doubles, the client streamed and not, the balancer over
//! several servers, and hand-written hostile servers (malformed SSE, a stream cut
//! mid-answer, 503 while loading, a server that never answers).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Scripted, hammer, request};
use rag_core::{Error, FinishReason, Generator, TokenControl};
use rag_remote::server::{ServerConfig, ServerHandle, spawn};
use rag_remote::{
    Admission, Backend, Balancer, BalancerConfig, OpenAiConfig, OpenAiGenerator, RemoteError,
    Strategy,
};

fn serve(g: Arc<Scripted>) -> ServerHandle {
    spawn("127.0.0.1:0".parse().unwrap(), g, ServerConfig::default()).unwrap()
}

fn client(base: &str, stream: bool) -> OpenAiGenerator {
    let mut c = OpenAiConfig::new(base, "scripted");
    c.stream = stream;
    c.request_timeout = Duration::from_secs(10);
    OpenAiGenerator::new(c).unwrap()
}

fn remote_error(e: &Error) -> &RemoteError {
    let source: &(dyn std::error::Error + 'static) = match e {
        Error::Transient { source, .. } | Error::Backend { source, .. } => source.as_ref(),
        other => panic!("not a remote failure: {other:?}"),
    };
    source.downcast_ref::<RemoteError>().unwrap()
}

#[test]
fn streamed_and_whole_answers_carry_the_generators_text() {
    let g = Scripted::named("local", 12).shared();
    let server = serve(Arc::clone(&g));
    for stream in [true, false] {
        let c = client(&server.base_url(), stream);
        let mut pieces = Vec::new();
        let out = c
            .generate(&request(), &mut |p| {
                pieces.push(p.to_owned());
                TokenControl::Continue
            })
            .unwrap();
        assert_eq!(out.text, g.full_text());
        assert_eq!(pieces.concat(), out.text, "stream={stream}");
        assert_eq!(pieces.len(), if stream { 12 } else { 1 });
        assert_eq!(out.finish, FinishReason::EndOfText);
    }
    // max_tokens reaches the server and its finish reason comes back.
    let c = client(&server.base_url(), true);
    let mut r = request();
    r.params.max_new_tokens = 5;
    let out = c.generate(&r, &mut |_| TokenControl::Continue).unwrap();
    assert_eq!(out.text, " w0 w1 w2 w3 w4");
    assert_eq!(out.finish, FinishReason::MaxTokens);
    c.probe().unwrap();
}

#[test]
fn a_client_that_stops_after_3_tokens_stops_the_servers_generator() {
    let g = Scripted::named("local", 200)
        .delays(Duration::ZERO, Duration::from_millis(15))
        .shared();
    let server = serve(Arc::clone(&g));
    let c = client(&server.base_url(), true);
    let mut seen = 0;
    let out = c
        .generate(&request(), &mut |_| {
            seen += 1;
            if seen == 3 {
                TokenControl::Stop
            } else {
                TokenControl::Continue
            }
        })
        .unwrap();
    assert_eq!(out.finish, FinishReason::Cancelled);
    assert_eq!(out.text, " w0 w1 w2");
    // The server notices the closed connection when a write fails: the token in
    // flight, the one whose write fails, and at most one more are made.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = g.produced();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = g.produced();
        if now == last {
            break;
        }
        last = now;
        assert!(Instant::now() < deadline, "the generator never stopped");
    }
    eprintln!("tokens produced by the server after a stop at 3: {last}");
    assert!(
        last <= 3 + 4,
        "the server made {last} tokens for a client that stopped at 3"
    );
}

#[test]
fn an_over_limit_prompt_is_invalid_input_and_a_spent_deadline_never_reaches_the_server() {
    let g = Scripted::named("local", 4).shared();
    let server = spawn(
        "127.0.0.1:0".parse().unwrap(),
        Arc::clone(&g) as Arc<dyn Generator>,
        ServerConfig {
            max_prompt_bytes: 100,
            ..ServerConfig::default()
        },
    )
    .unwrap();
    let c = client(&server.base_url(), true);
    let mut r = request();
    r.messages[0].content = "x".repeat(500);
    let err = c.generate(&r, &mut |_| TokenControl::Continue).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    let mut r = request();
    r.deadline = Some(Instant::now());
    let err = c.generate(&r, &mut |_| TokenControl::Continue).unwrap_err();
    assert!(
        matches!(remote_error(&err), RemoteError::DeadlineExceeded),
        "{err:?}"
    );
    assert_eq!(g.calls(), 0);
}

#[test]
fn a_server_loading_its_model_answers_503_and_is_a_transient_error() {
    let g = Scripted::named("local", 4).shared();
    let server = serve(Arc::clone(&g));
    server.set_ready(false);
    let c = client(&server.base_url(), true);
    let err = c
        .generate(&request(), &mut |_| TokenControl::Continue)
        .unwrap_err();
    assert!(err.is_transient());
    assert!(
        matches!(
            remote_error(&err),
            RemoteError::Status {
                status: 503,
                retry_after: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(c.probe().is_err());
    server.set_ready(true);
    c.probe().unwrap();
    c.generate(&request(), &mut |_| TokenControl::Continue)
        .unwrap();
}

/// A one-connection-at-a-time server that answers every request with `response`
/// (status line, headers and body as written), or holds it open without a word.
fn raw_server(response: Option<&'static str>) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        match response {
            Some(r) => {
                let mut s = stream;
                s.write_all(r.as_bytes()).unwrap();
                // Closing here ends the body, as a crashed server would.
            }
            None => {
                // Never answer; wait for the client to give up.
                let mut rest = Vec::new();
                let _ = reader.read_to_end(&mut rest);
            }
        }
    });
    (base, handle)
}

const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";

fn fail_with(response: &'static str, stream: bool) -> (Error, Vec<String>) {
    let (base, server) = raw_server(Some(response));
    let c = client(&base, stream);
    let mut pieces = Vec::new();
    let err = c
        .generate(&request(), &mut |p| {
            pieces.push(p.to_owned());
            TokenControl::Continue
        })
        .unwrap_err();
    server.join().unwrap();
    (err, pieces)
}

#[test]
fn malformed_event_streams_are_typed_errors() {
    let r: &'static str = Box::leak(
        format!("{SSE_HEAD}data: {{\"choices\":[{{\"delta\":{{\"content\":\" hi\"}}}}]}}\n\ndata: {{not json\n\n")
            .into_boxed_str(),
    );
    let (err, pieces) = fail_with(r, true);
    assert!(
        matches!(remote_error(&err), RemoteError::Malformed(_)),
        "{err:?}"
    );
    assert_eq!(pieces, [" hi"]);
    let r: &'static str =
        Box::leak(format!("{SSE_HEAD}this is no event stream\n\n").into_boxed_str());
    let (err, _) = fail_with(r, true);
    assert!(
        matches!(remote_error(&err), RemoteError::Malformed(_)),
        "{err:?}"
    );
    let body = "{\"choices\": []}";
    let r: &'static str = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_boxed_str(),
    );
    let (err, _) = fail_with(r, false);
    assert!(
        matches!(remote_error(&err), RemoteError::Malformed(_)),
        "{err:?}"
    );
}

#[test]
fn a_stream_closed_mid_answer_is_a_typed_transient_error() {
    let r: &'static str = Box::leak(
        format!(
            "{SSE_HEAD}data: {{\"choices\":[{{\"delta\":{{\"content\":\" one\"}}}}]}}\n\n\
             data: {{\"choices\":[{{\"delta\":{{\"content\":\" two\"}}}}]}}\n\n"
        )
        .into_boxed_str(),
    );
    let (err, pieces) = fail_with(r, true);
    assert!(
        matches!(remote_error(&err), RemoteError::ClosedMidStream),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(pieces, [" one", " two"]);
}

#[test]
fn a_server_that_never_answers_is_cut_off_at_the_deadline() {
    let (base, server) = raw_server(None);
    let c = client(&base, true);
    let mut r = request();
    r.deadline = Some(Instant::now() + Duration::from_millis(300));
    let started = Instant::now();
    let err = c.generate(&r, &mut |_| TokenControl::Continue).unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(remote_error(&err), RemoteError::Timeout(_)),
        "{err:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "took {took:?} for a 300 ms deadline"
    );
    drop(c);
    server.join().unwrap();
}

#[test]
fn a_balancer_over_three_servers_avoids_the_slow_one_and_rides_out_the_failing_one() {
    let fast = Scripted::named("fast", 6)
        .delays(Duration::from_millis(3), Duration::ZERO)
        .shared();
    let slow = Scripted::named("slow", 6)
        .delays(Duration::from_millis(200), Duration::ZERO)
        .shared();
    let flaky = Scripted::named("flaky", 6)
        .delays(Duration::from_millis(3), Duration::ZERO)
        .shared();
    let servers = [
        serve(Arc::clone(&fast)),
        serve(Arc::clone(&slow)),
        serve(Arc::clone(&flaky)),
    ];
    let backends = servers
        .iter()
        .zip(["fast", "slow", "flaky"])
        .map(|(s, name)| Backend::openai(name, client(&s.base_url(), true)))
        .collect();
    let config = BalancerConfig {
        strategy: Strategy::PeakEwma,
        ejection: Duration::from_millis(200),
        probe_interval: Duration::from_millis(50),
        ..BalancerConfig::default()
    };
    let b = Arc::new(Balancer::new("scripted", backends, config).unwrap());
    let _prober = b.spawn_prober().unwrap();
    let done = AtomicUsize::new(0);
    let failures = hammer(4, 40, |_| {
        match done.fetch_add(1, Ordering::SeqCst) {
            50 => servers[2].set_ready(false),
            110 => servers[2].set_ready(true),
            _ => {}
        }
        let r = b.generate(&request(), &mut |_| TokenControl::Continue);
        if let Err(e) = &r {
            eprintln!("request failed: {e}");
        }
        r.is_ok()
    });
    assert_eq!(failures, 0);
    let st = b.status();
    eprintln!("{st:#?}");
    let share = st[1].requests as f64 / 160.0;
    assert!(
        share <= 0.10,
        "the slow server got {:.1}% of requests",
        share * 100.0
    );
    assert!(st[2].ejections >= 1, "the failing server was never ejected");
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.status()[2].admission != Admission::Admitted {
        assert!(
            Instant::now() < deadline,
            "the recovered server was never re-admitted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_client_asking_again_at_once_finds_the_servers_slot_free() {
    // One slot: a client that sends its next request as soon as it has read the
    // last event must not be turned away as busy. The slot was once freed only
    // after [DONE] was sent; under load (the remote report, 2 cores busy with ONNX)
    // quick clients met 503s. On an idle machine this test did not catch that
    // window; it guards the order, it is not a proof of the race.
    let g = Scripted::named("local", 3).shared();
    let server = spawn(
        "127.0.0.1:0".parse().unwrap(),
        g as Arc<dyn Generator>,
        ServerConfig {
            max_concurrent: 1,
            ..ServerConfig::default()
        },
    )
    .unwrap();
    for stream in [true, false] {
        let c = client(&server.base_url(), stream);
        for i in 0..150 {
            if let Err(e) = c.generate(&request(), &mut |_| TokenControl::Continue) {
                panic!("request {i} (stream={stream}) failed: {e:?}");
            }
        }
    }
}

#[test]
fn the_server_answers_bad_requests_with_a_json_reason_and_generates_nothing() {
    let g = Scripted::named("local", 4).shared();
    let server = serve(Arc::clone(&g));
    let url = format!("{}/v1/chat/completions", server.base_url());
    let http = reqwest::blocking::Client::new();
    let cases: [(&str, u16); 7] = [
        ("{not json", 400),
        (r#"{"messages": []}"#, 400),
        (
            r#"{"messages": [{"role": "wizard", "content": "hi"}]}"#,
            400,
        ),
        (
            r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}"#,
            400,
        ),
        (
            r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}"#,
            400,
        ),
        (
            r#"{"messages": [{"role": "user", "content": "hi"}], "temperature": 9}"#,
            400,
        ),
        (
            r#"{"messages": [{"role": "user", "content": "hi"}], "top_p": 0}"#,
            400,
        ),
    ];
    for (body, status) in cases {
        let r = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
        let reason: serde_json::Value = r.json().unwrap();
        assert!(reason["error"]["message"].is_string(), "{body}: {reason}");
    }
    // Invalid UTF-8 in the body, and a body far over the limit.
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .body(vec![b'{', 0xff, 0xfe, b'}'])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let huge = format!(
        r#"{{"messages": [{{"role": "user", "content": "{}"}}]}}"#,
        "x".repeat(2 << 20)
    );
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(g.calls(), 0, "a bad request reached the generator");
}
