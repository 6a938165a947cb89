//! MCP over stdio against a real server process (tests/fixtures/echo_mcp.py,
//! standard-library Python): handshake, tool listing, calls, errors, and
//! shutdown by closing the server's stdin.

mod common;

use std::path::{Path, PathBuf};

use common::{Run, agent, run, stream};
use serde_json::{Value, json};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/echo_mcp.py")
}

/// A config with the echo server as `echo`, logging to `log`.
fn echo_config(log: &Path) -> Value {
    json!({"mcpServers": {"echo": {
        "type": "stdio",
        "command": "python3",
        "args": [fixture()],
        "env": {"ECHO_MCP_LOG": log, "ECHO_SECRET": "s3cret"}
    }}})
}

fn with_config(dir: &Path, config: &Value, script: &Value) -> Run {
    let file = dir.join("mcp-config.json");
    std::fs::write(&file, config.to_string()).unwrap_or_default();
    stream(dir, script, &["--mcp-config", &file.display().to_string()])
}

#[test]
fn a_tool_call_round_trips_through_a_stdio_server() {
    let dir = tempdir();
    let log = dir.path().join("server.log");
    let script = json!({"steps": [
        {"tool": {"server": "echo", "name": "echo", "arguments": {"text": "hello over MCP"}}, "expect_ok": true},
        {"tool": {"server": "echo", "name": "env", "arguments": {"name": "ECHO_SECRET"}}},
        {"text": "done"},
    ]});
    let out = with_config(dir.path(), &echo_config(&log), &script);
    assert_eq!(out.code, 0, "{out:?}");

    let init = &out.events()[0];
    assert_eq!(
        init["mcp_servers"],
        json!([{"name": "echo", "status": "connected"}])
    );
    assert_eq!(
        init["tools"],
        json!([
            "Bash",
            "Read",
            "Write",
            "mcp__echo__echo",
            "mcp__echo__fail",
            "mcp__echo__env"
        ])
    );

    let uses = out.tool_uses();
    assert_eq!(
        uses[0],
        (
            "mcp__echo__echo".to_string(),
            json!({"text": "hello over MCP"})
        )
    );
    let results = out.tool_results();
    assert_eq!(
        results[0],
        (json!([{"type": "text", "text": "hello over MCP"}]), false)
    );
    assert_eq!(
        results[1],
        (json!([{"type": "text", "text": "s3cret"}]), false)
    );

    // The server saw the whole conversation, answered pings, and got EOF
    // on stdin (and had exited) by the time the agent exited.
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(
        lines,
        [
            "initialize",
            "protocolVersion 2025-06-18",
            "clientInfo husk-test-agent",
            "notifications/initialized",
            "tools/list",
            "tools/call",
            "response {}",
            "tools/call",
            "response {}",
            "EOF",
        ],
        "{seen}"
    );
}

#[test]
fn tool_errors_become_error_results() {
    let dir = tempdir();
    let log = dir.path().join("server.log");
    let script = json!({"steps": [
        {"tool": {"server": "echo", "name": "fail"}},
        {"tool": {"server": "echo", "name": "nope"}},
        {"tool": {"server": "other", "name": "echo"}},
        {"tool": {"server": "echo", "name": "fail"}, "expect_ok": true},
        {"text": "unreachable"},
    ]});
    let out = with_config(dir.path(), &echo_config(&log), &script);
    assert_eq!(out.code, 1, "{out:?}");
    let results = out.tool_results();
    assert_eq!(
        results[0],
        (json!([{"type": "text", "text": "it failed"}]), true)
    );
    assert_eq!(
        results[1],
        (json!("MCP error -32602: Unknown tool: nope"), true)
    );
    assert_eq!(
        results[2],
        (json!("No MCP server named \"other\" is configured"), true)
    );
    let result = out.result();
    assert_eq!(result["subtype"], "error_during_execution");
    assert_eq!(
        result["result"],
        "step 4: mcp__echo__fail failed (expect_ok): it failed"
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .ends_with("EOF\n")
    );
}

#[test]
fn project_mcp_json_is_used_unless_configs_are_given_or_strict() {
    let dir = tempdir();
    let log = dir.path().join("server.log");
    std::fs::write(dir.path().join(".mcp.json"), echo_config(&log).to_string()).unwrap_or_default();
    let script = json!({"steps": [{"tool": {"server": "echo", "name": "echo", "arguments": {"text": "x"}}}]});

    let out = stream(dir.path(), &script, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.events()[0]["mcp_servers"],
        json!([{"name": "echo", "status": "connected"}])
    );
    assert!(!out.tool_results()[0].1);

    let out = stream(dir.path(), &script, &["--strict-mcp-config"]);
    assert_eq!(out.events()[0]["mcp_servers"], json!([]));
    assert!(out.tool_results()[0].1);

    let inline = r#"{"mcpServers": {"other": {"type": "http", "url": "http://127.0.0.1:9/mcp"}}}"#;
    let out = stream(dir.path(), &script, &["--mcp-config", inline]);
    assert_eq!(
        out.events()[0]["mcp_servers"],
        json!([{"name": "other", "status": "failed"}])
    );
    assert!(
        out.stderr.contains("http transport is not supported"),
        "{}",
        out.stderr
    );
}

#[test]
fn servers_that_cannot_start_or_answer_are_reported_failed() {
    let dir = tempdir();
    let config = json!({"mcpServers": {
        "missing": {"command": "/nonexistent/mcp-server"},
        "silent": {"command": "sh", "args": ["-c", "exec sleep 30"]},
        "echo": echo_config(&dir.path().join("log"))["mcpServers"]["echo"],
    }});
    let script = json!({"steps": [{"tool": {"server": "missing", "name": "x"}}]});
    let file = dir.path().join("c.json");
    std::fs::write(&file, config.to_string()).unwrap_or_default();
    let started = std::time::Instant::now();
    let out = run(agent(dir.path())
        .env("HUSK_TEST_AGENT_SCRIPT", script.to_string())
        .env("MCP_TIMEOUT", "500")
        .args([
            "-p",
            "x",
            "--output-format",
            "stream-json",
            "--verbose",
            "--mcp-config",
        ])
        .arg(&file));
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        started.elapsed().as_secs() < 20,
        "the silent server must not hold the run"
    );
    let mut statuses = out.events()[0]["mcp_servers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    statuses.sort_by_key(|s| s["name"].to_string());
    assert_eq!(
        statuses,
        [
            json!({"name": "echo", "status": "connected"}),
            json!({"name": "missing", "status": "failed"}),
            json!({"name": "silent", "status": "failed"}),
        ]
    );
    assert!(
        out.stderr.contains("no answer to initialize within 500 ms"),
        "{}",
        out.stderr
    );
    let (content, is_error) = &out.tool_results()[0];
    assert!(*is_error);
    assert!(
        content
            .as_str()
            .unwrap_or_default()
            .contains("is not connected"),
        "{content}"
    );
}

#[test]
fn a_bad_mcp_config_is_a_usage_error() {
    let dir = tempdir();
    let script = json!({"steps": []});
    let out = stream(
        dir.path(),
        &script,
        &["--mcp-config", r#"{"mcpServers": {"a": {"args": []}}}"#],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(
        out.stderr,
        "husk-test-agent: inline --mcp-config: server \"a\": missing \"command\"\n"
    );
    let out = stream(
        dir.path(),
        &script,
        &["--mcp-config", "/nonexistent/mcp.json"],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("cannot read --mcp-config /nonexistent/mcp.json"),
        "{}",
        out.stderr
    );
}
