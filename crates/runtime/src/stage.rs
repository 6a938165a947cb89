//! One agent stage: a fresh sandbox, skills and input provisioned, the
//! agent launched with its prompt, its output turned into events. In task
//! mode the timeout is enforced, then the structured output checked and the
//! artifacts copied out; in service mode ([`crate::service`]) the output
//! file is published whenever it changes while the agent keeps running.
//! The sandbox is stopped whatever happens.

use std::time::{Duration, Instant};

use husk_sandbox::Sandbox;
use husk_sandbox::protocol::ExecRequest;
use husk_spec::{LlmSpec, SandboxSpec, Skill};
use serde_json::{Value, json};

use crate::agents::{AgentEvent, AgentKind, LaunchContext};
use crate::collect;
use crate::context::RunContext;
use crate::error::RunError;
use crate::events::{Level, Scope};
use crate::provision::{self, AgentChoice, CODEX_CONFIG, HOME, Provision, TOOL_DIR, WORKSPACE};
use crate::record::{ArtifactEntry, StageReport, StageStatus, now_rfc3339};
use crate::{process, sandboxes};

/// What an agent stage runs.
pub struct AgentStage<'a> {
    pub name: &'a str,
    pub box_name: Option<&'a str>,
    pub prompt: &'a str,
    pub skills: &'a [Skill],
    pub llm: &'a LlmSpec,
    pub sandbox: &'a SandboxSpec,
    pub output_file: &'a str,
    pub mode: StageMode,
    /// The stage's input (the run input, or a previous stage's output).
    pub input: Option<&'a Value>,
    /// The agent talks to the run's messaging sidecar.
    pub messaging: bool,
}

/// A stage's way out: where its model key lives, and its proxy.
struct Net {
    plan: crate::network::ModelPlan,
    proxy: husk_netproxy::Proxy,
}

/// Task or service, with what bounds each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageMode {
    /// Runs to completion within `timeout_secs`.
    Task { timeout_secs: u64 },
    /// Long-lived; optionally fails if nothing is published in time.
    Service { ready_timeout_secs: Option<u64> },
}

/// How a stage ended.
#[derive(Debug)]
pub struct StageResult {
    pub report: StageReport,
    pub output: Option<Value>,
    pub manifest: Vec<ArtifactEntry>,
}

impl StageResult {
    pub fn succeeded(&self) -> bool {
        self.report.status == StageStatus::Succeeded
    }
}

/// Runs an agent stage to its end; failures are in the report, never lost.
pub async fn run_agent(ctx: &RunContext, st: &AgentStage<'_>) -> StageResult {
    let scope = Scope {
        stage: Some(st.name.to_string()),
        box_name: st.box_name.map(str::to_string),
    };
    let t0 = Instant::now();
    let mut report = StageReport::queued(st.name);
    report.box_name = st.box_name.map(str::to_string);
    report.attempts = 1;
    report.started_at = Some(now_rfc3339());
    report.status = StageStatus::Running;
    ctx.live.stage_running(st.name);
    ctx.emitter.info(
        "stage.started",
        &scope,
        format!("stage {} started", st.name),
    );
    let mut result = StageResult {
        report,
        output: None,
        manifest: Vec::new(),
    };
    let mut outcome = attempt(ctx, st, &scope, &mut result).await;
    // A sandbox that failed to start is retried (policy.max_stage_retries);
    // what the agent itself did is never retried.
    while let Err(RunError::SandboxStart(e)) = &outcome {
        if result.report.attempts > ctx.policy.max_stage_retries || ctx.cancel.is_cancelled() {
            break;
        }
        let msg = format!(
            "sandbox failed to start ({e}); attempt {} of {}",
            result.report.attempts + 1,
            ctx.policy.max_stage_retries + 1
        );
        ctx.emitter
            .emit(Level::Warn, "stage.retrying", &scope, msg, None);
        tokio::time::sleep(Duration::from_millis(
            500 * u64::from(result.report.attempts),
        ))
        .await;
        result.report.attempts += 1;
        outcome = attempt(ctx, st, &scope, &mut result).await;
    }
    let r = &mut result.report;
    r.duration_ms = t0.elapsed().as_millis() as u64;
    r.finished_at = Some(now_rfc3339());
    match outcome {
        Ok(()) => {
            r.status = StageStatus::Succeeded;
            ctx.live.stage_ended(st.name, r.status);
            let how = match st.mode {
                StageMode::Service { .. } => "service exited cleanly",
                StageMode::Task { .. } => "succeeded",
            };
            let msg = format!(
                "stage {} {how} after {:.1} s",
                st.name,
                t0.elapsed().as_secs_f64()
            );
            ctx.emitter.emit(
                Level::Info,
                "stage.completed",
                &scope,
                msg,
                Some(json!({"exit_code": r.exit_code})),
            );
        }
        Err(e) => {
            r.status = StageStatus::Failed;
            r.error = Some(e.to_string());
            ctx.live.stage_ended(st.name, r.status);
            let msg = format!("stage {} failed: {e}", st.name);
            ctx.emitter.emit(
                Level::Error,
                "stage.failed",
                &scope,
                msg,
                Some(json!({"error": e.to_string()})),
            );
        }
    }
    result
}

