//! Messaging from inside a sandbox, as an agent uses it: a namespace
//! sandbox (networking off) whose `127.0.0.1:7777` the guest forwards over
//! the control channel to the run's sidecar in this process. Reports, each
//! against a floor measured in the same run:
//!
//! - forwarded-port HTTP round trip (`GET /v1/context`, one keep-alive
//!   connection, timed inside the sandbox by Python's `http.client`)
//!   against the same client on the host talking to the same sidecar served
//!   on a host loopback TCP port;
//! - `husk-message context` whole process, run in the sandbox, against an
//!   exec of `true` (the exec round trip every command pays).
//!
//! Run: `cargo bench -p husk-cli --bench messaging` (needs bubblewrap,
//! python3 and the static helpers from `scripts/build-guest`). Asserts
//! nothing.

use std::time::{Duration, Instant};

use husk_sandbox::namespace::NamespaceBackend;
use husk_sandbox::protocol::ExecRequest;
use husk_sandbox::{Backend, SandboxConfig};

const N: usize = 300;

fn main() {
    if husk_sandbox::host::which("bwrap").is_none()
        || husk_sandbox::host::which("python3").is_none()
    {
        eprintln!("SKIP: needs bubblewrap and python3");
        return;
    }
    let Some(message) = husk_sandbox::microvm::image::locate_static_helper("husk-message") else {
        eprintln!("SKIP: husk-message is not built (scripts/build-guest)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let sidecar = husk_sidecar::Sidecar::new(husk_sidecar::Identity::for_run("bench"));
        // Floor: the same client and sidecar over host loopback TCP.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(husk_sidecar::serve_on(listener, sidecar.clone()));
        let floor = python_loop(None, port).await;

        let sb = NamespaceBackend::new()
            .unwrap()
            .start(&SandboxConfig::default())
            .await
            .unwrap();
        let bytes = tokio::fs::read(&message).await.unwrap();
        sb.client()
            .write_file("/tmp/husk-message", &bytes, 0o755)
            .await
            .unwrap();
        let _fwd = husk_sidecar_attach(&sb, &sidecar).await;
        let tunnel = python_loop(Some(&sb), husk_runtime::messaging::SIDECAR_PORT).await;

        let mut exec_true = Vec::new();
        let mut exec_msg = Vec::new();
        let mut msg_req = ExecRequest::new(["/tmp/husk-message", "context"]);
        msg_req.env = husk_runtime::messaging::env();
        for _ in 0..N / 3 {
            let t = Instant::now();
            let o = sb
                .client()
                .run(&ExecRequest::new(["true"]), 1 << 16)
                .await
                .unwrap();
            assert!(o.status.success());
            exec_true.push(t.elapsed());
            let t = Instant::now();
            let o = sb.client().run(&msg_req, 1 << 16).await.unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            exec_msg.push(t.elapsed());
        }
        let _ = sb.stop().await;
        println!("messaging from a namespace sandbox, {N} requests");
        println!("{:<62} {:>9} {:>9} {:>8}", "", "p50", "p99", "ratio");
        row(
            "floor: GET /v1/context, host loopback TCP, keep-alive",
            &floor,
            None,
        );
        row(
            "GET /v1/context through the forwarded port, keep-alive",
            &tunnel,
            Some(&floor),
        );
        row("floor: exec `true` in the sandbox", &exec_true, None);
        row(
            "exec `husk-message context` in the sandbox (whole process)",
            &exec_msg,
            Some(&exec_true),
        );
    });
}

async fn husk_sidecar_attach(
    sb: &husk_sandbox::Sandbox,
    sidecar: &husk_sidecar::Sidecar,
) -> husk_sandbox::tunnel::Forward {
    husk_runtime::messaging::attach(sb, sidecar).await.unwrap()
}

/// Per-request latencies of `N` keep-alive GETs timed by Python, on the
/// host (`sandbox` None) or inside the sandbox.
async fn python_loop(sandbox: Option<&husk_sandbox::Sandbox>, port: u16) -> Vec<Duration> {
    let code = format!(
        "import http.client,time\n\
         c=http.client.HTTPConnection('127.0.0.1',{port})\n\
         out=[]\n\
         for i in range({n}):\n\
         \x20   t=time.perf_counter_ns(); c.request('GET','/v1/context'); r=c.getresponse(); r.read()\n\
         \x20   out.append(time.perf_counter_ns()-t)\n\
         print(' '.join(map(str,out)))\n",
        n = N
    );
    let text = match sandbox {
        Some(sb) => {
            let o = sb
                .client()
                .run(&ExecRequest::new(["python3", "-c", &code]), 1 << 20)
                .await
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8_lossy(&o.stdout).into_owned()
        }
        None => {
            let o = tokio::process::Command::new("python3")
                .args(["-c", &code])
                .output()
                .await
                .unwrap();
            String::from_utf8_lossy(&o.stdout).into_owned()
        }
    };
    text.split_whitespace()
        .filter_map(|v| v.parse::<u64>().ok())
        .skip(10) // warm-up
        .map(Duration::from_nanos)
        .collect()
}

fn row(name: &str, v: &[Duration], floor: Option<&[Duration]>) {
    let ratio = floor
        .map(|f| format!("{:.2}×", p(v, 50).as_secs_f64() / p(f, 50).as_secs_f64()))
        .unwrap_or_default();
    println!(
        "{name:<62} {:>7.3}ms {:>7.3}ms {ratio:>8}",
        p(v, 50).as_secs_f64() * 1e3,
        p(v, 99).as_secs_f64() * 1e3
    );
}

fn p(v: &[Duration], pct: usize) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[(s.len() * pct / 100).min(s.len() - 1)]
}
