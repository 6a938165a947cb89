//! Idle memory per sandbox: start K sandboxes, let them settle, and sum the
//! proportional set size (Pss, shared pages split among their users) of
//! each sandbox's host processes (bubblewrap, the guest agent; QEMU for a
//! micro-VM). Reported per sandbox, each against its floor: nothing for a
//! namespace sandbox, the guest RAM the guest itself uses for a micro-VM
//! (its `MemTotal − MemAvailable`, read inside).
//!
//! Rows: namespace × 1, 10, 50; then the micro-VM rows of
//! `HUSK_BENCH_VM_ROWS`, a comma list of `cold:K`, `restored:K`, each with an
//! optional `@MiB` guest RAM (default 1024), default
//! `cold:1,cold:10,restored:1,restored:10,restored:50`. Restored rows
//! restore from a snapshot built for the row's configuration in a
//! directory of this process (the user's snapshots are not touched).
//! `HUSK_BENCH_NS=0` skips the namespace rows, `HUSK_BENCH_SETTLE_SECS`
//! sets the wait after the last start (default 5: the guest kernel's first
//! free page reporting pass starts 2 s after its balloon driver loads).
//!
//! Run: `cargo bench -p husk-sandbox --bench idle`. Asserts nothing.

use std::time::Duration;

use husk_sandbox::microvm::{AccelChoice, MicrovmBackend};
use husk_sandbox::namespace::NamespaceBackend;
use husk_sandbox::protocol::ExecRequest;
use husk_sandbox::{Backend, BootPath, Sandbox, SandboxConfig};

/// Pss and Rss of `pid` and all its descendants, in KiB.
fn tree_kib(pid: u32) -> (u64, u64) {
    let (mut pss, mut rss) = (0, 0);
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        let rollup = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).unwrap_or_default();
        let field = |name: &str| {
            rollup
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        pss += field("Pss:");
        rss += field("Rss:");
        let children =
            std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        stack.extend(
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    (pss, rss)
}

/// Guest memory in use, in KiB, as the guest sees it.
async fn guest_used_kib(sb: &Sandbox) -> u64 {
    let req = ExecRequest::new(["cat", "/proc/meminfo"]);
    let out = sb.client().run(&req, 64 * 1024).await.expect("meminfo");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field("MemTotal:").saturating_sub(field("MemAvailable:"))
}

/// Per-sandbox means, in MiB.
struct Idle {
    pss: f64,
    rss: f64,
    guest: f64,
}

async fn measure(backend: &dyn Backend, config: &SandboxConfig, k: usize, vm: bool) -> Idle {
    let settle: u64 = std::env::var("HUSK_BENCH_SETTLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut boxes = Vec::new();
    for _ in 0..k {
        let sb = backend.start(config).await.expect("start");
        if vm && !config.cold_boot {
            assert!(
                matches!(sb.info().boot, BootPath::Restored { .. }),
                "not restored: {:?}",
                sb.info().boot
            );
        }
        boxes.push(sb);
    }
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let (mut pss, mut rss, mut guest) = (0, 0, 0);
    for sb in &boxes {
        let (p, r) = tree_kib(sb.host_pid().expect("host pid"));
        pss += p;
        rss += r;
    }
    // Read after the host side: the exec itself touches guest memory.
    if vm {
        for sb in &boxes {
            guest += guest_used_kib(sb).await;
        }
    }
    for sb in boxes {
        sb.stop().await.expect("stop");
    }
    let per = |kib: u64| kib as f64 / 1024.0 / k as f64;
    Idle {
        pss: per(pss),
        rss: per(rss),
        guest: per(guest),
    }
}

/// One micro-VM row of `HUSK_BENCH_VM_ROWS`.
struct VmRow {
    restored: bool,
    k: usize,
    memory_mb: u32,
}

fn bad_row(item: &str) -> ! {
    panic!("HUSK_BENCH_VM_ROWS: {item:?} is not cold:K[@MiB] or restored:K[@MiB]")
}

fn vm_rows() -> Vec<VmRow> {
    let spec = std::env::var("HUSK_BENCH_VM_ROWS")
        .unwrap_or_else(|_| "cold:1,cold:10,restored:1,restored:10,restored:50".into());
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|item| {
            let (kind, rest) = item.trim().split_once(':').unwrap_or_else(|| bad_row(item));
            let (k, mb) = rest.split_once('@').unwrap_or((rest, "1024"));
            VmRow {
                restored: match kind {
                    "cold" => false,
                    "restored" => true,
                    _ => bad_row(item),
                },
                k: k.parse().unwrap_or_else(|_| bad_row(item)),
                memory_mb: mb.parse().unwrap_or_else(|_| bad_row(item)),
            }
        })
        .collect()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| sandboxes | host Pss per sandbox | host Rss per sandbox | guest RAM in use per sandbox | overhead (Pss − guest) per sandbox |"
    );
    println!("|---|---|---|---|---|");
    if std::env::var("HUSK_BENCH_NS").as_deref() != Ok("0") {
        match NamespaceBackend::new() {
            Ok(b) => {
                for k in [1, 10, 50] {
                    let r = rt.block_on(measure(&b, &SandboxConfig::default(), k, false));
                    println!(
                        "| namespace × {k} | {:.2} MiB | {:.2} MiB | — | {:.2} MiB |",
                        r.pss, r.rss, r.pss
                    );
                }
            }
            Err(e) => eprintln!("SKIP namespace: {e}"),
        }
    }
    let rows = vm_rows();
    if rows.is_empty() {
        return;
    }
    let progress = |l: &str| eprintln!("microvm: {l}");
    let backend = match rt.block_on(MicrovmBackend::new(AccelChoice::Auto, &progress)) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("SKIP microvm: {e}");
            return;
        }
    };
    let snapshots = std::env::temp_dir().join(format!("husk-idle-bench-{}", std::process::id()));
    let backend = backend.with_snapshot_dir(snapshots.clone());
    for row in rows {
        let config = SandboxConfig {
            memory_mb: row.memory_mb,
            cold_boot: !row.restored,
            ..SandboxConfig::default()
        };
        if row.restored && !backend.snapshot_path(&config).exists() {
            let info = rt
                .block_on(backend.build_snapshot(&config, &progress))
                .expect("build a snapshot");
            eprintln!(
                "snapshot {} MiB: RAM file {} MiB allocated",
                row.memory_mb,
                info.meta.ram_allocated_bytes / (1024 * 1024)
            );
        }
        let r = rt.block_on(measure(&backend, &config, row.k, true));
        let how = if row.restored { "restored" } else { "cold" };
        println!(
            "| micro-VM {how} × {} ({} MiB guest) | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
            row.k,
            row.memory_mb,
            r.pss,
            r.rss,
            r.guest,
            r.pss - r.guest
        );
    }
    let _ = std::fs::remove_dir_all(&snapshots);
}
