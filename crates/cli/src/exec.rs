//! `husk exec`: one command in a fresh sandbox, output streamed live.

use std::time::Duration;

use clap::Args;
use husk_sandbox::microvm::AccelChoice;
use husk_sandbox::protocol::{ExecRequest, ExitStatus};
use husk_sandbox::{BackendChoice, ProcessEvent, Sandbox, SandboxConfig};
use husk_spec::{AllowEntry, NetworkSpec};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::CliResult;

/// Exit code for a command killed because its timeout passed (as timeout(1)).
const EXIT_TIMED_OUT: i32 = 124;
/// Output kept per stream for `--json`.
const JSON_OUTPUT_LIMIT: usize = 16 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Isolation backend: auto, namespace or microvm.
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    pub(crate) backend: BackendChoice,
    /// Micro-VM accelerator: auto (KVM if a probe VM boots under it), kvm or tcg.
    #[arg(long, default_value = "auto", value_parser = parse_accel)]
    accel: AccelChoice,
    /// Set an environment variable (NAME=VALUE, or NAME to pass the host's value).
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Working directory inside the sandbox (absolute).
    #[arg(short = 'w', long, value_name = "DIR", default_value = "/workspace", value_parser = parse_workdir)]
    workdir: String,
    /// Kill the command (and everything it started) after this many seconds.
    #[arg(short = 't', long, value_name = "SECS", value_parser = parse_timeout)]
    timeout: Option<Duration>,
    /// Run as this uid (and gid) instead of the sandbox user (1000); `0` is
    /// root inside the sandbox (in a namespace sandbox, still unprivileged
    /// on the host).
    #[arg(short = 'u', long, value_name = "UID")]
    user: Option<u32>,
    /// Forward husk's stdin to the command.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// What the sandbox may reach, through a policy proxy of its own (as
    /// runs): `--network` alone is `open` (any host but this machine);
    /// `--network=none` (the default), `--network=allow=HOST[:PORT],…`.
    #[arg(
        long,
        value_name = "MODE",
        num_args = 0..=1,
        require_equals = true,
        default_value = "none",
        default_missing_value = "open",
        value_parser = parse_network
    )]
    network: NetworkSpec,
    /// Memory limit in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    memory: u32,
    /// CPUs available to the sandbox.
    #[arg(long, value_name = "N", default_value_t = 1)]
    cpus: u32,
    /// Root filesystem: a directory (namespace: bound read-only; micro-VM:
    /// turned into a cached ext4 image) or an ext4 image file (micro-VM).
    #[arg(long, value_name = "DIR|IMAGE")]
    rootfs: Option<std::path::PathBuf>,
    /// Micro-VM: boot the kernel even when a snapshot (`husk image build`)
    /// could be restored.
    #[arg(long)]
    cold: bool,
    /// Print one JSON object with the result instead of streaming output.
    #[arg(long)]
    json: bool,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn parse_backend(s: &str) -> Result<BackendChoice, String> {
    s.parse()
}

/// Prints one progress line of a slow step (image build, KVM probe).
pub fn progress(line: &str) {
    eprintln!("husk: {line}");
}

fn parse_accel(s: &str) -> Result<AccelChoice, String> {
    s.parse()
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (name, value) = match s.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (s, None),
    };
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "{s:?} is not NAME=VALUE (names are letters, digits and _)"
        ));
    }
    match value {
        Some(v) => Ok((name.into(), v.into())),
        None => std::env::var(name)
            .map(|v| (name.to_string(), v))
            .map_err(|_| format!("{name} is not set on the host (use {name}=VALUE)")),
    }
}

/// `none`, `open` or `allow=HOST[:PORT],…` (entries as in a spec's
/// `sandbox.network.allow`).
fn parse_network(s: &str) -> Result<NetworkSpec, String> {
    match s {
        "none" => return Ok(NetworkSpec::None),
        "open" => return Ok(NetworkSpec::Open),
        _ => {}
    }
    let Some(list) = s.strip_prefix("allow=") else {
        return Err(format!(
            "{s:?} is not a network mode: use none, open or allow=HOST[:PORT],…"
        ));
    };
    let entries = list
        .split(',')
        .map(|e| AllowEntry::parse(e.trim()).map_err(|why| format!("allow entry {e:?}: {why}")))
        .collect::<Result<Vec<_>, _>>()?;
    let max = husk_spec::MAX_ALLOW_ENTRIES;
    if entries.len() > max {
        return Err(format!("{} allow entries; at most {max}", entries.len()));
    }
    Ok(NetworkSpec::Allow(entries))
}

