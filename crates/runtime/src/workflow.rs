//! Workflows: steps that run programs in one sandbox (so they share
//! `/workspace`), in dependency order, independent steps side by side up
//! to the run's parallelism limit. A failed step skips everything that
//! depends on it. When the output step ends, `/workspace/result.json` is
//! the workflow's structured output, stored under the output step's name
//! and under `main` (required for a single-step workflow, checked when
//! present otherwise).
//!
//! A service step (`mode: service`) keeps running; its `output_file` is
//! published like an agent service's. Steps that depend on a service step
//! start when it first publishes; the workflow stays `running` until every
//! step has ended (the service exits or the run is cancelled). When the
//! output step is a service, its publications are the workflow's output.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use husk_sandbox::Sandbox;
use husk_sandbox::protocol::ExecRequest;
use husk_spec::{Spec, Step, StepMode, WorkflowSpec};
use serde_json::json;

use crate::agents::NoParser;
use crate::collect;
use crate::context::RunContext;
use crate::error::RunError;
use crate::events::{Level, Scope};
use crate::process::{self, Io};
use crate::record::{StageReport, StageStatus, now_rfc3339};
use crate::run::Outcome;
use crate::sandboxes;
use crate::stage::StageResult;

/// Where a workflow's structured output is.
pub const RESULT_FILE: &str = "/workspace/result.json";

pub async fn run(ctx: &RunContext, spec: &Spec, wf: &WorkflowSpec) -> Outcome {
    let none = Scope::default();
    let output_step = output_step(wf);
    let order: Vec<&str> = wf.steps.iter().map(|s| s.name.as_str()).collect();
    ctx.emitter.emit(
        Level::Info,
        "workflow.planned",
        &none,
        format!("{} steps, output step {output_step}", wf.steps.len()),
        Some(json!({"steps": order, "output_step": output_step})),
    );
    for s in &wf.steps {
        ctx.live.stage_queued(&s.name);
        ctx.emitter.info(
            "stage.queued",
            &Scope::stage(&s.name),
            format!("step {} queued", s.name),
        );
    }
    let started = match sandboxes::start(
        &spec.sandbox,
        ctx.backend.as_ref(),
        &ctx.emitter,
        &none,
        &[],
        None,
        &ctx.pools,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            return Outcome {
                stages: Vec::new(),
                output: None,
                error: Some(e.to_string()),
            };
        }
    };
    ctx.live.sandbox_started(started.microvm);
    ctx.emitter.info(
        "box.started",
        &none,
        format!("sandbox up: {}", started.description),
    );
    let sandbox = started.sandbox;
    // Steps reach out only through the proxy (no model route here).
    let _proxy = match crate::network::proxy(&spec.sandbox.network, None, &ctx.emitter, &none) {
        Ok(p) => crate::network::attach(&sandbox, p).await,
        Err(e) => Err(e),
    };
    if let Err(e) = &_proxy {
        ctx.emitter
            .emit(Level::Warn, "net.unavailable", &none, e.to_string(), None);
    }
    let _sampler = crate::telemetry::start(
        &ctx.telemetry,
        crate::telemetry::Label::RunningSteps(ctx.live.clone()),
        sandbox.host_pid(),
    );
    let mut out = schedule(ctx, wf, &sandbox, &output_step).await;
    let stopped = sandbox.stop().await;
    ctx.live.sandbox_stopped(started.microvm);
    if let Err(e) = stopped {
        ctx.emitter.emit(
            Level::Warn,
            "box.stop_failed",
            &none,
            format!("stopping the sandbox: {e}"),
            None,
        );
    }
    for r in &mut out.stages {
        r.report.sandbox = Some(started.description.clone());
    }
    out
}

/// `output_step`, else the last step nothing depends on.
fn output_step(wf: &WorkflowSpec) -> String {
    if let Some(s) = &wf.output_step {
        return s.clone();
    }
    let needed: std::collections::HashSet<&str> = wf
        .steps
        .iter()
        .flat_map(|s| s.depends_on.iter().map(String::as_str))
        .collect();
    wf.steps
        .iter()
        .rev()
        .find(|s| !needed.contains(s.name.as_str()))
        .or(wf.steps.last())
        .map(|s| s.name.clone())
        .unwrap_or_default()
}

