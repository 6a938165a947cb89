//! `husk-message`: the command-line client of the run's messaging sidecar,
//! run by agents inside the sandbox (contract §6). It is started once per
//! message, so it stays small: a blocking HTTP client (ureq, no TLS, no
//! async runtime) and clap.
//!
//! The sidecar's answer goes to stdout as is; every failure is one
//! `error: …` line on stderr and exit status 1.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

/// Environment variables holding the sidecar URL, in the order read.
const URL_VARS: [&str; 2] = ["VOID_SIDECAR_URL", "HUSK_SIDECAR_URL"];
/// The whole request, connect to last byte.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Parser)]
#[command(
    name = "husk-message",
    version,
    about = "Talk to the run's messaging sidecar (URL from VOID_SIDECAR_URL or HUSK_SIDECAR_URL)",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print who you are: execution, candidate, role, peers, iteration.
    Context,
    /// Print the inbox of peer messages.
    Inbox {
        /// Entries only if the inbox changed after this version.
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        since: Option<u64>,
    },
    /// Send an intent with payload {"summary_text": TEXT}.
    Send {
        #[arg(long, value_enum)]
        kind: Kind,
        #[arg(long, value_enum)]
        audience: Audience,
        /// The message (at most 4 KiB once JSON-encoded).
        #[arg(long, value_name = "TEXT")]
        summary: String,
        #[arg(long, value_enum, default_value_t = Priority::Normal)]
        priority: Priority,
    },
    /// Print the sidecar's health.
    Health,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Proposal,
    Signal,
    Evaluation,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Audience {
    Broadcast,
    Leader,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Priority {
    High,
    Normal,
    Low,
}

fn name<T: ValueEnum>(v: T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with status 0; every usage
            // error (clap prints `error: …`) is status 1, not clap's 2.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli.command) {
        Ok(body) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(body.as_bytes());
            if !body.ends_with('\n') {
                let _ = out.write_all(b"\n");
            }
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<String, String> {
    let base = sidecar_url()?;
    match command {
        Command::Context => request(&base, "GET", "/v1/context", None),
        Command::Health => request(&base, "GET", "/v1/health", None),
        Command::Inbox { since } => {
            let path = match since {
                Some(n) => format!("/v1/inbox?since={n}"),
                None => "/v1/inbox".to_string(),
            };
            request(&base, "GET", &path, None)
        }
        Command::Send {
            kind,
            audience,
            summary,
            priority,
        } => {
            if summary.trim().is_empty() {
                return Err("--summary must not be empty".into());
            }
            let body = json!({
                "kind": name(kind),
                "audience": name(audience),
                "priority": name(priority),
                "payload": {"summary_text": summary},
            });
            request(&base, "POST", "/v1/intents", Some(body.to_string()))
        }
    }
}

/// The sidecar's base URL, without a trailing slash.
fn sidecar_url() -> Result<String, String> {
    let (var, url) = URL_VARS
        .iter()
        .find_map(|v| {
            std::env::var(v)
                .ok()
                .filter(|s| !s.trim().is_empty())
                .map(|s| (*v, s))
        })
        .ok_or_else(|| {
            format!(
                "{} (or {}) is not set: messaging is not enabled for this run",
                URL_VARS[0], URL_VARS[1]
            )
        })?;
    let url = url.trim().trim_end_matches('/').to_string();
    if !url.starts_with("http://") || url.len() == "http://".len() {
        return Err(format!("{var} must be an http:// URL, not {url:?}"));
    }
    Ok(url)
}

fn request(base: &str, method: &str, path: &str, body: Option<String>) -> Result<String, String> {
    let url = format!("{base}{path}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(TIMEOUT))
        .build()
        .into();
    let sent = match (method, body) {
        ("POST", Some(b)) => agent
            .post(&url)
            .header("content-type", "application/json")
            .header("idempotency-key", idempotency_key())
            .send(b),
        _ => agent.get(&url).call(),
    };
    let mut resp = sent.map_err(|e| format!("cannot reach the sidecar at {base}: {e}"))?;
    let status = resp.status();
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("reading the sidecar's answer from {url}: {e}"))?;
    if status.as_u16() >= 400 {
        return Err(format!("{method} {path}: HTTP {status}: {}", text.trim()));
    }
    Ok(text)
}

/// 128 random bits as hex: the sidecar answers a replay of this exact
/// request with the original intent; another run of the command is new.
fn idempotency_key() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No random source: time and pid still differ between commands.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos ^ (u128::from(std::process::id()) << 96)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn keys_differ() {
        let a = idempotency_key();
        assert_eq!(a.len(), 32);
        assert_ne!(a, idempotency_key());
    }
}
