//! What the policy proxy costs a request: a loopback HTTP server reached
//! directly (the floor), through the proxy as plain HTTP (`GET
//! http://localhost:…/`), and through a `CONNECT` tunnel (the request sent
//! in the tunnel), in the same run, the three paths alternating request by
//! request so machine load hits them alike.
//!
//! - latency: a fresh connection per request (as a CLI tool makes), a
//!   12-byte body; p50 and p95.
//! - throughput: a 16 MiB body, fresh connection each; MB/s (median, and
//!   the slowest run).
//!
//! The proxy listens on host loopback TCP here; in a sandbox it is reached
//! through the forwarded port, whose own cost is in the messaging bench
//! (docs/BENCHMARKS.md: none measurable). The policy is an allowlist naming
//! `localhost`, so every proxied request also resolves the name, as in a
//! run. The tunnel carries plain HTTP (no TLS, which would cost the direct
//! path the same).
//!
//! Run: `cargo bench -p husk-netproxy --bench proxy`
//! (`HUSK_BENCH_N` latency requests per path, default 300;
//! `HUSK_BENCH_BIG_N` large bodies per path, default 12). Asserts only that
//! every request got its whole body.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use husk_netproxy::{Limits, Policy, Proxy, Rule};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

const SMALL: &[u8] = b"hello, bench";
const BIG_BYTES: usize = 16 * 1024 * 1024;

#[derive(Clone, Copy)]
enum Path {
    Direct,
    Http,
    Connect,
}

const PATHS: [Path; 3] = [Path::Direct, Path::Http, Path::Connect];

impl Path {
    fn label(self) -> &'static str {
        match self {
            Path::Direct => "direct (floor)",
            Path::Http => "proxy, plain HTTP (`GET http://…`)",
            Path::Connect => "proxy, CONNECT tunnel",
        }
    }
}

fn env_n(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

fn main() {
    let n = env_n("HUSK_BENCH_N", 300);
    let big_n = env_n("HUSK_BENCH_BIG_N", 12);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async move {
        let origin = origin().await;
        let proxy = proxy().await;
        let mut lat: [Vec<Duration>; 3] = Default::default();
        for i in 0..n {
            // Rotate which path goes first, too.
            for k in 0..3 {
                let idx = (i + k) % 3;
                let t = Instant::now();
                let body = fetch(PATHS[idx], origin, proxy, "/small").await;
                lat[idx].push(t.elapsed());
                assert_eq!(body, SMALL.len());
            }
        }
        let mut rate: [Vec<f64>; 3] = Default::default();
        for i in 0..big_n {
            for k in 0..3 {
                let idx = (i + k) % 3;
                let t = Instant::now();
                let body = fetch(PATHS[idx], origin, proxy, "/big").await;
                let secs = t.elapsed().as_secs_f64();
                assert_eq!(body, BIG_BYTES);
                rate[idx].push(BIG_BYTES as f64 / secs / 1e6);
            }
        }
        report(n, big_n, &mut lat, &mut rate);
    });
}

fn report(n: usize, big_n: usize, lat: &mut [Vec<Duration>; 3], rate: &mut [Vec<f64>; 3]) {
    println!("latency, {n} requests per path (fresh connection, 12-byte body):\n");
    println!("| path | p50 | p95 | vs floor (p50) |");
    println!("|---|---|---|---|");
    let floor = pct(&mut lat[0], 50);
    for (i, path) in PATHS.iter().enumerate() {
        let (p50, p95) = (pct(&mut lat[i], 50), pct(&mut lat[i], 95));
        let ratio = if i == 0 {
            "—".to_string()
        } else {
            format!("{:.2}× (+{:.3} ms)", p50 / floor, p50 - floor)
        };
        println!("| {} | {p50:.3} ms | {p95:.3} ms | {ratio} |", path.label());
    }
    println!("\nthroughput, {big_n} × 16 MiB per path:\n");
    println!("| path | median | slowest | vs floor (median) |");
    println!("|---|---|---|---|");
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let floor = median(&mut rate[0]);
    for (i, path) in PATHS.iter().enumerate() {
        let m = median(&mut rate[i]);
        let slowest = rate[i][0];
        let ratio = if i == 0 {
            "—".to_string()
        } else {
            format!("{:.2}×", m / floor)
        };
        println!(
            "| {} | {m:.0} MB/s | {slowest:.0} MB/s | {ratio} |",
            path.label()
        );
    }
}

/// The `p`th percentile in milliseconds.
fn pct(v: &mut [Duration], p: usize) -> f64 {
    v.sort();
    let i = ((v.len() * p).div_ceil(100)).clamp(1, v.len()) - 1;
    v[i].as_secs_f64() * 1e3
}

/// A loopback server: `/small` and `/big` (16 MiB).
async fn origin() -> SocketAddr {
    let big = Bytes::from(vec![b'x'; BIG_BYTES]);
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let big = big.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let body = if req.uri().path() == "/big" {
                        big.clone()
                    } else {
                        Bytes::from_static(SMALL)
                    };
                    async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// The policy proxy on loopback, allowing `localhost`.
async fn proxy() -> SocketAddr {
    let policy = Policy::Allow(vec![Rule {
        host: "localhost".into(),
        wildcard: false,
        port: None,
    }]);
    let p = Proxy::new(policy, None, Limits::default(), |_| {}).expect("a proxy");
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            p.spawn(s);
        }
    });
    addr
}

/// One GET of `path` by `how`; the number of body bytes received.
async fn fetch(how: Path, origin: SocketAddr, proxy: SocketAddr, path: &str) -> usize {
    let port = origin.port();
    match how {
        Path::Direct => get(connect(origin).await, path.to_string(), port).await,
        Path::Http => {
            let url = format!("http://localhost:{port}{path}");
            get(connect(proxy).await, url, port).await
        }
        Path::Connect => get(tunnel(proxy, port).await, path.to_string(), port).await,
    }
}

/// A GET on `io`; the number of body bytes received.
async fn get<IO>(io: IO, uri: String, port: u16) -> usize
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let req = Request::get(uri)
        .header(http::header::HOST, format!("localhost:{port}"))
        .body(Empty::<Bytes>::new())
        .expect("a request");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let resp = tx.send_request(req).await.expect("a response");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("body").into_data() {
            n += data.len();
        }
    }
    n
}

/// A CONNECT tunnel through the proxy to `localhost:port`.
async fn tunnel(proxy: SocketAddr, port: u16) -> hyper::upgrade::Upgraded {
    let (mut tx, conn) = hyper::client::conn::http1::handshake(connect(proxy).await)
        .await
        .expect("handshake");
    tokio::spawn(conn.with_upgrades());
    let req = Request::connect(format!("localhost:{port}"))
        .body(Empty::<Bytes>::new())
        .expect("a request");
    let resp = tx.send_request(req).await.expect("a response");
    assert_eq!(resp.status(), StatusCode::OK);
    hyper::upgrade::on(resp).await.expect("the tunnel")
}

async fn connect(addr: SocketAddr) -> TokioIo<TcpStream> {
    let s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    TokioIo::new(s)
}
