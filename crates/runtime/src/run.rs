//! A whole run: spec in, record out. Emits the run's lifecycle events
//! around the kind-specific work (one agent stage, a workflow, a
//! pipeline), sums cost and tokens, and settles the terminal status,
//! reason and event.

use std::path::PathBuf;
use std::sync::Arc;

use husk_spec::{Body, Spec};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::context::RunContext;
use crate::events::{Emitter, EventSink, Fanout, Level, MemoryLog, Scope};
use crate::live::LiveRun;
use crate::provision::{HostTools, ToolLocator};
use crate::record::{
    ArtifactPublication, PublicationStatus, Report, RunPolicy, RunRecord, RunStatus, StageReport,
    StageStatus, new_run_id, now_rfc3339,
};
use crate::stage::{AgentStage, StageMode, StageResult};
use crate::telemetry::Telemetry;
use crate::{pipeline, stage, workflow};

/// How to run a spec.
pub struct RunOptions {
    pub run_id: Option<String>,
    /// The spec file, as given (recorded as `file`).
    pub file: String,
    /// Directory the spec's relative paths are resolved against.
    pub spec_dir: PathBuf,
    pub input: Option<Value>,
    /// Artifacts go to `<artifacts_root>/<run id>/<stage>/`.
    pub artifacts_root: PathBuf,
    pub policy: RunPolicy,
    pub tools: Option<Arc<dyn ToolLocator + Send + Sync>>,
    /// The live record to keep current (the daemon serves it while the
    /// run runs); a fresh one when `None`.
    pub live: Option<Arc<LiveRun>>,
    /// Where resource samples go; a fresh store when `None`.
    pub telemetry: Option<Arc<Telemetry>>,
    /// The run's messaging sidecar (the daemon keeps a handle for its
    /// inbox/intents routes); made from the run input when `None` and the
    /// spec enables messaging.
    pub sidecar: Option<husk_sidecar::Sidecar>,
    /// Warm pools: a stage whose sandbox fits one claims a ready sandbox
    /// instead of starting one.
    pub pools: husk_sandbox::pool::Pools,
    /// The backend every sandbox of the run starts on, instead of the one
    /// the spec's `sandbox.mode` selects (tests: `testing::FakeBackend`).
    pub backend: Option<Arc<dyn husk_sandbox::Backend>>,
}

impl RunOptions {
    /// Options with defaults for everything but the spec file and where
    /// artifacts go.
    pub fn new(file: impl Into<String>, spec_dir: PathBuf, artifacts_root: PathBuf) -> Self {
        RunOptions {
            run_id: None,
            file: file.into(),
            spec_dir,
            input: None,
            artifacts_root,
            policy: RunPolicy::default(),
            tools: None,
            live: None,
            telemetry: None,
            sidecar: None,
            pools: Default::default(),
            backend: None,
        }
    }

    /// Options for the spec file at `path`: recorded as given, its
    /// relative paths resolved against the file's (canonical) directory.
    pub fn for_spec_file(path: &std::path::Path, artifacts_root: PathBuf) -> Self {
        let spec_dir = path
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from))
            .unwrap_or_else(|| ".".into());
        RunOptions::new(path.display().to_string(), spec_dir, artifacts_root)
    }

    /// Options for a spec given as text, recorded as `name`: its relative
    /// paths resolve against the current directory.
    pub fn for_spec_text(name: impl Into<String>, artifacts_root: PathBuf) -> Self {
        let here = std::env::current_dir().unwrap_or_else(|_| "/".into());
        RunOptions::new(name, here, artifacts_root)
    }
}

/// What the kinds hand back.
pub struct Outcome {
    pub stages: Vec<StageResult>,
    /// The run's structured output.
    pub output: Option<Value>,
    pub error: Option<String>,
}

