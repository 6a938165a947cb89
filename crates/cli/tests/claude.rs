//! End to end with the real Claude Code binary: `husk run` starts Claude
//! Code in a namespace sandbox, Claude Code talks to a scripted
//! Messages-API endpoint on the host (`tests/fixtures/fake_anthropic.py`),
//! calls a real stdio MCP server given inline in the spec, writes the
//! structured output with its own `Write` tool, and husk turns its
//! stream-json into events and a run record. No API key, no internet.
//!
//! Needs `HUSK_CLAUDE_BIN` (the native binary; `scripts/test` sets it from
//! `scripts/ensure-claude`), bubblewrap and python3.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::endpoint::{Endpoint, events_of, files_containing, test_key};
use common::{have_bwrap, husk};
use serde_json::{Value, json};

/// A stdio MCP server (newline-delimited JSON-RPC) with one tool, `shout`,
/// which upper-cases `text`. Unknown methods (such as the 2026-07-28
/// `server/discover` probe) get -32601, so the client falls back to
/// `initialize`.
const ECHO_SERVER: &str = r#"
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if "id" not in m:
        continue
    meth, p = m.get("method"), m.get("params") or {}
    if meth == "initialize":
        r = {"protocolVersion": p.get("protocolVersion", "2025-06-18"), "capabilities": {"tools": {}}, "serverInfo": {"name": "echo", "version": "1"}}
    elif meth == "tools/list":
        r = {"tools": [{"name": "shout", "description": "Upper-cases the text.", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}]}
    elif meth == "tools/call" and p.get("name") == "shout":
        r = {"content": [{"type": "text", "text": str(p.get("arguments", {}).get("text", "")).upper()}]}
    elif meth == "ping":
        r = {}
    else:
        print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "error": {"code": -32601, "message": "method not found: %s" % meth}}), flush=True)
        continue
    print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": r}), flush=True)
"#;

