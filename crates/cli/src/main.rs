//! `husk`: run AI coding agents and commands in isolated sandboxes.
//!
//! Exit codes: a command's own exit code passes through `husk exec`
//! (128 + N when it died of signal N, 124 when husk killed it for its
//! timeout); 125 means husk itself failed; 2 is a usage error.

mod client;
mod daemon_cmds;
mod doctor;
mod exec;
mod image;
mod prune;
mod render;
mod run;
mod validate;

use clap::{Parser, Subcommand};

/// husk runs AI coding agents and commands in isolated sandboxes.
#[derive(Debug, Parser)]
#[command(name = "husk", version, about, propagate_version = true)]
struct Cli {
    /// Log husk's own diagnostics to stderr (repeat for more).
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an agent, workflow or pipeline spec in sandboxes.
    Run(run::RunArgs),
    /// Serve the runs API (unix socket, optional TCP with a token).
    Serve(daemon_cmds::ServeArgs),
    /// List the daemon's runs.
    Ps(daemon_cmds::PsArgs),
    /// Show one run of the daemon.
    Inspect(daemon_cmds::RunRef),
    /// Show (or follow with -f) a daemon run's events.
    Logs(daemon_cmds::LogsArgs),
    /// Cancel a daemon run.
    Cancel(daemon_cmds::CancelArgs),
    /// Check specs without running them; every problem with its location.
    Validate(validate::ValidateArgs),
    /// Run a command in a fresh sandbox, streaming its output.
    Exec(exec::ExecArgs),
    /// Show what this host can do (backends, KVM, limits) and why not.
    Doctor(doctor::DoctorArgs),
    /// Build and inspect micro-VM guest images.
    Image(image::ImageArgs),
}

/// Exit code when husk itself fails (as opposed to the command it ran).
pub const EXIT_HUSK_FAILED: i32 = 125;

fn main() {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let rt = match runtime_for(&cli.command).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => fail(&format!("cannot start the async runtime: {e}")),
    };
    let code = rt.block_on(async {
        match cli.command {
            Command::Exec(args) => exec::run(args).await,
            Command::Doctor(args) => doctor::run(args).await,
            Command::Image(args) => image::run(args).await,
            Command::Run(args) => run::run(args, cli.verbose > 0).await,
            Command::Validate(args) => validate::run(args).await,
            Command::Serve(args) => daemon_cmds::serve(args).await,
            Command::Ps(args) => daemon_cmds::ps(args).await,
            Command::Inspect(args) => daemon_cmds::inspect(args).await,
            Command::Logs(args) => daemon_cmds::logs(args).await,
            Command::Cancel(args) => daemon_cmds::cancel(args).await,
        }
    });
    let code = code.unwrap_or_else(|e| {
        eprintln!("husk: error: {e}");
        EXIT_HUSK_FAILED
    });
    // Sandboxes are stopped by now; do not wait for idle runtime threads.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    std::process::exit(code);
}

/// The async runtime a command runs on. `husk exec --backend namespace`
/// does nothing that blocks a thread (its one sandbox start is a spawn and
/// a handshake), so it runs on this thread alone: starting worker threads
/// and waking them is a measurable part of a ~10 ms command
/// (docs/BENCHMARKS.md). Everything else, micro-VM image builds included
/// (which block a worker while Ctrl-C must still be heard), gets two
/// workers.
fn runtime_for(command: &Command) -> tokio::runtime::Builder {
    match command {
        Command::Exec(args) if args.backend == husk_sandbox::BackendChoice::Namespace => {
            tokio::runtime::Builder::new_current_thread()
        }
        _ => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("husk: error: {msg}");
    std::process::exit(EXIT_HUSK_FAILED);
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HUSK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Errors `husk` reports as one line.
pub type CliResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;
