//! Micro-VM benchmarks against the floor measured in the same run:
//!
//! - cold create → first exec (`true`), versus a bare QEMU boot of the same
//!   kernel and initramfs whose init powers off at once (`rdinit=/husk-floor`);
//! - restore from a snapshot → first exec, versus the cold create of the
//!   same run (the snapshot is built first, in a directory of the bench's
//!   own, and not timed);
//! - exec round trip and protocol ping on a live VM.
//!
//! Run: `cargo bench -p husk-sandbox --bench microvm` (HUSK_BENCH_N boots,
//! default 10). The accelerator (KVM or TCG) is printed with the results.

mod common;

use common::{cold_start, header, iterations, round_trips, row, stats};
use husk_sandbox::SandboxConfig;
use husk_sandbox::microvm::{AccelChoice, MicrovmBackend};

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
}
