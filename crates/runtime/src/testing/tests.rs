//! Whole runs against the fake backend: scheduling order of a workflow
//! DAG, pipeline fan-out, start retries, timeouts, cancellation (during
//! the agent and during the sandbox's start), tool delivery, and how a
//! service's publications end. Each runs in milliseconds (the timeout test
//! waits out the smallest stage timeout, one second).

use std::sync::Arc;
use std::time::Duration;

use husk_sandbox::protocol::ExecRequest;
use husk_sandbox::{BackendKind, ToolDelivery};
use serde_json::{Value, json};
use tokio::sync::Barrier;
use tokio_util::sync::CancellationToken;

use super::{Exit, FakeBackend, FakeTools, Script, StartFault, Step, env_of, mounted};
use crate::events::MemoryLog;
use crate::provision::TOOL_DIR;
use crate::record::{RunRecord, RunStatus, StageStatus};
use crate::{RunOptions, RunPolicy};

/// Bounds every test: a scheduling bug that deadlocks fails the test
/// instead of hanging the suite. Not a timing assertion.
const LIVENESS: Duration = Duration::from_secs(30);

struct Fixture {
    fake: FakeBackend,
    tools: Arc<FakeTools>,
    dir: tempfile::TempDir,
    log: Arc<MemoryLog>,
    cancel: CancellationToken,
    policy: RunPolicy,
}

impl Fixture {
    fn new(fake: FakeBackend) -> Fixture {
        Fixture {
            fake,
            tools: Arc::new(FakeTools::new().unwrap()),
            dir: tempfile::tempdir().unwrap(),
            log: Arc::new(MemoryLog::default()),
            cancel: CancellationToken::new(),
            policy: RunPolicy::default(),
        }
    }

    async fn run(&self, yaml: &str) -> RunRecord {
        let spec = husk_spec::parse_str(yaml, "test.yaml").unwrap();
        let mut opts = RunOptions::new("test.yaml", self.dir.path().into(), self.dir.path().into());
        opts.backend = Some(self.fake.shared());
        opts.tools = Some(self.tools.clone());
        opts.policy = self.policy.clone();
        let run = crate::run(&spec, opts, self.log.clone(), self.cancel.clone());
        tokio::time::timeout(LIVENESS, run)
            .await
            .expect("the run ended")
    }

    fn types(&self) -> Vec<String> {
        self.log
            .snapshot()
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }

    /// The first event of type `ty` (the test fails without one).
    fn first(&self, ty: &str) -> crate::events::Event {
        self.log
            .snapshot()
            .into_iter()
            .find(|e| e.event_type == ty)
            .unwrap_or_else(|| panic!("no {ty} event in {:?}", self.types()))
    }

    fn count(&self, ty: &str) -> usize {
        self.types().iter().filter(|t| *t == ty).count()
    }
}

fn ok(summary: &str) -> Value {
    json!({"status": "success", "summary": summary})
}

/// The script named by the sandbox's `FAKE` variable.
fn by_env(pick: impl Fn(&str, &ExecRequest) -> Script + Send + Sync + 'static) -> FakeBackend {
    FakeBackend::new(move |req| pick(env_of(&req.env, "FAKE").unwrap_or(""), req))
}

fn agent_spec(fake: &str, extra_agent: &str) -> String {
    format!(
        "api_version: v1\nkind: agent\nname: t\nsandbox:\n  env:\n    FAKE: {fake}\n\
         agent:\n  prompt: go\n  skills: [\"agent:fake-agent\"]\n{extra_agent}"
    )
}

fn stage<'a>(r: &'a RunRecord, name: &str) -> &'a crate::record::StageReport {
    let rep = r.report.as_ref().expect("a report");
    rep.stages
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no stage {name} in {:?}", rep.stages))
}

#[tokio::test]
async fn an_agent_task_runs_and_its_output_is_collected() {
    let f = Fixture::new(by_env(|_, _| {
        Script::exit(0)
            .stdout("working")
            .write_json("/workspace/output.json", &ok("done"))
    }));
    let r = f.run(&agent_spec("ok", "")).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.error);
    assert_eq!(r.report.as_ref().unwrap().output, Some(ok("done")));
    let execs = f.fake.execs();
    assert_eq!(execs.len(), 1);
    assert_eq!(execs[0].argv[0], format!("{TOOL_DIR}/fake-agent"));
    assert!(execs[0].argv.iter().any(|a| a.contains("go")), "{execs:?}");
    assert!(f.fake.sandboxes()[0].is_stopped());
    assert_eq!(f.count("agent.output"), 0, "{:?}", f.types());
}

