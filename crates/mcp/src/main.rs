//! `husk-mcp`: the MCP server agents use to talk to their run's messaging
//! sidecar (runtime contract §6). It offers four tools —
//! `read_shared_context`, `read_peer_messages`, `broadcast_observation`,
//! `recommend_to_leader` — each one sidecar call (see [`tools`]).
//!
//! Agents' CLIs spawn it once per session over stdio (the default), so it
//! starts fast: a single-threaded runtime, no config files, the sidecar
//! URL from `VOID_SIDECAR_URL` (or `HUSK_SIDECAR_URL`). `--http --port N`
//! serves Streamable HTTP on 127.0.0.1 instead. docs/collaboration.md
//! describes the tools, the limits and how runs provide all this.

mod http;
mod limits;
mod server;
mod sidecar;
mod stdio;
mod tools;

use std::process::ExitCode;

use clap::Parser;

use crate::server::HuskMcp;
use crate::sidecar::Sidecar;

#[derive(Debug, Parser)]
#[command(
    name = "husk-mcp",
    version,
    about = "MCP server for the run's messaging sidecar (URL from VOID_SIDECAR_URL or HUSK_SIDECAR_URL). \
             Speaks newline-delimited JSON-RPC on stdio unless --http is given."
)]
struct Cli {
    /// Serve Streamable HTTP at http://127.0.0.1:PORT/mcp instead of stdio.
    #[arg(long, requires = "port")]
    http: bool,
    /// The port for --http (0: any free port; the address is printed on stderr).
    #[arg(long, value_name = "PORT", requires = "http")]
    port: Option<u16>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let env = |k: &str| std::env::var(k).ok();
    let (url, timeout) = match (sidecar::url_from(env), sidecar::timeout_from(env)) {
        (Ok(url), Ok(timeout)) => (url, timeout),
        (Err(e), _) => {
            eprintln!("husk-mcp: {e}");
            return ExitCode::FAILURE;
        }
        (_, Err(e)) => {
            eprintln!("husk-mcp: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One thread: a tool call is one small sidecar round trip, and
    // staying on one thread keeps both startup and latency low.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("husk-mcp: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        let server = HuskMcp::new(Sidecar::new(&url, timeout));
        match cli.port.filter(|_| cli.http) {
            None => {
                stdio::serve(server).await;
                ExitCode::SUCCESS
            }
            Some(port) => serve_http(port, server).await,
        }
    });
    // A blocking stdin read (stdin not a pipe) may still be parked in
    // the blocking pool: do not wait for it.
    runtime.shutdown_background();
    code
}

async fn serve_http(port: u16, server: HuskMcp) -> ExitCode {
    let listener = match http::bind(port).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("husk-mcp: cannot listen on 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => eprintln!("husk-mcp: serving MCP on http://{addr}{}", http::PATH),
        Err(e) => eprintln!("husk-mcp: serving MCP on port {port} ({e})"),
    }
    match http::serve(listener, server).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("husk-mcp: serving HTTP failed: {e}");
            ExitCode::FAILURE
        }
    }
}