/// Where a step is, for scheduling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StepState {
    Queued,
    Running,
    /// A service step that has published and keeps running: its
    /// dependents may start.
    Published,
    Succeeded,
    Failed,
    Skipped,
}

impl StepState {
    /// Dependents of a step in this state may start.
    fn satisfies(self) -> bool {
        matches!(self, StepState::Succeeded | StepState::Published)
    }
}

/// Runs every step whose dependencies are satisfied, at most `limit` at
/// once. A service step satisfies its dependents once it has published.
async fn schedule(
    ctx: &RunContext,
    wf: &WorkflowSpec,
    sandbox: &Sandbox,
    output_step: &str,
) -> Outcome {
    let limit = ctx.policy.max_parallel_microvms_per_run.max(1) as usize;
    let mut state: HashMap<&str, StepState> = wf
        .steps
        .iter()
        .map(|s| (s.name.as_str(), StepState::Queued))
        .collect();
    let mut stdout: HashMap<String, Vec<u8>> = HashMap::new();
    let mut reports: BTreeMap<usize, StageResult> = BTreeMap::new();
    let mut running = FuturesUnordered::new();
    let (published_tx, mut published_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    loop {
        skip_blocked(ctx, wf, &mut state, &mut reports);
        for (i, step) in wf.steps.iter().enumerate() {
            if running.len() >= limit || ctx.cancel.is_cancelled() {
                break;
            }
            let ready = state[step.name.as_str()] == StepState::Queued
                && step
                    .depends_on
                    .iter()
                    .all(|d| state.get(d.as_str()).is_some_and(|s| s.satisfies()));
            if ready {
                state.insert(step.name.as_str(), StepState::Running);
                let stdin = step
                    .run
                    .stdin_from
                    .as_ref()
                    .and_then(|f| stdout.get(f).cloned());
                let capture = wf
                    .steps
                    .iter()
                    .any(|s| s.run.stdin_from.as_deref() == Some(step.name.as_str()));
                let job = StepJob {
                    step,
                    stdin,
                    capture,
                    output: (step.name == output_step).then_some(OutputRole {
                        required: wf.steps.len() == 1,
                    }),
                    published: published_tx.clone(),
                    index: i,
                };
                running.push(async move { (i, run_step(ctx, sandbox, job).await) });
            }
        }
        let (i, (result, captured)) = tokio::select! {
            next = running.next() => match next {
                Some(done) => done,
                None => break,
            },
            Some(i) = published_rx.recv() => {
                let name = wf.steps[i].name.as_str();
                if state[name] == StepState::Running {
                    state.insert(name, StepState::Published);
                }
                continue;
            }
        };
        let name = wf.steps[i].name.as_str();
        state.insert(
            name,
            if result.succeeded() {
                StepState::Succeeded
            } else {
                StepState::Failed
            },
        );
        if let Some(bytes) = captured {
            stdout.insert(name.to_string(), bytes);
        }
        reports.insert(i, result);
    }
    let stages: Vec<StageResult> = reports.into_values().collect();
    let error = stages.iter().find_map(|s| {
        s.report
            .error
            .as_ref()
            .map(|e| format!("step {}: {e}", s.report.name))
    });
    let output = stages
        .iter()
        .find(|s| s.report.name == output_step)
        .and_then(|s| s.output.clone());
    Outcome {
        stages,
        output,
        error,
    }
}

/// Marks steps whose dependencies failed or were skipped as skipped.
fn skip_blocked<'a>(
    ctx: &RunContext,
    wf: &'a WorkflowSpec,
    state: &mut HashMap<&'a str, StepState>,
    reports: &mut BTreeMap<usize, StageResult>,
) {
    loop {
        let blocked = wf.steps.iter().enumerate().find(|(_, s)| {
            state[s.name.as_str()] == StepState::Queued
                && (ctx.cancel.is_cancelled()
                    || s.depends_on.iter().any(|d| {
                        matches!(
                            state.get(d.as_str()),
                            Some(StepState::Failed | StepState::Skipped)
                        )
                    }))
        });
        let Some((i, step)) = blocked else { return };
        state.insert(step.name.as_str(), StepState::Skipped);
        let why = if ctx.cancel.is_cancelled() {
            "the run was cancelled".to_string()
        } else {
            "a dependency did not succeed".to_string()
        };
        ctx.live.stage_ended(&step.name, StageStatus::Skipped);
        ctx.emitter.emit(
            Level::Warn,
            "stage.skipped",
            &Scope::stage(&step.name),
            format!("step {} skipped: {why}", step.name),
            None,
        );
        let mut report = StageReport::queued(&step.name);
        report.status = StageStatus::Skipped;
        reports.insert(
            i,
            StageResult {
                report,
                output: None,
                manifest: Vec::new(),
            },
        );
    }
}