#[test]
fn real_claude_code_calls_an_mcp_tool_and_writes_the_output() {
    if std::env::var_os("HUSK_CLAUDE_BIN").is_none() {
        eprintln!(
            "SKIP: HUSK_CLAUDE_BIN is not set (scripts/test sets it via scripts/ensure-claude)"
        );
        return;
    }
    if !have_bwrap() {
        return;
    }
    if husk_sandbox::host::which("python3").is_none() {
        eprintln!(
            "SKIP: python3 is not installed (the scripted endpoint and the MCP server need it)"
        );
        return;
    }
    let t0 = Instant::now();
    let base = std::env::temp_dir().join(format!("husk-claude-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let runs = base.join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    let endpoint = Endpoint::start("fake_anthropic.py", &base.join("endpoint.jsonl"), None);
    let key = test_key("sk-test-");

    let spec = json!({
        "api_version": "v1", "kind": "agent", "name": "claude-e2e",
        "llm": {
            "provider": "claude",
            "base_url": format!("http://localhost:{}", endpoint.port),
            "api_key_env": "HUSK_TEST_FAKE_ANTHROPIC_KEY",
        },
        // The model API is the only host the sandbox may reach; the
        // proxy's model route takes Claude Code there and adds the key.
        "sandbox": {"mode": "namespace", "network": {"allow": ["localhost"]}},
        "agent": {
            "prompt": "Call the shout tool of the echo MCP server with the text \"hello from claude\", \
                       then write the result.",
            "timeout_secs": 120,
            "skills": ["agent:claude-code",
                {"name": "echo", "command": "python3", "args": ["-c", ECHO_SERVER]}],
        },
    });
    let spec_path = base.join("claude-e2e.json");
    std::fs::write(&spec_path, serde_json::to_string_pretty(&spec).unwrap()).unwrap();

    let o = husk()
        .args(["run", "--json", "--runs-dir"])
        .arg(&runs)
        .arg(&spec_path)
        .env("HUSK_TEST_FAKE_ANTHROPIC_KEY", &key)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let requests = endpoint.requests();
    let r: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("no JSON record ({e}): stdout {stdout:?} stderr {stderr}"));
    let context = format!(
        "stderr: {stderr}\nendpoint requests: {requests:#?}\nrecord: {r:#}\nfiles kept in {}",
        base.display()
    );

    assert_eq!(o.status.code(), Some(0), "{context}");
    assert_eq!(r["status"], "succeeded", "{context}");

    let started = events_of(&r, "agent.started");
    assert!(
        started.iter().any(|m| m.contains("echo (connected)")),
        "{started:?}\n{context}"
    );
    let calls = events_of(&r, "agent.tool_call");
    assert!(
        calls.iter().any(|m| m.contains("mcp__echo__shout")),
        "{calls:?}\n{context}"
    );
    assert!(
        calls
            .iter()
            .any(|m| m.contains("Write") && m.contains("/workspace/output.json")),
        "{calls:?}\n{context}"
    );
    let results = events_of(&r, "agent.tool_result");
    assert!(
        results.iter().any(|m| m.contains("HELLO FROM CLAUDE")),
        "{results:?}\n{context}"
    );
    let summary = r["report"]["output"]["summary"]
        .as_str()
        .unwrap_or_default();
    assert!(summary.contains("HELLO FROM CLAUDE"), "{context}");
    assert_eq!(r["report"]["output"]["status"], "success", "{context}");

    // The scripted conversation reached the endpoint, step by step, with
    // the credential from husk's environment as Claude Code's x-api-key.
    let scripted: Vec<&Value> = requests.iter().filter(|q| q["scripted"] == true).collect();
    let steps: Vec<&str> = scripted
        .iter()
        .map(|q| q["step"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(steps, ["shout", "write", "final"], "{context}");
    for q in &scripted {
        assert_eq!(q["x_api_key"], key.as_str(), "{context}");
        assert_eq!(q["path"], "/v1/messages", "{context}");
        assert!(q["anthropic_version"].is_string(), "{context}");
    }

    // Every model request went out through the proxy's model route.
    let routed = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "net.allowed" && e["payload"]["via"] == "model")
        .count();
    assert!(routed >= scripted.len(), "{context}");

    // Credentials never land in files: not in the record, not in anything
    // husk kept, not in its messages.
    assert!(!stdout.contains(&key), "the key is in the run record");
    assert!(!stderr.contains(&key), "the key is in husk's stderr");
    let leaked = files_containing(&runs, key.as_bytes());
    assert!(leaked.is_empty(), "the key is in {leaked:?}");
    let id = r["id"].as_str().unwrap();
    assert!(runs.join(id).join("run.json").is_file());
    assert!(runs.join(id).join("main/result.json").is_file());

    drop(endpoint);
    let _ = std::fs::remove_dir_all(&base);
    eprintln!(
        "real Claude Code run: {:.1} s ({} requests to the endpoint)",
        t0.elapsed().as_secs_f64(),
        requests.len()
    );
}

/// The real Claude Code with messaging on: husk-mcp is in its MCP config,
/// connected, its tools pre-allowed; the model (the scripted endpoint)
/// calls `broadcast_observation` and `read_peer_messages`, and the intent
/// arrives at the orchestrator through the daemon's
/// `GET /v1/runs/{id}/intents`.
#[test]
fn real_claude_code_collaborates_through_husk_mcp() {
    if std::env::var_os("HUSK_CLAUDE_BIN").is_none() {
        eprintln!(
            "SKIP: HUSK_CLAUDE_BIN is not set (scripts/test sets it via scripts/ensure-claude)"
        );
        return;
    }
    if !have_bwrap() || husk_sandbox::host::which("python3").is_none() {
        eprintln!("SKIP: needs bubblewrap and python3");
        return;
    }
    let base = std::env::temp_dir().join(format!("husk-claude-mcp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let plan = json!([
        {"name": "mcp__husk__broadcast_observation",
         "input": {"summary_text": "the bug is in parse()", "priority": "high"}},
        {"name": "mcp__husk__read_peer_messages", "input": {}},
    ]);
    let endpoint = Endpoint::start(
        "fake_anthropic.py",
        &base.join("endpoint.jsonl"),
        Some(("FAKE_ANTHROPIC_PLAN", &plan)),
    );
    let key = test_key("sk-test-");
    std::fs::create_dir_all(base.join("daemon")).unwrap();
    let d = common::daemon::Daemon::start_wrapped(
        base.join("daemon"),
        &[],
        &format!("export HUSK_TEST_FAKE_ANTHROPIC_KEY={key}"),
    );
    let spec = json!({
        "api_version": "v1", "kind": "agent", "name": "claude-mcp",
        "llm": {
            "provider": "claude",
            "base_url": format!("http://localhost:{}", endpoint.port),
            "api_key_env": "HUSK_TEST_FAKE_ANTHROPIC_KEY",
        },
        "sandbox": {"mode": "namespace", "network": {"allow": ["localhost"]}},
        "agent": {
            "prompt": "Tell your peers what you found, then read their messages.",
            "timeout_secs": 120,
            "skills": ["agent:claude-code"],
            "messaging": {"enabled": true},
        },
    });
    let spec_path = base.join("claude-mcp.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let input =
        json!({"execution_id": "exec-1", "candidate_id": "cand-claude", "peers": ["cand-2"]});
    let (code, v) = d.json(
        "POST",
        "/v1/runs",
        Some(&json!({"file": spec_path, "input": input}).to_string()),
    );
    assert_eq!(code, 200, "{v}");
    let id = v["run_id"].as_str().unwrap().to_string();
    let r = d.wait_terminal(&id, std::time::Duration::from_secs(180));
    let requests = endpoint.requests();
    let context = format!("endpoint requests: {requests:#?}\nrecord: {r:#}");
    assert_eq!(r["status"], "succeeded", "{context}");
    let started = events_of(&r, "agent.started");
    assert!(
        started.iter().any(|m| m.contains("husk (connected)")),
        "{started:?}\n{context}"
    );
    let calls = events_of(&r, "agent.tool_call");
    for tool in [
        "mcp__husk__broadcast_observation",
        "mcp__husk__read_peer_messages",
    ] {
        assert!(
            calls.iter().any(|m| m.contains(tool)),
            "{tool}: {calls:?}\n{context}"
        );
    }
    let steps: Vec<&str> = requests
        .iter()
        .filter(|q| q["scripted"] == true)
        .map(|q| q["step"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        steps,
        [
            "broadcast_observation",
            "read_peer_messages",
            "write",
            "final"
        ],
        "{context}"
    );
    // read_peer_messages answered with the (empty) inbox of this candidate.
    let summary = r["report"]["output"]["summary"]
        .as_str()
        .unwrap_or_default();
    assert!(summary.contains("cand-claude"), "{summary}\n{context}");
    // The orchestrator drains the intent the model sent through husk-mcp.
    d.expect_one_broadcast(&id, "cand-claude", "the bug is in parse()", &context);
    drop(endpoint);
    let _ = std::fs::remove_dir_all(&base);
}

/// Host-side view of a running sandbox: its processes (same pid namespace
/// as `pid`) and its filesystem (`/proc/PID/root`).
fn sandbox_processes(pid: u32) -> Vec<u32> {
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| std::fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|l| l == ns))
        .collect()
}

/// The host pid of a process whose command line contains `needle`.
fn find_process(needle: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle.as_bytes()))
                && *p != std::process::id()
        })
}

