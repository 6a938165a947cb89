//! Idle memory per sandbox: start K sandboxes, let them settle, and sum the
//! proportional set size (Pss, shared pages split among their users) of
//! each sandbox's host processes (bubblewrap, the guest agent; QEMU for a
//! micro-VM). Reported per sandbox for K = 1, 10 and 50 (namespace) and
//! K = 1 and 4 (micro-VM, whose floor is the guest RAM the guest itself
//! uses: its `MemTotal − MemAvailable`, read inside).
//!
//! Run: `cargo bench -p husk-sandbox --bench idle` (HUSK_BENCH_VM_K, the
//! largest micro-VM count, default 4; 0 skips). Asserts nothing.

use std::time::Duration;

use husk_sandbox::microvm::{AccelChoice, MicrovmBackend};
use husk_sandbox::namespace::NamespaceBackend;
use husk_sandbox::protocol::ExecRequest;
use husk_sandbox::{Backend, Sandbox, SandboxConfig};

/// Pss of `pid` and all its descendants, in KiB.
fn tree_pss_kib(pid: u32) -> u64 {
    let mut total = 0;
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        let rollup = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).unwrap_or_default();
        total += rollup
            .lines()
            .find(|l| l.starts_with("Pss:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let children =
            std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        stack.extend(
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    total
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

async fn measure(backend: &dyn Backend, k: usize, vm: bool) -> (f64, f64) {
    let config = SandboxConfig::default();
    let mut boxes = Vec::new();
    for _ in 0..k {
        boxes.push(backend.start(&config).await.expect("start"));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut host = 0;
    let mut guest = 0;
    for sb in &boxes {
        host += tree_pss_kib(sb.host_pid().expect("host pid"));
        if vm {
            guest += guest_used_kib(sb).await;
        }
    }
    for sb in boxes {
        sb.stop().await.expect("stop");
    }
    let per = |kib: u64| kib as f64 / 1024.0 / k as f64;
    (per(host), per(guest))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| sandboxes | host Pss per sandbox | guest RAM in use per sandbox | overhead per sandbox |"
    );
    println!("|---|---|---|---|");
    match NamespaceBackend::new() {
        Ok(b) => {
            for k in [1, 10, 50] {
                let (host, _) = rt.block_on(measure(&b, k, false));
                println!("| namespace × {k} | {host:.2} MiB | — | {host:.2} MiB |");
            }
        }
        Err(e) => eprintln!("SKIP namespace: {e}"),
    }
    let vm_k: usize = std::env::var("HUSK_BENCH_VM_K")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    if vm_k == 0 {
        return;
    }
    let progress = |l: &str| eprintln!("microvm: {l}");
    match rt.block_on(MicrovmBackend::new(AccelChoice::Auto, &progress)) {
        Ok(b) => {
            for k in [1, vm_k] {
                let (host, guest) = rt.block_on(measure(&b, k, true));
                println!(
                    "| micro-VM × {k} | {host:.1} MiB | {guest:.1} MiB | {:.1} MiB |",
                    host - guest
                );
            }
        }
        Err(e) => eprintln!("SKIP microvm: {e}"),
    }
}
