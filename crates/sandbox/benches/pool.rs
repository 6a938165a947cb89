//! Warm pool benchmark: claim → first exec (`true`) of a pooled sandbox,
//! against the floor measured in the same run: an exec round trip (`true`)
//! on a sandbox that is already live (target: ≤ 2×). Namespace backend,
//! then the micro-VM backend (TCG here) with fewer iterations, since each
//! refill is a boot.
//!
//! Run: `cargo bench -p husk-sandbox --bench pool` (HUSK_BENCH_N sets the
//! namespace iteration count, default 100; HUSK_BENCH_VM_N the micro-VM's,
//! default 5, 0 to skip). Not a test: it asserts nothing.

#[allow(dead_code)] // shared with the other benches
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{exec_true, header, iterations, row, stats};
use husk_sandbox::microvm::{AccelChoice, MicrovmBackend};
use husk_sandbox::namespace::NamespaceBackend;
use husk_sandbox::pool::{Pool, PoolOptions};
use husk_sandbox::protocol::ExecRequest;
use husk_sandbox::{Backend, SandboxConfig};

/// `n` claims → first exec, each after an exec round trip on one live
/// sandbox. Both wait, untimed, for the pool to be full, so the floor runs
/// with nothing else going on; a claim's refill starts at the claim, as it
/// does for a run, and competes with its first exec.
async fn measure(backend: Arc<dyn Backend>, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let config = SandboxConfig::default();
    let live = backend.start(&config).await.expect("start");
    // Its first exec is not a round trip on a live sandbox (a micro-VM
    // translates that path then): run it untimed.
    exec_true(&live).await;
    let options = PoolOptions {
        target: 1,
        idle_limit: Duration::from_secs(3600),
    };
    let pool = Pool::start(backend, config.clone(), options);
    let (mut claim, mut rt) = (Vec::new(), Vec::new());
    let wait = Duration::from_secs(300);
    for _ in 0..n {
        while pool.status().ready == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        rt.push(exec_true(&live).await);

        let t = Instant::now();
        let sb = pool.claim_wait(&config, wait).await.expect("claim");
        let out = sb
            .client()
            .run(&ExecRequest::new(["true"]), 1024)
            .await
            .expect("exec");
        claim.push(t.elapsed());
        assert!(out.status.success());
        sb.stop().await.expect("stop");
    }
    pool.shutdown().await;
    live.stop().await.expect("stop");
    (claim, rt)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let n = iterations(100);
    match NamespaceBackend::new() {
        Ok(b) => {
            let (claim, exec) = rt.block_on(measure(Arc::new(b), n));
            println!("namespace pool, {n} claims");
            header();
            let floor = stats(exec);
            row(
                "floor: exec round trip, live sandbox (`true`)",
                &floor,
                None,
            );
            row(
                "pool claim → first exec (`true`)",
                &stats(claim),
                Some(&floor),
            );
        }
        Err(e) => eprintln!("SKIP namespace: {e}"),
    }
    let vm_n: usize = std::env::var("HUSK_BENCH_VM_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    if vm_n == 0 {
        return;
    }
    let progress = |line: &str| eprintln!("microvm: {line}");
    match rt.block_on(MicrovmBackend::new(AccelChoice::Auto, &progress)) {
        Ok(b) => {
            let (claim, exec) = rt.block_on(measure(Arc::new(b), vm_n));
            println!("\nmicro-VM pool, {vm_n} claims");
            header();
            let floor = stats(exec);
            row(
                "floor: exec round trip, live micro-VM (`true`)",
                &floor,
                None,
            );
            row(
                "pool claim → first exec (`true`)",
                &stats(claim),
                Some(&floor),
            );
        }
        Err(e) => eprintln!("SKIP microvm: {e}"),
    }
}
