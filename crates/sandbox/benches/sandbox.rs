//! Namespace sandbox benchmarks, each reported against its floor measured in
//! the same run (shared/TESTING.md):
//!
//! - create → first exec: start a sandbox and run `true` in it, versus a
//!   bare `bwrap … true` with the same namespaces and binds;
//! - exec round trip on a live sandbox (`true`), and a protocol ping.
//!
//! Run: `cargo bench -p husk-sandbox --bench sandbox` (HUSK_BENCH_N sets the
//! iteration count, default 100). Not a test: it asserts nothing.

use std::time::{Duration, Instant};

use husk_sandbox::namespace::NamespaceBackend;
use husk_sandbox::protocol::ExecRequest;
use husk_sandbox::{Backend, SandboxConfig};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

struct Stats {
    p50: Duration,
    p95: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    Stats {
        p50: percentile(&v, 0.5),
        p95: percentile(&v, 0.95),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn row(name: &str, s: &Stats, floor: Option<&Stats>) {
    let ratio = floor.map_or("—".to_string(), |f| {
        format!(
            "{:.2}× (p95 {:.2}×)",
            s.p50.as_secs_f64() / f.p50.as_secs_f64(),
            s.p95.as_secs_f64() / f.p95.as_secs_f64()
        )
    });
    println!("| {name} | {} | {} | {ratio} |", ms(s.p50), ms(s.p95));
}

fn main() {
    let n: usize = std::env::var("HUSK_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let backend = match NamespaceBackend::new() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("SKIP: {e}");
            return;
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = SandboxConfig::default();

    // Interleave floor and measured runs so drift hits both alike.
    let mut floor = Vec::with_capacity(n);
    let mut create = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let st = backend.floor_command(&config).status().expect("bare bwrap");
        floor.push(t.elapsed());
        assert!(st.success(), "bare bwrap failed: {st}");
        rt.block_on(async {
            let t = Instant::now();
            let sb = backend.start(&config).await.expect("start");
            let out = sb
                .client()
                .run(&ExecRequest::new(["true"]), 1024)
                .await
                .expect("exec");
            create.push(t.elapsed());
            assert!(out.status.success());
            sb.stop().await.expect("stop");
        });
    }

    let (exec_rt, ping_rt) = rt.block_on(async {
        let sb = backend.start(&config).await.expect("start");
        let (mut e, mut p) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let t = Instant::now();
            sb.client()
                .run(&ExecRequest::new(["true"]), 1024)
                .await
                .expect("exec");
            e.push(t.elapsed());
            let t = Instant::now();
            sb.client().ping().await.expect("ping");
            p.push(t.elapsed());
        }
        sb.stop().await.expect("stop");
        (e, p)
    });

    let floor = stats(floor);
    println!(
        "namespace backend, {n} iterations, {} CPUs",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!();
    println!("| measurement | p50 | p95 | vs floor (p50) |");
    println!("|---|---|---|---|");
    row("floor: bare `bwrap … true`", &floor, None);
    row("create → first exec (`true`)", &stats(create), Some(&floor));
    row(
        "exec round trip, live sandbox (`true`)",
        &stats(exec_rt),
        Some(&floor),
    );
    row("protocol ping round trip", &stats(ping_rt), None);
}
