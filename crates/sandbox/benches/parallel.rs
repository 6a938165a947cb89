//! N sandboxes started at once (issue 14's fan-out: stages and swarm
//! candidates), each against a floor of the same concurrency measured in
//! the same run, runs alternating so drift hits both alike:
//!
//! - namespace: N husk starts → first exec (`true`) versus N bare
//!   `bwrap … true` processes at once;
//! - micro-VM restored: N restores from ONE snapshot at once versus one
//!   restore alone, and versus N bare boots at once (busybox-only
//!   initramfs whose init powers off, same kernel and machine: see
//!   `microvm/floor.rs`);
//! - micro-VM cold: N cold boots at once versus N bare boots at once.
//!
//! For each: "all" is the time until the last of the N has answered its
//! first exec (or exited, for a floor), one sample per round; "each" is
//! every sandbox's own start → first exec. Sandboxes are stopped after
//! each round (not timed). Every "restore" row is checked to have really
//! been restored (the bench panics on a cold fallback).
//!
//! Run: `cargo bench -p husk-sandbox --bench parallel` (HUSK_BENCH_PAR_N
//! sandboxes at once, default 8; HUSK_BENCH_N rounds, default 3;
//! HUSK_BENCH_PAR_VM=0 skips the micro-VM part). Asserts nothing about
//! time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use husk_sandbox::microvm::{AccelChoice, MicrovmBackend};
use husk_sandbox::namespace::NamespaceBackend;
use husk_sandbox::protocol::ExecRequest;
use husk_sandbox::{Backend, BootPath, SandboxConfig};

/// The samples of one measurement over all rounds.
#[derive(Default)]
struct Fanout {
    /// Per round: until the last of the N was done.
    all: Vec<Duration>,
    /// Per sandbox (or process): its own start → done.
    each: Vec<Duration>,
}

impl Fanout {
    fn add(&mut self, (all, each): (Duration, Vec<Duration>)) {
        self.all.push(all);
        self.each.extend(each);
    }
}

fn env_n(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `n` processes at once, each timed from its own spawn to its exit.
fn fanout_commands(
    n: usize,
    make: &dyn Fn() -> std::process::Command,
) -> (Duration, Vec<Duration>) {
    let t0 = Instant::now();
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let mut cmd = make();
            std::thread::spawn(move || {
                let t = Instant::now();
                let st = cmd.status().expect("spawn the floor");
                let d = t.elapsed();
                assert!(st.success(), "{cmd:?} failed: {st}");
                d
            })
        })
        .collect();
    let each = threads.into_iter().map(|t| t.join().unwrap()).collect();
    (t0.elapsed(), each)
}

/// `n` sandboxes started at once, each running `true` once started; then
/// all stopped (not timed). Returns the timings and how each came up.
async fn fanout_sandboxes(
    backend: &Arc<dyn Backend>,
    config: &SandboxConfig,
    n: usize,
) -> ((Duration, Vec<Duration>), Vec<BootPath>) {
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (b, c) = (backend.clone(), config.clone());
            tokio::spawn(async move {
                let t = Instant::now();
                let sb = b.start(&c).await.expect("start");
                let out = sb
                    .client()
                    .run(&ExecRequest::new(["true"]), 1024)
                    .await
                    .expect("exec");
                let d = t.elapsed();
                assert!(out.status.success());
                (d, sb)
            })
        })
        .collect();
    let mut done = Vec::with_capacity(n);
    for t in tasks {
        done.push(t.await.expect("start task"));
    }
    let all = t0.elapsed();
    let paths = done.iter().map(|(_, sb)| sb.info().boot.clone()).collect();
    let mut each = Vec::with_capacity(n);
    for (d, sb) in done {
        each.push(d);
        sb.stop().await.expect("stop");
    }
    ((all, each), paths)
}

fn p(v: &[Duration], q: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

fn header() {
    println!();
    println!("| measurement | p50 | max | vs reference (p50) |");
    println!("|---|---|---|---|");
}

fn row(name: &str, v: &[Duration], reference: Option<&[Duration]>) {
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    let ratio = reference.map_or("—".to_string(), |r| {
        format!("{:.2}×", p(v, 0.5).as_secs_f64() / p(r, 0.5).as_secs_f64())
    });
    println!(
        "| {name} | {} | {} | {ratio} |",
        ms(p(v, 0.5)),
        ms(p(v, 1.0))
    );
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let n = env_n("HUSK_BENCH_PAR_N", 8);
    let rounds = env_n("HUSK_BENCH_N", 3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "N = {n} at once, {rounds} rounds, load average {}",
        load_average()
    );
    namespace(&rt, n, rounds);
    if env_n("HUSK_BENCH_PAR_VM", 1) != 0 {
        microvm(&rt, n, rounds);
    }
    println!();
    println!("load average after: {}", load_average());
}

fn namespace(rt: &tokio::runtime::Runtime, n: usize, rounds: usize) {
    let ns = match NamespaceBackend::new() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("SKIP namespace: {e}");
            return;
        }
    };
    let config = SandboxConfig::default();
    let floor_cmd = || ns.floor_command(&config).expect("bubblewrap for the floor");
    let backend: Arc<dyn Backend> = Arc::new(ns.clone());
    // Warm the page cache and first-use work (not timed).
    fanout_commands(1, &floor_cmd);
    rt.block_on(fanout_sandboxes(&backend, &config, 1));
    let (mut floor, mut husk) = (Fanout::default(), Fanout::default());
    for _ in 0..rounds {
        floor.add(fanout_commands(n, &floor_cmd));
        husk.add(rt.block_on(fanout_sandboxes(&backend, &config, n)).0);
    }
    println!();
    println!("### namespace: {n} at once");
    header();
    row(
        &format!("floor: {n} × bare `bwrap … true`, all"),
        &floor.all,
        None,
    );
    row("floor: each", &floor.each, None);
    row(
        &format!("{n} × husk start → first exec, all"),
        &husk.all,
        Some(&floor.all),
    );
    row("husk: each", &husk.each, Some(&floor.each));
}

