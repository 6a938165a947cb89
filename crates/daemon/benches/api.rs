//! Daemon benchmarks against a bare axum endpoint on the same kind of unix
//! socket, measured in the same run:
//!
//! - create-run latency: `POST /v1/runs` (inline one-step workflow spec)
//!   versus a bare axum `POST` that parses the same JSON and answers;
//! - event delivery latency: a workflow step prints its own nanosecond
//!   clock every 20 ms; the SSE client compares its clock at receipt. The
//!   floor is a bare axum SSE endpoint that sends its clock the same way.
//!
//! Run: `cargo bench -p husk-daemon --bench api` (needs bubblewrap).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::response::sse::{Event, Sse};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};

const N_CREATE: usize = 200;
const N_EVENTS: usize = 100;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

async fn send(
    sock: &Path,
    method: &str,
    path: &str,
    body: &str,
    accept: &str,
) -> hyper::Response<hyper::body::Incoming> {
    let stream = UnixStream::connect(sock).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "x")
        .header("accept", accept)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    s.send_request(req).await.unwrap()
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99))
}

fn row(name: &str, s: (Duration, Duration), floor: Option<(Duration, Duration)>) {
    let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3);
    let ratio = floor.map_or("—".into(), |f| {
        format!(
            "{:.2}× (p99 {:.2}×)",
            s.0.as_secs_f64() / f.0.as_secs_f64(),
            s.1.as_secs_f64() / f.1.as_secs_f64()
        )
    });
    println!("| {name} | {} | {} | {ratio} |", ms(s.0), ms(s.1));
}

/// SSE `data:` lines carrying a nanosecond clock; latency per line.
async fn sse_latencies(
    resp: hyper::Response<hyper::body::Incoming>,
    n: usize,
    extract: impl Fn(&str) -> Option<u128>,
) -> Vec<Duration> {
    let mut body = resp.into_body();
    let (mut buf, mut out) = (String::new(), Vec::new());
    while out.len() < n {
        let Some(Ok(frame)) = body.frame().await else {
            break;
        };
        let Some(d) = frame.data_ref() else { continue };
        buf.push_str(&String::from_utf8_lossy(d));
        while let Some(i) = buf.find('\n') {
            let line: String = buf.drain(..=i).collect();
            if let Some(sent) = line.strip_prefix("data:").and_then(|l| extract(l.trim())) {
                out.push(Duration::from_nanos((now_ns().saturating_sub(sent)) as u64));
            }
        }
    }
    out
}

fn main() {
    if husk_sandbox_missing() {
        eprintln!("SKIP: bubblewrap is not installed");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

fn husk_sandbox_missing() -> bool {
    std::env::var_os("PATH")
        .is_none_or(|p| !std::env::split_paths(&p).any(|d| d.join("bwrap").is_file()))
}

async fn run() {
    let dir = std::env::temp_dir().join(format!("husk-bench-daemon-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // husk's API.
    let store = Arc::new(husk_daemon::store::Store::open(&dir.join("data")).unwrap());
    let manager = husk_daemon::manager::Manager::new(store, 10_000).unwrap();
    let app = husk_daemon::api::router(husk_daemon::api::AppState {
        manager,
        token: None,
    });
    let husk_sock = dir.join("husk.sock");
    let l = UnixListener::bind(&husk_sock).unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    // The floor: bare axum, same transport.
    let bare = axum::Router::new()
        .route(
            "/post",
            axum::routing::post(|body: Bytes| async move {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                axum::Json(
                    serde_json::json!({"ok": true, "n": v.as_object().map_or(0, |o| o.len())}),
                )
            }),
        )
        .route(
            "/sse",
            axum::routing::get(|| async {
                let s = futures_util::stream::unfold(0usize, |i| async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Some((
                        Ok::<_, std::convert::Infallible>(
                            Event::default().data(now_ns().to_string()),
                        ),
                        i + 1,
                    ))
                });
                Sse::new(s)
            }),
        );
    let bare_sock = dir.join("bare.sock");
    let l = UnixListener::bind(&bare_sock).unwrap();
    tokio::spawn(async move { axum::serve(l, bare).await });

    let spec = "kind: workflow\nname: bench\nsandbox: {mode: namespace}\nworkflow:\n  steps:\n    - name: s\n      run: {program: 'true'}\n";
    let body = serde_json::json!({"spec": spec}).to_string();
    let (mut floor, mut create) = (Vec::new(), Vec::new());
    for _ in 0..N_CREATE {
        let t = Instant::now();
        let r = send(&bare_sock, "POST", "/post", &body, "application/json").await;
        r.into_body().collect().await.unwrap();
        floor.push(t.elapsed());
        let t = Instant::now();
        let r = send(&husk_sock, "POST", "/v1/runs", &body, "application/json").await;
        assert_eq!(r.status(), 200);
        r.into_body().collect().await.unwrap();
        create.push(t.elapsed());
    }
    // Event delivery.
    let ticker = "kind: workflow\nname: tick\nsandbox: {mode: namespace}\nworkflow:\n  steps:\n    - name: tick\n      run:\n        program: sh\n        args: ['-c', 'for i in $(seq 120); do date +%s%N; sleep 0.02; done']\n";
    let r = send(
        &husk_sock,
        "POST",
        "/v1/runs",
        &serde_json::json!({"spec": ticker}).to_string(),
        "application/json",
    )
    .await;
    let v: serde_json::Value =
        serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let id = v["run_id"].as_str().unwrap().to_string();
    let sse = send(
        &husk_sock,
        "GET",
        &format!("/v1/runs/{id}/events"),
        "",
        "text/event-stream",
    )
    .await;
    let husk_lat = sse_latencies(sse, N_EVENTS + 10, |data| {
        let e: serde_json::Value = serde_json::from_str(data).ok()?;
        (e["event_type"] == "log.chunk")
            .then(|| e["payload"]["data"].as_str()?.trim().parse().ok())?
    })
    .await;
    let husk_lat = husk_lat.into_iter().skip(10).collect::<Vec<_>>(); // skip the backlog
    let bare_sse = send(&bare_sock, "GET", "/sse", "", "text/event-stream").await;
    let bare_lat = sse_latencies(bare_sse, N_EVENTS, |d| d.parse().ok()).await;

    println!("husk daemon API vs bare axum, unix socket, HTTP/1.1, one connection per request");
    println!();
    println!("| measurement | p50 | p99 | vs floor (p50) |");
    println!("|---|---|---|---|");
    let floor = stats(floor);
    row("floor: bare axum POST (parse JSON, answer)", floor, None);
    row(
        "POST /v1/runs (inline spec: parse, validate, store, spawn)",
        stats(create),
        Some(floor),
    );
    let bare = stats(bare_lat);
    row("floor: bare axum SSE delivery", bare, None);
    row(
        "event delivery: process line → SSE client (log.chunk)",
        stats(husk_lat),
        Some(bare),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
