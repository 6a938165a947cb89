//! void-control compatibility (issue: "orchestrator compatibility"): each
//! behaviour an orchestrator written for void-box's v1 API relies on,
//! against a real `husk serve` over its socket (curl), with real namespace
//! sandboxes and the scripted test agent.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::daemon::{Daemon, have_curl};
use common::have_bwrap;
use serde_json::{Value, json};

fn agent_spec(dir: &Path, name: &str, script: &str) -> PathBuf {
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

fn run(d: &Daemon, body: Value) -> Value {
    let (code, v) = d.json("POST", "/v1/runs", Some(&body.to_string()));
    assert_eq!(code, 200, "{v}");
    let id = v["run_id"].as_str().unwrap().to_string();
    d.wait_terminal(&id, Duration::from_secs(60))
}

fn stage_ends(r: &Value, stage: &str) -> usize {
    r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["stage_name"] == stage
                && (e["event_type"] == "stage.completed" || e["event_type"] == "stage.failed")
        })
        .count()
}

#[test]
fn void_control_contract_over_the_socket() {
    if !have_curl() || !have_bwrap() {
        return;
    }
    let d = Daemon::start("compat", &[]);

    // 4. Artifacts without `path` (void-control writes {name, stage, media_type}).
    let vc = agent_spec(
        &d.dir,
        "vc",
        r##"{"steps":[{"write":{"path":"/workspace/report.md","content":"# r"}},{"write":{"path":"/workspace/output.json","json":{"status":"success","artifacts":[{"name":"report.md","stage":"main","media_type":"text/markdown"}]}}}]}"##,
    );
    let r = run(&d, json!({"file": vc}));
    assert_eq!(r["status"], "succeeded", "{r:#}");
    let id = r["id"].as_str().unwrap();
    let (code, body) = d.curl(
        "GET",
        &format!("/v1/runs/{id}/stages/main/artifacts/report.md"),
        None,
        &[],
    );
    assert_eq!((code, body.as_str()), (200, "# r"));
    // 1. Every event carries the run's attempt_id.
    for e in r["events"].as_array().unwrap() {
        assert_eq!(e["attempt_id"], r["attempt_id"], "{e}");
    }
    let (_, evs) = d.json("GET", &format!("/v1/runs/{id}/events"), None);
    assert!(evs.as_array().unwrap().iter().all(|e| e["attempt_id"] == 1));

    // 3. Malformed output: 422 with the bytes kept, one stage end event.
    let bad = agent_spec(
        &d.dir,
        "bad",
        r#"{"steps":[{"write":{"path":"/workspace/output.json","content":"{\"summary\": \"no status\"}"}}]}"#,
    );
    let r = run(&d, json!({"file": bad}));
    assert_eq!(r["status"], "failed", "{r:#}");
    let id = r["id"].as_str().unwrap();
    let (code, e) = d.json(
        "GET",
        &format!("/v1/runs/{id}/stages/main/output-file"),
        None,
    );
    assert_eq!(code, 422, "{e}");
    assert_eq!(e["code"], "STRUCTURED_OUTPUT_MALFORMED");
    assert!(
        e["message"].as_str().unwrap().contains("no `status` key"),
        "{e}"
    );
    assert_eq!(stage_ends(&r, "main"), 1, "{r:#}");
    // ...and a missing one stays 404 STRUCTURED_OUTPUT_MISSING.
    let none = agent_spec(&d.dir, "none", r#"{"steps":[{"text":"nothing"}]}"#);
    let r = run(&d, json!({"file": none}));
    let id = r["id"].as_str().unwrap();
    let (code, e) = d.json(
        "GET",
        &format!("/v1/runs/{id}/stages/main/output-file"),
        None,
    );
    assert_eq!(
        (code, e["code"].as_str()),
        (404, Some("STRUCTURED_OUTPUT_MISSING"))
    );

    // 2 + 5. A workflow whose output step is `main`, carrying an `agent`
    // override as void-control writes it: a warning, not an error; the
    // output stored once, whole.
    let wf = r#"api_version: v1
kind: workflow
name: wf-main
sandbox: {mode: namespace}
agent:
  prompt: candidate override written by the orchestrator
workflow:
  steps:
    - name: main
      run:
        program: sh
        args: ["-c", "printf 'data' > /workspace/a.txt && echo '{\"status\":\"success\",\"summary\":\"wf\",\"artifacts\":[{\"name\":\"a.txt\"}]}' > /workspace/result.json"]
"#;
    let r = run(&d, json!({"spec": wf}));
    assert_eq!(r["status"], "succeeded", "{r:#}");
    let id = r["id"].as_str().unwrap();
    let warned = r["events"].as_array().unwrap().iter().any(|e| {
        e["event_type"] == "spec.warning" && e["message"].as_str().unwrap().contains("`agent`")
    });
    assert!(warned, "{r:#}");
    let manifest = r["artifact_publication"]["manifest"].as_array().unwrap();
    assert_eq!(manifest.len(), 2, "each entry once: {manifest:?}");
    let (code, body) = d.output_file(id, "main");
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["summary"], "wf");
    let (_, a) = d.curl(
        "GET",
        &format!("/v1/runs/{id}/stages/main/artifacts/a.txt"),
        None,
        &[],
    );
    assert_eq!(a, "data");

    // 6. Telemetry: typed errors for bad queries, never a 5xx.
    for (q, want) in [
        ("from_seq=abc", 400),
        ("from_seq=-1", 400),
        ("from_seq=99999999999999999999999", 400),
        ("stage_name=nope", 404),
        ("from_seq=18446744073709551615", 200),
    ] {
        let (code, v) = d.json("GET", &format!("/v1/runs/{id}/telemetry?{q}"), None);
        assert_eq!(code, want, "{q}: {v}");
        if want == 200 {
            assert_eq!(v["samples"], json!([]), "{v}");
            assert_eq!(v["run_id"], id);
        } else {
            assert!(v["code"].is_string(), "{v}");
        }
    }
    let (code, _) = d.json("GET", "/v1/runs/run-nope/telemetry", None);
    assert_eq!(code, 404);
}