fn microvm(rt: &tokio::runtime::Runtime, n: usize, rounds: usize) {
    let progress = |l: &str| eprintln!("microvm: {l}");
    let vm = match rt.block_on(MicrovmBackend::new(AccelChoice::Auto, &progress)) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("SKIP micro-VM: {e}");
            return;
        }
    };
    let snapshots = std::env::temp_dir().join(format!("husk-bench-par-{}", std::process::id()));
    let vm = vm.with_snapshot_dir(snapshots.clone());
    let config = SandboxConfig::default();
    let cold_config = SandboxConfig {
        cold_boot: true,
        ..SandboxConfig::default()
    };
    let snap = rt
        .block_on(vm.build_snapshot(&config, &progress))
        .expect("build a snapshot");
    let bare = vm
        .bare_floor(&config, husk_sandbox::microvm::FloorKernel::BzImage)
        .expect("bare-boot floor");
    let floor_cmd = || bare.command();
    let (accel, reason) = (vm.accel(), vm.accel_reason().to_string());
    let backend: Arc<dyn Backend> = Arc::new(vm);
    let restored = |paths: Vec<BootPath>| {
        for p in paths {
            assert!(
                matches!(p, BootPath::Restored { .. }),
                "a start meant as a restore was not one: {p:?}"
            );
        }
    };
    // Warm the page cache (not timed).
    fanout_commands(1, &floor_cmd);
    restored(rt.block_on(fanout_sandboxes(&backend, &config, 1)).1);
    let mut m: [Fanout; 6] = Default::default();
    let [floor_1, floor_n, restore_1, restore_n, cold_1, cold_n] = &mut m;
    for _ in 0..rounds {
        floor_1.add(fanout_commands(1, &floor_cmd));
        floor_n.add(fanout_commands(n, &floor_cmd));
        let (t, paths) = rt.block_on(fanout_sandboxes(&backend, &config, 1));
        restored(paths);
        restore_1.add(t);
        let (t, paths) = rt.block_on(fanout_sandboxes(&backend, &config, n));
        restored(paths);
        restore_n.add(t);
        cold_1.add(rt.block_on(fanout_sandboxes(&backend, &cold_config, 1)).0);
        cold_n.add(rt.block_on(fanout_sandboxes(&backend, &cold_config, n)).0);
    }
    let _ = std::fs::remove_dir_all(&snapshots);
    println!();
    println!(
        "### micro-VM: {n} at once, accelerator {} ({reason})",
        accel.as_str()
    );
    println!(
        "snapshot: {:.1} MiB of {} MiB guest RAM in use; bare floor: busybox-only initramfs of {} KiB",
        snap.meta.ram_allocated_bytes as f64 / 1048576.0,
        snap.meta.memory_mb,
        bare.initramfs_bytes() / 1024
    );
    header();
    row("floor: 1 bare boot alone", &floor_1.each, None);
    row(
        &format!("floor: {n} bare boots, all"),
        &floor_n.all,
        Some(&floor_1.each),
    );
    row("floor: each", &floor_n.each, Some(&floor_1.each));
    header();
    row(
        "1 restore alone → first exec",
        &restore_1.each,
        Some(&floor_1.each),
    );
    row(
        &format!("{n} restores from one snapshot, all (vs {n} bare boots)"),
        &restore_n.all,
        Some(&floor_n.all),
    );
    row(
        &format!("{n} restores, all (vs 1 restore alone)"),
        &restore_n.all,
        Some(&restore_1.each),
    );
    row(
        "restores: each (vs bare each)",
        &restore_n.each,
        Some(&floor_n.each),
    );
    header();
    row(
        "1 cold boot alone → first exec",
        &cold_1.each,
        Some(&floor_1.each),
    );
    row(
        &format!("{n} cold boots, all (vs {n} bare boots)"),
        &cold_n.all,
        Some(&floor_n.all),
    );
    row(
        "cold: each (vs bare each)",
        &cold_n.each,
        Some(&floor_n.each),
    );
}