#[tokio::test]
async fn tools_are_mounted_or_copied_as_the_backend_says() {
    let script = |_: &str, _: &ExecRequest| {
        Script::exit(0).write_json("/workspace/output.json", &ok("done"))
    };
    let guest_path = format!("{TOOL_DIR}/fake-agent");

    let mounting = Fixture::new(by_env(script));
    let r = mounting.run(&agent_spec("ok", "")).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.error);
    let sb = &mounting.fake.sandboxes()[0];
    assert!(mounted(&sb.config, &guest_path));
    assert_eq!(sb.file(&guest_path), None);

    let copying = Fixture::new(by_env(script).with_kind(BackendKind::Microvm, ToolDelivery::Copy));
    let r = copying.run(&agent_spec("ok", "")).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.error);
    let sb = &copying.fake.sandboxes()[0];
    assert!(!mounted(&sb.config, &guest_path));
    assert_eq!(sb.file(&guest_path).as_deref(), Some(&b"#!fake\n"[..]));
    let started = copying.first("box.started");
    assert!(started.message.contains("microvm (given by the caller)"));
}

#[tokio::test]
async fn workflow_steps_run_in_dependency_order_and_siblings_side_by_side() {
    let meet = Arc::new(Barrier::new(2));
    let fake = FakeBackend::new(move |req| {
        let step = req.argv[1].clone();
        let script = Script::exit(0).stdout(&format!("{step} ran"));
        match step.as_str() {
            "b" | "c" => script.then(Step::Meet(meet.clone())),
            "d" => script.write_json("/workspace/result.json", &ok("all done")),
            _ => script,
        }
    });
    let f = Fixture::new(fake);
    let yaml = r#"
api_version: v1
kind: workflow
name: dag
workflow:
  steps:
    - {name: d, depends_on: [b, c], run: {program: step, args: [d]}}
    - {name: b, depends_on: [a], run: {program: step, args: [b]}}
    - {name: a, run: {program: step, args: [a]}}
    - {name: c, depends_on: [a], run: {program: step, args: [c]}}
  output_step: d
"#;
    let r = f.run(yaml).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.error);
    let order: Vec<String> = f.fake.execs().iter().map(|e| e.argv[1].clone()).collect();
    assert_eq!(order.len(), 4, "{order:?}");
    assert_eq!(order[0], "a");
    assert_eq!(order[3], "d");
    // One sandbox for every step.
    assert_eq!(f.fake.start_attempts(), 1);
    assert_eq!(r.report.as_ref().unwrap().output, Some(ok("all done")));
}

#[tokio::test]
async fn a_failed_workflow_step_skips_what_depends_on_it() {
    let fake = FakeBackend::new(|req| match req.argv[1].as_str() {
        "a" => Script::exit(3).stderr("a broke"),
        _ => Script::exit(0),
    });
    let f = Fixture::new(fake);
    let yaml = r#"
api_version: v1
kind: workflow
name: dag
workflow:
  steps:
    - {name: a, run: {program: step, args: [a]}}
    - {name: b, depends_on: [a], run: {program: step, args: [b]}}
  output_step: b
"#;
    let r = f.run(yaml).await;
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(f.fake.execs().len(), 1, "b must not run");
    assert_eq!(stage(&r, "a").status, StageStatus::Failed);
    assert_ne!(stage(&r, "b").status, StageStatus::Succeeded);
}

#[tokio::test]
async fn a_pipeline_fans_out_and_joins_the_outputs() {
    let meet = Arc::new(Barrier::new(2));
    let f = Fixture::new(by_env(move |name, _| {
        let script = Script::exit(0);
        let script = if name == "review" || name == "summarize" {
            script.then(Step::Meet(meet.clone()))
        } else {
            script
        };
        script.write_json("/workspace/output.json", &ok(&format!("{name} done")))
    }));
    let boxes: String = ["research", "review", "summarize", "publish"]
        .iter()
        .map(|b| {
            let extra = match *b {
                "review" => "      outputs: [notes]\n",
                "summarize" => "      outputs: [summary]\n",
                "publish" => "      inputs: [notes, summary]\n",
                _ => "",
            };
            format!(
                "    - name: {b}\n      prompt: go\n      skills: [\"agent:fake-agent\"]\n{extra}\
                 \x20     sandbox:\n        env:\n          FAKE: {b}\n"
            )
        })
        .collect();
    let yaml = format!(
        "api_version: v1\nkind: pipeline\nname: p\npipeline:\n  boxes:\n{boxes}  stages:\n\
         \x20   - {{type: box, name: research}}\n\
         \x20   - {{type: fan_out, boxes: [review, summarize]}}\n\
         \x20   - {{type: box, name: publish}}\n"
    );
    let r = f.run(&yaml).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.error);
    let order: Vec<String> = f
        .fake
        .execs()
        .iter()
        .map(|e| e.env("FAKE").unwrap().to_string())
        .collect();
    assert_eq!(order.first().map(String::as_str), Some("research"));
    assert_eq!(order.last().map(String::as_str), Some("publish"));
    let sandboxes = f.fake.sandboxes();
    assert_eq!(sandboxes.len(), 4, "one sandbox per box");
    let input_of = |name: &str| -> Value {
        let sb = sandboxes
            .iter()
            .find(|s| env_of(&s.config.env, "FAKE") == Some(name))
            .unwrap();
        serde_json::from_slice(&sb.file("/workspace/input.json").unwrap()).unwrap()
    };
    assert_eq!(input_of("review")["summary"], "research done");
    let joined = input_of("publish").to_string();
    assert!(joined.contains("review done"), "{joined}");
    assert!(joined.contains("summarize done"), "{joined}");
}

