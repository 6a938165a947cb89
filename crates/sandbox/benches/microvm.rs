//! Micro-VM benchmarks against the floor measured in the same run:
//!
//! - cold create → first exec (`true`), versus a bare QEMU boot of the same
//!   kernel and initramfs whose init powers off at once (`rdinit=/husk-floor`);
//! - restore from a snapshot → first exec, versus the cold create of the
//!   same run (the snapshot is built first, in a directory of the bench's
//!   own, and not timed);
//! - exec round trip and protocol ping on a live VM;
//! - where a cold start's time goes: start (QEMU, firmware, kernel, the
//!   guest agent's setup, handshake), the guest's uptime when the first
//!   command runs (the kernel's clock: what came before it is QEMU's own
//!   start, firmware and the kernel's decompression), first exec, stop;
//!   beside the busybox-only bare floor (`MicrovmBackend::bare_floor`).
//!
//! Run: `cargo bench -p husk-sandbox --bench microvm` (HUSK_BENCH_N boots,
//! default 10). The accelerator (KVM or TCG) is printed with the results.

mod common;

use common::{cold_start, header, iterations, round_trips, row, stats};
use std::time::{Duration, Instant};

use husk_sandbox::microvm::{AccelChoice, MicrovmBackend};
use husk_sandbox::protocol::ExecRequest;
use husk_sandbox::{Backend, SandboxConfig};

fn main() {
    let n = iterations(10);
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
    let snapshots =
        std::env::temp_dir().join(format!("husk-bench-snapshots-{}", std::process::id()));
    let vm = vm.with_snapshot_dir(snapshots.clone());
    let config = SandboxConfig::default();
    let snap = rt
        .block_on(vm.build_snapshot(&config, &progress))
        .expect("build a snapshot");
    let cold_config = SandboxConfig {
        cold_boot: true,
        ..SandboxConfig::default()
    };
    let (mut floor, mut cold, mut restored) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        floor.push(rt.block_on(vm.floor_boot(&config)).expect("floor boot"));
        cold.push(rt.block_on(cold_start(&vm, &cold_config)));
        restored.push(rt.block_on(cold_start(&vm, &config)));
    }
    let (exec_rt, ping) = rt.block_on(round_trips(&vm, &cold_config, 100));
    let bare = vm
        .bare_floor(&config, husk_sandbox::microvm::FloorKernel::BzImage)
        .expect("bare-boot floor");
    let mut phases: [Vec<Duration>; 5] = Default::default();
    for _ in 0..n {
        let t = Instant::now();
        let st = bare.command().status().expect("bare boot");
        assert!(st.success(), "bare boot: {st}");
        phases[0].push(t.elapsed());
        for (i, d) in rt
            .block_on(cold_phases(&vm, &cold_config))
            .into_iter()
            .enumerate()
        {
            phases[i + 1].push(d);
        }
    }
    let _ = std::fs::remove_dir_all(&snapshots);
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
    header();
    row("floor: bare QEMU boot, init powers off", &floor, None);
    let cold = stats(cold);
    row("cold create → first exec (`true`)", &cold, Some(&floor));
    println!();
    println!(
        "snapshot: {:.1} MiB of {} MiB guest RAM in use, {} KiB device state",
        snap.meta.ram_allocated_bytes as f64 / 1048576.0,
        snap.meta.memory_mb,
        snap.meta.state_bytes / 1024
    );
    println!("(for the restore row, the reference is the cold create above)");
    header();
    row(
        "restore from snapshot → first exec (`true`)",
        &stats(restored),
        Some(&cold),
    );
    header();
    row("exec round trip, live VM (`true`)", &stats(exec_rt), None);
    row("protocol ping round trip, live VM", &stats(ping), None);
    println!();
    println!("where a cold start's time goes ({n} runs, p50 of each phase):");
    header();
    let [bare_all, start, uptime, exec, stop] = phases;
    let bare_all = stats(bare_all);
    row(
        "floor: bare boot, busybox-only initramfs, whole QEMU run",
        &bare_all,
        None,
    );
    row(
        "cold: start (QEMU spawn → handshake done)",
        &stats(start),
        Some(&bare_all),
    );
    row(
        "cold: guest uptime when the first command runs",
        &stats(uptime),
        None,
    );
    row("cold: first exec (`cat /proc/uptime`)", &stats(exec), None);
    row("cold: stop (shutdown → QEMU exited)", &stats(stop), None);
}

/// One cold start, timed by phase: start, the guest's uptime at its first
/// command, that exec, stop.
async fn cold_phases(vm: &MicrovmBackend, config: &SandboxConfig) -> [Duration; 4] {
    let t = Instant::now();
    let sb = vm.start(config).await.expect("start");
    let start = t.elapsed();
    let t = Instant::now();
    let out = sb
        .client()
        .run(&ExecRequest::new(["cat", "/proc/uptime"]), 1024)
        .await
        .expect("exec");
    let exec = t.elapsed();
    assert!(out.status.success());
    let secs: f64 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("uptime");
    let t = Instant::now();
    sb.stop().await.expect("stop");
    [start, Duration::from_secs_f64(secs), exec, t.elapsed()]
}