fn parse_workdir(s: &str) -> Result<String, String> {
    if s.starts_with('/') {
        Ok(s.into())
    } else {
        Err(format!("{s:?} must be an absolute path"))
    }
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 7.0 * 86400.0) {
        return Err(format!(
            "{s} must be more than 0 and at most 604800 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Serialize)]
struct JsonResult<'a> {
    backend: &'a str,
    exit_code: i32,
    signal: Option<i32>,
    timed_out: bool,
    duration_ms: u64,
    stdout: String,
    stderr: String,
    output_truncated: bool,
}

pub async fn run(args: ExecArgs) -> CliResult<i32> {
    // No network device on either backend: the proxy is the way out.
    let env = if args.network.is_enabled() {
        husk_runtime::network::proxy_env()
    } else {
        Vec::new()
    };
    let config = SandboxConfig {
        memory_mb: args.memory,
        vcpus: args.cpus,
        env,
        rootfs: args.rootfs.clone(),
        cold_boot: args.cold,
        ..SandboxConfig::default()
    };
    let selected = husk_sandbox::select(args.backend, args.accel, &config, &progress).await?;
    tracing::info!(backend = %selected.kind, reason = %selected.reason, "backend selected");
    let t = std::time::Instant::now();
    let sandbox = selected.backend.start(&config).await?;
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "sandbox started");
    if let husk_sandbox::BootPath::ColdFallback { reason } = &sandbox.info().boot {
        progress(reason);
    }
    let proxy = match attach_proxy(&sandbox, &args.network).await {
        Ok(p) => p,
        Err(e) => {
            let _ = sandbox.stop().await;
            return Err(e);
        }
    };
    let req = ExecRequest {
        argv: args.command.clone(),
        env: args.env.clone(),
        cwd: Some(args.workdir.clone()),
        user: args.user,
        stdin: args.interactive,
        timeout_ms: args.timeout.map(|d| d.as_millis() as u64),
        output: husk_sandbox::protocol::OutputMode::Stream,
    };
    let result = if args.json {
        run_json(&sandbox, &req, selected.kind.as_str()).await
    } else {
        run_streaming(&sandbox, &req).await
    };
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "command done");
    drop(proxy);
    let stopped = sandbox.stop().await;
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "sandbox stopped");
    let status = result?;
    stopped?;
    if status.timed_out && !args.json {
        let secs = args.timeout.map(|d| d.as_secs_f64()).unwrap_or_default();
        eprintln!("husk: command timed out after {secs}s and was killed");
    }
    Ok(exit_code(&status))
}

/// With a network, the sandbox's policy proxy on its `127.0.0.1:3128`;
/// each decision is a line on stderr (`husk: net.denied: …`).
async fn attach_proxy(
    sandbox: &Sandbox,
    network: &NetworkSpec,
) -> CliResult<Option<husk_sandbox::tunnel::Forward>> {
    if !network.is_enabled() {
        return Ok(None);
    }
    let proxy = husk_runtime::network::standalone_proxy(network, |kind, line| {
        eprintln!("husk: {kind}: {line}");
    })?;
    Ok(Some(husk_runtime::network::attach(sandbox, proxy).await?))
}

fn exit_code(status: &ExitStatus) -> i32 {
    if status.timed_out {
        EXIT_TIMED_OUT
    } else {
        status.shell_code()
    }
}

async fn run_streaming(sandbox: &Sandbox, req: &ExecRequest) -> CliResult<ExitStatus> {
    let mut process = sandbox.exec(req).await?;
    if req.stdin {
        tokio::spawn(forward_stdin(sandbox.client().clone(), process.id()));
    }
    let signals = tokio::spawn(forward_signals(sandbox.client().clone(), process.id()));
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let status = loop {
        match process.next().await? {
            ProcessEvent::Stdout(d) => {
                // A closed stdout (husk exec … | head) just stops the copy.
                let _ = stdout.write_all(&d).await;
                let _ = stdout.flush().await;
            }
            ProcessEvent::Stderr(d) => {
                let _ = stderr.write_all(&d).await;
                let _ = stderr.flush().await;
            }
            ProcessEvent::Exit(s) => break s,
        }
    };
    signals.abort();
    Ok(status)
}

async fn run_json(sandbox: &Sandbox, req: &ExecRequest, backend: &str) -> CliResult<ExitStatus> {
    let out = sandbox
        .client()
        .run(&sandbox.with_default_env(req), JSON_OUTPUT_LIMIT)
        .await?;
    let result = JsonResult {
        backend,
        exit_code: exit_code(&out.status),
        signal: out.status.signal,
        timed_out: out.status.timed_out,
        duration_ms: out.status.duration_ms,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        output_truncated: out.truncated,
    };
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(out.status)
}

async fn forward_stdin(client: husk_sandbox::Client, process: u64) {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if client.write_stdin(process, &buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = client.close_stdin(process).await;
}

/// Ctrl-C and SIGTERM reach the command instead of killing husk (which would
/// tear the sandbox down without letting the command clean up).
async fn forward_signals(client: husk_sandbox::Client, process: u64) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    loop {
        let sig = tokio::select! {
            _ = int.recv() => libc::SIGINT,
            _ = term.recv() => libc::SIGTERM,
        };
        let _ = client.signal(process, sig).await;
    }
}
