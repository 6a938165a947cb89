//! `sandbox.network` end to end: `husk run` with the scripted test agent,
//! whose shell steps try to reach test servers with curl (through the
//! proxy variables husk sets, and directly). Test servers listen on the
//! host's 127.0.0.1, or — for open mode's "outside" server — in a network
//! namespace the test creates with a veth pair of its own (10.253.x.0/30),
//! torn down after. No other traffic leaves this machine.
//!
//! Backends: namespace always (needs bubblewrap, curl, python3); micro-VM
//! when `HUSK_TEST_MICROVM=1` (`HUSK_GUEST_BIN`) and its guest has curl —
//! the stock micro-VM guest does not, so this is off by default.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{have_bwrap, husk};
use serde_json::{Value, json};

/// A python HTTP server answering `hello-NAME`; killed on drop.
struct Server {
    child: Child,
    port: u16,
}

const SERVE: &str = r#"
import http.server, sys
name = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello-" + name).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer((sys.argv[2], 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

impl Server {
    fn start(prefix: &[&str], name: &str, bind: &str) -> Server {
        let (prog, pre) = prefix
            .split_first()
            .map_or(("python3", &[][..]), |(p, r)| (*p, r));
        let mut cmd = Command::new(prog);
        cmd.args(pre);
        if !prefix.is_empty() {
            cmd.arg("python3");
        }
        let mut child = cmd
            .args(["-c", SERVE, name, bind])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the server's port");
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ready() -> bool {
    if !have_bwrap() {
        return false;
    }
    for tool in ["curl", "python3"] {
        if husk_sandbox::host::which(tool).is_none() {
            eprintln!("SKIP: {tool} is not installed");
            return false;
        }
    }
    true
}

/// The backends to test on.
fn modes() -> Vec<&'static str> {
    let mut m = vec!["namespace"];
    if std::env::var("HUSK_TEST_MICROVM").as_deref() == Ok("1") {
        m.push("microvm");
    }
    m
}

/// How a test request leaves the sandbox.
#[derive(Clone, Copy)]
enum How {
    /// curl's choice from the proxy variables husk sets.
    Env,
    /// Through the proxy, named explicitly (`-x`).
    Proxy,
    /// Bypassing any proxy.
    Direct,
}

/// `curl` printing only the status code (`000`: no connection).
fn curl(url: &str, how: How) -> String {
    let flag = match how {
        How::Env => "",
        How::Proxy => "--noproxy '' -x http://127.0.0.1:3128 ",
        How::Direct => "--noproxy '*' ",
    };
    format!("$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 {flag}{url} || true)")
}

/// Runs the test agent with one shell step that writes `summary` (shell
/// words expanded) as the run's output; returns (summary, record).
fn run(dir: &Path, mode: &str, network: Value, summary: &str) -> (String, Value) {
    std::fs::create_dir_all(dir).unwrap();
    let shell = format!(
        "printf '{{\"status\":\"success\",\"summary\":\"%s\"}}' \"{summary}\" > /workspace/output.json"
    );
    let script = json!({"steps": [{"shell": shell, "expect_ok": true}]});
    let spec = json!({
        "api_version": "v1", "kind": "agent", "name": "net",
        "sandbox": {"mode": mode, "network": network,
                    "env": {"HUSK_TEST_AGENT_SCRIPT": script.to_string()}},
        "agent": {"prompt": "p", "skills": ["agent:husk-test-agent"], "timeout_secs": 120},
    });
    let path = dir.join("net.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    let o = husk()
        .args(["run", "--json", "--runs-dir"])
        .arg(dir.join("runs"))
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let r: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("no record ({e}); stderr {stderr}"));
    assert_eq!(r["status"], "succeeded", "{stderr}\n{r:#}");
    let s = r["report"]["output"]["summary"]
        .as_str()
        .unwrap()
        .to_string();
    (s, r)
}

fn net_events(r: &Value, kind: &str) -> Vec<Value> {
    r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == kind)
        .map(|e| e["payload"].clone())
        .collect()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("husk-net-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn the_default_reaches_nothing_on_the_host() {
    if !ready() {
        return;
    }
    let host = Server::start(&[], "host", "127.0.0.1");
    let p = host.port;
    for mode in modes() {
        let (s, r) = run(
            &tmp(&format!("none-{mode}")),
            mode,
            json!(false),
            &format!(
                "proxied={} direct={} byname={}",
                curl(&format!("http://127.0.0.1:{p}/"), How::Proxy),
                curl(&format!("http://127.0.0.1:{p}/"), How::Direct),
                curl(&format!("http://localhost:{p}/"), How::Env),
            ),
        );
        // The proxy refuses; without it there is no route at all (and with
        // networking off no proxy variables are set).
        assert_eq!(s, "proxied=403 direct=000 byname=000", "{mode}: {r:#}");
        let denied = net_events(&r, "net.denied");
        assert_eq!(denied.len(), 1, "{mode}: {denied:?}");
        assert_eq!(denied[0]["host"], "127.0.0.1");
        assert_eq!(denied[0]["port"], p);
        assert!(net_events(&r, "net.allowed").is_empty());
    }
}

#[test]
fn an_allowlist_reaches_its_hosts_by_name_and_nothing_else() {
    if !ready() {
        return;
    }
    let allowed = Server::start(&[], "allowed", "127.0.0.1");
    let other = Server::start(&[], "other", "127.0.0.1");
    for mode in modes() {
        let (s, r) = run(
            &tmp(&format!("allow-{mode}")),
            mode,
            json!({"allow": [format!("localhost:{}", allowed.port)]}),
            &format!(
                "body=$(curl -s --max-time 10 http://localhost:{a}/) other={} ip={} direct={}",
                curl(&format!("http://localhost:{}/", other.port), How::Env),
                curl(&format!("http://127.0.0.1:{}/", allowed.port), How::Proxy),
                curl(&format!("http://127.0.0.1:{}/", allowed.port), How::Direct),
                a = allowed.port,
            ),
        );
        assert_eq!(
            s, "body=hello-allowed other=403 ip=403 direct=000",
            "{mode}: {r:#}"
        );
        let allowed_ev = net_events(&r, "net.allowed");
        assert_eq!(allowed_ev.len(), 1, "{allowed_ev:?}");
        assert_eq!(allowed_ev[0]["host"], "localhost");
        assert_eq!(allowed_ev[0]["port"], allowed.port);
        let denied = net_events(&r, "net.denied");
        assert_eq!(denied.len(), 2, "{denied:?}");
        assert_eq!(denied[0]["port"], other.port);
        assert_eq!(denied[1]["host"], "127.0.0.1");
    }
}

/// A network namespace with a veth pair: the host end 10.253.N.1/30, the
/// namespace end 10.253.N.2/30. Removed on drop.
struct Outside {
    ns: String,
    host_if: String,
}

impl Outside {
    fn create() -> Option<Outside> {
        let n = std::process::id() % 200 + 20;
        let o = Outside {
            ns: format!("husk-t{n}"),
            host_if: format!("hk{n}h"),
        };
        let ns_if = format!("hk{n}n");
        let host_ip = format!("10.253.{n}.1/30");
        let ns_ip = format!("10.253.{n}.2/30");
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", &o.ns],
            vec![
                "link", "add", &o.host_if, "type", "veth", "peer", "name", &ns_if,
            ],
            vec!["link", "set", &ns_if, "netns", &o.ns],
            vec!["addr", "add", &host_ip, "dev", &o.host_if],
            vec!["link", "set", &o.host_if, "up"],
            vec!["-n", &o.ns, "addr", "add", &ns_ip, "dev", &ns_if],
            vec!["-n", &o.ns, "link", "set", &ns_if, "up"],
            vec!["-n", &o.ns, "link", "set", "lo", "up"],
        ];
        for s in steps {
            let ok = Command::new("ip")
                .args(&s)
                .status()
                .is_ok_and(|st| st.success());
            if !ok {
                eprintln!("SKIP: `ip {}` failed (needs root)", s.join(" "));
                return None;
            }
        }
        Some(o)
    }

