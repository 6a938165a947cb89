//! Warm pools through the daemon: `husk serve --pool …` keeps sandboxes
//! ready; a run whose sandbox has the default settings claims one (its
//! `box.started` says so, no boot), a run asking for another size claims
//! from the pool `--pool-config` keeps for that size, `/v1/health` and
//! `/v1/metrics` count the claims, and a SIGTERM leaves no pooled sandbox
//! behind.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{Daemon, have_curl};
use common::have_bwrap;
use serde_json::{Value, json};

const WORKFLOW: &str = r#"api_version: v1
kind: workflow
name: pooled
sandbox: {mode: MODE}
workflow:
  steps:
    - name: main
      run:
        program: sh
        args: ["-c", "echo '{\"status\":\"success\",\"summary\":\"pooled\"}' > /workspace/result.json"]
"#;

/// Polls `/v1/health` until the pool of `backend` for sandboxes of
/// `memory_mb` has `ready` sandboxes.
fn wait_ready(d: &Daemon, backend: &str, memory_mb: u64, ready: u64, limit: Duration) -> Value {
    let t0 = Instant::now();
    loop {
        let (_, h) = d.json("GET", "/v1/health", None);
        let pool = h["pools"].as_array().and_then(|p| {
            p.iter()
                .find(|p| p["backend"] == backend && p["memory_mb"] == memory_mb)
                .cloned()
        });
        if let Some(p) = pool.filter(|p| p["ready"].as_u64() == Some(ready)) {
            return p;
        }
        assert!(t0.elapsed() < limit, "pool never had {ready} ready: {h}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn box_started(r: &Value) -> String {
    r["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "box.started")
        .and_then(|e| e["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn run_pooled(d: &Daemon, mode: &str) -> Value {
    run_sandbox(d, &format!("{{mode: {mode}}}"))
}

/// Runs the workflow with `sandbox` as its sandbox section.
fn run_sandbox(d: &Daemon, sandbox: &str) -> Value {
    let spec = WORKFLOW.replace("{mode: MODE}", sandbox);
    let (code, v) = d.json("POST", "/v1/runs", Some(&json!({"spec": spec}).to_string()));
    assert_eq!(code, 200, "{v}");
    let id = v["run_id"].as_str().unwrap().to_string();
    d.wait_terminal(&id, Duration::from_secs(120))
}

/// Processes whose parent is `pid` and whose name is `comm`.
fn children_named(pid: u32, comm: &str) -> usize {
    let want = format!("({comm}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let Some((head, rest)) = stat.rsplit_once(") ") else {
                return false;
            };
            head.contains(&want) && rest.split(' ').nth(1) == Some(pid.to_string().as_str())
        })
        .count()
}

/// Namespace sandbox launchers (husk's own or bubblewrap) started by `pid`:
/// one per live sandbox.
fn launchers_of(pid: u32) -> usize {
    children_named(pid, "husk-guest") + children_named(pid, "bwrap")
}

fn terminate(d: &mut Daemon) {
    let pid = d.child.id();
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let t0 = Instant::now();
    while d.child.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the daemon ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of metric `name` for the pool of `backend` and `memory_mb`.
fn metric(m: &str, name: &str, backend: &str, memory_mb: u32) -> Option<u64> {
    let prefix = format!("{name}{{backend=\"{backend}\",memory_mb=\"{memory_mb}\",");
    m.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_namespace_run_claims_a_pooled_sandbox() {
    if !have_bwrap() || !have_curl() {
        eprintln!("SKIP: needs bubblewrap and curl");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pools.yaml");
    std::fs::write(
        &config,
        "pools:\n  - backend: namespace\n    size: 1\n    memory_mb: 512\n",
    )
    .unwrap();
    let mut d = Daemon::start(
        "pool-ns",
        &[
            "--pool",
            "namespace=2",
            "--pool-config",
            config.to_str().unwrap(),
        ],
    );
    wait_ready(&d, "namespace", 1024, 2, Duration::from_secs(60));
    wait_ready(&d, "namespace", 512, 1, Duration::from_secs(60));
    assert_eq!(launchers_of(d.child.id()), 3);

    let r = run_pooled(&d, "namespace");
    assert_eq!(r["status"], "succeeded", "{r:#}");
    let started = box_started(&r);
    assert!(started.contains("from the warm pool"), "{started}");
    // The claimed sandbox was the run's alone: stopped with it, replaced.
    let p = wait_ready(&d, "namespace", 1024, 2, Duration::from_secs(60));
    assert_eq!(
        (p["claims"].as_u64(), p["misses"].as_u64()),
        (Some(1), Some(0)),
        "{p}"
    );
    assert_eq!(p["started"].as_u64(), Some(3), "{p}");

    // A stage asking for 512 MiB claims from the pool kept for that size.
    let r = run_sandbox(&d, "{mode: namespace, memory_mb: 512}");
    assert_eq!(r["status"], "succeeded", "{r:#}");
    assert!(box_started(&r).contains("from the warm pool"), "{r:#}");
    let p = wait_ready(&d, "namespace", 512, 1, Duration::from_secs(60));
    assert_eq!(p["claims"].as_u64(), Some(1), "{p}");

    // A size no pool keeps starts cold (not a claim).
    let r = run_sandbox(&d, "{mode: namespace, memory_mb: 768}");
    assert_eq!(r["status"], "succeeded", "{r:#}");
    assert!(!box_started(&r).contains("warm pool"), "{r:#}");

    let (code, m) = d.curl("GET", "/v1/metrics", None, &[]);
    assert_eq!(code, 200, "{m}");
    for memory in [1024, 512] {
        assert_eq!(
            metric(&m, "husk_pool_claims_total", "namespace", memory),
            Some(1),
            "{m}"
        );
    }
    assert_eq!(
        metric(&m, "husk_pool_ready", "namespace", 1024),
        Some(2),
        "{m}"
    );
    assert!(m.contains("husk_runs_started_total 3\n"), "{m}");

    let pid = d.child.id();
    terminate(&mut d);
    assert_eq!(launchers_of(pid), 0);
}

#[test]
fn a_microvm_run_starts_without_a_boot() {
    if !have_curl() || husk_sandbox::host::which("qemu-system-x86_64").is_none() {
        eprintln!("SKIP: needs curl and QEMU");
        return;
    }
    let mut d = Daemon::start("pool-vm", &["--pool", "microvm=1"]);
    wait_ready(&d, "microvm", 1024, 1, Duration::from_secs(300));
    let r = run_pooled(&d, "microvm");
    assert_eq!(r["status"], "succeeded", "{r:#}");
    let started = box_started(&r);
    assert!(
        started.contains("microvm") && started.contains("from the warm pool"),
        "{started}"
    );
    let p = wait_ready(&d, "microvm", 1024, 1, Duration::from_secs(300));
    assert_eq!(p["claims"].as_u64(), Some(1), "{p}");
    let pid = d.child.id();
    terminate(&mut d);
    assert_eq!(children_named(pid, "qemu-system-x86"), 0);
}

#[test]
fn bad_pool_requests_are_refused_at_start() {
    for (arg, says) in [
        ("vm=2", "expected BACKEND=N"),
        ("microvm=100", "must be a number from 0 to 64"),
        ("microvm=64", "need"),
    ] {
        refused(&["--pool", arg], says);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pools.yaml");
    std::fs::write(
        &config,
        "pools:\n  - {backend: microvm, size: 1, vcpus: 0}\n",
    )
    .unwrap();
    refused(
        &["--pool-config", config.to_str().unwrap()],
        "pools[0]: vcpus: must be between 1 and 64",
    );
    // The same pool from the flag and the file is one pool too many.
    std::fs::write(&config, "pools:\n  - {backend: namespace, size: 1}\n").unwrap();
    refused(
        &[
            "--pool",
            "namespace=2",
            "--pool-config",
            config.to_str().unwrap(),
        ],
        "given twice",
    );
}

fn refused(args: &[&str], says: &str) {
    {
        let arg = args.join(" ");
        let dir = std::env::temp_dir().join(format!("husk-pool-bad-{}", std::process::id()));
        let out = common::husk()
            .args(["serve", "--socket", "/nonexistent/x.sock"])
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{arg}: {err}");
        assert!(err.contains(says), "{arg}: {err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
