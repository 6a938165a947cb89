//! Agent launchers: how to start Claude Code, Codex or a plain command in a
//! sandbox, and how to read what they print. Each launcher turns a stage
//! into a [`LaunchPlan`] (argv, environment, files) and parses the agent's
//! stdout, line by line, into [`AgentEvent`]s that the runtime records.
//!
//! Credentials are passed only in the process environment of the agent,
//! never written to a file in the sandbox.

mod claude;
pub(crate) mod codex;

use serde::Serialize;
use serde_json::Value;

pub use claude::ClaudeParser;
pub use codex::CodexParser;

/// Which agent CLI a stage runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentKind {
    /// Claude Code print mode (also husk's scripted test agent, which
    /// speaks the same CLI).
    ClaudeCode,
    /// `codex exec --json`.
    Codex,
    /// Any program: run with the prompt as its argument, output kept as logs.
    Command,
}

/// What the launcher needs to know about a stage.
#[derive(Debug, Clone)]
pub struct LaunchContext {
    /// The program inside the sandbox (a name on PATH or an absolute path).
    pub program: String,
    pub prompt: String,
    pub model: Option<String>,
    /// Where the MCP config was written, when the stage has MCP servers.
    pub mcp_config: Option<String>,
    /// `ANTHROPIC_BASE_URL` / the Codex provider's base URL.
    pub base_url: Option<String>,
    /// The credential: (variable name in the agent's environment, value).
    pub credential: Option<(String, String)>,
    pub workdir: String,
    pub home: String,
}

/// How to start the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchPlan {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Bytes for the agent's stdin (a prompt too large for argv).
    pub stdin: Option<Vec<u8>>,
}

/// Longest prompt passed as an argument. Linux refuses a single argument
/// or environment string over 128 KiB (`MAX_ARG_STRLEN`), and the exec
/// request must fit a protocol frame (1 MiB): longer prompts go to the
/// agent's stdin, which Claude Code (and the test agent) read in print
/// mode when no prompt argument is given.
pub const MAX_ARGV_PROMPT: usize = 96 * 1024;

/// Something the agent did, parsed from its output.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentEvent {
    /// The agent is up (model, MCP servers and their status).
    Init {
        model: Option<String>,
        mcp_servers: Vec<(String, String)>,
        tools: usize,
    },
    Text {
        text: String,
    },
    ToolCall {
        name: String,
        input: Value,
    },
    ToolResult {
        is_error: bool,
        preview: String,
    },
    /// The agent's final word: outcome, cost and tokens.
    Result {
        is_error: bool,
        subtype: String,
        text: String,
        cost_usd: f64,
        input_tokens: u64,
        output_tokens: u64,
        turns: u64,
    },
    Error {
        message: String,
    },
}

/// Reads an agent's stdout, one line at a time.
pub trait StreamParser: Send {
    fn line(&mut self, line: &str) -> Vec<AgentEvent>;
}

/// For plain commands: nothing to parse.
pub struct NoParser;

impl StreamParser for NoParser {
    fn line(&mut self, _line: &str) -> Vec<AgentEvent> {
        Vec::new()
    }
}

impl AgentKind {
    /// The agent's default program name.
    pub fn default_program(self) -> &'static str {
        match self {
            AgentKind::ClaudeCode => "claude",
            AgentKind::Codex => "codex",
            AgentKind::Command => "sh",
        }
    }

    /// The environment variable that carries the credential by default.
    pub fn default_credential_env(self) -> Option<&'static str> {
        match self {
            AgentKind::ClaudeCode => Some("ANTHROPIC_API_KEY"),
            AgentKind::Codex => Some("OPENAI_API_KEY"),
            AgentKind::Command => None,
        }
    }

    pub fn plan(self, ctx: &LaunchContext) -> LaunchPlan {
        match self {
            AgentKind::ClaudeCode => claude::plan(ctx),
            AgentKind::Codex => codex::plan(ctx),
            AgentKind::Command => {
                let mut env = base_env(ctx);
                if ctx.prompt.len() <= MAX_ARGV_PROMPT {
                    env.push(("HUSK_PROMPT".into(), ctx.prompt.clone()));
                    LaunchPlan {
                        argv: vec![ctx.program.clone(), ctx.prompt.clone()],
                        env,
                        stdin: None,
                    }
                } else {
                    LaunchPlan {
                        argv: vec![ctx.program.clone()],
                        env,
                        stdin: Some(ctx.prompt.clone().into_bytes()),
                    }
                }
            }
        }
    }

    pub fn parser(self) -> Box<dyn StreamParser> {
        match self {
            AgentKind::ClaudeCode => Box::new(ClaudeParser::default()),
            AgentKind::Codex => Box::new(CodexParser::default()),
            AgentKind::Command => Box::new(NoParser),
        }
    }
}

/// Environment every agent gets: home and the credential. (The prompt
/// is in argv or on stdin, never also in the environment: a long one would
/// be sent twice.)
fn base_env(ctx: &LaunchContext) -> Vec<(String, String)> {
    let mut env = vec![("HOME".to_string(), ctx.home.clone())];
    if let Some((name, value)) = &ctx.credential {
        env.push((name.clone(), value.clone()));
    }
    env
}

/// At most `n` characters of `s`, for previews in events.
pub fn preview(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
