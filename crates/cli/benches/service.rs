//! Service-mode benchmark, as a user runs it: a real `husk serve`, a
//! workflow whose service step republishes its output file every 300 ms
//! with the time it wrote it, and an SSE client (curl) on the run's
//! events. Reports:
//!
//! - publication latency: output file renamed into place in the sandbox →
//!   `run.output_ready` received by the SSE client, p50/p95, against the
//!   floor measured in the same run: a guest `Stat` round trip on a live
//!   namespace sandbox (the one RPC each poll costs), and the poll interval;
//! - the watcher's CPU cost: the daemon's CPU time while one idle service
//!   is watched, minus the same for an idle task step (same sandbox,
//!   same telemetry sampling), in percent of one core.
//!
//! Run: `cargo bench -p husk-cli --bench service` (needs bubblewrap, curl
//! and the static guest, as `scripts/test` builds it: HUSK_GUEST_BIN).
//! Not a test: it asserts nothing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use husk_sandbox::namespace::NamespaceBackend;
use husk_sandbox::{Backend, SandboxConfig};

const PUBLICATIONS: usize = 40;

fn main() {
    if husk_sandbox::host::which("curl").is_none() || husk_sandbox::host::which("bwrap").is_none() {
        eprintln!("SKIP: needs curl and bubblewrap");
        return;
    }
    let dir = std::env::temp_dir().join(format!("husk-bench-service-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let daemon = Daemon::start(&dir);

    let stat = stat_round_trips(200);
    let latency = publication_latency(&daemon);
    let idle_service = idle_cpu(&daemon, SERVICE_IDLE);
    let idle_task = idle_cpu(&daemon, TASK_IDLE);

    let poll = husk_runtime::service::POLL;
    println!(
        "service mode, namespace backend, {} CPUs",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("{:<58} {:>9} {:>9}", "", "p50", "p95");
    row("floor: guest Stat round trip (live sandbox)", &stat);
    row("write → run.output_ready at an SSE client", &latency);
    println!(
        "poll interval {} ms; latency p50 = {:.2}× the interval, {:.1}× a Stat round trip",
        poll.as_millis(),
        p(&latency, 50).as_secs_f64() / poll.as_secs_f64(),
        p(&latency, 50).as_secs_f64() / p(&stat, 50).as_secs_f64()
    );
    println!(
        "daemon CPU, idle: service watched {idle_service:.2}% vs task step {idle_task:.2}% of one core → watcher ≈ {:.2}%",
        idle_service - idle_task
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn row(name: &str, v: &[Duration]) {
    println!(
        "{name:<58} {:>7.2}ms {:>7.2}ms",
        p(v, 50).as_secs_f64() * 1e3,
        p(v, 95).as_secs_f64() * 1e3
    );
}

fn p(v: &[Duration], pct: usize) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[(s.len() * pct / 100).min(s.len() - 1)]
}

/// Guest `Stat` round trips on one live namespace sandbox.
fn stat_round_trips(n: usize) -> Vec<Duration> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let backend = NamespaceBackend::new().expect("namespace backend");
        let sb = backend
            .start(&SandboxConfig::default())
            .await
            .expect("sandbox");
        sb.client()
            .write_file("/workspace/out.json", b"{}", 0o644)
            .await
            .unwrap();
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            sb.client().stat("/workspace/out.json", true).await.unwrap();
            out.push(t.elapsed());
        }
        let _ = sb.stop().await;
        out
    })
}

const SERVICE_IDLE: &str = r#"api_version: v1
kind: workflow
name: idle-service
sandbox: {mode: namespace}
workflow:
  steps:
    - name: svc
      mode: service
      output_file: /workspace/out.json
      run: {program: sh, args: ["-c", "echo '{\"status\":\"up\"}' > /workspace/out.json; exec sleep 600"]}
"#;

const TASK_IDLE: &str = r#"api_version: v1
kind: workflow
name: idle-task
sandbox: {mode: namespace}
workflow:
  steps:
    - name: svc
      run: {program: sh, args: ["-c", "echo '{\"status\":\"up\"}' > /workspace/result.json; exec sleep 600"]}
"#;

/// Daemon CPU (percent of one core) over 10 s while a run of `spec` idles.
fn idle_cpu(d: &Daemon, spec: &str) -> f64 {
    let id = d.start_run(spec);
    std::thread::sleep(Duration::from_secs(3));
    let (t0, c0) = (Instant::now(), cpu_ticks(d.child.id()));
    std::thread::sleep(Duration::from_secs(10));
    let (secs, ticks) = (t0.elapsed().as_secs_f64(), cpu_ticks(d.child.id()) - c0);
    d.curl(&["-X", "POST", &format!("http://x/v1/runs/{id}/cancel")]);
    ticks as f64 / 100.0 / secs * 100.0
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Latencies of [`PUBLICATIONS`] republications, file renamed → SSE event.
fn publication_latency(d: &Daemon) -> Vec<Duration> {
    let script = format!(
        "i=0; while [ $i -lt {PUBLICATIONS} ]; do i=$((i+1)); \
         printf '{{\"status\":\"running\",\"summary\":\"%s\"}}' \"$(date +%s%N)\" > /workspace/.o; \
         mv /workspace/.o /workspace/out.json; sleep 0.3; done; exec sleep 600"
    );
    let spec = format!(
        "api_version: v1\nkind: workflow\nname: pubs\nsandbox: {{mode: namespace}}\nworkflow:\n  steps:\n    - name: svc\n      mode: service\n      output_file: /workspace/out.json\n      run: {{program: sh, args: [\"-c\", {}]}}\n",
        serde_json::to_string(&script).unwrap()
    );
    let id = d.start_run(&spec);
    let mut sse = Command::new("curl")
        .args(["-sN", "--unix-socket"])
        .arg(&d.socket)
        .args(["-H", "Accept: text/event-stream"])
        .arg(format!("http://x/v1/runs/{id}/events"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sse.stdout.take().unwrap()).lines();
    let mut out = Vec::new();
    let mut next_is_ready = false;
    while out.len() < PUBLICATIONS {
        let Some(Ok(line)) = lines.next() else { break };
        if line == "event: run.output_ready" {
            next_is_ready = true;
            continue;
        }
        if next_is_ready && line.starts_with("data:") {
            next_is_ready = false;
            let seen = now_ns();
            let body = d.curl(&[&format!("http://x/v1/runs/{id}/stages/svc/output-file")]);
            let written: u128 = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["summary"].as_str().and_then(|s| s.parse().ok()))
                .unwrap_or(0);
            if written > 0 && seen >= written {
                out.push(Duration::from_nanos((seen - written) as u64));
            }
        }
    }
    let _ = sse.kill();
    let _ = sse.wait();
    d.curl(&["-X", "POST", &format!("http://x/v1/runs/{id}/cancel")]);
    out
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let socket = dir.join("husk.sock");
        let mut child = Command::new(env!("CARGO_BIN_EXE_husk"))
            .args(["serve", "--socket"])
            .arg(&socket)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("listening on") {
            line.clear();
            assert!(err.read_line(&mut line).unwrap() > 0, "daemon exited");
        }
        std::thread::spawn(move || for _ in err.lines() {});
        Daemon { child, socket }
    }

    fn curl(&self, args: &[&str]) -> String {
        let o = Command::new("curl")
            .args(["-s", "--unix-socket"])
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn start_run(&self, spec: &str) -> String {
        let body = serde_json::json!({ "spec": spec }).to_string();
        let out = self.curl(&[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            &body,
            "http://x/v1/runs",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).expect(&out);
        v["run_id"].as_str().expect(&out).to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
