//! Runs one process in a sandbox and turns its output into events:
//! every line becomes a `log.chunk`, and the agent's parser turns stdout
//! lines into `agent.*` events. Stops at exit, at the timeout (the guest
//! kills the process group), or on cancellation (SIGTERM, a grace period,
//! then SIGKILL).

use std::sync::Arc;
use std::time::Duration;

use husk_sandbox::protocol::{ExecRequest, ExitStatus};
use husk_sandbox::{ProcessEvent, Sandbox};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::agents::{AgentEvent, StreamParser, preview};
use crate::error::RunError;
use crate::events::{Emitter, Level, Scope};
use crate::lines::LineSplitter;

/// Extra I/O of a process: bytes for its stdin, and whether to keep its
/// stdout (bounded by [`MAX_CAPTURE`]) for a later step.
#[derive(Debug, Default)]
pub struct Io {
    pub stdin: Option<Vec<u8>>,
    pub capture_stdout: bool,
}

/// Most stdout kept for piping into another step.
pub const MAX_CAPTURE: usize = 16 * 1024 * 1024;

/// How a process ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// Stdout, when asked to capture it (cut at [`MAX_CAPTURE`]).
    pub stdout: Vec<u8>,
    pub stdout_truncated: bool,
    /// The agent's final `result`, if it printed one.
    pub result: Option<AgentEvent>,
    /// The last stderr lines (for failure messages).
    pub stderr_tail: Vec<String>,
    pub cancelled: bool,
}

const STDERR_TAIL: usize = 5;

/// Runs `req` to its end.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    sandbox: &Sandbox,
    req: &ExecRequest,
    io: Io,
    parser: &mut dyn StreamParser,
    emitter: &Arc<Emitter>,
    scope: &Scope,
    cancel: &CancellationToken,
    grace: Duration,
) -> Result<Finished, RunError> {
    let mut req = req.clone();
    req.stdin = io.stdin.is_some();
    let mut proc = sandbox.exec(&req).await?;
    let id = proc.id();
    // Stdin is fed beside the output loop, so a process that writes a lot
    // before reading its input cannot deadlock against us.
    let feed = async {
        if let Some(data) = &io.stdin {
            // A process that exits without reading its stdin is not an error.
            let _ = sandbox.client().write_stdin(id, data).await;
            let _ = sandbox.client().close_stdin(id).await;
        }
    };
    let (mut out, mut err) = (LineSplitter::default(), LineSplitter::default());
    let mut fin = Finished {
        status: ExitStatus::default(),
        stdout: Vec::new(),
        stdout_truncated: false,
        result: None,
        stderr_tail: Vec::new(),
        cancelled: false,
    };
    let pump = async {
        let mut cancel_sent = false;
        let mut kill_at: Option<tokio::time::Instant> = None;
        loop {
            let ev = tokio::select! {
                ev = proc.next() => ev?,
                _ = cancel.cancelled(), if !cancel_sent => {
                    cancel_sent = true;
                    fin.cancelled = true;
                    let _ = proc.signal(SIGTERM).await;
                    kill_at = Some(tokio::time::Instant::now() + grace);
                    continue;
                }
                _ = sleep_until(kill_at) => {
                    let _ = proc.signal(SIGKILL).await;
                    kill_at = None;
                    continue;
                }
            };
            match ev {
                ProcessEvent::Stdout(d) => {
                    if io.capture_stdout {
                        let room = MAX_CAPTURE.saturating_sub(fin.stdout.len());
                        fin.stdout_truncated |= d.len() > room;
                        fin.stdout.extend_from_slice(&d[..d.len().min(room)]);
                    }
                    for line in out.push(&d) {
                        stdout_line(&line, parser, emitter, scope, &mut fin);
                    }
                }
                ProcessEvent::Stderr(d) => {
                    for line in err.push(&d) {
                        stderr_line(&line, emitter, scope, &mut fin);
                    }
                }
                ProcessEvent::Exit(status) => {
                    fin.status = status;
                    return Ok::<(), RunError>(());
                }
            }
        }
    };
    let ((), pumped) = tokio::join!(feed, pump);
    pumped?;
    if let Some(line) = out.finish() {
        stdout_line(&line, parser, emitter, scope, &mut fin);
    }
    if let Some(line) = err.finish() {
        stderr_line(&line, emitter, scope, &mut fin);
    }
    emitter.emit(
        Level::Info,
        "log.closed",
        scope,
        "output closed",
        Some(json!({"exit": fin.status})),
    );
    Ok(fin)
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;

fn stdout_line(
    line: &str,
    parser: &mut dyn StreamParser,
    em: &Arc<Emitter>,
    scope: &Scope,
    fin: &mut Finished,
) {
    em.emit(
        Level::Debug,
        "log.chunk",
        scope,
        preview(line, 500),
        Some(json!({"stream": "stdout", "data": line})),
    );
    for ev in parser.line(line) {
        agent_event(&ev, em, scope);
        if matches!(ev, AgentEvent::Result { .. }) {
            fin.result = Some(ev);
        }
    }
}

fn stderr_line(line: &str, em: &Arc<Emitter>, scope: &Scope, fin: &mut Finished) {
    em.emit(
        Level::Debug,
        "log.chunk",
        scope,
        preview(line, 500),
        Some(json!({"stream": "stderr", "data": line})),
    );
    if !line.trim().is_empty() {
        fin.stderr_tail.push(line.to_string());
        if fin.stderr_tail.len() > STDERR_TAIL {
            fin.stderr_tail.remove(0);
        }
    }
}

/// Records what the agent did.
fn agent_event(ev: &AgentEvent, em: &Arc<Emitter>, scope: &Scope) {
    let payload = serde_json::to_value(ev).ok();
    let (level, ty, msg) = match ev {
        AgentEvent::Init {
            model,
            mcp_servers,
            tools,
        } => {
            let servers: Vec<String> = mcp_servers
                .iter()
                .map(|(n, s)| format!("{n} ({s})"))
                .collect();
            let model = model.as_deref().unwrap_or("default model");
            let msg = format!(
                "agent started: {model}, {tools} tools, MCP servers: {}",
                list_or_none(&servers)
            );
            (Level::Info, "agent.started", msg)
        }
        AgentEvent::Text { text } => (Level::Info, "agent.message", preview(text, 300)),
        AgentEvent::ToolCall { name, input } => (
            Level::Info,
            "agent.tool_call",
            format!("tool {name} {}", preview(&input.to_string(), 200)),
        ),
        AgentEvent::ToolResult {
            is_error,
            preview: p,
        } => {
            let level = if *is_error { Level::Warn } else { Level::Info };
            (
                level,
                "agent.tool_result",
                format!(
                    "{} {}",
                    if *is_error {
                        "tool failed:"
                    } else {
                        "tool result:"
                    },
                    p
                ),
            )
        }
        AgentEvent::Result {
            is_error,
            subtype,
            cost_usd,
            input_tokens,
            output_tokens,
            turns,
            ..
        } => {
            let level = if *is_error { Level::Error } else { Level::Info };
            let msg = format!(
                "agent finished: {subtype}, {turns} turns, ${cost_usd:.4}, {input_tokens} in / {output_tokens} out tokens"
            );
            (level, "agent.result", msg)
        }
        AgentEvent::Error { message } => (Level::Error, "agent.error", message.clone()),
    };
    em.emit(level, ty, scope, msg, payload);
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}
