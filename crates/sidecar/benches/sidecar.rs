//! Sidecar benchmarks against a bare axum JSON endpoint served the same way
//! (loopback TCP, `axum::serve`, TCP_NODELAY) in the same run:
//!
//! - `GET /v1/inbox` throughput over 8 keep-alive connections;
//! - `GET /v1/inbox` latency on one connection (p50/p99);
//! - `husk-message context` whole-process latency (spawn to exit), p50.
//!
//! The floor answers the same `InboxSnapshot` (serialized per request) with
//! none of the sidecar's routing, state lock or error middleware, so the
//! ratio is what the sidecar costs on top of axum itself.
//!
//! Run: `cargo build --release -p husk-message && cargo bench -p husk-sidecar --bench sidecar`
//! (or `scripts/build-guest --release` first to measure the static binary;
//! `HUSK_MESSAGE_BIN` overrides the path). About 20 s. Asserts nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use husk_sidecar::{Identity, InboxEntry, InboxLoad, InboxSnapshot, Kind, Sidecar};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

const CONNECTIONS: usize = 8;
const THROUGHPUT_FOR: Duration = Duration::from_secs(3);
const LATENCY_REQUESTS: usize = 2000;
const ROUNDS: usize = 2;
const CLI_RUNS: usize = 50;

fn sidecar() -> Sidecar {
    let input = json!({"execution_id": "exec-1", "candidate_id": "cand-1",
                       "peers": ["cand-2", "cand-3"], "iteration": 1});
    let s = Sidecar::new(Identity::from_input("run-bench", Some(&input)).unwrap());
    // A realistic inbox: one message from each peer per iteration so far.
    let entries = (0..6)
        .map(|i| InboxEntry {
            message_id: format!("msg-{i}"),
            from_candidate_id: format!("cand-{}", 2 + i % 2),
            kind: Kind::Signal,
            payload: json!({"summary_text": format!("observation {i}: the parser rejects empty input; see src/parse.rs line {}", 10 * i)}),
        })
        .collect();
    s.load_inbox(InboxLoad {
        version: None,
        execution_id: None,
        candidate_id: None,
        iteration: Some(3),
        entries,
    })
    .unwrap();
    s
}

async fn serve_floor(snapshot: InboxSnapshot) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/v1/inbox",
        get(move || {
            let s = snapshot.clone();
            async move { Json(s) }
        }),
    );
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn serve_sidecar(s: Sidecar) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(husk_sidecar::serve_on(listener, s));
    addr
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Sender {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

async fn get_inbox(tx: &mut Sender) {
    let req = hyper::Request::get("/v1/inbox")
        .header("host", "sidecar")
        .body(Empty::new())
        .unwrap();
    tx.ready().await.unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert!(resp.status().is_success());
    resp.into_body().collect().await.unwrap();
}

/// Requests per second over [`CONNECTIONS`] keep-alive connections.
async fn throughput(addr: SocketAddr) -> f64 {
    let start = Instant::now();
    let deadline = start + THROUGHPUT_FOR;
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            tokio::spawn(async move {
                let mut tx = connect(addr).await;
                let mut n = 0u64;
                while Instant::now() < deadline {
                    get_inbox(&mut tx).await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// p50 and p99 of one connection's sequential requests.
async fn latency(addr: SocketAddr) -> (Duration, Duration) {
    let mut tx = connect(addr).await;
    for _ in 0..100 {
        get_inbox(&mut tx).await;
    }
    let mut v = Vec::with_capacity(LATENCY_REQUESTS);
    for _ in 0..LATENCY_REQUESTS {
        let t = Instant::now();
        get_inbox(&mut tx).await;
        v.push(t.elapsed());
    }
    percentiles(v)
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99))
}

fn message_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HUSK_MESSAGE_BIN") {
        return Some(PathBuf::from(p));
    }
    // target/release/deps/<bench> → target/
    let target = std::env::current_exe()
        .ok()?
        .parent()?
        .parent()?
        .parent()?
        .to_path_buf();
    [
        target.join("x86_64-unknown-linux-gnu/release/husk-message"),
        target.join("release/husk-message"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// Whole-process `bin args…`: spawn, (request, print,) exit.
fn process_latency(bin: &Path, args: &[&str], addr: SocketAddr) -> (Duration, Duration) {
    let url = format!("http://{addr}");
    let run = || {
        let t = Instant::now();
        let out = Command::new(bin)
            .args(args)
            .env("VOID_SIDECAR_URL", &url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed()
    };
    for _ in 0..5 {
        run();
    }
    percentiles((0..CLI_RUNS).map(|_| run()).collect())
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = sidecar();
    let (floor_addr, side_addr) = rt.block_on(async {
        (
            serve_floor(s.inbox(None)).await,
            serve_sidecar(s.clone()).await,
        )
    });

    // Interleaved rounds; the best of each, so a noisy neighbour on the
    // shared machine hurts both sides alike rather than one.
    let (mut floor_rps, mut side_rps) = (0f64, 0f64);
    let (mut floor_lat, mut side_lat) = (
        (Duration::MAX, Duration::MAX),
        (Duration::MAX, Duration::MAX),
    );
    for _ in 0..ROUNDS {
        floor_rps = floor_rps.max(rt.block_on(throughput(floor_addr)));
        side_rps = side_rps.max(rt.block_on(throughput(side_addr)));
        let f = rt.block_on(latency(floor_addr));
        let l = rt.block_on(latency(side_addr));
        if f.0 < floor_lat.0 {
            floor_lat = f;
        }
        if l.0 < side_lat.0 {
            side_lat = l;
        }
    }

    println!("| GET /v1/inbox (loopback TCP) | bare axum (floor) | sidecar | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| throughput, {CONNECTIONS} keep-alive conns | {:.0} req/s | {:.0} req/s | {:.2}× |",
        floor_rps,
        side_rps,
        side_rps / floor_rps
    );
    println!(
        "| c1 latency p50 | {} | {} | {:.2}× |",
        us(floor_lat.0),
        us(side_lat.0),
        side_lat.0.as_secs_f64() / floor_lat.0.as_secs_f64()
    );
    println!(
        "| c1 latency p99 | {} | {} | {:.2}× |",
        us(floor_lat.1),
        us(side_lat.1),
        side_lat.1.as_secs_f64() / floor_lat.1.as_secs_f64()
    );
    match message_bin() {
        Some(bin) => {
            let (p50, p99) = process_latency(&bin, &["context"], side_addr);
            // The floor: spawning a process that does nothing.
            let (t50, t99) = process_latency(Path::new("/bin/true"), &[], side_addr);
            println!();
            println!("| whole process, {CLI_RUNS} runs | p50 | p99 |");
            println!("|---|---|---|");
            println!(
                "| `husk-message context` ({}) | {} | {} |",
                bin.display(),
                us(p50),
                us(p99)
            );
            println!("| `/bin/true` (spawn floor) | {} | {} |", us(t50), us(t99));
        }
        None => println!(
            "\nhusk-message context: skipped, no release binary \
             (cargo build --release -p husk-message, or set HUSK_MESSAGE_BIN)"
        ),
    }
    drop(rt);
}
