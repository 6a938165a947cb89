//! husk-mcp's stdio transport driven line by line: bad input of every
//! kind gets a protocol-correct answer (or none, where JSON-RPC says so)
//! and never stops the server; a slow or stuck sidecar holds up only its
//! own call; EOF ends the process cleanly, even mid-call.

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::{Value, json};

fn error_code(v: &Value) -> i64 {
    v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an error: {v}"))
}

#[test]
fn missing_sidecar_url_is_one_line_on_stderr_and_exit_1() {
    let out = Command::new(BIN)
        .env_remove("VOID_SIDECAR_URL")
        .env_remove("HUSK_SIDECAR_URL")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("VOID_SIDECAR_URL (or HUSK_SIDECAR_URL) is not set"),
        "{err}"
    );
    // A URL that is not http:// is refused the same way.
    let out = Command::new(BIN)
        .env("VOID_SIDECAR_URL", "https://127.0.0.1:1")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be an http:// URL"));
}

#[test]
fn garbage_and_early_requests_get_errors_and_the_server_goes_on() {
    let sc = sidecar();
    let mut mcp = spawn_stdio(&sc.url(), &[]);
    // Before initialize: a notification (ignored), a request (an error
    // with its id), garbage (a parse error).
    mcp.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    mcp.send(&json!({"jsonrpc": "2.0", "id": "early", "method": "tools/list"}));
    let (early, others) = mcp.recv_id(&json!("early"));
    assert!(early["error"].is_object(), "{early}");
    assert!(others.is_empty(), "{others:?}");
    mcp.send_raw(b"this is not json\n");
    let v = mcp.recv();
    assert_eq!((error_code(&v), &v["id"]), (-32700, &Value::Null), "{v}");

    let init = mcp.initialize("2025-11-25");
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");

    // After initialize: each bad line gets its error, in order.
    let mut huge = vec![b'{'; husk_mcp_limit() + 1];
    huge.push(b'\n');
    let bad: Vec<(Vec<u8>, i64, Value)> = vec![
        (b"{\"jsonrpc\": \n".to_vec(), -32700, Value::Null),
        (b"\xff\xfe\xfd\n".to_vec(), -32700, Value::Null),
        (huge, -32600, Value::Null),
        (b"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]\n".to_vec(), -32600, Value::Null),
        (b"{\"jsonrpc\":\"2.0\",\"id\":11,\"method\":\"tools/call\",\"params\":{}}\n".to_vec(), -32602, json!(11)),
        (b"{\"jsonrpc\":\"2.0\",\"id\":12,\"method\":\"no/such/method\"}\n".to_vec(), -32601, json!(12)),
        (b"{\"jsonrpc\":\"2.0\",\"id\":13,\"method\":\"tools/call\",\"params\":{\"name\":\"nope\"}}\n".to_vec(), -32602, json!(13)),
    ];
    for (line, code, id) in bad {
        mcp.send_raw(&line);
        let v = mcp.recv();
        let shown = String::from_utf8_lossy(&line[..line.len().min(60)]).to_string();
        assert_eq!(error_code(&v), code, "{shown}: {v}");
        assert_eq!(v["id"], id, "{shown}: {v}");
    }
    // Blank lines and a notification that does not parse: no answer; the
    // next request is answered.
    mcp.send_raw(
        b"\n  \n{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":7}\n",
    );
    mcp.call(20, "read_shared_context", json!({}));
    let (v, others) = mcp.recv_id(&json!(20));
    assert!(others.is_empty(), "{others:?}");
    assert_eq!(
        v["result"]["structuredContent"]["candidate_id"], "cand-1",
        "{v}"
    );
    assert!(mcp.finish().success());
}

/// The line limit, as docs/collaboration.md states it.
fn husk_mcp_limit() -> usize {
    1024 * 1024
}

#[test]
fn a_line_of_exactly_the_limit_is_read() {
    let sc = sidecar();
    let mut mcp = spawn_stdio(&sc.url(), &[]);
    mcp.initialize("2025-06-18");
    // A ping padded with spaces to exactly the limit.
    let mut line = br#"{"jsonrpc":"2.0","id":"big","method":"ping"}"#.to_vec();
    line.resize(husk_mcp_limit(), b' ');
    line.push(b'\n');
    mcp.send_raw(&line);
    let (v, _) = mcp.recv_id(&json!("big"));
    assert_eq!(v["result"], json!({}), "{v}");
    assert!(mcp.finish().success());
}

#[test]
fn a_held_sidecar_call_does_not_hold_up_other_requests() {
    let sc = sidecar();
    let gate = gate(sc.addr);
    let mut mcp = spawn_stdio(&gate.url(), &[]);
    mcp.initialize("2025-11-25");
    mcp.call(1, "broadcast_observation", json!({"summary_text": "held"}));
    // The call is held at the gate; these are answered meanwhile.
    mcp.send(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    let v = mcp.recv();
    assert_eq!(v["id"], 2, "the held call answered first: {v}");
    assert_eq!(v["result"]["tools"].as_array().map(Vec::len), Some(4));
    mcp.send(&json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}));
    assert_eq!(mcp.recv()["id"], 3);
    gate.open();
    let v = mcp.recv();
    assert_eq!(v["id"], 1, "{v}");
    assert_ne!(v["result"]["isError"], true, "{v}");
    assert_eq!(sc.handle.drain_intents().len(), 1);
    assert!(mcp.finish().success());
}

#[test]
fn a_stuck_sidecar_times_out_into_a_tool_error() {
    let sc = sidecar();
    let gate = gate(sc.addr); // never opened
    let mut mcp = spawn_stdio(&gate.url(), &[("HUSK_MCP_SIDECAR_TIMEOUT_MS", "300")]);
    mcp.initialize("2025-11-25");
    mcp.call(1, "read_shared_context", json!({}));
    let v = mcp.recv();
    assert_eq!(v["id"], 1);
    assert_eq!(v["result"]["isError"], true, "{v}");
    let t = v["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        t.contains(&format!(
            "the messaging sidecar at {} did not answer within 300 ms",
            gate.url()
        )),
        "{t}"
    );
    assert!(t.contains("Call read_shared_context again once"), "{t}");
    // And the server still answers.
    mcp.send(&json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}));
    assert_eq!(mcp.recv()["id"], 2);
    assert!(mcp.finish().success());
}

#[test]
fn eof_mid_call_exits_cleanly() {
    let sc = sidecar();
    let gate = gate(sc.addr); // never opened: the call never completes
    let mut mcp = spawn_stdio(&gate.url(), &[]);
    mcp.initialize("2025-06-18");
    mcp.call(1, "read_shared_context", json!({}));
    gate.wait_accepted(1);
    let status = mcp.finish();
    assert!(status.success(), "{status}");
}

#[test]
fn eof_before_initialize_and_after_garbage_exits_cleanly() {
    let mut mcp = spawn_stdio(&dead_url(), &[]);
    mcp.send_raw(b"garbage without newline");
    assert!(mcp.finish().success());
    // A parse error owed at EOF is still written.
    let mut mcp = spawn_stdio(&dead_url(), &[]);
    mcp.send_raw(b"garbage\n");
    drop(mcp.stdin.take());
    let v = mcp.recv();
    assert_eq!(error_code(&v), -32700, "{v}");
    assert!(wait_bounded(&mut mcp.child).success());
}
