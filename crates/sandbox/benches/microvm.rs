//! Micro-VM benchmarks against the floor measured in the same run:
//!
//! - cold create → first exec (`true`), versus a bare QEMU boot of the same
//!   kernel and initramfs whose init powers off at once (`rdinit=/husk-floor`);
//! - exec round trip and protocol ping on a live VM.
//!
//! Run: `cargo bench -p husk-sandbox --bench microvm` (HUSK_BENCH_N boots,
//! default 10). The accelerator (KVM or TCG) is printed with the results.

use std::time::{Duration, Instant};

use husk_sandbox::microvm::{AccelChoice, MicrovmBackend};
use husk_sandbox::protocol::ExecRequest;
use husk_sandbox::{Backend, SandboxConfig};

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.95))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn row(name: &str, s: (Duration, Duration), floor: Option<(Duration, Duration)>) {
    let ratio = floor.map_or("—".to_string(), |f| {
        format!(
            "{:.3}× (p95 {:.3}×)",
            s.0.as_secs_f64() / f.0.as_secs_f64(),
            s.1.as_secs_f64() / f.1.as_secs_f64()
        )
    });
    println!("| {name} | {} | {} | {ratio} |", ms(s.0), ms(s.1));
}

fn main() {
    let n: usize = std::env::var("HUSK_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let progress = |l: &str| eprintln!("microvm: {l}");
    let vm = match rt.block_on(MicrovmBackend::new(AccelChoice::Auto, &progress)) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("SKIP: {e}");
            return;
        }
    };
    let config = SandboxConfig::default();
    let (mut floor, mut cold) = (Vec::new(), Vec::new());
    for _ in 0..n {
        floor.push(rt.block_on(vm.floor_boot(&config)).expect("floor boot"));
        rt.block_on(async {
            let t = Instant::now();
            let sb = vm.start(&config).await.expect("start");
            let out = sb
                .client()
                .run(&ExecRequest::new(["true"]), 1024)
                .await
                .expect("exec");
            cold.push(t.elapsed());
            assert!(out.status.success());
            sb.stop().await.expect("stop");
        });
    }
    let (exec_rt, ping) = rt.block_on(async {
        let sb = vm.start(&config).await.expect("start");
        let (mut e, mut p) = (Vec::new(), Vec::new());
        for _ in 0..100 {
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
        "micro-VM backend, accelerator {} ({}), {n} boots",
        vm.accel().as_str(),
        vm.accel_reason()
    );
    println!(
        "kernel {}, initramfs {}",
        vm.image().kernel_version,
        vm.image().initramfs.display()
    );
    println!();
    println!("| measurement | p50 | p95 | vs floor (p50) |");
    println!("|---|---|---|---|");
    row("floor: bare QEMU boot, init powers off", floor, None);
    row(
        "cold create → first exec (`true`)",
        stats(cold),
        Some(floor),
    );
    row("exec round trip, live VM (`true`)", stats(exec_rt), None);
    row("protocol ping round trip, live VM", stats(ping), None);
}
