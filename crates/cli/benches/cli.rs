//! `husk exec` as a user runs it: the whole process from the shell, against
//! floors husk does not configure, measured in the same run with runs
//! alternating (so drift hits both alike):
//!
//! - `husk exec --backend namespace -- true` (husk's own launcher, and
//!   again with bubblewrap as the launcher) against a bare
//!   `bwrap --unshare-all --die-with-parent --ro-bind / / --dev /dev --proc /proc -- /bin/true`;
//! - with `HUSK_BENCH_VM_N` > 0, `husk exec --backend microvm --cold --
//!   true` and `husk exec --backend microvm -- true` (restored from a
//!   snapshot when one exists, as a user gets it) against a bare
//!   `qemu-system-x86_64` boot of the same kernel, machine and TSC
//!   arguments with a busybox-only initramfs whose init powers off
//!   (`MicrovmBackend::bare_floor`; its command line is printed). That
//!   floor boots the package's bzImage, as issue 14 defines it; when husk
//!   boots the kernel's ELF at its PVH entry, a second floor does the same
//!   bare boot with that file, so husk's own share shows beside what the
//!   boot method saves.
//!
//! Run: `cargo bench -p husk-cli --bench cli` (HUSK_BENCH_N, default 50;
//! HUSK_BENCH_VM_N, default 0). Needs bubblewrap and the guest agent
//! (`scripts/build-guest`). Asserts nothing.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use husk_sandbox::SandboxConfig;
use husk_sandbox::microvm::{AccelChoice, FloorKernel, KernelBoot, MicrovmBackend};

fn timed(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let st = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("spawn");
    let d = t.elapsed();
    assert!(st.success(), "{cmd:?} failed: {st}");
    d
}

fn p(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

fn row(name: &str, v: &mut [Duration], floor: Option<Duration>) {
    let (p50, p95) = (p(v, 0.5), p(v, 0.95));
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    let ratio = floor.map_or("—".into(), |f| {
        format!("{:.2}×", p50.as_secs_f64() / f.as_secs_f64())
    });
    println!("| {name} | {} | {} | {ratio} |", ms(p50), ms(p95));
}

fn env_n(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if husk_sandbox::host::which("bwrap").is_none() {
        eprintln!("SKIP: bubblewrap is not installed");
        return;
    }
    let husk = env!("CARGO_BIN_EXE_husk");
    let n = env_n("HUSK_BENCH_N", 50);
    let bare = || {
        let mut c = Command::new("bwrap");
        c.args([
            "--unshare-all",
            "--die-with-parent",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--",
            "/bin/true",
        ]);
        c
    };
    let exec = |extra: &[&str]| {
        let mut c = Command::new(husk);
        c.arg("exec").args(extra).args(["--", "true"]);
        c
    };
    // Warm the page cache and any first-use work (not timed).
    timed(&mut bare());
    timed(&mut exec(&["--backend", "namespace"]));
    let bwrap_launcher = || {
        let mut c = exec(&["--backend", "namespace"]);
        c.env("HUSK_NAMESPACE_LAUNCHER", "bubblewrap");
        c
    };
    timed(&mut bwrap_launcher());
    let (mut floor, mut ns, mut ns_bwrap) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        floor.push(timed(&mut bare()));
        ns.push(timed(&mut exec(&["--backend", "namespace"])));
        ns_bwrap.push(timed(&mut bwrap_launcher()));
    }
    println!("whole process, {n} runs each, alternating");
    println!();
    println!("| measurement | p50 | p95 | vs floor (p50) |");
    println!("|---|---|---|---|");
    let f = p(&mut floor, 0.5);
    row(
        "floor: bare `bwrap --unshare-all … /bin/true`",
        &mut floor,
        None,
    );
    row("`husk exec --backend namespace -- true`", &mut ns, Some(f));
    row(
        "the same with `HUSK_NAMESPACE_LAUNCHER=bubblewrap`",
        &mut ns_bwrap,
        Some(f),
    );

    let vm_n = env_n("HUSK_BENCH_VM_N", 0);
    if vm_n == 0 {
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let progress = |l: &str| eprintln!("microvm: {l}");
    let vm = match rt.block_on(MicrovmBackend::new(AccelChoice::Auto, &progress)) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("SKIP micro-VM: {e}");
            return;
        }
    };
    let config = SandboxConfig::default();
    let bare = vm
        .bare_floor(&config, FloorKernel::BzImage)
        .expect("bare-boot floor");
    let pvh = (vm.image().boot == KernelBoot::Pvh).then(|| {
        vm.bare_floor(&config, FloorKernel::Husks)
            .expect("bare-boot floor, PVH")
    });
    println!();
    println!(
        "micro-VM ({}), {vm_n} runs each, alternating; floor: qemu-system-x86_64 {}",
        vm.accel().as_str(),
        bare.args().join(" ")
    );
    println!(
        "husk boots: {} ({})",
        vm.image().boot.as_str(),
        vm.image().boot_note
    );
    println!();
    println!("| measurement | p50 | p95 | vs floor (p50) |");
    println!("|---|---|---|---|");
    let (mut vm_floor, mut restored, mut cold) = (Vec::new(), Vec::new(), Vec::new());
    let mut pvh_floor = Vec::new();
    timed(&mut bare.command());
    timed(&mut exec(&["--backend", "microvm"]));
    for _ in 0..vm_n {
        vm_floor.push(timed(&mut bare.command()));
        if let Some(pvh) = &pvh {
            pvh_floor.push(timed(&mut pvh.command()));
        }
        cold.push(timed(&mut exec(&["--backend", "microvm", "--cold"])));
        restored.push(timed(&mut exec(&["--backend", "microvm"])));
    }
    let f = p(&mut vm_floor, 0.5);
    let c = p(&mut cold, 0.5);
    let pf = (!pvh_floor.is_empty()).then(|| p(&mut pvh_floor, 0.5));
    row(
        &format!(
            "floor: bare QEMU microvm boot, busybox-only initramfs ({} KiB), init powers off",
            bare.initramfs_bytes() / 1024
        ),
        &mut vm_floor,
        None,
    );
    if pf.is_some() {
        row(
            "floor, PVH: the same bare boot of husk's ELF kernel (no bzImage decompression)",
            &mut pvh_floor,
            None,
        );
    }
    row(
        "`husk exec --backend microvm --cold -- true`",
        &mut cold.clone(),
        Some(f),
    );
    if pf.is_some() {
        row(
            "`husk exec --backend microvm --cold -- true` (vs the PVH floor)",
            &mut cold,
            pf,
        );
    }
    row(
        "`husk exec --backend microvm -- true` (restored)",
        &mut restored.clone(),
        Some(f),
    );
    row(
        "`husk exec --backend microvm -- true` (restored, vs cold)",
        &mut restored,
        Some(c),
    );
}
