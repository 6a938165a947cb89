//! `husk-test-agent`: a deterministic, scripted stand-in for Claude Code's
//! print mode (`claude -p "TASK" --output-format stream-json --verbose`).
//!
//! Why: husk's end-to-end tests must exercise the whole path an agent run
//! takes (the sandbox, the flags husk passes, the MCP servers it
//! configures, the files the agent writes, the stream-json events husk
//! parses, exit codes) without a model, an API key or the network, and
//! must fail the same way every time. The test agent accepts Claude Code's
//! flags, follows a JSON script instead of a model, really performs each
//! step (writes files, runs shell commands, calls MCP tools over stdio) and
//! prints the events Claude Code would print for them.
//!
//! Exit codes: 0 success (or the script's `exit_code`); 1 a failed run
//! (`fail` step, failed `expect_ok`, `--max-turns` reached); N from an
//! `exit` step; 2 a usage error, a bad script or a bad MCP config.
//! See docs/test-agent.md.

mod cli;
mod mcp;
mod mcp_config;
mod output;
mod script;
mod steps;

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use crate::output::{Emitter, Ending, Init, Totals};
use crate::steps::Outcome;

/// The model reported when `--model` is not given.
const DEFAULT_MODEL: &str = "husk-test-agent";

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = cli::Cli::parse();
    match run(cli, started) {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("husk-test-agent: {message}");
            ExitCode::from(2)
        }
    }
}

/// Runs the agent; `Err` is a usage or configuration error (exit 2),
/// reported before any event is printed.
fn run(mut cli: cli::Cli, started: Instant) -> Result<u8, String> {
    cli.validate()?;
    let prompt = cli.take_prompt()?;
    let script = script::load(&prompt)?;
    let configs = mcp_config::load(&cli.mcp_config, cli.strict_mcp_config)?;

    let mut servers = mcp::Servers::connect_all(configs);
    let totals = Totals {
        cost_usd: script.cost_usd,
        input_tokens: script.input_tokens,
        output_tokens: script.output_tokens,
        planned_turns: script.steps.iter().filter(|s| s.kind.is_turn()).count() as u64,
    };
    let session_id = cli
        .session_id
        .clone()
        .unwrap_or_else(output::new_session_id);
    let model = cli.model.clone().unwrap_or_else(|| DEFAULT_MODEL.into());
    let mut out = Emitter::new(cli.output_format, session_id, model, totals);

    let mut tools: Vec<String> = steps::BUILTIN_TOOLS.iter().map(|t| t.to_string()).collect();
    tools.extend(servers.tool_names());
    out.init(&Init {
        cwd: std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default(),
        tools,
        mcp_servers: servers.statuses(),
        permission_mode: cli.permission_mode(),
    });

    let outcome = steps::run(&script, &mut out, &mut servers, cli.max_turns);
    let last_text = out.last_text().to_string();
    let (ending, code) = match outcome {
        Outcome::Finished => (success(last_text), script.exit_code),
        Outcome::Exit(code) => (success(last_text), code),
        Outcome::Failed(message) => (
            Ending {
                subtype: "error_during_execution",
                is_error: true,
                text: message,
            },
            1,
        ),
        Outcome::MaxTurns(max) => (
            Ending {
                subtype: "error_max_turns",
                is_error: true,
                text: format!("Reached max turns ({max})"),
            },
            1,
        ),
    };
    out.result(&ending, started.elapsed());
    servers.shutdown();
    Ok(code)
}

fn success(text: String) -> Ending {
    Ending {
        subtype: "success",
        is_error: false,
        text,
    }
}
