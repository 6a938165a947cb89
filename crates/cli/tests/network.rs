//! `sandbox.network` end to end: `husk run` with the scripted test agent,
//! whose shell steps try to reach test servers with busybox `wget` and `nc`
//! (through the proxy variables husk sets, through the proxy named
//! explicitly, with CONNECT, and directly). Test servers listen on the
//! host's 127.0.0.1, or — for open mode's "outside" server — in a network
//! namespace the test creates with a veth pair of its own (10.253.x.0/30),
//! torn down after. No other traffic leaves this machine.
//!
//! Backends: both, with the same commands: namespace (needs bubblewrap and
//! the host's busybox) and micro-VM (needs QEMU; its guest image ships
//! busybox; under TCG each run takes a few seconds, so each test starts one
//! sandbox per backend and checks everything in it). The test servers need
//! python3.

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

/// The backends to test on: namespace when bubblewrap and the host's
/// busybox are here, micro-VM when QEMU is (its guest image ships busybox).
fn modes() -> Vec<&'static str> {
    let mut m = Vec::new();
    if husk_sandbox::host::which("python3").is_none() {
        eprintln!("SKIP: python3 (the test servers) is not installed");
        return m;
    }
    if have_bwrap() {
        if husk_sandbox::host::which("busybox").is_some() {
            m.push("namespace");
        } else {
            eprintln!("SKIP (namespace): busybox is not installed on this host");
        }
    }
    if husk_sandbox::host::which("qemu-system-x86_64").is_some() {
        m.push("microvm");
    } else {
        eprintln!("SKIP (microvm): qemu-system-x86_64 is not installed");
    }
    m
}

