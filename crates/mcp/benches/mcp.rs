//! `cargo bench -p husk-mcp`: a `read_shared_context` tool call through
//! husk-mcp to a real sidecar and back, over stdio and over Streamable
//! HTTP, against the floor of the same sidecar call made directly on one
//! keep-alive connection. Prints p50/p99/mean per path; asserts nothing.
//!
//! The stdio server is driven from Rust (JSON-RPC lines on its pipes), so
//! no client SDK's overhead is in the numbers. Runs in a few seconds.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use husk_sidecar::{Identity, Sidecar};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_husk-mcp");
const WARMUP: usize = 300;
const SAMPLES: usize = 3000;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let input = json!({"execution_id": "exec-1", "candidate_id": "cand-1", "peers": ["cand-2"]});
    let sidecar = Sidecar::new(Identity::from_input("run-1", Some(&input)).expect("identity"));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    rt.spawn(husk_sidecar::serve_on(listener, sidecar));
    let url = format!("http://{addr}");

    println!("read_shared_context round trip, {SAMPLES} samples after {WARMUP} warm-up");
    let floor = direct(&rt, addr);
    report("direct sidecar GET /v1/context (keep-alive)", &floor, None);
    let stdio = stdio(&url);
    report("husk-mcp stdio tools/call", &stdio, Some(&floor));
    let http = http(&rt, &url);
    report("husk-mcp HTTP tools/call", &http, Some(&floor));
}

fn report(name: &str, samples: &[Duration], floor: Option<&[Duration]>) {
    let mut s = samples.to_vec();
    s.sort();
    let pct = |p: f64| s[((s.len() as f64 * p) as usize).min(s.len() - 1)];
    let mean = s.iter().sum::<Duration>() / s.len() as u32;
    let over = floor
        .map(|f| {
            let mut f = f.to_vec();
            f.sort();
            let p50 = f[f.len() / 2];
            format!(
                "  (+{} µs over the floor)",
                pct(0.5).as_micros() as i128 - p50.as_micros() as i128
            )
        })
        .unwrap_or_default();
    println!(
        "{name:<46} p50 {:>5} µs  p99 {:>5} µs  mean {:>5} µs{over}",
        pct(0.5).as_micros(),
        pct(0.99).as_micros(),
        mean.as_micros()
    );
}

/// The floor: the sidecar call itself on one keep-alive connection.
fn direct(rt: &tokio::runtime::Runtime, addr: std::net::SocketAddr) -> Vec<Duration> {
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let (mut send, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut out = Vec::with_capacity(SAMPLES);
        for i in 0..WARMUP + SAMPLES {
            let req = Request::get("/v1/context")
                .header("host", addr.to_string())
                .body(Empty::<Bytes>::new())
                .expect("request");
            send.ready().await.expect("connection ready");
            let t = Instant::now();
            let resp = send.send_request(req).await.expect("send");
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            let elapsed = t.elapsed();
            assert!(body.starts_with(b"{\"execution_id\""));
            if i >= WARMUP {
                out.push(elapsed);
            }
        }
        out
    })
}

fn call_line(id: usize) -> Vec<u8> {
    let mut line = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                          "params": {"name": "read_shared_context", "arguments": {}}})
    .to_string()
    .into_bytes();
    line.push(b'\n');
    line
}

fn stdio(url: &str) -> Vec<Duration> {
    let mut child = Command::new(BIN)
        .env("VOID_SIDECAR_URL", url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn husk-mcp");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "bench", "version": "1"}}});
    writeln!(stdin, "{init}").expect("write");
    stdout.read_line(&mut line).expect("read");
    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
    )
    .expect("write");
    let mut out = Vec::with_capacity(SAMPLES);
    for i in 0..WARMUP + SAMPLES {
        let req = call_line(i + 1);
        line.clear();
        let t = Instant::now();
        stdin.write_all(&req).expect("write");
        stdin.flush().expect("flush");
        stdout.read_line(&mut line).expect("read");
        let elapsed = t.elapsed();
        check(&line);
        if i >= WARMUP {
            out.push(elapsed);
        }
    }
    drop(stdin);
    let _ = child.wait();
    out
}

fn check(answer: &str) {
    let v: Value = serde_json::from_str(answer.trim()).expect("JSON answer");
    assert_eq!(
        v["result"]["structuredContent"]["candidate_id"], "cand-1",
        "{answer}"
    );
}

fn http(rt: &tokio::runtime::Runtime, url: &str) -> Vec<Duration> {
    let mut child = Command::new(BIN)
        .args(["--http", "--port", "0"])
        .env("VOID_SIDECAR_URL", url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn husk-mcp --http");
    let mut first = String::new();
    BufReader::new(child.stderr.take().expect("stderr"))
        .read_line(&mut first)
        .expect("read");
    let mcp_url = first
        .trim()
        .strip_prefix("husk-mcp: serving MCP on ")
        .expect("address line")
        .to_string();
    let authority = mcp_url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_string();
    let out = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(&authority)
            .await
            .expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let (mut send, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let post = |body: Vec<u8>, session: Option<&str>| {
            let mut req = Request::post("/mcp")
                .header("host", authority.as_str())
                .header("accept", "application/json, text/event-stream")
                .header("content-type", "application/json");
            if let Some(s) = session {
                req = req
                    .header("mcp-session-id", s)
                    .header("mcp-protocol-version", "2025-11-25");
            }
            req.body(Full::new(Bytes::from(body))).expect("request")
        };
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "bench", "version": "1"}}});
        let resp = send
            .send_request(post(init.to_string().into_bytes(), None))
            .await
            .expect("initialize");
        let session = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .expect("session id")
            .to_string();
        resp.into_body().collect().await.expect("body");
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        send.ready().await.expect("connection ready");
        let resp = send
            .send_request(post(note.to_string().into_bytes(), Some(&session)))
            .await
            .expect("initialized");
        resp.into_body().collect().await.expect("body");
        let mut out = Vec::with_capacity(SAMPLES);
        for i in 0..WARMUP + SAMPLES {
            let req = post(call_line(i + 1), Some(&session));
            send.ready().await.expect("connection ready");
            let t = Instant::now();
            let resp = send.send_request(req).await.expect("call");
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            let elapsed = t.elapsed();
            let text = String::from_utf8_lossy(&body);
            // An SSE stream: the answer is on a `data:` line.
            let data = text
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .find(|d| d.contains("\"result\""))
                .unwrap_or_else(|| panic!("no answer in {text}"));
            check(data);
            if i >= WARMUP {
                out.push(elapsed);
            }
        }
        out
    });
    let _ = child.kill();
    let _ = child.wait();
    out
}