/// The output step's duty: its `/workspace/result.json` (task) or its
/// publications (service) are the workflow's output, also served as `main`.
#[derive(Debug, Clone, Copy)]
struct OutputRole {
    /// A single-step workflow must leave `result.json`.
    required: bool,
}

/// One step to run.
struct StepJob<'a> {
    step: &'a Step,
    stdin: Option<Vec<u8>>,
    capture: bool,
    output: Option<OutputRole>,
    /// Told this step's index when a service step first publishes.
    published: tokio::sync::mpsc::UnboundedSender<usize>,
    index: usize,
}

async fn run_step(
    ctx: &RunContext,
    sandbox: &Sandbox,
    job: StepJob<'_>,
) -> (StageResult, Option<Vec<u8>>) {
    let step = job.step;
    let scope = Scope::stage(&step.name);
    let t0 = Instant::now();
    let mut res = StageResult {
        report: StageReport::queued(&step.name),
        output: None,
        manifest: Vec::new(),
    };
    res.report.attempts = 1;
    res.report.started_at = Some(now_rfc3339());
    res.report.status = StageStatus::Running;
    ctx.live.stage_running(&step.name);
    ctx.emitter.info(
        "stage.started",
        &scope,
        format!("step {} started: {}", step.name, step.run.program),
    );
    let mut req = ExecRequest::new(
        std::iter::once(step.run.program.clone()).chain(step.run.args.iter().cloned()),
    );
    req.cwd = Some("/workspace".into());
    let io = Io {
        stdin: job.stdin,
        capture_stdout: job.capture,
    };
    let (outcome, captured) = match step.mode {
        StepMode::Service => {
            let notify = || {
                let _ = job.published.send(job.index);
            };
            let watch = crate::service::Watch {
                stage: &step.name,
                output_file: step.output_file.as_deref().unwrap_or(RESULT_FILE),
                ready_timeout: step.ready_timeout_secs.map(Duration::from_secs),
                alias: job.output.map(|_| MAIN),
                on_first_publish: Some(&notify),
            };
            let ended =
                crate::service::supervise(ctx, sandbox, &scope, &req, io, &mut NoParser, &watch)
                    .await;
            if let Some(f) = &ended.finished {
                res.report.exit_code = f.status.code.or(f.status.signal.map(|s| 128 + s));
            }
            res.output = ended.output;
            res.manifest = ended.manifest;
            (ended.outcome, None)
        }
        StepMode::Task => {
            let timeout = Duration::from_secs(
                step.timeout_secs
                    .unwrap_or(ctx.policy.stage_timeout_secs)
                    .min(ctx.policy.stage_timeout_secs),
            );
            req.timeout_ms = Some(timeout.as_millis() as u64);
            let fin = process::run(
                sandbox,
                &req,
                io,
                &mut NoParser,
                &ctx.emitter,
                &scope,
                &ctx.cancel,
                ctx.grace(),
            )
            .await;
            let (r, captured) = task_outcome(step, fin, timeout, job.capture, &mut res.report);
            let r = match (r, job.output) {
                (Ok(()), Some(role)) => collect_output(ctx, sandbox, step, role, &mut res).await,
                (r, _) => r,
            };
            (r, captured)
        }
    };
    res.report.output = res.output.clone();
    res.report.duration_ms = t0.elapsed().as_millis() as u64;
    res.report.finished_at = Some(now_rfc3339());
    match outcome {
        Ok(()) => {
            res.report.status = StageStatus::Succeeded;
            ctx.live.stage_ended(&step.name, res.report.status);
            let how = match step.mode {
                StepMode::Service => "service exited cleanly",
                StepMode::Task => "succeeded",
            };
            ctx.emitter.emit(
                Level::Info,
                "stage.completed",
                &scope,
                format!("step {} {how}", step.name),
                Some(json!({"exit_code": res.report.exit_code})),
            );
        }
        Err(e) => {
            res.report.status = StageStatus::Failed;
            res.report.error = Some(e.to_string());
            ctx.live.stage_ended(&step.name, res.report.status);
            ctx.emitter.emit(
                Level::Error,
                "stage.failed",
                &scope,
                format!("step {} failed: {e}", step.name),
                Some(json!({"error": e.to_string(), "exit_code": res.report.exit_code})),
            );
        }
    }
    (res, captured)
}

