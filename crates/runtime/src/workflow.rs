//! Workflows: steps that run programs in one sandbox (so they share
//! `/workspace`), in dependency order, independent steps side by side up
//! to the run's parallelism limit. A failed step skips everything that
//! depends on it. When the output step ends, `/workspace/result.json` is
//! the workflow's structured output, stored under the output step's name
//! and under `main` (required for a single-step workflow, checked when
//! present otherwise).

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
use crate::record::{StageReport, now_rfc3339};
use crate::run::Outcome;
use crate::sandboxes;
use crate::stage::StageResult;

/// Where a workflow's structured output is.
pub const RESULT_FILE: &str = "/workspace/result.json";

pub async fn run(ctx: &RunContext, spec: &Spec, wf: &WorkflowSpec) -> Outcome {
    let none = Scope::default();
    if let Some(s) = wf.steps.iter().find(|s| s.mode == StepMode::Service) {
        let e = format!(
            "step {}: service steps are not supported yet (service mode comes with its own issue)",
            s.name
        );
        return Outcome {
            stages: Vec::new(),
            output: None,
            error: Some(e),
        };
    }
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
        ctx.emitter.info(
            "stage.queued",
            &Scope::stage(&s.name),
            format!("step {} queued", s.name),
        );
    }
    let started = match sandboxes::start(&spec.sandbox, &ctx.emitter, &none, &[]).await {
        Ok(s) => s,
        Err(e) => {
            return Outcome {
                stages: Vec::new(),
                output: None,
                error: Some(e.to_string()),
            };
        }
    };
    ctx.emitter.info(
        "box.started",
        &none,
        format!("sandbox up: {}", started.description),
    );
    let sandbox = started.sandbox;
    let mut out = schedule(ctx, wf, &sandbox).await;
    if out.error.is_none() {
        finish_output(ctx, wf, &sandbox, &output_step, &mut out).await;
    }
    if let Err(e) = sandbox.stop().await {
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

/// Runs every step whose dependencies succeeded, at most `limit` at once.
async fn schedule(ctx: &RunContext, wf: &WorkflowSpec, sandbox: &Sandbox) -> Outcome {
    let limit = ctx.policy.max_parallel_microvms_per_run.max(1) as usize;
    let mut state: HashMap<&str, &'static str> = wf
        .steps
        .iter()
        .map(|s| (s.name.as_str(), "queued"))
        .collect();
    let mut stdout: HashMap<String, Vec<u8>> = HashMap::new();
    let mut reports: BTreeMap<usize, StageResult> = BTreeMap::new();
    let mut running = FuturesUnordered::new();
    loop {
        skip_blocked(ctx, wf, &mut state, &mut reports);
        for (i, step) in wf.steps.iter().enumerate() {
            if running.len() >= limit || ctx.cancel.is_cancelled() {
                break;
            }
            let ready = state[step.name.as_str()] == "queued"
                && step
                    .depends_on
                    .iter()
                    .all(|d| state.get(d.as_str()) == Some(&"succeeded"));
            if ready {
                state.insert(step.name.as_str(), "running");
                let stdin = step
                    .run
                    .stdin_from
                    .as_ref()
                    .and_then(|f| stdout.get(f).cloned());
                let capture = wf
                    .steps
                    .iter()
                    .any(|s| s.run.stdin_from.as_deref() == Some(step.name.as_str()));
                running
                    .push(async move { (i, run_step(ctx, sandbox, step, stdin, capture).await) });
            }
        }
        let Some((i, (result, captured))) = running.next().await else {
            break;
        };
        let name = wf.steps[i].name.as_str();
        state.insert(
            name,
            if result.succeeded() {
                "succeeded"
            } else {
                "failed"
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
    Outcome {
        stages,
        output: None,
        error,
    }
}

/// Marks steps whose dependencies failed or were skipped as skipped.
fn skip_blocked<'a>(
    ctx: &RunContext,
    wf: &'a WorkflowSpec,
    state: &mut HashMap<&'a str, &'static str>,
    reports: &mut BTreeMap<usize, StageResult>,
) {
    loop {
        let blocked = wf.steps.iter().enumerate().find(|(_, s)| {
            state[s.name.as_str()] == "queued"
                && (ctx.cancel.is_cancelled()
                    || s.depends_on.iter().any(|d| {
                        matches!(state.get(d.as_str()), Some(&"failed") | Some(&"skipped"))
                    }))
        });
        let Some((i, step)) = blocked else { return };
        state.insert(step.name.as_str(), "skipped");
        let why = if ctx.cancel.is_cancelled() {
            "the run was cancelled".to_string()
        } else {
            "a dependency did not succeed".to_string()
        };
        ctx.emitter.emit(
            Level::Warn,
            "stage.skipped",
            &Scope::stage(&step.name),
            format!("step {} skipped: {why}", step.name),
            None,
        );
        let mut report = StageReport::queued(&step.name);
        report.status = "skipped".into();
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

async fn run_step(
    ctx: &RunContext,
    sandbox: &Sandbox,
    step: &Step,
    stdin: Option<Vec<u8>>,
    capture: bool,
) -> (StageResult, Option<Vec<u8>>) {
    let scope = Scope::stage(&step.name);
    let t0 = Instant::now();
    let mut report = StageReport::queued(&step.name);
    report.attempts = 1;
    report.started_at = Some(now_rfc3339());
    ctx.emitter.info(
        "stage.started",
        &scope,
        format!("step {} started: {}", step.name, step.run.program),
    );
    let mut req = ExecRequest::new(
        std::iter::once(step.run.program.clone()).chain(step.run.args.iter().cloned()),
    );
    req.cwd = Some("/workspace".into());
    let timeout = Duration::from_secs(
        step.timeout_secs
            .unwrap_or(ctx.policy.stage_timeout_secs)
            .min(ctx.policy.stage_timeout_secs),
    );
    req.timeout_ms = Some(timeout.as_millis() as u64);
    let io = Io {
        stdin,
        capture_stdout: capture,
    };
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
    report.duration_ms = t0.elapsed().as_millis() as u64;
    report.finished_at = Some(now_rfc3339());
    let (outcome, captured) = match fin {
        Ok(f) => {
            report.exit_code = f.status.code.or(f.status.signal.map(|s| 128 + s));
            let r = if f.cancelled {
                Err(RunError::Cancelled("the run was cancelled".into()))
            } else if f.status.timed_out {
                Err(RunError::Timeout(timeout.as_secs()))
            } else if !f.status.success() {
                let tail = f
                    .stderr_tail
                    .last()
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default();
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
        Err(e) => (Err(e), None),
    };
    match outcome {
        Ok(()) => {
            report.status = "succeeded".into();
            ctx.emitter.emit(
                Level::Info,
                "stage.completed",
                &scope,
                format!("step {} succeeded", step.name),
                Some(json!({"exit_code": 0})),
            );
        }
        Err(e) => {
            report.status = "failed".into();
            report.error = Some(e.to_string());
            ctx.emitter.emit(
                Level::Error,
                "stage.failed",
                &scope,
                format!("step {} failed: {e}", step.name),
                None,
            );
        }
    }
    (
        StageResult {
            report,
            output: None,
            manifest: Vec::new(),
        },
        captured,
    )
}

/// Reads `result.json` after the output step and publishes it (and its
/// artifacts) under the output step's name and under `main`.
async fn finish_output(
    ctx: &RunContext,
    wf: &WorkflowSpec,
    sandbox: &Sandbox,
    output_step: &str,
    out: &mut Outcome,
) {
    let required = wf.steps.len() == 1;
    let exists = sandbox.client().stat(RESULT_FILE, true).await.is_ok();
    if !exists && !required {
        return;
    }
    let result = async {
        let c = collect::collect(
            sandbox,
            &ctx.run_id,
            output_step,
            RESULT_FILE,
            &ctx.artifacts_dir,
        )
        .await?;
        copy_stage_dir(ctx, output_step, "main")?;
        Ok::<_, RunError>(c)
    }
    .await;
    let Some(idx) = out.stages.iter().position(|s| s.report.name == output_step) else {
        return;
    };
    let stage = &mut out.stages[idx];
    match result {
        Ok(c) => {
            let mut main = c.manifest.clone();
            for m in &mut main {
                m.retrieval_path = m.retrieval_path.replacen(
                    &format!("/stages/{output_step}/"),
                    "/stages/main/",
                    1,
                );
                m.stage = "main".into();
            }
            stage.output = Some(c.output.value.clone());
            stage.report.output = stage.output.clone();
            stage.manifest = c.manifest.into_iter().chain(main).collect();
            out.output = Some(c.output.value);
            ctx.emitter.info(
                "run.output_ready",
                &Scope::stage(output_step),
                format!("structured output from step {output_step}"),
            );
        }
        Err(e) => {
            stage.report.status = "failed".into();
            stage.report.error = Some(e.to_string());
            out.error = Some(format!("step {output_step}: {e}"));
            ctx.emitter.emit(
                Level::Error,
                "stage.failed",
                &Scope::stage(output_step),
                format!("step {output_step}: {e}"),
                None,
            );
        }
    }
}

fn copy_stage_dir(ctx: &RunContext, from: &str, to: &str) -> Result<(), RunError> {
    let (src, dst) = (ctx.artifacts_dir.join(from), ctx.artifacts_dir.join(to));
    let io = |e: std::io::Error| {
        RunError::Internal(format!("copying artifacts to {}: {e}", dst.display()))
    };
    std::fs::create_dir_all(&dst).map_err(io)?;
    for entry in std::fs::read_dir(&src).map_err(io)? {
        let entry = entry.map_err(io)?;
        std::fs::copy(entry.path(), dst.join(entry.file_name())).map_err(io)?;
    }
    Ok(())
}

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
