//! Micro-VM benchmarks against the floor measured in the same run:
//!
//! - cold create → first exec (`true`), versus a bare QEMU boot of the same
//!   kernel and initramfs whose init powers off at once (`rdinit=/husk-floor`);
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
    let config = SandboxConfig::default();
    let (mut floor, mut cold) = (Vec::new(), Vec::new());
    for _ in 0..n {
        floor.push(rt.block_on(vm.floor_boot(&config)).expect("floor boot"));
        cold.push(rt.block_on(cold_start(&vm, &config)));
    }
    let (exec_rt, ping) = rt.block_on(round_trips(&vm, &config, 100));
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
    row(
        "cold create → first exec (`true`)",
        &stats(cold),
        Some(&floor),
    );
    row("exec round trip, live VM (`true`)", &stats(exec_rt), None);
    row("protocol ping round trip, live VM", &stats(ping), None);
}
