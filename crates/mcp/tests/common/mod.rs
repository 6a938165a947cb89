//! Shared fixtures of the husk-mcp tests: a real sidecar on a loopback
//! port, a gate that holds sidecar connections until the test opens it,
//! the husk-mcp binary over stdio or HTTP, and the Python MCP client.
//! Only 127.0.0.1 is ever contacted.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use husk_sidecar::{Identity, Sidecar};
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_husk-mcp");

/// A runtime for the servers the tests run (sidecars, gates), kept for
/// the whole test binary.
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// A real sidecar on 127.0.0.1:0.
pub struct RealSidecar {
    pub handle: Sidecar,
    pub addr: SocketAddr,
}

impl RealSidecar {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A sidecar whose agent is `cand-1` of `exec-1`, with peers, iteration 2.
pub fn sidecar() -> RealSidecar {
    let input = json!({"execution_id": "exec-1", "candidate_id": "cand-1", "role": "candidate",
                       "peers": ["cand-2", "cand-3"], "iteration": 2});
    let id = Identity::from_input("run-1", Some(&input)).expect("identity");
    let handle = Sidecar::new(id);
    let listener = rt()
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    rt().spawn(husk_sidecar::serve_on(listener, handle.clone()));
    RealSidecar { handle, addr }
}

/// A URL where nothing listens (a port bound, then released).
pub fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}")
}

/// A TCP relay in front of a sidecar that holds every connection until
/// [`Gate::open`] (or forever). Bytes are relayed untouched.
pub struct Gate {
    pub addr: SocketAddr,
    open: Arc<tokio::sync::Notify>,
    opened: Arc<std::sync::atomic::AtomicBool>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl Gate {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits (at most [`PATIENCE`]) until `n` connections came in, i.e.
    /// husk-mcp is inside its sidecar call.
    pub fn wait_accepted(&self, n: usize) {
        let deadline = std::time::Instant::now() + PATIENCE;
        while self.accepted.load(std::sync::atomic::Ordering::SeqCst) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "husk-mcp never called the sidecar"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn open(&self) {
        self.opened.store(true, std::sync::atomic::Ordering::SeqCst);
        self.open.notify_waiters();
    }
}

pub fn gate(upstream: SocketAddr) -> Gate {
    let listener = rt()
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let open = Arc::new(tokio::sync::Notify::new());
    let opened = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (o, flag, count) = (open.clone(), opened.clone(), accepted.clone());
    rt().spawn(async move {
        while let Ok((mut down, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (o, flag) = (o.clone(), flag.clone());
            tokio::spawn(async move {
                let notified = o.notified();
                if !flag.load(std::sync::atomic::Ordering::SeqCst) {
                    notified.await;
                }
                if let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                }
            });
        }
    });
    Gate {
        addr,
        open,
        opened,
        accepted,
    }
}

/// husk-mcp over stdio, driven line by line.
pub struct StdioMcp {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

pub fn spawn_stdio(url: &str, extra_env: &[(&str, &str)]) -> StdioMcp {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("VOID_SIDECAR_URL")
        .env("HUSK_SIDECAR_URL", url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn husk-mcp");
    let stdin = child.stdin.take();
    let stdout: ChildStdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    StdioMcp {
        child,
        stdin,
        lines: rx,
    }
}

/// The longest a test waits for one answer before failing (a bound
/// against hangs, not a timing assertion).
pub const PATIENCE: Duration = Duration::from_secs(30);

impl StdioMcp {
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).expect("write");
        stdin.flush().expect("flush");
    }

    pub fn send(&mut self, v: &Value) {
        let mut line = v.to_string().into_bytes();
        line.push(b'\n');
        self.send_raw(&line);
    }

    /// The next line of stdout, as JSON.
    pub fn recv(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(PATIENCE)
            .expect("husk-mcp answered nothing");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Reads answers until the one with `id`; returns it and the others.
    pub fn recv_id(&self, id: &Value) -> (Value, Vec<Value>) {
        let mut others = Vec::new();
        loop {
            let v = self.recv();
            if &v["id"] == id {
                return (v, others);
            }
            others.push(v);
        }
    }

    pub fn initialize(&mut self, version: &str) -> Value {
        self.send(
            &json!({"jsonrpc": "2.0", "id": "init", "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {},
                       "clientInfo": {"name": "husk-test", "version": "1"}}}),
        );
        let (v, others) = self.recv_id(&json!("init"));
        assert!(others.is_empty(), "{others:?}");
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        v
    }

    pub fn call(&mut self, id: i64, tool: &str, args: Value) {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                          "params": {"name": tool, "arguments": args}}));
    }

    /// Closes stdin and waits for the exit status.
    pub fn finish(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        wait_bounded(&mut self.child)
    }
}

/// Waits for `child` at most [`PATIENCE`]; kills it and fails otherwise.
pub fn wait_bounded(child: &mut Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("husk-mcp did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// husk-mcp serving HTTP on a free port; killed on drop.
pub struct Http {
    pub child: Child,
    pub url: String,
}

impl Drop for Http {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn_http(sidecar_url: &str) -> Http {
    let mut child = Command::new(BIN)
        .args(["--http", "--port", "0"])
        .env_remove("HUSK_SIDECAR_URL")
        .env("VOID_SIDECAR_URL", sidecar_url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn husk-mcp --http");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("[husk-mcp http] {line}");
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(PATIENCE)
        .expect("husk-mcp --http printed nothing");
    let url = line
        .strip_prefix("husk-mcp: serving MCP on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/mcp"),
        "{url}"
    );
    Http { child, url }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python with `mcp` installed: `HUSK_MCP_PYTHON`, else what
/// scripts/ensure-mcp-client prints (it installs on first use). A failed
/// install fails the test.
pub fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        if let Some(p) = std::env::var("HUSK_MCP_PYTHON")
            .ok()
            .filter(|p| !p.trim().is_empty())
        {
            return p;
        }
        let out = Command::new(repo_root().join("scripts/ensure-mcp-client"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/ensure-mcp-client");
        assert!(
            out.status.success(),
            "scripts/ensure-mcp-client failed ({}); see its output above",
            out.status
        );
        String::from_utf8(out.stdout)
            .expect("utf-8 path")
            .trim()
            .to_string()
    })
}

/// Runs the Python client on `plan` (see tests/fixtures/mcp_client.py).
pub fn python_client(plan: &Value) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp_client.py");
    let out = Command::new(python())
        .arg(script)
        .arg(plan.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run the python client");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client failed ({}):\n{stderr}",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("client output is not JSON ({e}): {stdout}\n{stderr}"))
}

/// The plan's `server` for husk-mcp over stdio.
pub fn stdio_server(url: &str) -> Value {
    json!({"command": BIN, "args": [], "env": {"VOID_SIDECAR_URL": url}})
}

/// The text of a tool result's first content block.
pub fn text(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or("")
}
