//! End-to-end tests of service mode (contract §4): long-lived agents and
//! workflow steps that publish their output file while they run, through
//! a real `husk serve` (curl over its socket) and `husk run`, in real
//! namespace sandboxes (one micro-VM case), with the scripted test agent.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, have_curl};
use common::{have_bwrap, husk};
use serde_json::{Value, json};

/// A service agent spec run by the test agent with `script` (JSON).
fn service_spec(dir: &Path, name: &str, script: &str, extra: &str) -> PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    let marker = format!("husk-svc-{}-{name}", std::process::id());
    let text = format!(
        "api_version: v1\nkind: agent\nname: {name}\nsandbox:\n  mode: namespace\n  env:\n    SVC_MARKER: {marker}\n    HUSK_TEST_AGENT_SCRIPT: '{script}'\nagent:\n  mode: service\n  output_file: /workspace/output.json\n  prompt: serve\n  skills: [\"agent:husk-test-agent\"]\n{extra}"
    );
    std::fs::write(&p, text).unwrap();
    p
}

/// A step that atomically publishes `summary` (and `notes.md`).
fn publish(summary: &str) -> String {
    format!(
        r#"{{"write": {{"path": "/workspace/notes.md", "content": "{summary}"}}}},
           {{"write": {{"path": "/workspace/.o.tmp", "json": {{"status": "running", "summary": "{summary}", "artifacts": [{{"name": "notes.md"}}]}}}}}},
           {{"shell": "mv /workspace/.o.tmp /workspace/output.json", "expect_ok": true}}"#
    )
}

/// A test-agent script of these steps.
fn steps(parts: &[String]) -> String {
    format!("{{\"steps\": [{}]}}", parts.join(","))
}