/// Shell functions for the sandbox, using only busybox (the micro-VM
/// guest's whole userland; namespace sandboxes see the host's):
///
/// - `st [-Y off] URL`: the HTTP status `wget` got (`000`: no connection).
///   busybox `wget` takes its proxy from lowercase `http_proxy` only (also
///   for https URLs, which it then asks for in absolute form, never with
///   CONNECT); `-Y off` bypasses it.
/// - `pst URL`: `st` through the proxy, named explicitly.
/// - `body URL`: the body `wget` got.
/// - `tunnel_st HOST:PORT` / `tunnel HOST:PORT`: a CONNECT through the proxy
///   with `nc`: the proxy's status, or the body of a GET sent in the tunnel.
///
/// The time limit is `timeout`, not `wget -T`: Debian's busybox before
/// 1.36.1-5 is built without `-T` support and crashes on it.
const CLIENT: &str = r#"st() { busybox timeout 10 busybox wget -S -O /dev/null "$@" 2>&1 | sed -n 's/.*HTTP\/1\.[01] \([0-9][0-9][0-9]\).*/\1/p' | tail -n 1 | grep . || echo 000; }
body() { busybox timeout 10 busybox wget -q -O - "$1"; }
tunnel_st() { printf 'CONNECT %s HTTP/1.1\r\nhost: %s\r\n\r\n' "$1" "$1" | busybox timeout 10 busybox nc 127.0.0.1 3128 | head -n 1 | cut -d ' ' -f 2; }
tunnel() { printf 'CONNECT %s HTTP/1.1\r\nhost: %s\r\n\r\nGET / HTTP/1.0\r\nhost: %s\r\n\r\n' "$1" "$1" "$1" | busybox timeout 10 busybox nc 127.0.0.1 3128 | tail -n 1; }
pst() ( export http_proxy=http://127.0.0.1:3128; st "$@" )
"#;

/// Runs the test agent with one shell step that writes `summary` (shell
/// words expanded, [`CLIENT`]'s functions defined) as the run's output;
/// returns (summary, record).
fn run(dir: &Path, mode: &str, network: Value, summary: &str) -> (String, Value) {
    std::fs::create_dir_all(dir).unwrap();
    let shell = format!(
        "{CLIENT}printf '{{\"status\":\"success\",\"summary\":\"%s\"}}' \"{summary}\" > /workspace/output.json"
    );
    let script = json!({"steps": [{"shell": shell, "expect_ok": true}]});
    let spec = json!({
        "api_version": "v1", "kind": "agent", "name": "net",
        "sandbox": {"mode": mode, "network": network,
                    "env": {"HUSK_TEST_AGENT_SCRIPT": script.to_string()}},
        "agent": {"prompt": "p", "skills": ["agent:husk-test-agent"], "timeout_secs": 300},
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
    let host = Server::start(&[], "host", "127.0.0.1");
    let p = host.port;
    for mode in modes() {
        let (s, r) = run(
            &tmp(&format!("none-{mode}")),
            mode,
            json!(false),
            &format!(
                "vars=${{http_proxy:-none}} proxied=$(pst http://127.0.0.1:{p}/) \
                 tunnel=$(tunnel_st 127.0.0.1:{p}) direct=$(st -Y off http://127.0.0.1:{p}/) \
                 byname=$(st http://localhost:{p}/)"
            ),
        );
        // The proxy refuses; without it there is no route at all (and with
        // networking off no proxy variables are set).
        assert_eq!(
            s, "vars=none proxied=403 tunnel=403 direct=000 byname=000",
            "{mode}: {r:#}"
        );
        let denied = net_events(&r, "net.denied");
        assert_eq!(denied.len(), 2, "{mode}: {denied:?}");
        for d in &denied {
            assert_eq!(d["host"], "127.0.0.1", "{mode}: {d}");
            assert_eq!(d["port"], p, "{mode}: {d}");
        }
        assert!(net_events(&r, "net.allowed").is_empty(), "{mode}");
    }
}

#[test]
fn an_allowlist_reaches_its_hosts_by_name_and_nothing_else() {
    let allowed = Server::start(&[], "allowed", "127.0.0.1");
    let other = Server::start(&[], "other", "127.0.0.1");
    let (a, o) = (allowed.port, other.port);
    for mode in modes() {
        let (s, r) = run(
            &tmp(&format!("allow-{mode}")),
            mode,
            json!({"allow": [format!("localhost:{a}")]}),
            &format!(
                "body=$(body http://localhost:{a}/) tunnel=$(tunnel localhost:{a}) \
                 other=$(st http://localhost:{o}/) ip=$(pst http://127.0.0.1:{a}/) \
                 direct=$(st -Y off http://127.0.0.1:{a}/)"
            ),
        );
        assert_eq!(
            s, "body=hello-allowed tunnel=hello-allowed other=403 ip=403 direct=000",
            "{mode}: {r:#}"
        );
        let allowed_ev = net_events(&r, "net.allowed");
        assert_eq!(allowed_ev.len(), 2, "{mode}: {allowed_ev:?}");
        for (ev, via) in allowed_ev.iter().zip(["http", "connect"]) {
            assert_eq!(ev["host"], "localhost", "{mode}: {ev}");
            assert_eq!(ev["port"], a, "{mode}: {ev}");
            assert_eq!(ev["via"], via, "{mode}: {ev}");
        }
        let denied = net_events(&r, "net.denied");
        assert_eq!(denied.len(), 2, "{mode}: {denied:?}");
        assert_eq!(denied[0]["port"], o, "{mode}");
        assert_eq!(denied[1]["host"], "127.0.0.1", "{mode}");
    }
}

/// A network namespace with a veth pair: the host end 10.253.N.1/30, the
/// namespace end 10.253.N.2/30. Removed on drop.
struct Outside {
    ns: String,
    host_if: String,
}

impl Outside {
    /// `slot` (0 or 1) keeps tests of one process apart.
    fn create(slot: u32) -> Option<Outside> {
        let n = std::process::id() % 100 * 2 + slot + 20;
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

    /// The host's end.
    fn host_addr(&self) -> String {
        let n = &self.ns["husk-t".len()..];
        format!("10.253.{n}.1")
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
    let modes = modes();
    if modes.is_empty() {
        return;
    }
    let Some(outside) = Outside::create(0) else {
        return;
    };
    let far = Server::start(
        &["ip", "netns", "exec", &outside.ns],
        "outside",
        &outside.addr(),
    );
    let host = Server::start(&[], "host", "127.0.0.1");
    // The host's end of the veth pair: an address of this machine that is
    // not loopback.
    let host_if = Server::start(&[], "host-if", &outside.host_addr());
    let (fa, f, h) = (outside.addr(), far.port, host.port);
    let (ha, hp) = (outside.host_addr(), host_if.port);
    for mode in modes {
        let (s, r) = run(
            &tmp(&format!("open-{mode}")),
            mode,
            json!(true),
            &format!(
                "far=$(body http://{fa}:{f}/) tunnel=$(tunnel {fa}:{f}) \
                 host=$(pst http://127.0.0.1:{h}/) hostname=$(st http://localhost:{h}/) \
                 hostif=$(st http://{ha}:{hp}/) hosttunnel=$(tunnel_st localhost:{h})"
            ),
        );
        assert_eq!(
            s,
            "far=hello-outside tunnel=hello-outside host=403 hostname=403 hostif=403 hosttunnel=403",
            "{mode}: {r:#}"
        );
        let allowed = net_events(&r, "net.allowed");
        assert_eq!(allowed.len(), 2, "{mode}: {allowed:?}");
        assert!(
            allowed.iter().all(|a| a["host"] == fa),
            "{mode}: {allowed:?}"
        );
        let denied = net_events(&r, "net.denied");
        assert_eq!(denied.len(), 4, "{mode}: {denied:?}");
        assert!(
            denied.iter().all(|d| d["reason"]
                .as_str()
                .unwrap()
                .contains("machine husk runs on")),
            "{mode}: {denied:?}"
        );
    }
}

/// `husk exec` output of `sh -c "CLIENT; echo SUMMARY"` (stdout, stderr).
fn exec(mode: &str, network: &[&str], summary: &str) -> (String, String) {
    let o = husk()
        .args(["exec", "--backend", mode])
        .args(network)
        .args(["--", "sh", "-c", &format!("{CLIENT}echo \"{summary}\"")])
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert_eq!(o.status.code(), Some(0), "{mode}: {out}\n{err}");
    (out, err)
}

/// `husk exec --network` is open mode through a proxy of its own, as in
/// runs: it reaches an outside server but not the host (which a shared
/// host network would reach directly); `--network=allow=…` reaches its
/// names only. Every decision is a line on stderr.
#[test]
fn exec_network_goes_through_a_policy_proxy() {
    let modes = modes();
    if modes.is_empty() {
        return;
    }
    let Some(outside) = Outside::create(1) else {
        return;
    };
    let far = Server::start(
        &["ip", "netns", "exec", &outside.ns],
        "outside",
        &outside.addr(),
    );
    let host = Server::start(&[], "host", "127.0.0.1");
    let (fa, f, h) = (outside.addr(), far.port, host.port);
    for mode in modes {
        let (out, err) = exec(
            mode,
            &["--network"],
            &format!(
                "far=$(body http://{fa}:{f}/) host=$(pst http://127.0.0.1:{h}/) \
                 direct=$(st -Y off http://127.0.0.1:{h}/)"
            ),
        );
        assert_eq!(
            out, "far=hello-outside host=403 direct=000",
            "{mode}: {err}"
        );
        assert!(
            err.contains(&format!("husk: net.allowed: allowed {fa}:{f} (http)")),
            "{mode}: {err}"
        );
        assert!(
            err.contains(&format!("husk: net.denied: denied 127.0.0.1:{h}: ")),
            "{mode}: {err}"
        );

        let allow = format!("--network=allow=localhost:{h}");
        let (out, err) = exec(
            mode,
            &[&allow],
            &format!(
                "name=$(body http://localhost:{h}/) far=$(pst http://{fa}:{f}/) \
                 direct=$(st -Y off http://127.0.0.1:{h}/)"
            ),
        );
        assert_eq!(out, "name=hello-host far=403 direct=000", "{mode}: {err}");
        assert!(
            err.contains(&format!("husk: net.denied: denied {fa}:{f}: ")),
            "{mode}: {err}"
        );
    }
    drop(far);
}

#[test]
fn exec_network_modes_are_checked() {
    for (arg, says) in [
        ("--network=wide", "is not a network mode"),
        ("--network=allow=", "an empty entry"),
        ("--network=allow=https://x.example/", "not a host name"),
        ("--network=allow=127.0.0.1", "127.0.0.1"),
    ] {
        let o = husk()
            .args(["exec", "--backend", "namespace", arg, "--", "true"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{arg}: {err}");
        assert!(err.contains(says), "{arg}: {err}");
    }
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
