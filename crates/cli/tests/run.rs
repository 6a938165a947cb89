//! End-to-end tests of `husk run` and `husk validate`: real specs, the real
//! `husk` binary, real namespace sandboxes, husk's scripted test agent
//! (it speaks Claude Code's CLI) and a real stdio MCP server.

mod common;

use common::{have_bwrap, husk};
use std::path::{Path, PathBuf};

use serde_json::Value;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// A private runs directory per test.
fn runs_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("husk-run-test-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Runs `husk run --json` and returns (exit code, record, stderr).
fn run_json(spec: &Path, runs: &Path) -> (i32, Value, String) {
    let o = husk()
        .args(["run", "--json", "--runs-dir"])
        .arg(runs)
        .arg(spec)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let record: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON record ({e}): stdout {:?} stderr {stderr}",
            String::from_utf8_lossy(&o.stdout)
        )
    });
    (o.status.code().unwrap_or(-1), record, stderr)
}

/// Writes a spec for an agent run by the test agent with `script`.
fn agent_spec(dir: &Path, name: &str, script: &str, extra_agent: &str, llm: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("{name}.yaml"));
    let text = format!(
        "api_version: v1\nkind: agent\nname: {name}\n{llm}sandbox:\n  mode: namespace\n  env:\n    HUSK_TEST_AGENT_SCRIPT: '{script}'\nagent:\n  prompt: do the thing\n  skills: [\"agent:husk-test-agent\"]\n{extra_agent}"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn event_types(record: &Value) -> Vec<String> {
    record["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn hello_agent_example_succeeds_with_artifacts_and_events() {
    if !have_bwrap() {
        return;
    }
    let runs = runs_dir("hello");
    let (code, r, err) = run_json(&examples().join("hello-agent.yaml"), &runs);
    assert_eq!(code, 0, "{err}\n{r:#}");
    assert_eq!(r["status"], "succeeded");
    let report = &r["report"];
    assert_eq!(report["success"], true);
    assert_eq!(report["output"]["status"], "success");
    assert_eq!(report["total_cost_usd"], 0.0042);
    assert_eq!(report["input_tokens"], 1200);
    let names: Vec<&str> = r["artifact_publication"]["manifest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["result.json", "report.md"]);
    let id = r["id"].as_str().unwrap();
    let report_md = std::fs::read_to_string(runs.join(id).join("main/report.md")).unwrap();
    assert!(report_md.starts_with("# Hello from husk"), "{report_md}");
    let types = event_types(&r);
    for want in [
        "run.spec.loaded",
        "run.started",
        "stage.started",
        "box.started",
        "skill.mounted",
        "env.provisioned",
        "agent.started",
        "agent.tool_call",
        "agent.result",
        "stage.completed",
        "run.finished",
    ] {
        assert!(types.iter().any(|t| t == want), "no {want} in {types:?}");
    }
    let events = r["events"].as_array().unwrap();
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "event ids must be ordered: {ids:?}"
    );
    assert_eq!(
        r["terminal_event_id"],
        *events.last().unwrap().get("event_id").unwrap()
    );
    assert_eq!(events.last().unwrap()["event_type_v2"], "RunCompleted");
    // The shell step ran as the sandbox user and saw the provisioned skill.
    let logs: String = events
        .iter()
        .filter(|e| e["event_type"] == "agent.tool_call")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(logs.contains("Bash"), "{logs}");
    // The record and events were kept on disk.
    let kept: Value =
        serde_json::from_str(&std::fs::read_to_string(runs.join(id).join("run.json")).unwrap())
            .unwrap();
    assert_eq!(kept["id"], id);
    let lines = std::fs::read_to_string(runs.join(id).join("events.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), events.len());
    let _ = std::fs::remove_dir_all(&runs);
}

#[test]
fn workflow_example_runs_in_dependency_order() {
    if !have_bwrap() {
        return;
    }
    let runs = runs_dir("workflow");
    let (code, r, err) = run_json(&examples().join("workflow.yaml"), &runs);
    assert_eq!(code, 0, "{err}\n{r:#}");
    assert_eq!(r["report"]["output"]["metrics"]["lines"], 3);
    let started: Vec<String> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "stage.started")
        .map(|e| e["stage_name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(started.first().map(String::as_str), Some("fetch"));
    assert_eq!(started.last().map(String::as_str), Some("report"));
    // `count` read fetch's stdout on its stdin.
    let count_out: Vec<&str> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "log.chunk" && e["stage_name"] == "count")
        .map(|e| e["payload"]["data"].as_str().unwrap())
        .collect();
    assert_eq!(count_out, ["3"]);
    let stages: Vec<&str> = r["artifact_publication"]["manifest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["stage"].as_str().unwrap())
        .collect();
    assert!(
        stages.contains(&"report") && stages.contains(&"main"),
        "{stages:?}"
    );
    let _ = std::fs::remove_dir_all(&runs);
}

#[test]
fn pipeline_example_pipes_outputs_into_inputs() {
    if !have_bwrap() {
        return;
    }
    let runs = runs_dir("pipeline");
    let (code, r, err) = run_json(&examples().join("pipeline.yaml"), &runs);
    assert_eq!(code, 0, "{err}\n{r:#}");
    let stages: Vec<&str> = r["report"]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["research", "review", "summarize", "publish"]);
    // `summarize` printed its input: research's output.
    let printed: String = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "agent.tool_result" && e["stage_name"] == "summarize")
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert!(printed.contains("3 facts"), "{printed}");
    assert_eq!(r["report"]["output"]["summary"], "published");
    let _ = std::fs::remove_dir_all(&runs);
}

#[test]
fn failures_are_named_and_fail_the_run() {
    if !have_bwrap() {
        return;
    }
    let runs = runs_dir("failures");
    let dir = runs.join("specs");
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        (
            "missing",
            r#"{"steps":[{"text":"I forgot"}]}"#,
            "",
            "",
            "structured output missing: the agent did not write /workspace/output.json",
        ),
        (
            "malformed",
            r#"{"steps":[{"write":{"path":"/workspace/output.json","content":"{\"summary\":1}"}}]}"#,
            "",
            "",
            "no `status` key",
        ),
        (
            "agentfail",
            r#"{"steps":[{"fail":"the tests do not pass"}]}"#,
            "",
            "",
            "the tests do not pass",
        ),
        (
            "reported",
            r#"{"steps":[{"write":{"path":"/workspace/output.json","json":{"status":"failed","summary":"could not fix it"}}}]}"#,
            "",
            "",
            "could not fix it",
        ),
        (
            "timeout",
            r#"{"steps":[{"sleep_ms":30000}]}"#,
            "  timeout_secs: 1\n",
            "",
            "timed out after 1 s",
        ),
        (
            "nokey",
            r#"{"steps":[]}"#,
            "",
            "llm:\n  api_key_env: HUSK_TEST_SURELY_UNSET_KEY\n",
            "credential HUSK_TEST_SURELY_UNSET_KEY is not set",
        ),
        (
            "noendpoint",
            r#"{"steps":[]}"#,
            "",
            "llm:\n  base_url: http://127.0.0.1:1/v1\n",
            "model endpoint http://127.0.0.1:1/v1 is unreachable",
        ),
    ];
    for (name, script, extra, llm, needle) in cases {
        let spec = agent_spec(&dir, name, script, extra, llm);
        let t = std::time::Instant::now();
        let (code, r, err) = run_json(&spec, &runs);
        assert_eq!(code, 1, "{name}: {err}\n{r:#}");
        assert_eq!(r["status"], "failed", "{name}");
        let error = r["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(needle),
            "{name}: error {error:?} should contain {needle:?}"
        );
        assert_eq!(
            r["events"].as_array().unwrap().last().unwrap()["event_type"],
            "run.failed",
            "{name}"
        );
        if *name == "timeout" {
            assert!(
                t.elapsed().as_secs() < 20,
                "the timeout must really stop the agent"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&runs);
}

#[test]
fn a_missing_agent_binary_is_named() {
    let runs = runs_dir("noagent");
    let spec = runs.join("noagent.yaml");
    std::fs::create_dir_all(&runs).unwrap();
    std::fs::write(
        &spec,
        "api_version: v1\nkind: agent\nname: x\nsandbox: {mode: namespace}\nagent:\n  prompt: p\n  skills: [\"agent:no-such-agent-zz\"]\n",
    )
    .unwrap();
    let (code, r, _) = run_json(&spec, &runs);
    assert_eq!(code, 1);
    let error = r["error"].as_str().unwrap();
    assert!(
        error.contains("`no-such-agent-zz` not found on the host"),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(&runs);
}

/// A stdio MCP server in a few lines of Python, passed inline in the spec;
/// the test agent calls its tool, as Claude Code would.
#[test]
fn mcp_servers_are_provisioned_and_callable() {
    if !have_bwrap() || husk_sandbox::host::which("python3").is_none() {
        return;
    }
    let runs = runs_dir("mcp");
    std::fs::create_dir_all(&runs).unwrap();
    let server = r#"
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if "id" not in m:
        continue
    meth = m["method"]
    if meth == "initialize":
        r = {"protocolVersion": m["params"]["protocolVersion"], "capabilities": {"tools": {}}, "serverInfo": {"name": "echo", "version": "1"}}
    elif meth == "tools/list":
        r = {"tools": [{"name": "shout", "description": "upper-case", "inputSchema": {"type": "object"}}]}
    elif meth == "tools/call":
        r = {"content": [{"type": "text", "text": m["params"]["arguments"]["text"].upper()}]}
    else:
        r = {}
    print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": r}), flush=True)
"#;
    let spec = serde_json::json!({
        "api_version": "v1", "kind": "agent", "name": "mcp",
        "sandbox": {"mode": "namespace", "env": {"HUSK_TEST_AGENT_SCRIPT":
            r#"{"steps":[{"tool":{"server":"echo","name":"shout","arguments":{"text":"hello mcp"}},"expect_ok":true},{"read":"/workspace/.mcp.json"},{"write":{"path":"/workspace/output.json","json":{"status":"success"}}}]}"#}},
        "agent": {"prompt": "call the tool", "skills": ["agent:husk-test-agent",
            {"name": "echo", "command": "python3", "args": ["-c", server]}]}
    });
    let path = runs.join("mcp.json");
    std::fs::write(&path, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    let (code, r, err) = run_json(&path, &runs);
    assert_eq!(code, 0, "{err}\n{r:#}");
    let events = r["events"].as_array().unwrap();
    let started = events
        .iter()
        .find(|e| e["event_type"] == "agent.started")
        .unwrap();
    assert!(
        started["message"]
            .as_str()
            .unwrap()
            .contains("echo (connected)"),
        "{started}"
    );
    let results: Vec<&str> = events
        .iter()
        .filter(|e| e["event_type"] == "agent.tool_result")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(results[0].contains("HELLO MCP"), "{results:?}");
    assert!(results[1].contains("mcpServers"), "{results:?}");
    let _ = std::fs::remove_dir_all(&runs);
}

#[test]
fn invalid_specs_are_refused_with_locations() {
    let o = husk()
        .args(["validate"])
        .arg(examples().join("broken.yaml"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    for needle in [
        "broken.yaml:8:3: sandbox.memroy_mb: unknown key `memroy_mb`; did you mean `memory_mb`?",
        "agent.prompt cannot be empty",
        "mode: service requires output_file",
        "mode: service and timeout_secs are mutually exclusive",
        "did you mean `agent`?",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    let o = husk()
        .args(["run"])
        .arg(examples().join("broken.yaml"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a valid spec"));
    let o = husk()
        .args(["validate", "--json"])
        .arg(examples().join("broken.yaml"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert!(v["specs"][0]["errors"].as_array().unwrap().len() >= 5);
    assert_eq!(v["specs"][0]["errors"][0]["line"], 8);
    let o = husk()
        .args(["validate", "/no/such/spec.yaml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/no/such/spec.yaml"));
}

/// The same agent run in a micro-VM (TCG on hosts where KVM does not work):
/// the static test agent is copied in, the output copied out.
#[test]
fn an_agent_runs_in_a_micro_vm() {
    if husk_sandbox::host::which("qemu-system-x86_64").is_none() {
        eprintln!("SKIP: qemu-system-x86_64 is not installed");
        return;
    }
    let runs = runs_dir("microvm");
    std::fs::create_dir_all(&runs).unwrap();
    let text = std::fs::read_to_string(examples().join("hello-agent.yaml"))
        .unwrap()
        .replace("mode: auto", "mode: microvm");
    let spec = runs.join("hello-vm.yaml");
    std::fs::write(&spec, text).unwrap();
    let (code, r, err) = run_json(&spec, &runs);
    assert_eq!(code, 0, "{err}\n{r:#}");
    let sandbox = r["report"]["stages"][0]["sandbox"].as_str().unwrap();
    assert!(sandbox.starts_with("microvm"), "{sandbox}");
    let shell: String = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "agent.tool_result")
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert!(
        shell.contains("cloud-amd64"),
        "the agent should see the guest kernel: {shell}"
    );
    let id = r["id"].as_str().unwrap();
    assert!(
        std::fs::read_to_string(runs.join(id).join("main/report.md"))
            .unwrap()
            .contains("Hello from husk")
    );
    let _ = std::fs::remove_dir_all(&runs);
}

/// A sandbox that fails to boot is retried (run policy: 3 retries), and the
/// final error explains the boot failure; a configuration error is not retried.
#[test]
fn sandbox_start_failures_are_retried_then_explained() {
    if husk_sandbox::host::which("qemu-system-x86_64").is_none() {
        eprintln!("SKIP: qemu-system-x86_64 is not installed");
        return;
    }
    let runs = runs_dir("retry");
    std::fs::create_dir_all(&runs).unwrap();
    let text = std::fs::read_to_string(examples().join("hello-agent.yaml"))
        .unwrap()
        .replace("mode: auto", "mode: microvm");
    let spec = runs.join("boot-fails.yaml");
    std::fs::write(&spec, text).unwrap();
    let o = husk()
        .env("HUSK_KERNEL_ARGS", "rdinit=/no-such-init")
        .args(["run", "--json", "--runs-dir"])
        .arg(&runs)
        .arg(&spec)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let stage = &r["report"]["stages"][0];
    assert_eq!(stage["attempts"], 4, "{stage}");
    let error = r["error"].as_str().unwrap();
    assert!(
        error.contains("did not start") && error.contains("Kernel panic"),
        "{error}"
    );
    let retries = event_types(&r)
        .iter()
        .filter(|t| *t == "stage.retrying")
        .count();
    assert_eq!(retries, 3);
    // A configuration error fails at once.
    let bad = runs.join("bad-rootfs.yaml");
    std::fs::write(
        &bad,
        "kind: agent\nname: x\nsandbox: {mode: namespace, image: /no/such/rootfs}\nagent:\n  prompt: p\n  skills: [\"agent:husk-test-agent\"]\n",
    )
    .unwrap();
    let (code, r, _) = run_json(&bad, &runs);
    assert_eq!(code, 1);
    assert_eq!(r["report"]["stages"][0]["attempts"], 1, "{r:#}");
    let _ = std::fs::remove_dir_all(&runs);
}

/// A prompt far over what one argument may hold (Linux: 128 KiB) reaches
/// the agent whole, on its stdin.
#[test]
fn a_huge_prompt_reaches_the_agent() {
    if !have_bwrap() {
        return;
    }
    let runs = runs_dir("huge-prompt");
    std::fs::create_dir_all(&runs).unwrap();
    let spec = runs.join("huge.yaml");
    let filler = "lorem ipsum ".repeat(40_000);
    std::fs::write(
        &spec,
        format!(
            "api_version: v1\nkind: agent\nname: huge\nsandbox:\n  mode: namespace\nagent:\n  prompt: \"{filler}\"\n  skills: [\"agent:husk-test-agent\"]\n"
        ),
    )
    .unwrap();
    let (code, r, err) = run_json(&spec, &runs);
    assert_eq!(code, 0, "{err}\n{r:#}");
    assert_eq!(r["report"]["output"]["status"], "success");
    let _ = std::fs::remove_dir_all(&runs);
}
