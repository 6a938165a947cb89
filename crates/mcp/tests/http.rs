//! husk-mcp's Streamable HTTP transport at the HTTP level: the guards
//! (loopback Host and Origin, body limit), bad bodies, and a client that
//! hangs up in the middle of a call while the server keeps serving.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

struct Answer {
    status: StatusCode,
    session: Option<String>,
    body: String,
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

fn request(url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Request<Full<Bytes>> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(Bytes::from(body))).expect("request")
}

fn post(url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
    let req = request(url, headers, body);
    rt().block_on(async {
        let resp = client().request(req).await.expect("husk-mcp answered");
        let status = resp.status();
        let session = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Answer {
            status,
            session,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    })
}

fn initialize_body() -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
           "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                      "clientInfo": {"name": "husk-test", "version": "1"}}})
    .to_string()
    .into_bytes()
}

#[test]
fn guards_refuse_foreign_origins_and_hosts_and_big_bodies() {
    let sc = sidecar();
    let http = spawn_http(&sc.url());
    let a = post(
        &http.url,
        &[("origin", "http://evil.example")],
        initialize_body(),
    );
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    let a = post(&http.url, &[("host", "evil.example")], initialize_body());
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    // A loopback Origin is fine.
    let a = post(
        &http.url,
        &[("origin", "http://127.0.0.1:3000")],
        initialize_body(),
    );
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.session.is_some());
    assert!(
        a.body.contains("\"protocolVersion\":\"2025-11-25\""),
        "{}",
        a.body
    );
    // Over the 1 MiB message limit.
    let mut big = initialize_body();
    big.pop();
    big.extend(format!(",\"pad\":\"{}\"}}", "x".repeat(1024 * 1024)).bytes());
    let a = post(&http.url, &[], big);
    assert_eq!(
        a.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        &a.body[..a.body.len().min(200)]
    );
    // Not JSON.
    let a = post(&http.url, &[], b"not json".to_vec());
    assert!(a.status.is_client_error(), "{} {}", a.status, a.body);
    // Still serving.
    let a = post(&http.url, &[], initialize_body());
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}

#[test]
fn a_client_that_hangs_up_mid_call_does_not_stop_the_server() {
    let sc = sidecar();
    let gate = gate(sc.addr);
    let http = spawn_http(&gate.url());
    let init = post(&http.url, &[], initialize_body());
    assert_eq!(init.status, StatusCode::OK, "{}", init.body);
    let session = init.session.expect("Mcp-Session-Id");
    let headers = [
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let a = post(
        &http.url,
        &headers,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
            .to_string()
            .into_bytes(),
    );
    assert_eq!(a.status, StatusCode::ACCEPTED);
    // Start a call that the gate holds, wait until husk-mcp is inside it,
    // then hang up.
    let call = request(
        &http.url,
        &headers,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "broadcast_observation", "arguments": {"summary_text": "abandoned"}}})
        .to_string()
        .into_bytes(),
    );
    let pending = rt().spawn(async move { client().request(call).await.map(|r| r.status()) });
    gate.wait_accepted(1);
    pending.abort();
    let _ = rt().block_on(pending);
    // The held call may now finish into a closed stream.
    gate.open();
    // A new client gets full service.
    let out = python_client(&json!({
        "server": {"url": http.url},
        "version": "2025-06-18",
        "steps": [{"op": "call", "tool": "read_shared_context"}]
    }));
    let r = &out["steps"][0]["result"];
    assert_eq!(r["structuredContent"]["candidate_id"], "cand-1", "{out}");
    // The process is still the one we started.
    let mut http = http;
    assert!(
        http.child.try_wait().expect("wait").is_none(),
        "husk-mcp exited"
    );
}

#[test]
fn sigterm_stops_the_server_even_with_an_open_stream() {
    let sc = sidecar();
    let mut http = spawn_http(&sc.url());
    let init = post(&http.url, &[], initialize_body());
    let session = init.session.expect("Mcp-Session-Id");
    // The session's long-lived SSE stream (GET), left open.
    let get = Request::builder()
        .method(Method::GET)
        .uri(&http.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", session.as_str())
        .header("mcp-protocol-version", "2025-11-25")
        .body(Full::new(Bytes::new()))
        .expect("request");
    // Held (not dropped) until the end, so the stream stays open.
    let stream = rt().block_on(client().request(get)).expect("stream opened");
    assert_eq!(stream.status(), StatusCode::OK);
    let pid = http.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = wait_bounded(&mut http.child);
    assert!(status.success(), "{status}");
    drop(stream);
}