    fn addr(&self) -> String {
        let n = &self.ns["husk-t".len()..];
        format!("10.253.{n}.2")
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[test]
fn open_mode_reaches_outside_but_never_the_host() {
    if !ready() {
        return;
    }
    let Some(outside) = Outside::create() else {
        return;
    };
    let far = Server::start(
        &["ip", "netns", "exec", &outside.ns],
        "outside",
        &outside.addr(),
    );
    let host = Server::start(&[], "host", "127.0.0.1");
    for mode in modes() {
        let (s, r) = run(
            &tmp(&format!("open-{mode}")),
            mode,
            json!(true),
            &format!(
                "far=$(curl -s --max-time 10 -x http://127.0.0.1:3128 http://{}:{}/) host={} hostname={}",
                outside.addr(),
                far.port,
                curl(&format!("http://127.0.0.1:{}/", host.port), How::Proxy),
                curl(&format!("http://localhost:{}/", host.port), How::Env),
            ),
        );
        assert_eq!(
            s, "far=hello-outside host=403 hostname=403",
            "{mode}: {r:#}"
        );
        let denied = net_events(&r, "net.denied");
        assert_eq!(denied.len(), 2, "{denied:?}");
        assert!(
            denied.iter().all(|d| d["reason"]
                .as_str()
                .unwrap()
                .contains("machine husk runs on")),
            "{denied:?}"
        );
    }
    drop(far);
}

#[test]
fn a_model_cli_without_its_host_in_the_allowlist_fails_at_once() {
    if !have_bwrap() {
        return;
    }
    let dir = tmp("preflight");
    std::fs::create_dir_all(&dir).unwrap();
    for (network, needle) in [
        (json!(false), "the sandbox has no network"),
        (
            json!({"allow": ["pypi.org"]}),
            "`api.anthropic.com:443` is not in sandbox.network.allow",
        ),
    ] {
        let spec = json!({
            "api_version": "v1", "kind": "agent", "name": "pf",
            "llm": {"provider": "claude"},
            "sandbox": {"mode": "namespace", "network": network},
            "agent": {"prompt": "p", "skills": ["agent:claude-code"]},
        });
        let path = dir.join("pf.json");
        std::fs::write(&path, spec.to_string()).unwrap();
        let o = husk()
            .args(["run", "--json", "--runs-dir"])
            .arg(dir.join("runs"))
            .arg(&path)
            .env("HUSK_CLAUDE_BIN", "/bin/true")
            .env_remove("ANTHROPIC_BASE_URL")
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert_ne!(o.status.code(), Some(0), "{all}");
        assert!(all.contains(needle), "{needle:?} in {all}");
        assert!(!all.contains("box.started"), "{all}");
    }
}