/// How a task step's process ended, in the step's terms.
fn task_outcome(
    step: &Step,
    fin: Result<process::Finished, RunError>,
    timeout: Duration,
    capture: bool,
    report: &mut StageReport,
) -> (Result<(), RunError>, Option<Vec<u8>>) {
    let f = match fin {
        Ok(f) => f,
        Err(e) => return (Err(e), None),
    };
    report.exit_code = f.status.code.or(f.status.signal.map(|s| 128 + s));
    let r = if f.cancelled {
        Err(RunError::Cancelled("the run was cancelled".into()))
    } else if f.status.timed_out {
        Err(RunError::Timeout(timeout.as_secs()))
    } else if !f.status.success() {
        let mut tail = f
            .stderr_tail
            .last()
            .map(|l| format!(": {l}"))
            .unwrap_or_default();
        if let Some(cause) = f.status.cause.describe() {
            tail = format!(" ({cause}){tail}");
        }
        Err(RunError::Agent(format!(
            "{} exited with {}{tail}",
            step.run.program,
            report.exit_code.unwrap_or(-1)
        )))
    } else {
        Ok(())
    };
    (r, capture.then_some(f.stdout))
}

/// The output step (task) ended well: its `result.json` is the workflow's
/// output, published under its name and under `main` (once when the step
/// is itself `main`). Absent is fine unless the workflow has one step.
async fn collect_output(
    ctx: &RunContext,
    sandbox: &Sandbox,
    step: &Step,
    role: OutputRole,
    res: &mut StageResult,
) -> Result<(), RunError> {
    let exists = sandbox.client().stat(RESULT_FILE, false).await.is_ok();
    if !exists && !role.required {
        return Ok(());
    }
    let c = collect::collect(ctx, sandbox, &step.name, RESULT_FILE).await?;
    let mut manifest = c.manifest.clone();
    manifest.extend(collect::alias(ctx, &c.manifest, &step.name, MAIN)?);
    for stage in [step.name.as_str(), MAIN] {
        let entries: Vec<_> = manifest
            .iter()
            .filter(|e| e.stage == stage)
            .cloned()
            .collect();
        ctx.live.published(stage, &entries);
    }
    res.output = Some(c.output.value);
    res.manifest = manifest;
    ctx.emitter.info(
        "run.output_ready",
        &Scope::stage(&step.name),
        format!("structured output from step {}", step.name),
    );
    Ok(())
}

/// The stage name a workflow's output is also served under.
const MAIN: &str = "main";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_step_defaults_to_the_last_sink() {
        let wf: WorkflowSpec = test_wf(&[("a", &[]), ("b", &["a"]), ("c", &["a"])], None);
        assert_eq!(output_step(&wf), "c");
        let wf = test_wf(&[("a", &[]), ("b", &["a"])], Some("a"));
        assert_eq!(output_step(&wf), "a");
    }

    fn test_wf(steps: &[(&str, &[&str])], output: Option<&str>) -> WorkflowSpec {
        WorkflowSpec {
            steps: steps
                .iter()
                .map(|(n, deps)| Step {
                    name: n.to_string(),
                    run: husk_spec::RunCmd {
                        program: "true".into(),
                        args: vec![],
                        stdin_from: None,
                    },
                    depends_on: deps.iter().map(|d| d.to_string()).collect(),
                    mode: StepMode::Task,
                    timeout_secs: None,
                    output_file: None,
                    ready_timeout_secs: None,
                })
                .collect(),
            output_step: output.map(str::to_string),
        }
    }
}