/// Hardening: one sparse 10 MiB file listed ten times used to write 200 MB
/// to the host. Per-stage bytes are bounded by the policy, names are
/// unique, and files are kept sparse.
#[test]
fn artifacts_are_bounded_unique_and_sparse() {
    if !have_curl() || !have_bwrap() {
        return;
    }
    let d = Daemon::start("compat-artifacts", &[]);
    let arts: Vec<String> = (0..10)
        .map(|i| format!(r#"{{"name":"a{i}","path":"sparse.bin"}}"#))
        .collect();
    let script = format!(
        r#"{{"steps":[{{"shell":"truncate -s 10M /workspace/sparse.bin","expect_ok":true}},{{"write":{{"path":"/workspace/output.json","json":{{"status":"success","artifacts":[{}]}}}}}}]}}"#,
        arts.join(",")
    );
    let spec = agent_spec(&d.dir, "many", &script);
    let policy =
        json!({"max_artifact_bytes_per_stage": 50 << 20, "max_artifact_bytes_per_run": 50 << 20});
    let r = run(&d, json!({"file": spec, "policy": policy}));
    assert_eq!(r["status"], "failed", "{r:#}");
    let err = r["error"].as_str().unwrap();
    assert!(err.contains("max_artifact_bytes_per_stage"), "{err}");
    // Within the bound: published, and sparse on the host.
    let spec = agent_spec(
        &d.dir,
        "one",
        r#"{"steps":[{"shell":"truncate -s 10M /workspace/sparse.bin","expect_ok":true},{"write":{"path":"/workspace/output.json","json":{"status":"success","artifacts":[{"name":"s","path":"sparse.bin"}]}}}]}"#,
    );
    let r = run(&d, json!({"file": spec}));
    assert_eq!(r["status"], "succeeded", "{r:#}");
    let id = r["id"].as_str().unwrap();
    let f = d.dir.join("data/runs").join(id).join("main/s");
    let meta = std::fs::metadata(&f).unwrap();
    assert_eq!(meta.len(), 10 << 20);
    assert!(
        std::os::unix::fs::MetadataExt::blocks(&meta) * 512 < 1 << 20,
        "not sparse"
    );
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    // Duplicate names are refused.
    let spec = agent_spec(
        &d.dir,
        "dup",
        r#"{"steps":[{"write":{"path":"/workspace/x","content":"1"}},{"write":{"path":"/workspace/output.json","json":{"status":"success","artifacts":[{"name":"x"},{"name":"x"}]}}}]}"#,
    );
    let r = run(&d, json!({"file": spec}));
    assert_eq!(r["status"], "failed");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("names are unique per stage"),
        "{r:#}"
    );
}
