//! Running a script's steps, each turned into the events Claude Code would
//! print for the same action: file and shell steps use Claude's built-in
//! `Write`, `Read` and `Bash` tools, MCP steps `mcp__<server>__<tool>`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::mcp::{Servers, tool_name};
use crate::output::Emitter;
use crate::script::{Script, Step, StepKind};

/// The built-in tools the test agent implements.
pub const BUILTIN_TOOLS: &[&str] = &["Bash", "Read", "Write"];

/// What a tool returned, as the model would see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    pub content: Value,
    pub is_error: bool,
}

impl ToolOutput {
    pub fn ok(text: impl Into<String>) -> Self {
        Self {
            content: Value::String(text.into()),
            is_error: false,
        }
    }

    pub fn error(text: impl Into<String>) -> Self {
        Self {
            content: Value::String(text.into()),
            is_error: true,
        }
    }

    /// A one-line description for an `expect_ok` failure.
    fn summary(&self) -> String {
        let text = match &self.content {
            Value::String(s) => s.clone(),
            // MCP content blocks: their text, else the JSON.
            Value::Array(blocks) if blocks.iter().any(|b| b["text"].is_string()) => blocks
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join(" "),
            other => other.to_string(),
        };
        text.lines().next().unwrap_or_default().to_string()
    }
}

/// How the steps ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// All steps ran.
    Finished,
    /// A `fail` step or a failed `expect_ok`.
    Failed(String),
    /// `--max-turns` was reached before another turn.
    MaxTurns(u32),
    /// An `exit` step.
    Exit(u8),
}

/// Runs the steps in order until one stops the run.
pub fn run(
    script: &Script,
    out: &mut Emitter,
    servers: &mut Servers,
    max_turns: Option<u32>,
) -> Outcome {
    for (index, step) in script.steps.iter().enumerate() {
        if let Some(max) = max_turns
            && step.kind.is_turn()
            && out.turns() >= max
        {
            return Outcome::MaxTurns(max);
        }
        if let Some(outcome) = run_step(index + 1, step, out, servers) {
            return outcome;
        }
    }
    Outcome::Finished
}

/// Runs one step; `Some` stops the run.
fn run_step(
    number: usize,
    step: &Step,
    out: &mut Emitter,
    servers: &mut Servers,
) -> Option<Outcome> {
    let (what, output) = match &step.kind {
        StepKind::Text(text) => {
            out.text(text);
            return None;
        }
        StepKind::SleepMs(ms) => {
            std::thread::sleep(Duration::from_millis(*ms));
            return None;
        }
        StepKind::Stderr(text) => {
            eprintln!("{text}");
            return None;
        }
        StepKind::Fail(message) => return Some(Outcome::Failed(message.clone())),
        StepKind::Exit(code) => return Some(Outcome::Exit(*code)),
        StepKind::Write { path, content } => {
            let id = out.tool_use("Write", json!({"file_path": path, "content": content}));
            (("Write".to_string(), id), write(path, content))
        }
        StepKind::Read(path) => {
            let id = out.tool_use("Read", json!({"file_path": path}));
            (("Read".to_string(), id), read(path))
        }
        StepKind::Shell(command) => {
            let id = out.tool_use("Bash", json!({"command": command}));
            (("Bash".to_string(), id), shell(command))
        }
        StepKind::Tool {
            server,
            name,
            arguments,
        } => {
            let tool = tool_name(server, name);
            let id = out.tool_use(&tool, arguments.clone());
            ((tool, id), servers.call(server, name, arguments))
        }
    };
    let (tool, id) = what;
    out.tool_result(&id, &output.content, output.is_error);
    (step.expect_ok && output.is_error).then(|| {
        Outcome::Failed(format!(
            "step {number}: {tool} failed (expect_ok): {}",
            output.summary()
        ))
    })
}

fn write(path: &str, content: &str) -> ToolOutput {
    let file = Path::new(path);
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty())
        && let Err(e) = std::fs::create_dir_all(parent)
    {
        return ToolOutput::error(format!("cannot create {}: {e}", parent.display()));
    }
    match std::fs::write(file, content) {
        Ok(()) => ToolOutput::ok(format!("File created successfully at: {path}")),
        Err(e) => ToolOutput::error(format!("cannot write {path}: {e}")),
    }
}

fn read(path: &str) -> ToolOutput {
    match std::fs::read(path) {
        Ok(bytes) => ToolOutput::ok(String::from_utf8_lossy(&bytes)),
        Err(e) => ToolOutput::error(format!("cannot read {path}: {e}")),
    }
}

/// Runs `sh -c`; the result is stdout then stderr, led by `Exit code N`
/// when the command failed (as Claude's `Bash` tool reports it).
fn shell(command: &str) -> ToolOutput {
    let output = match Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) => output,
        Err(e) => return ToolOutput::error(format!("cannot run sh: {e}")),
    };
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !stderr.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&stderr);
    }
    let text = text.trim_end_matches('\n');
    if output.status.success() {
        return ToolOutput::ok(text);
    }
    let status = match output.status.code() {
        Some(code) => format!("Exit code {code}"),
        None => {
            use std::os::unix::process::ExitStatusExt;
            format!("Killed by signal {}", output.status.signal().unwrap_or(0))
        }
    };
    if text.is_empty() {
        ToolOutput::error(status)
    } else {
        ToolOutput::error(format!("{status}\n{text}"))
    }
}