#[tokio::test]
async fn a_sandbox_that_fails_to_boot_is_retried_and_a_bad_config_is_not() {
    let script = |_: &str, _: &ExecRequest| {
        Script::exit(0).write_json("/workspace/output.json", &ok("done"))
    };
    let f = Fixture::new(by_env(script));
    f.fake.fail_starts([StartFault::Boot("no boot".into())]);
    let r = f.run(&agent_spec("ok", "")).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.error);
    assert_eq!(stage(&r, "main").attempts, 2);
    assert_eq!(f.count("stage.retrying"), 1);
    assert_eq!(f.fake.start_attempts(), 2);

    let f = Fixture::new(by_env(script));
    f.fake
        .fail_starts([StartFault::Config("memory_mb too small".into())]);
    let r = f.run(&agent_spec("ok", "")).await;
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(stage(&r, "main").attempts, 1);
    assert_eq!(f.fake.start_attempts(), 1);
    assert!(
        r.error.as_deref().unwrap().contains("memory_mb too small"),
        "{:?}",
        r.error
    );
}

#[tokio::test]
async fn retries_stop_at_the_policy_limit() {
    let mut f = Fixture::new(by_env(|_, _| Script::exit(0)));
    f.policy.max_stage_retries = 1;
    f.fake.fail_starts([
        StartFault::Boot("first".into()),
        StartFault::Boot("second".into()),
    ]);
    let r = f.run(&agent_spec("ok", "")).await;
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(f.fake.start_attempts(), 2);
    assert!(
        r.error.as_deref().unwrap().contains("second"),
        "{:?}",
        r.error
    );
}

#[tokio::test]
async fn a_stage_past_its_timeout_fails_as_timed_out() {
    let f = Fixture::new(by_env(|_, _| Script::exit(0).ending(Exit::Hang)));
    let r = f.run(&agent_spec("hang", "  timeout_secs: 1\n")).await;
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(f.fake.execs()[0].timeout_ms, Some(1000));
    let err = stage(&r, "main").error.clone().unwrap();
    assert!(
        err.contains("timed out") || err.contains("timeout"),
        "{err}"
    );
}

#[tokio::test]
async fn cancelling_a_running_agent_ends_the_run_cancelled() {
    let f = Arc::new(Fixture::new(by_env(|_, _| {
        Script::exit(0).stdout("up").ending(Exit::Hang)
    })));
    let runner = {
        let f = f.clone();
        tokio::spawn(async move { f.run(&agent_spec("hang", "")).await })
    };
    while f.fake.execs().is_empty() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    f.cancel.cancel();
    let r = runner.await.unwrap();
    assert_eq!(r.status, RunStatus::Cancelled);
    assert_eq!(r.terminal_reason.as_deref(), Some("cancelled"));
    assert_eq!(f.count("run.cancelled"), 1);
    // SIGTERM (15) ended it: 128 + 15.
    assert_eq!(stage(&r, "main").exit_code, Some(143));
    assert!(f.fake.sandboxes()[0].is_stopped());
}

#[tokio::test]
async fn cancelling_during_the_sandbox_start_runs_no_agent() {
    let f = Arc::new(Fixture::new(by_env(|_, _| Script::exit(0))));
    f.fake.set_start_delay(Duration::from_millis(50));
    let runner = {
        let f = f.clone();
        tokio::spawn(async move { f.run(&agent_spec("ok", "")).await })
    };
    while f.fake.start_attempts() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    f.cancel.cancel();
    let r = runner.await.unwrap();
    assert_eq!(r.status, RunStatus::Cancelled);
    assert!(f.fake.execs().is_empty(), "{:?}", f.fake.execs());
    assert!(f.fake.sandboxes()[0].is_stopped());
    assert_eq!(f.count("box.started"), 0);
}

