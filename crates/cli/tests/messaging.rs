//! End-to-end messaging (contract §3, §5, §6): agents in sandboxes with
//! networking off talk to their run's sidecar with `husk-message` (through
//! the sandbox-local port the guest forwards over the control channel); a
//! test orchestrator drives the daemon's inbox/intents/messages routes.
//! Real `husk serve`, curl over its socket, real sandboxes (namespace and
//! micro-VM), the scripted test agent.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, have_curl};
use common::have_bwrap;
use serde_json::{Value, json};

/// A messaging-enabled agent spec whose test agent runs `shell` and then
/// publishes the files it names as artifacts.
fn spec(dir: &Path, name: &str, mode: &str, shell: &str, files: &[&str]) -> PathBuf {
    let artifacts: Vec<Value> = files.iter().map(|f| json!({ "name": f })).collect();
    let script = json!({"steps": [
        {"shell": shell, "expect_ok": true},
        {"write": {"path": "/workspace/output.json",
                   "json": {"status": "success", "artifacts": artifacts}}}
    ]});
    let text = format!(
        "api_version: v1\nkind: agent\nname: {name}\nsandbox:\n  mode: {mode}\n  env:\n    HUSK_TEST_AGENT_SCRIPT: {}\nagent:\n  prompt: collaborate\n  skills: [\"agent:husk-test-agent\"]\n  messaging:\n    enabled: true\n  timeout_secs: 300\n",
        serde_json::to_string(&script.to_string()).unwrap()
    );
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn start(d: &Daemon, spec: &Path, input: Value) -> String {
    let body = json!({"file": spec, "input": input}).to_string();
    let (code, v) = d.json("POST", "/v1/runs", Some(&body));
    assert_eq!(code, 200, "{v}");
    v["run_id"].as_str().unwrap().to_string()
}

fn artifact(d: &Daemon, id: &str, name: &str) -> String {
    let (code, body) = d.curl(
        "GET",
        &format!("/v1/runs/{id}/stages/main/artifacts/{name}"),
        None,
        &[],
    );
    assert_eq!(code, 200, "{name}: {body}");
    body
}

fn identity(candidate: &str, peers: &[&str]) -> Value {
    json!({"execution_id": "exec-7", "candidate_id": candidate, "role": "explorer",
           "peers": peers, "iteration": 1, "task": "find the bug"})
}

/// A (namespace) broadcasts a finding; the orchestrator drains it and loads
/// it into B's inbox; B (micro-VM when QEMU is here, else namespace) reads
/// it with `husk-message inbox` and answers the leader.
#[test]
fn two_agents_exchange_intents_through_the_orchestrator() {
    if !have_curl() || !have_bwrap() {
        return;
    }
    let d = Daemon::start("messaging", &[]);
    let a_spec = spec(
        &d.dir,
        "agent-a",
        "namespace",
        "husk-message context > ctx.json && husk-message send --kind signal --audience broadcast --summary 'found it' > sent.json && echo $VOID_SIDECAR_URL > url.txt",
        &["ctx.json", "sent.json", "url.txt"],
    );
    let b_mode = if husk_sandbox::host::which("qemu-system-x86_64").is_some() {
        "microvm"
    } else {
        eprintln!("NOTE: no QEMU here; agent B runs in a namespace sandbox too");
        "namespace"
    };
    let b_spec = spec(
        &d.dir,
        "agent-b",
        b_mode,
        "i=0; while [ $i -lt 600 ]; do husk-message inbox > inbox.json; grep -q 'found it' inbox.json && break; i=$((i+1)); sleep 0.1; done; grep -q 'found it' inbox.json && husk-message inbox --since 5 > since.json && husk-message send --kind evaluation --audience leader --summary 'confirmed' --priority high > ack.json",
        &["inbox.json", "since.json", "ack.json"],
    );
    let a = start(&d, &a_spec, identity("cand-a", &["cand-b"]));
    let b = start(&d, &b_spec, identity("cand-b", &["cand-a"]));

    let ra = d.wait_terminal(&a, Duration::from_secs(120));
    assert_eq!(ra["status"], "succeeded", "{ra:#}");
    let ctx: Value = serde_json::from_str(&artifact(&d, &a, "ctx.json")).unwrap();
    assert_eq!(ctx["candidate_id"], "cand-a");
    assert_eq!(ctx["execution_id"], "exec-7");
    assert_eq!(ctx["peers"], json!(["cand-b"]));
    assert_eq!(artifact(&d, &a, "url.txt").trim(), "http://127.0.0.1:7777");
    let sent: Value = serde_json::from_str(&artifact(&d, &a, "sent.json")).unwrap();
    assert_eq!(sent["payload"]["summary_text"], "found it", "{sent}");
    // The run ended with the intent buffered: reported, then drained once.
    assert_eq!(
        ra["undrained_intents"].as_array().unwrap().len(),
        1,
        "{ra:#}"
    );
    let (code, drained) = d.json("GET", &format!("/v1/runs/{a}/intents"), None);
    assert_eq!(code, 200, "{drained}");
    let drained = drained.as_array().unwrap().clone();
    assert_eq!(drained.len(), 1);
    assert_eq!(drained[0]["from_candidate_id"], "cand-a");
    assert_eq!(drained[0]["kind"], "signal");
    let (_, again) = d.json("GET", &format!("/v1/runs/{a}/intents"), None);
    assert_eq!(again, json!([]));

    // Load A's intent into B's inbox while B is running (no version: the
    // sidecar takes previous + 1).
    let t = Instant::now();
    loop {
        let (_, r) = d.json("GET", &format!("/v1/runs/{b}"), None);
        if r["sidecar"]["status"] == "ok" && r["status"] == "running" {
            break;
        }
        assert!(r["status"] != "failed", "{r:#}");
        assert!(t.elapsed() < Duration::from_secs(120), "B never ran: {r:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let inbox = json!({
        "execution_id": "exec-7", "candidate_id": "cand-b", "iteration": 1,
        "entries": [{"message_id": drained[0]["intent_id"], "from_candidate_id": "cand-a",
                     "kind": "signal", "payload": drained[0]["payload"]}]
    });
    let (code, put) = d.json(
        "PUT",
        &format!("/v1/runs/{b}/inbox"),
        Some(&inbox.to_string()),
    );
    assert_eq!(code, 200, "{put}");
    assert_eq!(put["version"], 1);
    // One more entry, pushed live: the version goes up.
    let msg = json!({"message_id": "m-2", "from_candidate_id": "leader", "kind": "proposal",
                     "payload": {"summary_text": "keep going"}});
    let (code, pushed) = d.json(
        "POST",
        &format!("/v1/runs/{b}/messages"),
        Some(&msg.to_string()),
    );
    assert_eq!(code, 200, "{pushed}");
    assert_eq!(pushed["inbox_version"], 2);

    let rb = d.wait_terminal(&b, Duration::from_secs(180));
    assert_eq!(rb["status"], "succeeded", "{rb:#}");
    let sandbox = rb["report"]["stages"][0]["sandbox"].as_str().unwrap();
    assert!(sandbox.starts_with(b_mode), "{sandbox}");
    let seen: Value = serde_json::from_str(&artifact(&d, &b, "inbox.json")).unwrap();
    assert!(seen["version"].as_u64().unwrap() >= 1, "{seen}");
    assert_eq!(seen["entries"][0]["from_candidate_id"], "cand-a");
    // `--since` at or past the version: metadata, no entries.
    let since: Value = serde_json::from_str(&artifact(&d, &b, "since.json")).unwrap();
    assert_eq!(since["entries"], json!([]), "{since}");
    let (_, answer) = d.json("GET", &format!("/v1/runs/{b}/intents"), None);
    let answer = answer.as_array().unwrap();
    assert_eq!(answer.len(), 1, "{answer:?}");
    assert_eq!(answer[0]["audience"], "leader");
    assert_eq!(answer[0]["kind"], "evaluation");
    assert_eq!(answer[0]["priority"], "high");
    assert_eq!(answer[0]["from_candidate_id"], "cand-b");
}

/// Every sidecar error code, produced from inside a sandbox (networking
/// off), and the daemon's routes for a run without a sidecar.
#[test]
fn sidecar_errors_from_inside_the_sandbox() {
    if !have_curl() || !have_bwrap() {
        return;
    }
    let d = Daemon::start("messaging-errors", &[]);
    let u = "http://127.0.0.1:7777";
    let shell = format!(
        "set +e; \
         husk-message send --kind bogus --audience broadcast --summary x 2> bad-kind.txt; echo \"rc=$?\" >> bad-kind.txt; \
         husk-message send --kind signal --audience broadcast --summary \"$(head -c 5000 /dev/zero | tr '\\0' a)\" 2> big.txt; echo \"rc=$?\" >> big.txt; \
         for n in 1 2 3 4; do husk-message send --kind signal --audience broadcast --summary \"s$n\" > /dev/null 2>> limit.txt; echo \"rc=$?\" >> limit.txt; done; \
         busybox wget -q -O - {u}/v1/nope 2> notfound.txt; \
         busybox wget -q -O - {u}/v1/signals 2> signals.txt; \
         busybox wget -q -O - --header 'Content-Type: application/json' --post-data 'not json' {u}/v1/intents 2> badjson.txt; \
         busybox wget -q -O - --header 'Content-Type: application/json' --post-data '{{\"kind\":\"signal\",\"audience\":\"everyone\",\"payload\":{{}}}}' {u}/v1/intents 2> audience.txt; \
         head -c 70000 /dev/zero | tr '\\0' a > big.body; busybox wget -q -O - --post-file big.body {u}/v1/intents 2> huge.txt; \
         env -u VOID_SIDECAR_URL -u HUSK_SIDECAR_URL husk-message context 2> nourl.txt; echo \"rc=$?\" >> nourl.txt; \
         true"
    );
    let files = [
        "bad-kind.txt",
        "big.txt",
        "limit.txt",
        "notfound.txt",
        "signals.txt",
        "badjson.txt",
        "audience.txt",
        "huge.txt",
        "nourl.txt",
    ];
    let s = spec(&d.dir, "errors", "namespace", &shell, &files);
    let id = start(&d, &s, json!({}));
    let r = d.wait_terminal(&id, Duration::from_secs(120));
    assert_eq!(r["status"], "succeeded", "{r:#}");
    let f = |n: &str| artifact(&d, &id, n);
    assert!(f("bad-kind.txt").contains("error:") && f("bad-kind.txt").contains("rc=1"));
    let big = f("big.txt");
    assert!(
        big.contains("413") && big.contains("PAYLOAD_TOO_LARGE") && big.contains("rc=1"),
        "{big}"
    );
    let limit = f("limit.txt");
    assert_eq!(limit.matches("rc=0").count(), 3, "{limit}");
    assert!(
        limit.contains("429") && limit.contains("TOO_MANY_REQUESTS"),
        "{limit}"
    );
    assert!(f("notfound.txt").contains("404"), "{}", f("notfound.txt"));
    assert!(f("signals.txt").contains("501"), "{}", f("signals.txt"));
    assert!(f("badjson.txt").contains("400"), "{}", f("badjson.txt"));
    assert!(f("audience.txt").contains("400"), "{}", f("audience.txt"));
    assert!(f("huge.txt").contains("413"), "{}", f("huge.txt"));
    let nourl = f("nourl.txt");
    assert!(
        nourl.contains("VOID_SIDECAR_URL") && nourl.contains("rc=1"),
        "{nourl}"
    );
    // Identity defaults to the run id when the input names none.
    let (_, drained) = d.json("GET", &format!("/v1/runs/{id}/intents"), None);
    let drained = drained.as_array().unwrap();
    assert_eq!(drained.len(), 3);
    assert_eq!(drained[0]["from_candidate_id"], id.as_str());

    // A run without messaging: the routes say so.
    let plain = d.dir.join("plain.yaml");
    std::fs::write(
        &plain,
        "api_version: v1\nkind: workflow\nname: plain\nsandbox: {mode: namespace}\nworkflow:\n  steps:\n    - name: main\n      run: {program: \"true\"}\n",
    )
    .unwrap();
    let (_, v) = d.json(
        "POST",
        "/v1/runs",
        Some(&json!({"file": plain}).to_string()),
    );
    let pid = v["run_id"].as_str().unwrap().to_string();
    d.wait_terminal(&pid, Duration::from_secs(60));
    for (m, route, body) in [
        ("GET", "intents", None),
        (
            "PUT",
            "inbox",
            Some("{\"execution_id\":\"e\",\"candidate_id\":\"c\",\"iteration\":1,\"entries\":[]}"),
        ),
        ("POST", "messages", Some("{}")),
    ] {
        let (code, e) = d.json(m, &format!("/v1/runs/{pid}/{route}"), body);
        assert_eq!(
            (code, e["code"].as_str()),
            (404, Some("NOT_FOUND")),
            "{route}: {e}"
        );
    }
}

/// `husk run` (no daemon) gives a messaging-enabled run its sidecar too,
/// and prints the intents the agent sent at the end.
#[test]
fn husk_run_has_a_sidecar_and_prints_the_intents() {
    if !have_bwrap() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("husk-msg-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let s = spec(
        &dir,
        "solo",
        "namespace",
        "husk-message send --kind proposal --audience leader --summary 'try plan B' > sent.json",
        &["sent.json"],
    );
    let o = common::husk()
        .args(["run", "--runs-dir"])
        .arg(dir.join("runs"))
        .arg(&s)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("intents the agent sent (1)"), "{stdout}");
    assert!(
        stdout.contains("proposal → leader [normal]: try plan B"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A service's intents survive its publications (void-box dropped them):
/// the orchestrator drains them while the service keeps running.
#[test]
fn a_services_intents_survive_publication() {
    if !have_curl() || !have_bwrap() {
        return;
    }
    let d = Daemon::start("messaging-service", &[]);
    let script = json!({"steps": [
        {"shell": "husk-message send --kind signal --audience broadcast --summary before", "expect_ok": true},
        {"write": {"path": "/workspace/output.json", "json": {"status": "running"}}},
        {"sleep_ms": 500},
        {"shell": "husk-message send --kind signal --audience broadcast --summary after", "expect_ok": true},
        {"sleep_ms": 600000}
    ]});
    let p = d.dir.join("svc.yaml");
    std::fs::write(
        &p,
        format!(
            "api_version: v1\nkind: agent\nname: svc\nsandbox:\n  mode: namespace\n  env:\n    HUSK_TEST_AGENT_SCRIPT: {}\nagent:\n  prompt: serve\n  mode: service\n  output_file: /workspace/output.json\n  skills: [\"agent:husk-test-agent\"]\n  messaging: {{enabled: true}}\n",
            serde_json::to_string(&script.to_string()).unwrap()
        ),
    )
    .unwrap();
    let id = start(&d, &p, json!({}));
    let t = Instant::now();
    let mut got = Vec::new();
    while got.len() < 2 {
        let (_, v) = d.json("GET", &format!("/v1/runs/{id}/intents"), None);
        got.extend(v.as_array().cloned().unwrap_or_default());
        assert!(t.elapsed() < Duration::from_secs(60), "{got:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, r) = d.json("GET", &format!("/v1/runs/{id}"), None);
    assert_eq!(r["status"], "running");
    assert_eq!(r["output_ready"], true, "{r:#}");
    let texts: Vec<&str> = got
        .iter()
        .map(|i| i["payload"]["summary_text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["before", "after"]);
    let (_, c) = d.json("POST", &format!("/v1/runs/{id}/cancel"), None);
    assert_eq!(c["state"], "cancelled");
}

/// The scripted test agent calls husk-mcp's tools (its real MCP stdio
/// client, the server from the run's MCP config) in a micro-VM.
#[test]
fn the_test_agent_uses_husk_mcp_in_a_micro_vm() {
    if husk_sandbox::host::which("qemu-system-x86_64").is_none() || !have_curl() {
        eprintln!("SKIP: qemu-system-x86_64 or curl is not installed");
        return;
    }
    let d = Daemon::start("messaging-mcp-vm", &[]);
    let script = json!({"steps": [
        {"tool": {"server": "husk", "name": "read_shared_context", "arguments": {}}, "expect_ok": true},
        {"tool": {"server": "husk", "name": "recommend_to_leader",
                  "arguments": {"summary_text": "ship it", "disposition": "refine"}}, "expect_ok": true},
        {"write": {"path": "/workspace/output.json", "json": {"status": "success"}}}
    ]});
    let p = d.dir.join("vm-mcp.yaml");
    std::fs::write(
        &p,
        format!(
            "api_version: v1\nkind: agent\nname: vm-mcp\nsandbox:\n  mode: microvm\n  env:\n    HUSK_TEST_AGENT_SCRIPT: {}\nagent:\n  prompt: go\n  skills: [\"agent:husk-test-agent\"]\n  messaging: {{enabled: true}}\n",
            serde_json::to_string(&script.to_string()).unwrap()
        ),
    )
    .unwrap();
    let id = start(&d, &p, json!({"candidate_id": "vm-1"}));
    let r = d.wait_terminal(&id, Duration::from_secs(180));
    assert_eq!(r["status"], "succeeded", "{r:#}");
    let results: Vec<&str> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "agent.tool_result")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(results.iter().any(|m| m.contains("vm-1")), "{results:?}");
    let (_, intents) = d.json("GET", &format!("/v1/runs/{id}/intents"), None);
    let intents = intents.as_array().unwrap();
    assert_eq!(intents.len(), 1, "{intents:?}");
    assert_eq!(intents[0]["audience"], "leader");
    assert_eq!(intents[0]["kind"], "evaluation");
    assert_eq!(intents[0]["from_candidate_id"], "vm-1");
}
