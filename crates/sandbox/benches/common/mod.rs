//! What the sandbox benchmarks share: percentiles, the results table, and
//! the two measured paths (cold start to first exec; round trips on a live
//! sandbox), so every backend is measured the same way.

use std::time::{Duration, Instant};

use husk_sandbox::protocol::ExecRequest;
use husk_sandbox::{Backend, SandboxConfig};

pub struct Stats {
    pub p50: Duration,
    pub p95: Duration,
}

pub fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    Stats {
        p50: at(0.5),
        p95: at(0.95),
    }
}

/// `HUSK_BENCH_N`, else `default`.
pub fn iterations(default: usize) -> usize {
    std::env::var("HUSK_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn header() {
    println!();
    println!("| measurement | p50 | p95 | vs floor (p50) |");
    println!("|---|---|---|---|");
}

pub fn row(name: &str, s: &Stats, floor: Option<&Stats>) {
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    let ratio = floor.map_or("—".to_string(), |f| {
        format!(
            "{:.3}× (p95 {:.3}×)",
            s.p50.as_secs_f64() / f.p50.as_secs_f64(),
            s.p95.as_secs_f64() / f.p95.as_secs_f64()
        )
    });
    println!("| {name} | {} | {} | {ratio} |", ms(s.p50), ms(s.p95));
}

/// Starts a sandbox and runs `true` in it: the time to the first exec's
/// end. The sandbox is stopped afterwards (not timed).
pub async fn cold_start(backend: &dyn Backend, config: &SandboxConfig) -> Duration {
    let t = Instant::now();
    let sb = backend.start(config).await.expect("start");
    let out = sb
        .client()
        .run(&ExecRequest::new(["true"]), 1024)
        .await
        .expect("exec");
    let elapsed = t.elapsed();
    assert!(out.status.success());
    sb.stop().await.expect("stop");
    elapsed
}

/// One exec round trip of `true` on `sb`, timed.
pub async fn exec_true(sb: &husk_sandbox::Sandbox) -> Duration {
    let t = Instant::now();
    let out = sb
        .client()
        .run(&ExecRequest::new(["true"]), 1024)
        .await
        .expect("exec");
    assert!(out.status.success(), "true failed: {:?}", out.status);
    t.elapsed()
}

/// `n` exec round trips (`true`) and `n` pings on one live sandbox.
pub async fn round_trips(
    backend: &dyn Backend,
    config: &SandboxConfig,
    n: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let sb = backend.start(config).await.expect("start");
    let (mut e, mut p) = (Vec::new(), Vec::new());
    for _ in 0..n {
        e.push(exec_true(&sb).await);
        let t = Instant::now();
        sb.client().ping().await.expect("ping");
        p.push(t.elapsed());
    }
    sb.stop().await.expect("stop");
    (e, p)
}