#[tokio::test]
async fn cancelling_during_a_workflows_sandbox_start_runs_no_step() {
    let f = Arc::new(Fixture::new(FakeBackend::new(|_| Script::exit(0))));
    f.fake.set_start_delay(Duration::from_millis(50));
    let yaml = r#"
api_version: v1
kind: workflow
name: wf
workflow:
  steps:
    - {name: a, run: {program: step, args: [a]}}
    - {name: b, depends_on: [a], run: {program: step, args: [b]}}
  output_step: b
"#;
    let runner = {
        let f = f.clone();
        tokio::spawn(async move { f.run(yaml).await })
    };
    while f.fake.start_attempts() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    f.cancel.cancel();
    let r = runner.await.unwrap();
    assert_eq!(r.status, RunStatus::Cancelled, "{:?}", r.error);
    assert!(f.fake.execs().is_empty(), "{:?}", f.fake.execs());
    assert!(f.fake.sandboxes()[0].is_stopped());
    for step in ["a", "b"] {
        assert_eq!(stage(&r, step).status, StageStatus::Skipped);
    }
}

#[tokio::test]
async fn a_service_publishes_each_version_and_its_last_one_is_the_output() {
    const OUT: &str = "/workspace/output.json";
    let f = Fixture::new(by_env(|_, _| {
        Script::exit(0)
            .write_json(OUT, &json!({"status": "running", "summary": "first"}))
            .then(Step::AwaitPickedUp(OUT.into()))
            .write_json(OUT, &json!({"status": "running", "summary": "second"}))
            .then(Step::AwaitPickedUp(OUT.into()))
    }));
    let r = f
        .run(&agent_spec(
            "svc",
            "  mode: service\n  output_file: /workspace/output.json\n",
        ))
        .await;
    assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.error);
    assert_eq!(f.count("run.output_ready"), 2, "{:?}", f.types());
    let out = r.report.as_ref().unwrap().output.clone().unwrap();
    assert_eq!(out["summary"], "second");
    assert!(r.output_ready);
    let completed = f.first("stage.completed");
    assert!(completed.message.contains("service exited cleanly"));
}

#[tokio::test]
async fn a_service_whose_sandbox_dies_fails_and_keeps_its_last_publication() {
    const OUT: &str = "/workspace/output.json";
    let f = Fixture::new(by_env(|_, _| {
        Script::exit(0)
            .write_json(OUT, &json!({"status": "running", "summary": "only"}))
            .then(Step::AwaitPickedUp(OUT.into()))
            .ending(Exit::Crash)
    }));
    let r = f
        .run(&agent_spec(
            "svc",
            "  mode: service\n  output_file: /workspace/output.json\n",
        ))
        .await;
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(f.count("run.output_ready"), 1);
    assert_eq!(
        r.report.as_ref().unwrap().output.as_ref().unwrap()["summary"],
        "only"
    );
    let err = stage(&r, "main").error.clone().unwrap();
    assert!(err.contains("crash") || err.contains("closed"), "{err}");
}

#[tokio::test]
async fn a_failing_agent_fails_the_stage_with_its_own_words() {
    let f = Fixture::new(by_env(|_, _| Script::exit(2).stderr("no such model")));
    let r = f.run(&agent_spec("bad", "")).await;
    assert_eq!(r.status, RunStatus::Failed);
    let err = stage(&r, "main").error.clone().unwrap();
    assert!(err.contains("exited with code 2"), "{err}");
    assert!(err.contains("no such model"), "{err}");
}

#[tokio::test]
async fn an_unusable_snapshot_is_said_in_the_run_events() {
    let f = Fixture::new(by_env(|_, _| {
        Script::exit(0).write_json("/workspace/output.json", &ok("done"))
    }));
    f.fake.set_boot(husk_sandbox::BootPath::ColdFallback {
        reason: "snapshot truncated".into(),
    });
    let r = f.run(&agent_spec("ok", "")).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.error);
    let warn = f.first("sandbox.snapshot_unusable");
    assert!(
        warn.message.contains("snapshot truncated"),
        "{}",
        warn.message
    );
    let started = f.first("box.started");
    assert!(
        started.message.contains("booted cold"),
        "{}",
        started.message
    );

    let f = Fixture::new(by_env(|_, _| {
        Script::exit(0).write_json("/workspace/output.json", &ok("done"))
    }));
    f.fake.set_boot(husk_sandbox::BootPath::Restored {
        snapshot: "/snap".into(),
    });
    f.run(&agent_spec("ok", "")).await;
    assert_eq!(f.count("sandbox.snapshot_unusable"), 0);
    let started = f.first("box.started");
    assert!(started.message.contains("restored"), "{}", started.message);
}
