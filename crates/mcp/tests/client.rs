//! husk-mcp against a real MCP client (the Python SDK, `mcp==2.3.0`,
//! installed by scripts/ensure-mcp-client) and a real sidecar, over both
//! transports: the handshake in each protocol version, the tool list,
//! every tool, and every error path the model can meet.

mod common;

use common::*;
use husk_sidecar::{InboxEntry, InboxLoad, Kind};
use serde_json::{Value, json};

const VERSIONS: [&str; 3] = ["2025-06-18", "2025-11-25", "2026-07-28"];

/// Both transports' `server` entries for a plan, with the HTTP server
/// kept alive by the returned guard.
fn servers(url: &str) -> (Vec<(&'static str, Value)>, Http) {
    let http = spawn_http(url);
    let list = vec![
        ("stdio", stdio_server(url)),
        ("http", json!({"url": http.url})),
    ];
    (list, http)
}

#[test]
fn every_protocol_version_on_both_transports() {
    let sc = sidecar();
    let (servers, _http) = servers(&sc.url());
    for (transport, server) in &servers {
        for version in VERSIONS {
            let out = python_client(&json!({
                "server": server,
                "version": version,
                "steps": [{"op": "list_tools"}, {"op": "call", "tool": "read_shared_context"}]
            }));
            let at = format!("{transport} {version}");
            assert_eq!(out["protocol_version"], version, "{at}: {out}");
            if version != "2026-07-28" {
                assert_eq!(out["server_name"], "husk-mcp", "{at}: {out}");
            }
            let tools = out["steps"][0]["tools"].as_array().expect("tools");
            let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
            assert_eq!(
                names,
                [
                    "read_shared_context",
                    "read_peer_messages",
                    "broadcast_observation",
                    "recommend_to_leader"
                ],
                "{at}"
            );
            for t in tools {
                assert_eq!(t["inputSchema"]["type"], "object", "{at}: {t}");
                assert!(t["description"].as_str().unwrap().len() > 80, "{at}: {t}");
            }
            let send = &tools[2]["inputSchema"];
            assert_eq!(send["required"], json!(["summary_text"]), "{at}");
            assert_eq!(
                send["properties"]["priority"]["enum"],
                json!(["high", "normal", "low"])
            );
            let lead = &tools[3]["inputSchema"];
            assert_eq!(
                lead["properties"]["disposition"]["enum"],
                json!(["promote", "refine", "reject"])
            );
            assert_eq!(tools[1]["inputSchema"]["properties"]["since"]["minimum"], 0);
            let ctx = &out["steps"][1]["result"];
            assert_ne!(ctx["isError"], true, "{at}: {ctx}");
            let s = &ctx["structuredContent"];
            assert_eq!(s["candidate_id"], "cand-1", "{at}: {ctx}");
            assert_eq!(s["execution_id"], "exec-1");
            assert_eq!(s["peers"], json!(["cand-2", "cand-3"]));
            assert_eq!(s["iteration"], 2);
            // The text block carries the same JSON for clients that only read text.
            let from_text: Value = serde_json::from_str(text(ctx)).expect("text is JSON");
            assert_eq!(&from_text, s, "{at}");
        }
    }
}

/// Every tool against the sidecar, then the error paths, on one transport.
fn tools_and_errors(transport: &str, server: &Value, sc: &RealSidecar) {
    sc.handle
        .load_inbox(InboxLoad {
            version: Some(5),
            execution_id: None,
            candidate_id: None,
            iteration: Some(3),
            entries: vec![InboxEntry {
                message_id: "m-1".into(),
                from_candidate_id: "cand-2".into(),
                kind: Kind::Signal,
                payload: json!({"summary_text": "tests in tests/api are flaky"}),
            }],
        })
        .expect("load inbox");
    let out = python_client(&json!({
        "server": server,
        "version": "2025-11-25",
        "steps": [
            {"op": "call", "tool": "read_peer_messages"},
            {"op": "call", "tool": "read_peer_messages", "args": {"since": 5}},
            {"op": "call", "tool": "broadcast_observation",
             "args": {"summary_text": "parser fixed in src/parse.rs", "priority": "high"}},
            {"op": "call", "tool": "recommend_to_leader", "args": {"summary_text": "adopt my patch"}},
            {"op": "call", "tool": "recommend_to_leader",
             "args": {"summary_text": "cand-2's patch breaks the build", "disposition": "reject", "priority": "low"}},
            {"op": "call", "tool": "broadcast_observation", "args": {"summary_text": "a fourth one"}},
            {"op": "call", "tool": "no_such_tool", "args": {}},
            {"op": "call", "tool": "broadcast_observation", "args": {}},
            {"op": "call", "tool": "broadcast_observation", "args": {"summary_text": "x", "priority": "urgent"}},
            {"op": "call", "tool": "recommend_to_leader", "args": {"summary_text": "x", "disposition": "maybe"}},
            {"op": "call", "tool": "read_peer_messages", "args": {"since": -1}}
        ]
    }));
    let steps = out["steps"].as_array().expect("steps");
    let at = |i: usize| format!("{transport} step {i}: {}", steps[i]);
    let result = |i: usize| &steps[i]["result"];

    let inbox = &result(0)["structuredContent"];
    assert_eq!(inbox["version"], 5, "{}", at(0));
    assert_eq!(inbox["iteration"], 3);
    assert_eq!(
        inbox["entries"][0]["payload"]["summary_text"],
        "tests in tests/api are flaky"
    );
    let unchanged = &result(1)["structuredContent"];
    assert_eq!(unchanged["version"], 5, "{}", at(1));
    assert_eq!(unchanged["entries"], json!([]), "{}", at(1));

    for i in 2..=4 {
        assert_ne!(result(i)["isError"], true, "{}", at(i));
        assert!(
            result(i)["structuredContent"]["intent_id"].is_string(),
            "{}",
            at(i)
        );
    }
    // The fourth intent of the iteration: the sidecar's 429, quoted, and advice.
    let r = result(5);
    assert_eq!(r["isError"], true, "{}", at(5));
    assert!(text(r).contains("HTTP 429 TOO_MANY_REQUESTS"), "{}", at(5));
    assert!(
        text(r).contains("3 intents were already accepted in iteration 3"),
        "{}",
        at(5)
    );
    assert!(text(r).contains("Do not call it again now"), "{}", at(5));
    // Unknown tool: a protocol error.
    assert_eq!(steps[6]["error"]["code"], -32602, "{}", at(6));
    assert!(
        steps[6]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no_such_tool"),
        "{}",
        at(6)
    );
    // Bad arguments: tool errors naming the argument.
    for (i, needle) in [
        (7, "summary_text is required"),
        (
            8,
            "priority must be one of \"high\", \"normal\", \"low\", not \"urgent\"",
        ),
        (9, "disposition must be one of"),
        (10, "since must be an integer >= 0"),
    ] {
        assert_eq!(result(i)["isError"], true, "{}", at(i));
        assert!(text(result(i)).contains(needle), "{}", at(i));
    }

    // What arrived at the sidecar: exactly the three accepted intents.
    let intents = sc.handle.drain_intents();
    let got: Vec<Value> = intents
        .iter()
        .map(|i| {
            json!([
                i.kind,
                i.audience,
                i.priority,
                i.payload,
                i.from_candidate_id,
                i.iteration
            ])
        })
        .collect();
    assert_eq!(
        got,
        vec![
            json!(["signal", "broadcast", "high", {"summary_text": "parser fixed in src/parse.rs"}, "cand-1", 3]),
            json!(["proposal", "leader", "normal", {"summary_text": "adopt my patch", "disposition": "promote"}, "cand-1", 3]),
            json!(["evaluation", "leader", "low", {"summary_text": "cand-2's patch breaks the build", "disposition": "reject"}, "cand-1", 3]),
        ],
        "{transport}"
    );
}

#[test]
fn tools_reach_the_sidecar_and_errors_are_actionable_stdio() {
    let sc = sidecar();
    tools_and_errors("stdio", &stdio_server(&sc.url()), &sc);
}

#[test]
fn tools_reach_the_sidecar_and_errors_are_actionable_http() {
    let sc = sidecar();
    let http = spawn_http(&sc.url());
    tools_and_errors("http", &json!({"url": http.url}), &sc);
}

#[test]
fn a_sidecar_that_is_down_is_a_tool_error_on_both_transports() {
    let url = dead_url();
    let (servers, _http) = servers(&url);
    for (transport, server) in &servers {
        let out = python_client(&json!({
            "server": server,
            "version": "2025-06-18",
            "steps": [
                {"op": "call", "tool": "read_shared_context"},
                {"op": "call", "tool": "broadcast_observation", "args": {"summary_text": "hello"}},
                {"op": "list_tools"}
            ]
        }));
        for i in 0..2 {
            let r = &out["steps"][i]["result"];
            assert_eq!(r["isError"], true, "{transport}: {r}");
            let t = text(r);
            assert!(
                t.contains(&format!("cannot reach the messaging sidecar at {url}")),
                "{transport}: {t}"
            );
            assert!(t.contains("Connection refused"), "{transport}: {t}");
            assert!(
                t.contains("carry on with your task without it"),
                "{transport}: {t}"
            );
        }
        // The server itself is fine.
        assert_eq!(
            out["steps"][2]["tools"].as_array().map(Vec::len),
            Some(4),
            "{transport}"
        );
    }
}
