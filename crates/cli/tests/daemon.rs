//! End-to-end tests of the daemon: a real `husk serve` process on a real
//! unix socket (and TCP), driven with curl and the husk CLI client. Covers
//! every route, the error codes a client can cause, auth, SSE resume, a
//! SIGKILL restart, and a load test of 100 concurrent runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, have_curl, split};
use common::{have_bwrap, husk};
use serde_json::{Value, json};

fn write_spec(dir: &Path, name: &str, script: &str) -> PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "api_version: v1\nkind: agent\nname: {name}\nsandbox:\n  mode: namespace\n  env:\n    HUSK_TEST_AGENT_SCRIPT: '{script}'\nagent:\n  prompt: go\n  skills: [\"agent:husk-test-agent\"]\n"
        ),
    )
    .unwrap();
    p
}

const OK_SCRIPT: &str = r#"{"steps":[{"write":{"path":"/workspace/output.json","json":{"status":"success","summary":"ok"}}}]}"#;
const SLOW_SCRIPT: &str = r#"{"steps":[{"text":"working"},{"sleep_ms":60000}]}"#;

#[test]
fn routes_errors_and_the_openapi_document_agree() {
    if !have_curl() || !have_bwrap() {
        return;
    }
    let d = Daemon::start("routes", &[]);
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    let (code, h) = d.json("GET", "/v1/health", None);
    assert_eq!((code, h["status"].as_str()), (200, Some("ok")));

    // Every documented route exists (anything but the fallback's "no route").
    let (_, doc) = d.json("GET", "/v1/openapi.json", None);
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 15, "{paths:?}");
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let concrete = path
                .replace("{id}", "nosuch")
                .replace("{stage}", "main")
                .replace("{name}", "a.txt");
            let (_, body) = d.curl(&method.to_uppercase(), &concrete, Some("{}"), &[]);
            assert!(
                !body.contains("no route"),
                "{method} {path} is documented but not routed: {body}"
            );
        }
    }
    // Client mistakes: typed errors, never a 500.
    let spec = write_spec(&d.dir, "ok", OK_SCRIPT);
    let file = spec.display().to_string();
    let big = format!("{{\"file\":\"{}\"}}", "x".repeat(5 << 20));
    let cases: Vec<(&str, String, Option<String>, u16, &str)> = vec![
        (
            "POST",
            "/v1/runs".into(),
            Some("{not json".into()),
            400,
            "INVALID_PARAMS",
        ),
        (
            "POST",
            "/v1/runs".into(),
            Some(r#"{"file": 7}"#.into()),
            400,
            "INVALID_PARAMS",
        ),
        (
            "POST",
            "/v1/runs".into(),
            Some(r#"{"fiel": "x"}"#.into()),
            400,
            "INVALID_PARAMS",
        ),
        (
            "POST",
            "/v1/runs".into(),
            Some("{}".into()),
            400,
            "INVALID_PARAMS",
        ),
        (
            "POST",
            "/v1/runs".into(),
            Some(r#"{"file": "/no/such/spec.yaml"}"#.into()),
            400,
            "INVALID_SPEC",
        ),
        (
            "POST",
            "/v1/runs".into(),
            Some(r#"{"spec": "kind: agent\nname: x\nagent: {prompt: ''}"}"#.into()),
            400,
            "INVALID_SPEC",
        ),
        (
            "POST",
            "/v1/runs".into(),
            Some(json!({"file": file, "policy": {"stage_timeout_secs": 0}}).to_string()),
            400,
            "INVALID_POLICY",
        ),
        (
            "POST",
            "/v1/runs".into(),
            Some(json!({"file": file, "run_id": "../x"}).to_string()),
            400,
            "INVALID_PARAMS",
        ),
        (
            "POST",
            "/v1/runs".into(),
            Some(big),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        ("GET", "/v1/runs/nosuch".into(), None, 404, "NOT_FOUND"),
        (
            "GET",
            "/v1/runs?state=sideways".into(),
            None,
            400,
            "INVALID_PARAMS",
        ),
        (
            "POST",
            "/v1/runs/nosuch/cancel".into(),
            None,
            404,
            "NOT_FOUND",
        ),
        ("DELETE", "/v1/runs".into(), None, 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/v2/everything".into(), None, 404, "NOT_FOUND"),
    ];
    for (method, path, body, want, code) in &cases {
        let (got, text) = d.curl(method, path, body.as_deref(), &[]);
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(
            (got, v["code"].as_str()),
            (*want, Some(*code)),
            "{method} {path}: {text}"
        );
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{text}"
        );
    }

    // A run with a chosen id: idempotent while active, 409 once terminal.
    let body = json!({"file": file, "run_id": "chosen-1", "input": {"n": 1}}).to_string();
    let (code, created) = d.json("POST", "/v1/runs", Some(&body));
    assert_eq!(
        (code, created["run_id"].as_str()),
        (200, Some("chosen-1")),
        "{created}"
    );
    let r = d.wait_terminal("chosen-1", Duration::from_secs(60));
    assert_eq!(r["status"], "succeeded", "{r}");
    let (code, v) = d.json("POST", "/v1/runs", Some(&body));
    assert_eq!((code, v["code"].as_str()), (409, Some("ALREADY_TERMINAL")));
    let (code, out) = d.json("GET", "/v1/runs/chosen-1/stages/main/output-file", None);
    assert_eq!((code, out["summary"].as_str()), (200, Some("ok")));
    for (path, want, code) in [
        (
            "/v1/runs/chosen-1/stages/main/artifacts/..",
            400,
            "INVALID_PARAMS",
        ),
        (
            "/v1/runs/chosen-1/stages/main/artifacts/nope.txt",
            404,
            "ARTIFACT_NOT_FOUND",
        ),
        (
            "/v1/runs/chosen-1/stages/other/output-file",
            404,
            "STRUCTURED_OUTPUT_MISSING",
        ),
        ("/v1/runs/chosen-1/intents", 404, "NOT_FOUND"),
    ] {
        let (got, v) = d.json("GET", path, None);
        assert_eq!((got, v["code"].as_str()), (want, Some(code)), "{path}: {v}");
    }
    let (_, stages) = d.json("GET", "/v1/runs/chosen-1/stages", None);
    assert_eq!(stages["stages"][0]["status"], "succeeded");
    // Events strictly after a given id.
    let (_, all) = d.json("GET", "/v1/runs/chosen-1/events", None);
    let all = all.as_array().unwrap().clone();
    let third = all[2]["event_id"].as_str().unwrap();
    let (_, after) = d.json(
        "GET",
        &format!("/v1/runs/chosen-1/events?from_event_id={third}"),
        None,
    );
    assert_eq!(after.as_array().unwrap().len(), all.len() - 3);
    assert_eq!(after[0]["seq"], 4);
    let (_, unknown) = d.json("GET", "/v1/runs/chosen-1/events?from_event_id=bogus", None);
    assert_eq!(unknown.as_array().unwrap().len(), all.len());
    let _ = std::fs::remove_dir_all(&d.dir);
}

#[test]
fn cli_client_sse_resume_and_idempotent_cancel() {
    if !have_curl() || !have_bwrap() {
        return;
    }
    let d = Daemon::start("cli", &[]);
    let spec = write_spec(&d.dir, "slow", SLOW_SCRIPT);
    let out = d
        .cli()
        .args(["run", "--detach"])
        .arg(&spec)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(id.starts_with("run-"), "{id}");
    // Wait for the agent to be running, then check `ps`.
    let t = Instant::now();
    while !d
        .json("GET", &format!("/v1/runs/{id}/events"), None)
        .1
        .to_string()
        .contains("agent.message")
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the agent never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ps = d.cli().args(["ps"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(ps.contains(&id) && ps.contains("running"), "{ps}");
    // SSE from the second event: the stream resumes after Last-Event-ID and ends with the terminal event.
    let mut sse = Command::new("curl")
        .args([
            "-sN",
            "-H",
            "accept: text/event-stream",
            "-H",
            "last-event-id: evt_00000002",
            "--unix-socket",
        ])
        .arg(&d.socket)
        .arg(format!("http://husk/v1/runs/{id}/events"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let follow = d
        .cli()
        .args(["logs", "-f", &id])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let c1 = d
        .cli()
        .args(["cancel", &id, "--json", "--reason", "test"])
        .output()
        .unwrap();
    let c1: Value = serde_json::from_slice(&c1.stdout).unwrap();
    let c2: Value = serde_json::from_slice(
        &d.cli()
            .args(["cancel", &id, "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(c1["state"], "cancelled", "{c1}");
    assert_eq!(c1["terminal_event_id"], c2["terminal_event_id"]);
    let status = sse.wait().unwrap();
    assert!(status.success());
    let mut text = String::new();
    std::io::Read::read_to_string(&mut sse.stdout.take().unwrap(), &mut text).unwrap();
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: ").or_else(|| l.strip_prefix("id:")))
        .collect();
    assert_eq!(ids.first(), Some(&"evt_00000003"), "{text}");
    assert_eq!(
        ids.last().copied(),
        c1["terminal_event_id"].as_str(),
        "{text}"
    );
    let logs = follow.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(
        logs.contains("run.started") && logs.contains("run.cancelled"),
        "{logs}"
    );
    let insp = d.cli().args(["inspect", &id]).output().unwrap();
    assert!(String::from_utf8_lossy(&insp.stdout).contains("CANCELLED"));
    let _ = std::fs::remove_dir_all(&d.dir);
}

#[test]
fn a_killed_daemon_loses_nothing_and_fails_orphaned_runs() {
    if !have_curl() || !have_bwrap() {
        return;
    }
    let mut d = Daemon::start("restart", &[]);
    let ok = write_spec(&d.dir, "ok", OK_SCRIPT);
    let slow = write_spec(&d.dir, "slow", SLOW_SCRIPT);
    let (_, a) = d.json("POST", "/v1/runs", Some(&json!({"file": ok}).to_string()));
    let a = a["run_id"].as_str().unwrap().to_string();
    let done = d.wait_terminal(&a, Duration::from_secs(60));
    let (_, b) = d.json("POST", "/v1/runs", Some(&json!({"file": slow}).to_string()));
    let b = b["run_id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(800));
    let (_, seen) = d.json("GET", &format!("/v1/runs/{b}/events"), None);
    let seen = seen.as_array().unwrap().clone();
    assert!(!seen.is_empty());
    d.child.kill().unwrap(); // SIGKILL
    d.child.wait().unwrap();
    let dir = d.dir.clone();
    std::mem::forget(d);
    let d = Daemon::start_in(dir, &[]); // the stale socket is replaced
    let again = d.wait_terminal(&a, Duration::from_secs(5));
    assert_eq!(again["status"], done["status"]);
    assert_eq!(
        again["events"].as_array().unwrap().len(),
        done["events"].as_array().unwrap().len()
    );
    let (_, art) = d.curl(
        "GET",
        &format!("/v1/runs/{a}/stages/main/output-file"),
        None,
        &[],
    );
    assert!(art.contains("\"status\":\"success\""), "{art}");
    let r = d.wait_terminal(&b, Duration::from_secs(5));
    assert_eq!(r["status"], "failed");
    assert_eq!(r["terminal_reason"], "daemon_restarted");
    let events = r["events"].as_array().unwrap();
    // Every event a client saw before the kill is still there, in order.
    for (i, e) in seen.iter().enumerate() {
        assert_eq!(&events[i], e);
    }
    assert_eq!(events.last().unwrap()["event_type"], "run.failed");
    assert_eq!(r["terminal_event_id"], events.last().unwrap()["event_id"]);
    let _ = std::fs::remove_dir_all(&d.dir);
}

#[test]
fn tcp_requires_the_bearer_token_everywhere() {
    if !have_curl() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("husk-daemon-test-{}-tcp", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    use std::os::unix::fs::PermissionsExt;
    // Under 16 bytes: refused, saying so.
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let short = husk()
        .args(["serve", "--socket"])
        .arg(dir.join("a.sock"))
        .args(["--listen", "tcp://127.0.0.1:0", "--token-file"])
        .arg(&token_file)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(!short.status.success());
    let err = String::from_utf8_lossy(&short.stderr);
    assert!(
        err.contains("12 bytes") && err.contains("at least 16"),
        "{err}"
    );
    std::fs::write(&token_file, "s3cret-token-0123456789\n").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let bad = husk()
        .args(["serve", "--socket"])
        .arg(dir.join("a.sock"))
        .args(["--listen", "tcp://127.0.0.1:0", "--token-file"])
        .arg(&token_file)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tf = token_file.display().to_string();
    let d = Daemon::start_in(dir, &["--listen", "tcp://127.0.0.1:0", "--token-file", &tf]);
    let addr = d.tcp.clone().unwrap();
    let get = |path: &str, auth: Option<&str>| {
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "-", "-w", "\n%{http_code}"]);
        if let Some(a) = auth {
            c.args(["-H", a]);
        }
        split(
            c.arg(format!("http://{addr}{path}"))
                .output()
                .unwrap()
                .stdout,
        )
    };
    for path in ["/v1/health", "/v1/runs", "/v1/openapi.json", "/v1/nope"] {
        for auth in [
            None,
            Some("Authorization: Bearer wrong"),
            Some("Authorization: s3cret-token-0123456789"),
            Some("Authorization: Basic s3cret-token-0123456789"),
        ] {
            let (code, body) = get(path, auth);
            assert_eq!(code, 401, "{path} {auth:?}: {body}");
            assert!(body.contains("UNAUTHORIZED"), "{body}");
        }
    }
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let header = format!("Authorization: {scheme} s3cret-token-0123456789");
        let (code, body) = get("/v1/health", Some(&header));
        assert_eq!(code, 200, "{scheme}: {body}");
    }
    let _ = std::fs::remove_dir_all(&d.dir);
}

#[test]
fn a_hundred_concurrent_runs_all_finish_with_complete_event_logs() {
    if !have_curl() || !have_bwrap() {
        return;
    }
    let d = Daemon::start("load", &[]);
    let spec = write_spec(&d.dir, "ok", OK_SCRIPT);
    let body = json!({"file": spec}).to_string();
    let ids: Vec<String> = (0..100)
        .map(|_| {
            let (code, v) = d.json("POST", "/v1/runs", Some(&body));
            assert_eq!(code, 200, "{v}");
            v["run_id"].as_str().unwrap().to_string()
        })
        .collect();
    for id in &ids {
        let r = d.wait_terminal(id, Duration::from_secs(300));
        assert_eq!(r["status"], "succeeded", "{id}: {}", r["error"]);
        let events = r["events"].as_array().unwrap();
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "{id}: gaps in the event log"
        );
        assert_eq!(events[0]["event_type"], "run.spec.loaded");
        assert_eq!(events.last().unwrap()["event_type"], "run.finished");
    }
    let (_, active) = d.json("GET", "/v1/runs?state=active", None);
    assert_eq!(active["runs"].as_array().unwrap().len(), 0);
    let (_, terminal) = d.json("GET", "/v1/runs?state=terminal", None);
    assert_eq!(terminal["runs"].as_array().unwrap().len(), 100);
    let _ = std::fs::remove_dir_all(&d.dir);
}

#[test]
fn the_active_run_limit_is_a_retryable_error() {
    if !have_curl() || !have_bwrap() {
        return;
    }
    let d = Daemon::start("limit", &["--max-active-runs", "1"]);
    let slow = write_spec(&d.dir, "slow", SLOW_SCRIPT);
    let body = json!({"file": slow}).to_string();
    let (code, first) = d.json("POST", "/v1/runs", Some(&body));
    assert_eq!(code, 200, "{first}");
    let (code, second) = d.json("POST", "/v1/runs", Some(&body));
    assert_eq!(
        (code, second["code"].as_str(), second["retryable"].as_bool()),
        (429, Some("RESOURCE_LIMIT_EXCEEDED"), Some(true)),
        "{second}"
    );
    let id = first["run_id"].as_str().unwrap();
    let (code, early) = d.json(
        "GET",
        &format!("/v1/runs/{id}/stages/main/artifacts/report.md"),
        None,
    );
    assert_eq!(
        (code, early["code"].as_str()),
        (409, Some("ARTIFACT_PUBLICATION_INCOMPLETE")),
        "{early}"
    );
    let (code, c) = d.json(
        "POST",
        &format!("/v1/runs/{id}/cancel"),
        Some(r#"{"reason":"done"}"#),
    );
    assert_eq!((code, c["state"].as_str()), (200, Some("cancelled")), "{c}");
    let (code, third) = d.json(
        "POST",
        "/v1/runs",
        Some(&json!({"file": write_spec(&d.dir, "ok", OK_SCRIPT)}).to_string()),
    );
    assert_eq!(code, 200, "a slot is free again after the cancel: {third}");
    let _ = std::fs::remove_dir_all(&d.dir);
}

/// A TCP connection that sent half a request head and waits.
fn half_sent(addr: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    // A server that already closed it (over the cap) may refuse the bytes:
    // that is a closed connection too, which the callers check.
    let _ = c.write_all(b"GET /v1/health HTTP/1.1\r\nHost: husk\r\n");
    c
}

/// Whether the server closed `c` within `limit` (EOF or reset), reading
/// and discarding whatever it answered first.
fn closed_by_server(c: &mut std::net::TcpStream, limit: Duration) -> bool {
    use std::io::Read;
    c.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false, // timed out: still open
        }
    }
}

fn write_token(dir: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let f = dir.join("token");
    std::fs::write(&f, "flood-test-token-0123456789\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    f.display().to_string()
}

fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("husk-daemon-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_tcp_flood_neither_pins_connections_nor_starves_the_unix_socket() {
    if !have_curl() {
        return;
    }
    // A low open-files limit: 150 idle TCP peers would use up every
    // descriptor if the daemon kept them all.
    let dir = test_dir("flood");
    let tf = write_token(&dir);
    let d = Daemon::start_wrapped(
        dir,
        &[
            "--listen",
            "tcp://127.0.0.1:0",
            "--token-file",
            &tf,
            "--header-timeout-secs",
            "1",
        ],
        "ulimit -n 64",
    );
    let addr = d.tcp.clone().unwrap();
    let mut conns: Vec<_> = (0..150).map(|_| half_sent(&addr)).collect();
    let mut c = Command::new("curl");
    c.args([
        "-s",
        "--max-time",
        "20",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "--unix-socket",
    ])
    .arg(&d.socket)
    .arg("http://husk/v1/health");
    let (code, body) = split(c.output().unwrap().stdout);
    assert_eq!(
        code, 200,
        "the unix socket must answer during a TCP flood: {body}"
    );
    // Every half-sent connection is closed by the server: over the cap at
    // once, the others when the 1 s header timeout passes.
    for (i, c) in conns.iter_mut().enumerate() {
        assert!(
            closed_by_server(c, Duration::from_secs(30)),
            "connection {i} is still open"
        );
    }
    drop(conns);
    let _ = std::fs::remove_dir_all(&d.dir);
}

#[test]
fn over_the_tcp_connection_cap_new_connections_are_closed_at_once() {
    use std::io::{Read, Write};
    if !have_curl() {
        return;
    }
    let dir = test_dir("cap");
    let tf = write_token(&dir);
    // A header timeout far beyond the wait below: only the cap can close.
    let d = Daemon::start_in(
        dir,
        &[
            "--listen",
            "tcp://127.0.0.1:0",
            "--token-file",
            &tf,
            "--header-timeout-secs",
            "300",
            "--max-tcp-connections",
            "4",
        ],
    );
    let addr = d.tcp.clone().unwrap();
    // Four kept-alive connections, each answered once (so the server holds
    // them: the cap is full).
    let held: Vec<std::net::TcpStream> = (0..4)
        .map(|i| {
            let mut c = std::net::TcpStream::connect(&addr).unwrap();
            c.write_all(
                b"GET /v1/health HTTP/1.1\r\nHost: husk\r\nAuthorization: bearer flood-test-token-0123456789\r\n\r\n",
            )
            .unwrap();
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.ends_with(b"}") {
                let n = c.read(&mut buf).unwrap_or(0);
                assert!(n > 0, "connection {i}: no answer: {:?}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
            assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
            c
        })
        .collect();
    let mut fifth = half_sent(&addr);
    assert!(
        closed_by_server(&mut fifth, Duration::from_secs(60)),
        "the fifth connection should be closed at once"
    );
    let (code, _) = d.curl("GET", "/v1/health", None, &[]);
    assert_eq!(code, 200);
    drop(held);
    let _ = std::fs::remove_dir_all(&d.dir);
}

#[test]
fn sessions_envelopes_and_encoded_cli_paths_over_the_socket() {
    if !have_curl() {
        return;
    }
    let d = Daemon::start("sessions", &[]);
    let (code, v) = d.json("GET", "/v1/sessions/chat/messages", None);
    assert_eq!((code, v), (200, json!([])));
    for (role, content) in [("user", "hello"), ("assistant", "hi there")] {
        let body = json!({"role": role, "content": content}).to_string();
        let (code, v) = d.json("POST", "/v1/sessions/chat/messages", Some(&body));
        assert_eq!((code, v["content"].as_str()), (200, Some(content)), "{v}");
    }
    let (_, log) = d.json("GET", "/v1/sessions/chat/messages", None);
    let roles: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant"]);
    let big = json!({"role": "user", "content": "x".repeat(70_000)}).to_string();
    for (method, path, body, want, code) in [
        (
            "POST",
            "/v1/sessions/chat/messages",
            Some(big.as_str()),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            "POST",
            "/v1/sessions/a%2Fb/messages",
            Some(r#"{"role":"u","content":"x"}"#),
            400,
            "INVALID_PARAMS",
        ),
        (
            "GET",
            "/v1/sessions/../messages",
            None,
            400,
            "INVALID_PARAMS",
        ),
        ("GET", "/v1/runs/%ff%fe", None, 400, "INVALID_PARAMS"),
        (
            "GET",
            "/v1/runs/x/events?from_event_id=%ff",
            None,
            400,
            "INVALID_PARAMS",
        ),
        ("POST", "/v1/runs", Some("not json"), 400, "INVALID_PARAMS"),
    ] {
        let (got, text) = d.curl(method, path, body, &[]);
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not the JSON envelope ({e}): {text}"));
        assert_eq!(
            (got, v["code"].as_str()),
            (want, Some(code)),
            "{method} {path}: {text}"
        );
    }
    // A wrong content type does not matter: the body is what is parsed.
    let (got, text) = d.curl(
        "POST",
        "/v1/sessions/chat/messages",
        Some(r#"{"role":"user","content":"plain"}"#),
        &["content-type: text/plain"],
    );
    assert_eq!(got, 200, "{text}");
    // The CLI encodes each segment: `../../etc` is one (unknown) run id.
    for cmd in [
        &["logs", "../../etc"][..],
        &["inspect", ".."],
        &["cancel", "a/b"],
    ] {
        let out = d.cli().args(cmd).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let id = cmd[1];
        assert!(!out.status.success());
        assert!(err.contains(&format!("no run {id}")), "{cmd:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&d.dir);
}

#[test]
fn sigterm_cancels_runs_and_records_it_and_the_store_is_private() {
    use std::os::unix::fs::PermissionsExt;
    if !have_curl() || !have_bwrap() {
        return;
    }
    let dir = test_dir("sigterm");
    // A data directory another daemon left open to all, and a lax umask.
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::set_permissions(dir.join("data"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut d = Daemon::start_wrapped(dir, &[], "umask 000");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let data = d.dir.join("data");
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("runs")), 0o700);
    assert_eq!(mode(&data.join("husk.db")), 0o600);
    let slow = write_spec(&d.dir, "slow", SLOW_SCRIPT);
    let (_, b) = d.json("POST", "/v1/runs", Some(&json!({"file": slow}).to_string()));
    let id = b["run_id"].as_str().unwrap().to_string();
    let t = Instant::now();
    while !d
        .json("GET", &format!("/v1/runs/{id}/events"), None)
        .1
        .to_string()
        .contains("agent.message")
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the agent never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for f in ["husk.db-wal", "husk.db-shm"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&data.join("runs").join(&id)), 0o700);
    let pid = d.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // The daemon exits by itself once the run's final record is written.
    let t = Instant::now();
    let status = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the daemon did not exit"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    assert!(!d.socket.exists(), "the socket is removed");
    let dir = d.dir.clone();
    std::mem::forget(d);
    let d = Daemon::start_in(dir, &[]);
    let r = d.wait_terminal(&id, Duration::from_secs(5));
    assert_eq!(r["status"], "cancelled", "{r}");
    assert_ne!(r["terminal_reason"], "daemon_restarted", "{r}");
    let events = r["events"].as_array().unwrap();
    assert_eq!(events.last().unwrap()["event_type"], "run.cancelled", "{r}");
    let _ = std::fs::remove_dir_all(&d.dir);
}