/// Runs `spec` to a terminal state. Never panics on a failing stage; the
/// record says what happened.
pub async fn run(
    spec: &Spec,
    opts: RunOptions,
    sink: Arc<dyn EventSink>,
    cancel: CancellationToken,
) -> RunRecord {
    let run_id = opts.run_id.clone().unwrap_or_else(new_run_id);
    let live = opts
        .live
        .clone()
        .unwrap_or_else(|| Arc::new(LiveRun::pending(&run_id, &opts.file, &opts.policy)));
    let attempt_id = live.snapshot().attempt_id;
    let log = Arc::new(MemoryLog::default());
    let emitter = Arc::new(Emitter::new(
        &run_id,
        attempt_id,
        0,
        Arc::new(Fanout(vec![sink, log.clone()])),
    ));
    let started_at = now_rfc3339();
    let none = Scope::default();
    let kind = spec.kind.as_str();
    emitter.emit(
        Level::Info,
        "run.spec.loaded",
        &none,
        format!("spec {} ({kind}) loaded from {}", spec.name, opts.file),
        Some(json!({"name": spec.name, "kind": kind})),
    );
    for w in &spec.warnings {
        emitter.emit(
            Level::Warn,
            "spec.warning",
            &none,
            w.to_string(),
            Some(json!({"path": w.path, "line": w.line, "column": w.column, "message": w.message})),
        );
    }
    let sidecar = match messaging_sidecar(spec, &run_id, opts.input.as_ref(), opts.sidecar.clone())
    {
        Ok(s) => s,
        Err(e) => {
            emitter.emit(Level::Error, "sidecar.failed", &none, e.clone(), None);
            None
        }
    };
    if let Some(sc) = &sidecar {
        live.update(|r| r.sidecar = Some(sc.status()));
    }
    live.set_status(RunStatus::Starting);
    emitter.info("run.started", &none, format!("run {run_id} started"));
    let ctx = RunContext {
        run_id: run_id.clone(),
        emitter: emitter.clone(),
        live: live.clone(),
        telemetry: opts.telemetry.clone().unwrap_or_default(),
        published_bytes: Default::default(),
        sidecar: sidecar.clone(),
        artifacts_dir: opts.artifacts_root.join(&run_id),
        cancel: cancel.clone(),
        policy: opts.policy.clone(),
        spec_dir: opts.spec_dir.clone(),
        input: opts.input.clone(),
        tools: opts.tools.clone().unwrap_or_else(|| Arc::new(HostTools)),
        pools: opts.pools.clone(),
        backend: opts.backend.clone(),
    };
    let outcome = match &spec.body {
        Body::Agent(agent) => {
            let st = AgentStage {
                name: "main",
                box_name: Some(&spec.name),
                prompt: &agent.prompt,
                skills: &agent.skills,
                llm: &spec.llm,
                sandbox: &spec.sandbox,
                output_file: &agent.output_file,
                mode: match agent.mode {
                    husk_spec::AgentMode::Service => StageMode::Service {
                        ready_timeout_secs: agent.ready_timeout_secs,
                    },
                    husk_spec::AgentMode::Task => StageMode::Task {
                        timeout_secs: agent
                            .effective_timeout_secs()
                            .unwrap_or(ctx.policy.stage_timeout_secs),
                    },
                },
                input: ctx.input.as_ref(),
                messaging: agent.messaging.enabled,
            };
            if agent.messaging.enabled && ctx.sidecar.is_none() {
                Outcome {
                    stages: Vec::new(),
                    output: None,
                    error: Some("messaging is enabled but the sidecar could not be set up (see the sidecar.failed event)".into()),
                }
            } else {
                single(stage::run_agent(&ctx, &st).await)
            }
        }
        Body::Workflow(wf) => workflow::run(&ctx, spec, wf).await,
        Body::Pipeline(p) => pipeline::run(&ctx, spec, p).await,
    };
    finish(spec, &ctx, outcome, log, started_at, opts)
}

/// The run's sidecar when its spec enables messaging: `given`, else one
/// whose identity comes from the run input.
pub fn messaging_sidecar(
    spec: &Spec,
    run_id: &str,
    input: Option<&Value>,
    given: Option<husk_sidecar::Sidecar>,
) -> Result<Option<husk_sidecar::Sidecar>, String> {
    let Body::Agent(agent) = &spec.body else {
        return Ok(None);
    };
    if !agent.messaging.enabled {
        return Ok(None);
    }
    if let Some(s) = given {
        return Ok(Some(s));
    }
    let identity = husk_sidecar::Identity::from_input(run_id, input)
        .map_err(|e| format!("messaging identity from the run input: {e}"))?;
    Ok(Some(husk_sidecar::Sidecar::new(identity)))
}

/// The outcome of a one-stage run.
pub fn single(r: StageResult) -> Outcome {
    let error = r.report.error.clone();
    Outcome {
        output: r.output.clone(),
        stages: vec![r],
        error,
    }
}