async fn attempt(
    ctx: &RunContext,
    st: &AgentStage<'_>,
    scope: &Scope,
    res: &mut StageResult,
) -> Result<(), RunError> {
    let messaging = st.messaging && ctx.sidecar.is_some();
    let prov = provision::plan_with(
        st.skills,
        &ctx.spec_dir,
        st.input,
        ctx.tools.as_ref(),
        messaging,
    )?;
    let agent = choose_agent(&prov, st.llm, ctx)?;
    let credential = credential(&agent, st.llm)?;
    let plan = crate::network::model_plan(&agent, st.llm, credential, &|n| std::env::var(n).ok())?;
    crate::preflight::network_needed(&agent, &st.sandbox.network, plan.upstream.as_deref())?;
    crate::preflight::endpoint_reachable(st.llm.base_url.as_deref()).await?;
    let proxy =
        crate::network::proxy(&st.sandbox.network, plan.route.clone(), &ctx.emitter, scope)?;
    let tools = host_tools(&prov, &agent);
    let started = sandboxes::start(
        st.sandbox,
        ctx.backend.as_ref(),
        &ctx.emitter,
        scope,
        &tools,
        plan.secret.as_deref(),
        &ctx.pools,
    )
    .await
    .map_err(|e| match e {
        RunError::Sandbox(e) if transient(&e) => RunError::SandboxStart(e),
        other => other,
    })?;
    if ctx.cancel.is_cancelled() {
        // Cancelled while the sandbox started: nothing of the agent runs.
        let _ = started.sandbox.stop().await;
        return Err(RunError::Cancelled(
            "the run was cancelled while its sandbox started".into(),
        ));
    }
    res.report.sandbox = Some(started.description.clone());
    ctx.live.sandbox_started(started.microvm);
    let _sampler = crate::telemetry::start(
        &ctx.telemetry,
        crate::telemetry::Label::Stage(st.name.to_string()),
        started.sandbox.host_pid(),
    );
    ctx.emitter.emit(
        Level::Info,
        "box.started",
        scope,
        format!("sandbox up: {}", started.description),
        Some(json!({"backend": started.description, "info": format!("{:?}", started.sandbox.info())})),
    );
    let copy = if started.tools_mounted {
        Vec::new()
    } else {
        tools
    };
    let sandbox = started.sandbox;
    let net = Net { plan, proxy };
    let outcome = in_sandbox(ctx, st, scope, res, &sandbox, &prov, &agent, net, &copy).await;
    let stopped = sandbox.stop().await;
    ctx.live.sandbox_stopped(started.microvm);
    if let Err(e) = stopped {
        ctx.emitter.emit(
            Level::Warn,
            "box.stop_failed",
            scope,
            format!("stopping the sandbox: {e}"),
            None,
        );
    }
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn in_sandbox(
    ctx: &RunContext,
    st: &AgentStage<'_>,
    scope: &Scope,
    res: &mut StageResult,
    sandbox: &Sandbox,
    prov: &Provision,
    agent: &AgentChoice,
    net: Net,
    copy: &[sandboxes::HostTool<'_>],
) -> Result<(), RunError> {
    let base_url = net.plan.agent_base_url.as_deref();
    provision_into(ctx, scope, sandbox, prov, agent, st.llm, base_url, copy).await?;
    let _proxy = crate::network::attach(sandbox, net.proxy).await?;
    ctx.emitter.info(
        "net.policy",
        scope,
        crate::network::describe(&st.sandbox.network, &net.plan),
    );
    let _sidecar = match (&ctx.sidecar, st.messaging) {
        (Some(sc), true) => Some(crate::messaging::attach(sandbox, sc).await?),
        _ => None,
    };
    let lctx = LaunchContext {
        program: if agent.host_path.is_some() {
            format!("{TOOL_DIR}/{}", agent.program)
        } else {
            agent.program.clone()
        },
        prompt: crate::prompt::compose(
            st.prompt,
            st.input,
            st.output_file,
            matches!(st.mode, StageMode::Service { .. }),
        ),
        model: st.llm.model.clone(),
        mcp_config: (!prov.mcp_servers.is_empty()).then(|| provision::MCP_JSON.to_string()),
        base_url: net.plan.agent_base_url.clone(),
        credential: net.plan.agent_credential.clone(),
        workdir: WORKSPACE.into(),
        home: HOME.into(),
    };
    let plan = agent.kind.plan(&lctx);
    let io = || process::Io {
        stdin: plan.stdin.clone(),
        capture_stdout: false,
    };
    let mut req = ExecRequest::new(plan.argv.clone());
    req.env = plan.env.clone();
    req.env.push((
        "PATH".into(),
        format!(
            "{TOOL_DIR}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/husk/bin"
        ),
    ));
    req.cwd = Some(WORKSPACE.into());
    if _sidecar.is_some() {
        req.env.extend(crate::messaging::env());
    }
    let mut parser = agent.kind.parser();
    let timeout_secs = match st.mode {
        StageMode::Task { timeout_secs } => timeout_secs,
        StageMode::Service { ready_timeout_secs } => {
            return run_service(
                ctx,
                st,
                scope,
                res,
                sandbox,
                (&req, io()),
                parser.as_mut(),
                ready_timeout_secs,
            )
            .await;
        }
    };
    let timeout = Duration::from_secs(timeout_secs.min(ctx.policy.stage_timeout_secs));
    req.timeout_ms = Some(timeout.as_millis() as u64);
    let fin = process::run(
        sandbox,
        &req,
        io(),
        parser.as_mut(),
        &ctx.emitter,
        scope,
        &ctx.cancel,
        ctx.grace(),
    )
    .await?;
    record_finish(&mut res.report, &fin);
    if fin.cancelled {
        return Err(RunError::Cancelled("the run was cancelled".into()));
    }
    if fin.status.timed_out {
        return Err(RunError::Timeout(timeout.as_secs()));
    }
    check_exit(&fin)?;
    let collected = collect::collect(ctx, sandbox, st.name, st.output_file).await?;
    res.output = Some(collected.output.value.clone());
    res.report.output = res.output.clone();
    res.manifest = collected.manifest;
    ctx.live.published(st.name, &res.manifest);
    if collected.output.reports_failure() {
        let why = collected
            .output
            .summary()
            .unwrap_or("no summary")
            .to_string();
        return Err(RunError::Agent(format!(
            "the agent reported status {:?}: {why}",
            collected.output.status
        )));
    }
    Ok(())
}

/// The exit code and the agent's reported cost and tokens, into the report.
fn record_finish(report: &mut StageReport, fin: &process::Finished) {
    report.exit_code = fin.status.code.or(fin.status.signal.map(|s| 128 + s));
    if let Some(AgentEvent::Result {
        cost_usd,
        input_tokens,
        output_tokens,
        ..
    }) = &fin.result
    {
        report.cost_usd = *cost_usd;
        report.input_tokens = *input_tokens;
        report.output_tokens = *output_tokens;
    }
}

/// A service stage: supervised until it exits, crashes or is cancelled;
/// its last publication is the stage's output.
#[allow(clippy::too_many_arguments)]
async fn run_service(
    ctx: &RunContext,
    st: &AgentStage<'_>,
    scope: &Scope,
    res: &mut StageResult,
    sandbox: &Sandbox,
    (req, io): (&ExecRequest, process::Io),
    parser: &mut dyn crate::agents::StreamParser,
    ready_timeout_secs: Option<u64>,
) -> Result<(), RunError> {
    let watch = crate::service::Watch {
        stage: st.name,
        output_file: st.output_file,
        ready_timeout: ready_timeout_secs.map(Duration::from_secs),
        alias: None,
        on_first_publish: None,
    };
    let ended = crate::service::supervise(ctx, sandbox, scope, req, io, parser, &watch).await;
    if let Some(f) = &ended.finished {
        record_finish(&mut res.report, f);
    }
    res.output = ended.output;
    res.report.output = res.output.clone();
    res.manifest = ended.manifest;
    ended.outcome
}

/// Start failures worth another try (a boot that went wrong), as opposed
/// to configuration that will fail the same way every time.
fn transient(e: &husk_sandbox::SandboxError) -> bool {
    use husk_sandbox::SandboxError as E;
    matches!(
        e,
        E::StartFailed { .. } | E::Closed(_) | E::Io { .. } | E::Protocol(_)
    )
}

/// A non-zero exit or an error result fails the stage with the agent's
/// own words.
fn check_exit(fin: &process::Finished) -> Result<(), RunError> {
    if let Some(AgentEvent::Result {
        is_error: true,
        subtype,
        text,
        ..
    }) = &fin.result
    {
        return Err(RunError::Agent(format!(
            "the agent reported an error ({subtype}): {}",
            crate::agents::preview(text, 500)
        )));
    }
    if fin.status.success() {
        return Ok(());
    }
    let mut how = match (fin.status.code, fin.status.signal) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "ended abnormally".into(),
    };
    if let Some(cause) = fin.status.cause.describe() {
        how = format!("{how} ({cause})");
    }
    let tail = fin
        .stderr_tail
        .last()
        .map(|l| format!(": {l}"))
        .unwrap_or_default();
    Err(RunError::Agent(format!("the agent {how}{tail}")))
}

/// The agent from an `agent:` skill, else from `llm.provider`.
fn choose_agent(
    prov: &Provision,
    llm: &LlmSpec,
    ctx: &RunContext,
) -> Result<AgentChoice, RunError> {
    if let Some(a) = &prov.agent {
        return Ok(a.clone());
    }
    let kind = match llm.provider.as_deref() {
        Some("claude") | Some("anthropic") => AgentKind::ClaudeCode,
        Some("codex") | Some("openai") => AgentKind::Codex,
        other => {
            return Err(RunError::Provision(format!(
                "no agent to run: add a skill `agent:claude-code`, `agent:codex` or `agent:<program>`, \
                 or set llm.provider to claude or codex (it is {})",
                other.map_or("unset".to_string(), |o| format!("`{o}`"))
            )));
        }
    };
    let program = kind.default_program().to_string();
    let host_path = ctx.tools.locate(&program).ok_or_else(|| {
        RunError::Provision(format!(
            "agent binary `{program}` not found on the host (PATH, or HUSK_{}_BIN)",
            program.to_ascii_uppercase()
        ))
    })?;
    Ok(AgentChoice::from_host(kind, program, host_path))
}

/// The credential from the host environment: the variable `llm.api_key_env`
/// names (required when named), else the agent's usual one when set.
fn credential(agent: &AgentChoice, llm: &LlmSpec) -> Result<Option<(String, String)>, RunError> {
    let default = agent.kind.default_credential_env();
    match (&llm.api_key_env, default) {
        (Some(name), _) => {
            let value =
                std::env::var(name).map_err(|_| RunError::MissingCredential(name.clone()))?;
            let target = default.unwrap_or(name).to_string();
            Ok(Some((target, value)))
        }
        (None, Some(name)) => Ok(std::env::var(name).ok().map(|v| (name.to_string(), v))),
        (None, None) => Ok(None),
    }
}

/// The host binaries a stage needs in its sandbox: tools, MCP servers and
/// the agent, each as `TOOL_DIR/<name>`.
fn host_tools<'a>(prov: &'a Provision, agent: &'a AgentChoice) -> Vec<sandboxes::HostTool<'a>> {
    let mut tools: Vec<sandboxes::HostTool<'a>> = prov
        .tools
        .iter()
        .map(|t| sandboxes::HostTool {
            host: &t.host_path,
            guest: format!("{TOOL_DIR}/{}", t.name),
        })
        .collect();
    if let Some(host) = &agent.host_path {
        tools.push(sandboxes::HostTool {
            host,
            guest: format!("{TOOL_DIR}/{}", agent.program),
        });
        tools.extend(
            agent
                .companions
                .iter()
                .map(|(host, name)| sandboxes::HostTool {
                    host,
                    guest: format!("{TOOL_DIR}/{name}"),
                }),
        );
    }
    tools
}

/// Writes skills, configs and tools into the sandbox. `base_url`: the
/// model URL the agent is given (the proxy's, when it adds the key).
#[allow(clippy::too_many_arguments)]
async fn provision_into(
    ctx: &RunContext,
    scope: &Scope,
    sandbox: &Sandbox,
    prov: &Provision,
    agent: &AgentChoice,
    llm: &LlmSpec,
    base_url: Option<&str>,
    copy: &[sandboxes::HostTool<'_>],
) -> Result<(), RunError> {
    let client = sandbox.client();
    for f in &prov.files {
        if let Some((dir, _)) = f.path.rsplit_once('/') {
            client.mkdir_p(dir).await?;
        }
        client.write_file(&f.path, &f.bytes, f.mode).await?;
    }
    if agent.kind == AgentKind::Codex {
        // The variable the agent really gets the key in (see `credential`:
        // a spec's api_key_env is read on the host and passed under the
        // agent's own name).
        let key_env = agent
            .kind
            .default_credential_env()
            .or(llm.api_key_env.as_deref());
        let toml = crate::agents::codex::config_toml(&prov.mcp_servers, base_url, key_env);
        client.mkdir_p(&format!("{HOME}/.codex")).await?;
        client
            .write_file(CODEX_CONFIG, toml.as_bytes(), 0o600)
            .await?;
    }
    if !copy.is_empty() {
        client.mkdir_p(TOOL_DIR).await?;
    }
    for tool in copy {
        let bytes = tokio::fs::read(tool.host).await.map_err(|e| {
            RunError::Provision(format!(
                "reading {} for the sandbox: {e}",
                tool.host.display()
            ))
        })?;
        client.write_file(&tool.guest, &bytes, 0o755).await?;
    }
    for line in &prov.mounted {
        ctx.emitter.info("skill.mounted", scope, line.clone());
    }
    let msg = format!(
        "environment ready: {} files, agent {}",
        prov.files.len(),
        agent.program
    );
    ctx.emitter.info("env.provisioned", scope, msg);
    Ok(())
}
