//! End to end with the real Codex CLI: the daemon starts `codex exec` in a
//! namespace sandbox with messaging on; Codex talks to a scripted
//! Responses-API endpoint on the host (`tests/fixtures/fake_openai.py`),
//! sees husk-mcp's four tools, calls `broadcast_observation` and
//! `read_peer_messages` through them (from code mode, as Codex's default
//! models do, which needs the `codex-code-mode-host` companion husk
//! installs beside `codex`), writes the structured output with its shell
//! tool, and the intent arrives at the orchestrator through
//! `GET /v1/runs/{id}/intents`. No API key, no internet.
//!
//! Needs `HUSK_CODEX_BIN` (the native binary; `scripts/test` sets it from
//! `scripts/ensure-codex`), bubblewrap, curl and python3.

mod common;

use std::time::Duration;

use common::endpoint::{Endpoint, events_of, files_containing, test_key};
use common::have_bwrap;
use serde_json::{Value, json};

#[test]
fn real_codex_collaborates_through_husk_mcp() {
    if std::env::var_os("HUSK_CODEX_BIN").is_none() {
        eprintln!(
            "SKIP: HUSK_CODEX_BIN is not set (scripts/test sets it via scripts/ensure-codex)"
        );
        return;
    }
    if !have_bwrap()
        || !common::daemon::have_curl()
        || husk_sandbox::host::which("python3").is_none()
    {
        eprintln!("SKIP: needs bubblewrap, curl and python3");
        return;
    }
    let base = std::env::temp_dir().join(format!("husk-codex-mcp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(base.join("daemon")).unwrap();
    let plan = json!([
        {"server": "husk", "tool": "broadcast_observation",
         "arguments": {"summary_text": "the bug is in parse()", "priority": "high"}},
        {"server": "husk", "tool": "read_peer_messages", "arguments": {}},
    ]);
    let endpoint = Endpoint::start(
        "fake_openai.py",
        &base.join("endpoint.jsonl"),
        Some(("FAKE_OPENAI_PLAN", &plan)),
    );
    let key = test_key("sk-test-");
    let d = common::daemon::Daemon::start_wrapped(
        base.join("daemon"),
        &[],
        &format!("export HUSK_TEST_FAKE_OPENAI_KEY={key}"),
    );
    let spec = json!({
        "api_version": "v1", "kind": "agent", "name": "codex-mcp",
        "llm": {
            "provider": "codex",
            "base_url": format!("http://localhost:{}/v1", endpoint.port),
            "api_key_env": "HUSK_TEST_FAKE_OPENAI_KEY",
        },
        "sandbox": {"mode": "namespace", "network": {"allow": ["localhost"]}},
        "agent": {
            "prompt": "Tell your peers what you found, then read their messages.",
            "timeout_secs": 120,
            "messaging": {"enabled": true},
        },
    });
    let spec_path = base.join("codex-mcp.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let input =
        json!({"execution_id": "exec-1", "candidate_id": "cand-codex", "peers": ["cand-2"]});
    let (code, v) = d.json(
        "POST",
        "/v1/runs",
        Some(&json!({"file": spec_path, "input": input}).to_string()),
    );
    assert_eq!(code, 200, "{v}");
    let id = v["run_id"].as_str().unwrap().to_string();
    let r = d.wait_terminal(&id, Duration::from_secs(180));
    let requests = endpoint.requests();
    let context = format!("endpoint requests: {requests:#?}\nrecord: {r:#}");
    assert_eq!(r["status"], "succeeded", "{context}");

    let scripted: Vec<&Value> = requests.iter().filter(|q| q["scripted"] == true).collect();
    let steps: Vec<&str> = scripted
        .iter()
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
    // The model was told of all four husk-mcp tools, and the credential
    // reached the endpoint as the bearer token.
    assert_eq!(
        scripted[0]["husk_tools"],
        json!([
            "read_shared_context",
            "read_peer_messages",
            "broadcast_observation",
            "recommend_to_leader"
        ]),
        "{context}"
    );
    assert_eq!(scripted[0]["authorization"], format!("Bearer {key}"));
    // Each call ran through husk-mcp (no approval prompt in exec mode).
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
    let results = events_of(&r, "agent.tool_result");
    assert!(
        !results.iter().any(|m| m.contains("failed")),
        "{results:?}\n{context}"
    );
    // read_peer_messages answered with this candidate's (empty) inbox, and
    // Codex's shell wrote it as the structured output.
    let summary = r["report"]["output"]["summary"]
        .as_str()
        .unwrap_or_default();
    assert!(summary.contains("cand-codex"), "{summary}\n{context}");

    d.expect_one_broadcast(&id, "cand-codex", "the bug is in parse()", &context);
    let leaked = files_containing(&base.join("daemon"), key.as_bytes());
    assert!(leaked.is_empty(), "the key is in {leaked:?}");
    drop(endpoint);
    let _ = std::fs::remove_dir_all(&base);
}