fn finish(
    spec: &Spec,
    ctx: &RunContext,
    o: Outcome,
    log: Arc<MemoryLog>,
    started_at: String,
    opts: RunOptions,
) -> RunRecord {
    let none = Scope::default();
    let cancelled = ctx.cancel.is_cancelled();
    let ok = o.error.is_none()
        && !cancelled
        && o.stages
            .iter()
            .all(|s| s.report.status != StageStatus::Failed);
    let reports: Vec<StageReport> = o.stages.iter().map(|s| s.report.clone()).collect();
    let total_cost: f64 = reports.iter().map(|r| r.cost_usd).sum();
    let (tin, tout) = reports.iter().fold((0, 0), |(a, b), r| {
        (a + r.input_tokens, b + r.output_tokens)
    });
    let manifest: Vec<_> = o.stages.iter().flat_map(|s| s.manifest.clone()).collect();
    let (status, reason, ty) = if cancelled {
        (RunStatus::Cancelled, "cancelled", "run.cancelled")
    } else if ok {
        (RunStatus::Succeeded, "completed", "run.finished")
    } else {
        (RunStatus::Failed, "failed", "run.failed")
    };
    let error = if ok {
        None
    } else {
        o.error.clone().or_else(|| first_stage_error(&reports))
    };
    let msg = match &error {
        Some(e) => format!("run {}: {e}", status.as_str()),
        None => format!("run {}", status.as_str()),
    };
    let (sidecar, undrained) = close_sidecar(ctx);
    let payload = json!({"status": status, "total_cost_usd": total_cost, "input_tokens": tin, "output_tokens": tout});
    let level = if ok { Level::Info } else { Level::Error };
    let terminal = ctx.emitter.emit(level, ty, &none, msg, Some(payload));
    let finished_at = now_rfc3339();
    let stage_states = reports.iter().map(|r| (r.name.clone(), r.status)).collect();
    let earlier = ctx.live.snapshot().artifact_publication;
    let publication = ArtifactPublication {
        status: if manifest.is_empty() {
            PublicationStatus::NotStarted
        } else {
            PublicationStatus::Published
        },
        published_at: (!manifest.is_empty())
            .then(|| earlier.published_at.unwrap_or_else(|| finished_at.clone())),
        manifest,
    };
    let record = RunRecord {
        id: ctx.run_id.clone(),
        status,
        file: opts.file,
        report: Some(Report {
            name: spec.name.clone(),
            kind: spec.kind.as_str().to_string(),
            success: ok,
            output: o.output.clone(),
            stages: reports,
            total_cost_usd: total_cost,
            input_tokens: tin,
            output_tokens: tout,
        }),
        error,
        events: log.snapshot(),
        attempt_id: ctx.live.snapshot().attempt_id,
        started_at,
        updated_at: finished_at.clone(),
        finished_at: Some(finished_at),
        terminal_reason: Some(reason.to_string()),
        exit_code: Some(if ok { 0 } else { 1 }),
        active_stage_count: 0,
        active_microvm_count: 0,
        policy: ctx.policy.clone(),
        terminal_event_id: Some(terminal.event_id),
        stage_states,
        artifact_publication: publication,
        output_ready: o.output.is_some(),
        sidecar,
        undrained_intents: undrained,
        artifacts_dir: Some(ctx.artifacts_dir.display().to_string()),
    };
    ctx.live.replace(record.clone());
    record
}

/// Closes the run's sidecar; intents nobody drained are reported (an
/// event, and the record), never dropped.
fn close_sidecar(
    ctx: &RunContext,
) -> (
    Option<husk_sidecar::SidecarStatus>,
    Vec<husk_sidecar::StampedIntent>,
) {
    let Some(sc) = &ctx.sidecar else {
        return (None, Vec::new());
    };
    let left = sc.close();
    if !left.is_empty() {
        ctx.emitter.emit(
            Level::Info,
            "sidecar.closed",
            &Scope::default(),
            format!(
                "messaging sidecar closed with {} undrained intents (kept in the run record)",
                left.len()
            ),
            Some(json!({"undrained_intents": left})),
        );
    }
    (Some(sc.status()), left)
}

fn first_stage_error(reports: &[StageReport]) -> Option<String> {
    reports
        .iter()
        .find_map(|r| r.error.as_ref().map(|e| format!("stage {}: {e}", r.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_file_options_resolve_against_the_files_directory() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("s.yaml");
        std::fs::write(&spec, "x").unwrap();
        let o = RunOptions::for_spec_file(&spec, "/runs".into());
        assert_eq!(o.file, spec.display().to_string());
        assert_eq!(o.spec_dir, dir.path().canonicalize().unwrap());
        assert_eq!(o.artifacts_root, PathBuf::from("/runs"));
        let t = RunOptions::for_spec_text("<inline>", "/runs".into());
        assert_eq!(t.file, "<inline>");
        assert_eq!(t.spec_dir, std::env::current_dir().unwrap());
    }
}