/// The real Claude Code, with the key injected by the proxy: while the
/// agent runs, the test (on the host) reads the environment of every
/// process in the sandbox and every file of its filesystem, except the
/// host's read-only system directories bound into it, and finds no key.
#[test]
fn real_claude_code_never_holds_the_real_key() {
    if std::env::var_os("HUSK_CLAUDE_BIN").is_none() {
        eprintln!("SKIP: HUSK_CLAUDE_BIN is not set");
        return;
    }
    if !have_bwrap() || husk_sandbox::host::which("python3").is_none() {
        eprintln!("SKIP: needs bubblewrap and python3");
        return;
    }
    let base = std::env::temp_dir().join(format!("husk-claude-key-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    // The agent's command blocks (reading a FIFO) until the test, done
    // scanning, ends the reader (a file written from the host would not
    // map to a sandbox uid; Claude Code refuses long sleeps).
    let fifo = format!("/tmp/hold-{}", std::process::id());
    let wait = format!("mkfifo {fifo}; cat {fifo}; echo scanned");
    let plan = json!([{"name": "Bash", "input": {"command": wait, "description": "wait"}}]);
    let endpoint = Endpoint::start(
        "fake_anthropic.py",
        &base.join("endpoint.jsonl"),
        Some(("FAKE_ANTHROPIC_PLAN", &plan)),
    );
    let key = test_key("sk-test-");
    let spec = json!({
        "api_version": "v1", "kind": "agent", "name": "claude-key",
        "llm": {"provider": "claude", "base_url": format!("http://localhost:{}", endpoint.port),
                "api_key_env": "HUSK_TEST_FAKE_ANTHROPIC_KEY"},
        "sandbox": {"mode": "namespace", "network": {"allow": ["localhost"]},
                    "env": {"HUSK_TEST_FAKE_ANTHROPIC_KEY": ""}},
        "agent": {"prompt": "Run the command, then write the result.", "timeout_secs": 180,
                  "skills": ["agent:claude-code"]},
    });
    let spec_path = base.join("claude-key.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let child = husk()
        .args(["run", "--json", "--runs-dir"])
        .arg(base.join("runs"))
        .arg(&spec_path)
        .env("HUSK_TEST_FAKE_ANTHROPIC_KEY", &key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The agent's Bash command waits: find its sleep.
    let deadline = Instant::now() + std::time::Duration::from_secs(150);
    let waiting = loop {
        if let Some(p) = find_process(&format!("cat\0{fifo}")) {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the agent's command never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let procs = sandbox_processes(waiting);
    assert!(procs.len() >= 3, "guest, claude and its shell: {procs:?}");
    let mut environ_seen = 0;
    for p in &procs {
        if let Ok(env) = std::fs::read(format!("/proc/{p}/environ")) {
            environ_seen += 1;
            assert!(
                !env.windows(key.len()).any(|w| w == key.as_bytes()),
                "the key is in the environment of sandbox process {p}"
            );
        }
    }
    assert!(environ_seen >= 3);
    let root = PathBuf::from(format!("/proc/{waiting}/root"));
    let mut leaked = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // Kernel views and the host's read-only system directories.
        if [
            "proc", "sys", "dev", "usr", "lib", "lib32", "lib64", "bin", "sbin",
        ]
        .contains(&name.as_str())
        {
            continue;
        }
        if path.is_dir() {
            leaked.extend(files_containing_lenient(&path, key.as_bytes()));
        }
    }
    assert!(leaked.is_empty(), "the key is in sandbox files {leaked:?}");
    let killed = Command::new("kill")
        .arg(waiting.to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let o = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let r: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("no record ({e}): {}", String::from_utf8_lossy(&o.stderr)));
    let requests = endpoint.requests();
    assert_eq!(r["status"], "succeeded", "{r:#}\n{requests:#?}");
    // The endpoint got the real key on every scripted request.
    let scripted: Vec<&Value> = requests.iter().filter(|q| q["scripted"] == true).collect();
    assert!(scripted.len() >= 2, "{requests:#?}");
    for q in scripted {
        assert_eq!(q["x_api_key"], key.as_str());
    }
    drop(endpoint);
    let _ = std::fs::remove_dir_all(&base);
}

/// Like `files_containing`, skipping what cannot be read (sockets, files
/// of other users) and files over 64 MiB (host binaries bound in).
fn files_containing_lenient(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file()
                && meta.len() < 64 << 20
                && std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            {
                found.push(path);
            }
        }
    }
    found
}
