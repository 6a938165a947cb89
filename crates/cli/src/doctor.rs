//! `husk doctor`: what this host can do, checked for real, and why not.

use std::time::Instant;

use clap::Args;
use husk_sandbox::microvm::{AccelChoice, MicrovmBackend};
use husk_sandbox::namespace::NamespaceBackend;
use husk_sandbox::protocol::ExecRequest;
use husk_sandbox::{Backend, BackendChoice, SandboxConfig, host};
use serde::Serialize;

use crate::CliResult;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Report {
    checks: Vec<Check>,
    default_backend: Option<String>,
    default_backend_reason: String,
}

pub async fn run(args: DoctorArgs) -> CliResult<i32> {
    let mut checks = Vec::new();
    checks.push(guest_check());
    checks.push(namespace_check().await);
    let kvm = host::kvm_device();
    checks.push(Check {
        name: "kvm device",
        ok: kvm.present && kvm.accessible,
        detail: match (kvm.present, kvm.accessible) {
            (false, _) => "no /dev/kvm: micro-VMs would run under TCG software emulation".into(),
            (true, false) => "/dev/kvm exists but is not accessible to this user".into(),
            (true, true) => "/dev/kvm accessible (whether a guest boots under it is probed by the micro-VM backend)".into(),
        },
    });
    checks.push(microvm_check().await);
    let cg = host::cgroup_support();
    checks.push(Check {
        name: "resource limits",
        ok: true,
        detail: if cg.delegated_v2 {
            "cgroup v2 (memory, pids, cpu)".into()
        } else {
            format!(
                "rlimits + CPU affinity (weaker: per-process memory, no CPU share) because {}",
                cg.reason
            )
        },
    });
    checks.push(tokio::task::spawn_blocking(cache_check).await?);
    let quiet = |_: &str| {};
    let (default_backend, reason) = match husk_sandbox::select(
        BackendChoice::Auto,
        AccelChoice::Auto,
        &Default::default(),
        &quiet,
    )
    .await
    {
        Ok(s) => (Some(s.kind.to_string()), s.reason),
        Err(e) => (None, e.to_string()),
    };
    let ok = checks.iter().any(|c| c.name == "namespace backend" && c.ok);
    let report = Report {
        checks,
        default_backend,
        default_backend_reason: reason,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    Ok(if ok { 0 } else { 1 })
}

fn print_human(r: &Report) {
    println!("husk doctor");
    for c in &r.checks {
        let mark = if c.ok { "ok  " } else { "no  " };
        println!("  {mark} {:<18} {}", c.name, c.detail);
    }
    match &r.default_backend {
        Some(b) => println!("  default backend: {b} ({})", r.default_backend_reason),
        None => println!("  default backend: none ({})", r.default_backend_reason),
    }
}

/// What the micro-VM cache holds, and how much `husk image prune` would
/// free with its default rules.
fn cache_check() -> Check {
    use crate::prune::human_bytes;
    let report = crate::prune::dry_run(crate::prune::current_images().0);
    let (gone, kept): (Vec<_>, Vec<_>) = report.entries.iter().partition(|e| e.decision.removes());
    let detail = if report.entries.is_empty() {
        format!("{}: empty", report.cache.display())
    } else if gone.is_empty() {
        format!(
            "{}: {} in {} entries, all current, in use or used within a day",
            report.cache.display(),
            human_bytes(report.kept_bytes),
            kept.len()
        )
    } else {
        format!(
            "{}: {} in {} entries; {} in {} unused for a day (`husk image prune` removes them)",
            report.cache.display(),
            human_bytes(report.kept_bytes + report.freed_bytes),
            report.entries.len(),
            human_bytes(report.freed_bytes),
            gone.len()
        )
    };
    Check {
        name: "image cache",
        ok: true,
        detail,
    }
}

fn guest_check() -> Check {
    match husk_sandbox::guest_bin::locate_guest() {
        Ok(p) => Check {
            name: "guest agent",
            ok: true,
            detail: p.display().to_string(),
        },
        Err(e) => Check {
            name: "guest agent",
            ok: false,
            detail: e.to_string(),
        },
    }
}

/// Starts a real namespace sandbox and runs a command in it.
async fn namespace_check() -> Check {
    let name = "namespace backend";
    let result = match NamespaceBackend::new() {
        Ok(backend) => {
            try_sandbox(&backend, "cannot start a sandbox")
                .await
                .map(|(elapsed, info)| {
                    format!(
                        "works: sandbox started and ran a command in {:.1} ms ({})",
                        elapsed.as_secs_f64() * 1000.0,
                        info.isolation
                    )
                })
        }
        Err(e) => Err(e.to_string()),
    };
    check(name, result)
}

/// Builds (or reuses) the guest image, settles the accelerator (probing
/// KVM), boots a VM and runs a command in it.
async fn microvm_check() -> Check {
    let name = "microvm backend";
    let backend = match MicrovmBackend::new(AccelChoice::Auto, &crate::exec::progress).await {
        Ok(b) => b,
        Err(e) => return check(name, Err(e.to_string())),
    };
    let accel = format!(
        "accelerator {} ({})",
        backend.accel().as_str(),
        backend.accel_reason()
    );
    let result = match try_sandbox(&backend, "cannot boot a VM").await {
        Ok((elapsed, info)) => Ok(format!(
            "works: {accel}; booted kernel {} and ran a command in {:.2} s",
            info.guest_kernel,
            elapsed.as_secs_f64()
        )),
        Err(e) => Err(format!("{accel}; {e}")),
    };
    check(name, result)
}

/// Starts a sandbox, runs `true` in it, stops it: how long start + exec
/// took and what the sandbox said about itself, or what failed.
async fn try_sandbox(
    backend: &dyn Backend,
    start_failed: &str,
) -> Result<(std::time::Duration, husk_sandbox::SandboxInfo), String> {
    let t = Instant::now();
    let sandbox = backend
        .start(&SandboxConfig::default())
        .await
        .map_err(|e| format!("{start_failed}: {e}"))?;
    let out = sandbox
        .client()
        .run(&ExecRequest::new(["true"]), 1024)
        .await;
    let elapsed = t.elapsed();
    let info = sandbox.info().clone();
    let _ = sandbox.stop().await;
    match out {
        Ok(o) if o.status.success() => Ok((elapsed, info)),
        Ok(o) => Err(format!("test command failed: {:?}", o.status)),
        Err(e) => Err(format!("test command failed: {e}")),
    }
}

fn check(name: &'static str, result: Result<String, String>) -> Check {
    match result {
        Ok(detail) => Check {
            name,
            ok: true,
            detail,
        },
        Err(detail) => Check {
            name,
            ok: false,
            detail,
        },
    }
}