fn sleep(ms: u64) -> String {
    format!(r#"{{"sleep_ms": {ms}}}"#)
}

fn start(d: &Daemon, spec: &Path) -> String {
    let (code, v) = d.json("POST", "/v1/runs", Some(&json!({"file": spec}).to_string()));
    assert_eq!(code, 200, "{v}");
    v["run_id"].as_str().unwrap().to_string()
}

/// Waits (bounded: 60 s) until `pred` holds for the run record.
fn wait_for(d: &Daemon, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_within(d, id, what, Duration::from_secs(60), pred)
}

fn wait_within(
    d: &Daemon,
    id: &str,
    what: &str,
    limit: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let t = Instant::now();
    loop {
        let (_, r) = d.json("GET", &format!("/v1/runs/{id}"), None);
        if pred(&r) {
            return r;
        }
        assert!(
            t.elapsed() < limit,
            "run {id}: no {what} after {limit:?}: {r:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn events_of(r: &Value, ty: &str) -> Vec<Value> {
    r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == ty)
        .cloned()
        .collect()
}

#[test]
fn publishes_while_running_republishes_and_cancels_within_grace() {
    if !have_curl() || !have_bwrap() {
        return;
    }
    let d = Daemon::start("svc-main", &[]);
    let spec = service_spec(
        &d.dir,
        "gw",
        &steps(&[
            publish("first"),
            sleep(1500),
            publish("second"),
            sleep(600_000),
        ]),
        "",
    );
    let id = start(&d, &spec);
    let r = wait_for(&d, &id, "first publication", |r| r["output_ready"] == true);
    assert_eq!(r["status"], "running", "{r:#}");
    assert_eq!(r["artifact_publication"]["status"], "published");
    let names: Vec<&str> = r["artifact_publication"]["manifest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["result.json", "notes.md"], "{r:#}");
    let (code, body) = d.output_file(&id, "main");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"summary\":\"first\""), "{body}");
    // Republication: a new event, a new manifest, new bytes.
    let r = wait_for(&d, &id, "republication", |r| {
        events_of(r, "run.output_ready").len() >= 2
    });
    assert_eq!(r["status"], "running");
    let evs = events_of(&r, "run.output_ready");
    assert_eq!(evs[0]["payload"]["publication"], 1);
    assert_eq!(evs[1]["payload"]["publication"], 2);
    assert_eq!(evs[1]["event_type_v2"], "RunOutputReady");
    assert_eq!(evs[1]["attempt_id"], 1);
    let (_, body) = d.output_file(&id, "main");
    assert!(body.contains("\"summary\":\"second\""), "{body}");
    let (code, notes) = d.curl(
        "GET",
        &format!("/v1/runs/{id}/stages/main/artifacts/notes.md"),
        None,
        &[],
    );
    assert_eq!((code, notes.as_str()), (200, "second"));
    // Telemetry: real samples of the running stage.
    let t = Instant::now();
    let tel = loop {
        let (code, tel) = d.json(
            "GET",
            &format!("/v1/runs/{id}/telemetry?from_seq=0&stage_name=main"),
            None,
        );
        assert_eq!(code, 200, "{tel}");
        if tel["samples"].as_array().unwrap().len() >= 2 || t.elapsed() > Duration::from_secs(20) {
            break tel;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let samples = tel["samples"].as_array().unwrap();
    assert!(samples.len() >= 2, "{tel}");
    assert!(samples[0]["memory_bytes"].as_u64().unwrap() > 0, "{tel}");
    assert_eq!(tel["attempt_id"], 1);
    // Cancel: SIGTERM, grace, stopped → cancelled; the publication stays.
    let t = Instant::now();
    let (code, c) = d.json("POST", &format!("/v1/runs/{id}/cancel"), Some("{}"));
    assert_eq!(code, 200, "{c}");
    assert_eq!(c["state"], "cancelled", "{c}");
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "cancel took {:?}",
        t.elapsed()
    );
    let r = d.wait_terminal(&id, Duration::from_secs(5));
    assert_eq!(r["status"], "cancelled");
    assert_eq!(r["output_ready"], true);
    let (code, body) = d.output_file(&id, "main");
    assert_eq!(code, 200);
    assert!(body.contains("second"), "{body}");
    assert!(
        no_process_with(&marker_of(&spec)),
        "the sandbox outlived the run"
    );
}

#[test]
fn clean_exit_succeeds_error_exit_fails_and_never_publishing_times_out() {
    if !have_curl() || !have_bwrap() {
        return;
    }
    let d = Daemon::start("svc-ends", &[]);
    let clean = service_spec(&d.dir, "clean", &steps(&[publish("done")]), "");
    let with_code = steps(&[publish("half")]).replacen('{', "{\"exit_code\": 3, ", 1);
    let error = service_spec(&d.dir, "error", &with_code, "");
    let never = service_spec(
        &d.dir,
        "never",
        &steps(&[sleep(600_000)]),
        "  ready_timeout_secs: 2\n",
    );
    let (a, b, c) = (start(&d, &clean), start(&d, &error), start(&d, &never));
    let ra = d.wait_terminal(&a, Duration::from_secs(60));
    assert_eq!(ra["status"], "succeeded", "{ra:#}");
    assert_eq!(ra["output_ready"], true);
    let done = events_of(&ra, "stage.completed");
    assert!(
        done[0]["message"]
            .as_str()
            .unwrap()
            .contains("service exited cleanly"),
        "{done:?}"
    );
    let rb = d.wait_terminal(&b, Duration::from_secs(60));
    assert_eq!(rb["status"], "failed", "{rb:#}");
    assert!(
        rb["error"]
            .as_str()
            .unwrap()
            .contains("service exited with error (code 3)"),
        "{rb:#}"
    );
    assert_eq!(
        rb["output_ready"], true,
        "the publication before the error stays"
    );
    let rc = d.wait_terminal(&c, Duration::from_secs(60));
    assert_eq!(rc["status"], "failed", "{rc:#}");
    assert!(
        rc["error"]
            .as_str()
            .unwrap()
            .contains("within 2 s (ready_timeout_secs)"),
        "{rc:#}"
    );
    assert_eq!(rc["output_ready"], false);
    // Each stage ended once.
    for r in [&ra, &rb, &rc] {
        let ends = events_of(r, "stage.completed").len() + events_of(r, "stage.failed").len();
        assert_eq!(ends, 1, "{r:#}");
    }
}

/// The `SVC_MARKER` value of a spec written by [`service_spec`].
fn marker_of(spec: &Path) -> String {
    let text = std::fs::read_to_string(spec).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("SVC_MARKER: "))
        .unwrap()
        .to_string()
}

/// Host pids whose environment holds `marker`.
fn pids_with(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ"))
            && env
                .split(|b| *b == 0)
                .any(|kv| kv == format!("SVC_MARKER={marker}").as_bytes())
        {
            out.push(pid);
        }
    }
    out
}

fn no_process_with(marker: &str) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if pids_with(marker).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn a_crashed_sandbox_or_agent_fails_the_service_naming_the_cause() {
    if !have_curl() || !have_bwrap() {
        return;
    }
    let d = Daemon::start("svc-crash", &[]);
    let sandbox = service_spec(&d.dir, "sbx", &steps(&[publish("up"), sleep(600_000)]), "");
    let agent = service_spec(&d.dir, "agt", &steps(&[publish("up"), sleep(600_000)]), "");
    let (a, b) = (start(&d, &sandbox), start(&d, &agent));
    for id in [&a, &b] {
        wait_for(&d, id, "publication", |r| r["output_ready"] == true);
    }
    // Kill the whole launcher tree of run a from the host.
    let pid = *pids_with(&marker_of(&sandbox))
        .first()
        .expect("the agent process");
    let is_launcher = |p: u32| matches!(comm(p).as_str(), "husk-guest" | "bwrap");
    let mut launcher = pid;
    while !is_launcher(launcher) {
        launcher = parent_of(launcher).expect("an ancestor launcher");
    }
    // The outermost one (both launchers fork once inside their namespaces;
    // husk's own runs the guest agent in that child).
    while let Some(p) = parent_of(launcher).filter(|p| is_launcher(*p)) {
        launcher = p;
    }
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &launcher.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let ra = d.wait_terminal(&a, Duration::from_secs(30));
    assert_eq!(ra["status"], "failed", "{ra:#}");
    assert!(
        ra["error"].as_str().unwrap().contains("service crashed"),
        "{ra:#}"
    );
    // Kill only the agent process of run b.
    let agent_pid = pids_with(&marker_of(&agent))
        .into_iter()
        .find(|p| comm(*p).starts_with("husk-test-agen"))
        .expect("the test agent process");
    std::process::Command::new("kill")
        .args(["-KILL", &agent_pid.to_string()])
        .status()
        .unwrap();
    let rb = d.wait_terminal(&b, Duration::from_secs(30));
    assert_eq!(rb["status"], "failed", "{rb:#}");
    assert!(
        rb["error"]
            .as_str()
            .unwrap()
            .contains("service crashed: killed by signal 9"),
        "{rb:#}"
    );
    assert!(no_process_with(&marker_of(&sandbox)));
    assert!(no_process_with(&marker_of(&agent)));
}

#[test]
fn bad_output_files_are_reported_and_the_last_good_publication_stays() {
    if !have_curl() || !have_bwrap() {
        return;
    }
    let d = Daemon::start("svc-bad", &[]);
    let shell = |cmd: &str| format!(r#"{{"shell": "{cmd}", "expect_ok": true}}"#);
    let spec = service_spec(
        &d.dir,
        "bad",
        &steps(&[
            publish("good"),
            sleep(400),
            shell("echo not json > /workspace/output.json"),
            sleep(600),
            shell("rm /workspace/output.json && mkfifo /workspace/output.json"),
            sleep(600),
            shell("rm /workspace/output.json && ln -s /etc/passwd /workspace/output.json"),
            sleep(600),
            shell(
                "rm /workspace/output.json && head -c 5000000 /dev/zero > /workspace/output.json",
            ),
            sleep(600),
            shell("rm /workspace/output.json"),
            sleep(600_000),
        ]),
        "",
    );
    let id = start(&d, &spec);
    let r = wait_for(&d, &id, "five reports", |r| {
        events_of(r, "service.output_invalid").len() >= 5
    });
    assert_eq!(r["status"], "running", "{r:#}");
    let msgs: Vec<String> = events_of(&r, "service.output_invalid")
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    let all = msgs.join("\n");
    for want in [
        "not valid JSON",
        "FIFO",
        "cannot be watched",
        "over the limit of 4194304 bytes",
        "disappeared; publication #1 stays",
    ] {
        assert!(all.contains(want), "no {want:?} in:\n{all}");
    }
    assert_eq!(events_of(&r, "run.output_ready").len(), 1, "{all}");
    let (code, body) = d.output_file(&id, "main");
    assert_eq!(code, 200);
    assert!(body.contains("\"summary\":\"good\""), "{body}");
    let (_, c) = d.json("POST", &format!("/v1/runs/{id}/cancel"), None);
    assert_eq!(c["state"], "cancelled", "{c}");
}

#[test]
fn a_workflow_service_step_unblocks_its_dependents_when_it_publishes() {
    if !have_curl() || !have_bwrap() {
        return;
    }
    let d = Daemon::start("svc-wf", &[]);
    let spec = d.dir.join("wf.yaml");
    std::fs::write(
        &spec,
        r#"api_version: v1
kind: workflow
name: svc-wf
sandbox: {mode: namespace}
workflow:
  output_step: main
  steps:
    - name: server
      mode: service
      output_file: /workspace/server.json
      run:
        program: sh
        args: ["-c", "echo '{\"status\":\"up\",\"summary\":\"listening\"}' > /workspace/.s && mv /workspace/.s /workspace/server.json && exec sleep 600"]
    - name: main
      depends_on: [server]
      run:
        program: sh
        args: ["-c", "cat /workspace/server.json && echo '{\"status\":\"success\",\"summary\":\"used the server\"}' > /workspace/result.json"]
"#,
    )
    .unwrap();
    let id = start(&d, &spec);
    let r = wait_for(&d, &id, "main step done", |r| {
        r["stage_states"]["main"] == "succeeded"
    });
    assert_eq!(
        r["status"], "running",
        "the service keeps the workflow running"
    );
    assert_eq!(r["stage_states"]["server"], "running");
    // The output step is `main` itself: its output is stored once.
    let main_entries: Vec<&Value> = r["artifact_publication"]["manifest"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["stage"] == "main")
        .collect();
    assert_eq!(main_entries.len(), 1, "{r:#}");
    let (code, body) = d.output_file(&id, "main");
    assert_eq!(code, 200);
    assert!(body.contains("used the server"), "{body}");
    let (code, body) = d.output_file(&id, "server");
    assert_eq!(code, 200);
    assert!(body.contains("listening"), "{body}");
    let (_, c) = d.json("POST", &format!("/v1/runs/{id}/cancel"), None);
    assert_eq!(c["state"], "cancelled", "{c}");
}

#[test]
fn husk_run_shows_output_ready_and_ctrl_c_cancels_with_130() {
    if !have_bwrap() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("husk-svc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = service_spec(&dir, "cli", &steps(&[publish("hello"), sleep(600_000)]), "");
    let mut child = husk()
        .args(["run", "--runs-dir"])
        .arg(dir.join("runs"))
        .arg(&spec)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let t = Instant::now();
    let mut seen = String::new();
    while !seen.contains("output ready") {
        let line = rx
            .recv_timeout(Duration::from_secs(60).saturating_sub(t.elapsed()))
            .unwrap_or_else(|_| panic!("no \"output ready\" line: {seen}"));
        seen.push_str(&line);
        seen.push('\n');
    }
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{seen}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("CANCELLED"), "{stdout}");
    assert!(
        stdout.contains("hello"),
        "the publication is kept: {stdout}"
    );
    assert!(no_process_with(&marker_of(&spec)));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_daemon_restart_fails_a_service_run_and_leaves_no_sandbox() {
    if !have_curl() || !have_bwrap() {
        return;
    }
    let mut d = Daemon::start("svc-restart", &[]);
    let spec = service_spec(&d.dir, "rs", &steps(&[publish("up"), sleep(600_000)]), "");
    let id = start(&d, &spec);
    wait_for(&d, &id, "publication", |r| r["output_ready"] == true);
    d.child.kill().unwrap(); // SIGKILL
    d.child.wait().unwrap();
    assert!(
        no_process_with(&marker_of(&spec)),
        "the sandbox outlived its daemon"
    );
    let dir = d.dir.clone();
    std::mem::forget(d);
    let d = Daemon::start_in(dir, &[]);
    let r = d.wait_terminal(&id, Duration::from_secs(5));
    assert_eq!(r["status"], "failed");
    assert_eq!(r["terminal_reason"], "daemon_restarted");
    // What was published before the restart is still served.
    let (code, _) = d.output_file(&id, "main");
    assert_eq!(code, 200);
}

/// Slow: a healthy service outlives three minutes and is not failed by
/// any watchdog (void-box failed every service 120 s after publishing).
#[test]
fn a_service_lives_past_three_minutes() {
    if !have_curl() || !have_bwrap() {
        return;
    }
    let d = Daemon::start("svc-long", &[]);
    let spec = service_spec(
        &d.dir,
        "long",
        &steps(&[publish("up"), sleep(3_600_000)]),
        "",
    );
    let id = start(&d, &spec);
    wait_for(&d, &id, "publication", |r| r["output_ready"] == true);
    std::thread::sleep(Duration::from_secs(190));
    let (_, r) = d.json("GET", &format!("/v1/runs/{id}"), None);
    assert_eq!(r["status"], "running", "{r:#}");
    assert!(events_of(&r, "stage.failed").is_empty(), "{r:#}");
    let (_, c) = d.json("POST", &format!("/v1/runs/{id}/cancel"), None);
    assert_eq!(c["state"], "cancelled");
}

/// The same service in a micro-VM (TCG here): publication, republication,
/// cancel; then a second one whose QEMU is killed from the host.
#[test]
fn a_service_in_a_micro_vm_publishes_is_cancelled_and_crashes_cleanly() {
    if husk_sandbox::host::which("qemu-system-x86_64").is_none() || !have_curl() {
        eprintln!("SKIP: qemu-system-x86_64 or curl is not installed");
        return;
    }
    let d = Daemon::start("svc-vm", &[]);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/service.yaml");
    let text = std::fs::read_to_string(example)
        .unwrap()
        .replace("mode: auto", "mode: microvm");
    let spec = d.dir.join("svc-vm.yaml");
    std::fs::write(&spec, text).unwrap();
    let id = start(&d, &spec);
    let r = wait_for_long(&d, &id, "republication", |r| {
        events_of(r, "run.output_ready").len() >= 2
    });
    assert_eq!(r["status"], "running", "{r:#}");
    assert_eq!(r["active_microvm_count"], 1, "{r:#}");
    let (code, body) = d.output_file(&id, "main");
    assert_eq!(code, 200);
    assert!(body.contains("second pass"), "{body}");
    let (_, c) = d.json("POST", &format!("/v1/runs/{id}/cancel"), None);
    assert_eq!(c["state"], "cancelled", "{c}");
    let r = d.wait_terminal(&id, Duration::from_secs(5));
    assert_eq!(r["active_microvm_count"], 0, "{r:#}");

    // Kill the VM from the host: the service crashed, and says so.
    let id = start(&d, &spec);
    wait_for_long(&d, &id, "publication", |r| r["output_ready"] == true);
    let daemon = d.child.id();
    let qemu = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|p| parent_of(*p) == Some(daemon) && comm(*p).starts_with("qemu"))
        .expect("the daemon's QEMU child");
    std::process::Command::new("kill")
        .args(["-KILL", &qemu.to_string()])
        .status()
        .unwrap();
    let r = d.wait_terminal(&id, Duration::from_secs(30));
    assert_eq!(r["status"], "failed", "{r:#}");
    assert!(
        r["error"].as_str().unwrap().contains("service crashed"),
        "{r:#}"
    );
}

/// [`wait_for`] with room for a micro-VM boot under TCG.
fn wait_for_long(d: &Daemon, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_within(d, id, what, Duration::from_secs(180), pred)
}
