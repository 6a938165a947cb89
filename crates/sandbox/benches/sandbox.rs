//! Namespace sandbox benchmarks, each reported against its floor measured in
//! the same run (docs/testing.md, docs/BENCHMARKS.md):
//!
//! - create → first exec: start a sandbox and run `true` in it, versus a
//!   bare `bwrap … true` with the same namespaces and binds;
//! - exec round trip on a live sandbox (`true`), and a protocol ping.
//!
//! Run: `cargo bench -p husk-sandbox --bench sandbox` (HUSK_BENCH_N sets the
//! iteration count, default 100). Not a test: it asserts nothing.

mod common;

use std::time::Instant;

use common::{cold_start, header, iterations, round_trips, row, stats};
use husk_sandbox::SandboxConfig;
use husk_sandbox::namespace::NamespaceBackend;

fn main() {
    let n = iterations(100);
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
    let (mut floor, mut create) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let t = Instant::now();
        let st = backend
            .floor_command(&config)
            .expect("bubblewrap for the floor")
            .status()
            .expect("bare bwrap");
        floor.push(t.elapsed());
        assert!(st.success(), "bare bwrap failed: {st}");
        create.push(rt.block_on(cold_start(&backend, &config)));
    }
    let (exec_rt, ping_rt) = rt.block_on(round_trips(&backend, &config, n));

    let floor = stats(floor);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("namespace backend, {n} iterations, {cpus} CPUs");
    header();
    row("floor: bare `bwrap … true`", &floor, None);
    row("create → first exec (`true`)", &stats(create), Some(&floor));
    row(
        "exec round trip, live sandbox (`true`)",
        &stats(exec_rt),
        Some(&floor),
    );
    row("protocol ping round trip", &stats(ping_rt), None);
}
