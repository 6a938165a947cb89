//! The command line: the flags husk passes to `claude -p`, so the test agent
//! can be swapped in for Claude Code without changing how it is called.
//!
//! Flags that only steer a real model (`--model`, `--append-system-prompt`,
//! `--allowedTools`, ...) are accepted and echoed where Claude echoes them,
//! but do not change what the script does.

use std::io::{IsTerminal, Read};

use clap::{ArgAction, Parser, ValueEnum};

/// What `--output-format` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Only the final text.
    Text,
    /// Only the final result object.
    Json,
    /// One JSON event per line (needs `--verbose`).
    StreamJson,
}

/// A scripted stand-in for Claude Code's print mode (`claude -p`).
///
/// The script comes from $HUSK_TEST_AGENT_SCRIPT (inline JSON or a file),
/// else ./.husk-test-agent.json, else a default that writes a success
/// result to the output file named in the prompt. See docs/test-agent.md.
#[derive(Debug, Parser)]
#[command(
    name = "husk-test-agent",
    version = concat!(env!("CARGO_PKG_VERSION"), " (Claude Code compatible)"),
    disable_version_flag = true
)]
pub struct Cli {
    /// Print mode: run non-interactively and exit (required).
    #[arg(short = 'p', long = "print")]
    pub print: bool,

    /// The task; read from stdin when absent and stdin is not a terminal.
    #[arg(value_name = "PROMPT")]
    pub prompt: Option<String>,

    /// Output format of print mode.
    #[arg(long = "output-format", value_enum, default_value_t = OutputFormat::Text)]
    pub output_format: OutputFormat,

    /// Verbose output (required by `--output-format stream-json`).
    #[arg(long)]
    pub verbose: bool,

    /// MCP server config: a file, or an inline JSON object (repeatable).
    #[arg(long = "mcp-config", value_name = "FILE_OR_JSON", action = ArgAction::Append)]
    pub mcp_config: Vec<String>,

    /// Use only the servers from --mcp-config (never ./.mcp.json).
    #[arg(long = "strict-mcp-config")]
    pub strict_mcp_config: bool,

    /// Permission mode, echoed in the init event.
    #[arg(long = "permission-mode", value_name = "MODE")]
    pub permission_mode: Option<String>,

    /// Same as `--permission-mode bypassPermissions`.
    #[arg(long = "dangerously-skip-permissions")]
    pub dangerously_skip_permissions: bool,

    /// Allowed tools (accepted, not enforced).
    #[arg(
        long = "allowedTools",
        alias = "allowed-tools",
        value_name = "TOOLS",
        action = ArgAction::Append
    )]
    pub allowed_tools: Vec<String>,

    /// Disallowed tools (accepted, not enforced).
    #[arg(
        long = "disallowedTools",
        alias = "disallowed-tools",
        value_name = "TOOLS",
        action = ArgAction::Append
    )]
    pub disallowed_tools: Vec<String>,

    /// Stop with `error_max_turns` before assistant turn N+1.
    #[arg(long = "max-turns", value_name = "N")]
    pub max_turns: Option<u32>,

    /// Model name reported in the events.
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,

    /// Extra system prompt (accepted, ignored).
    #[arg(
        long = "append-system-prompt",
        value_name = "TEXT",
        allow_hyphen_values = true
    )]
    pub append_system_prompt: Option<String>,

    /// Session id to report (a fresh UUID when absent).
    #[arg(long = "session-id", value_name = "ID")]
    pub session_id: Option<String>,

    /// Print the version.
    #[arg(short = 'v', long = "version", action = ArgAction::Version)]
    pub version: Option<bool>,
}

impl Cli {
    /// Checks what clap cannot: the combinations Claude Code refuses.
    pub fn validate(&self) -> Result<(), String> {
        if !self.print {
            return Err(
                "only print mode is implemented: pass -p/--print, as in `claude -p \"TASK\"`"
                    .into(),
            );
        }
        if self.output_format == OutputFormat::StreamJson && !self.verbose {
            return Err(
                "When using --print, --output-format=stream-json requires --verbose".into(),
            );
        }
        Ok(())
    }

    /// The permission mode to report, as Claude Code resolves it.
    pub fn permission_mode(&self) -> String {
        match (&self.permission_mode, self.dangerously_skip_permissions) {
            (Some(mode), _) => mode.clone(),
            (None, true) => "bypassPermissions".into(),
            (None, false) => "default".into(),
        }
    }

    /// The prompt argument, or standard input when it is piped.
    pub fn take_prompt(&mut self) -> Result<String, String> {
        if let Some(prompt) = self.prompt.take() {
            return Ok(prompt);
        }
        let mut stdin = std::io::stdin();
        if stdin.is_terminal() {
            return Err("Input must be provided either through stdin or as a prompt argument when using --print".into());
        }
        let mut prompt = String::new();
        stdin
            .read_to_string(&mut prompt)
            .map_err(|e| format!("cannot read the prompt from stdin: {e}"))?;
        Ok(prompt)
    }
}
