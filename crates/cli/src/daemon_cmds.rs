//! `husk serve` and the commands that talk to a daemon: `ps`, `inspect`,
//! `logs [-f]`, `cancel`, and `run --detach` (in run.rs).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use hyper::Method;
use serde_json::{Value, json};

use crate::CliResult;
use crate::client::DaemonClient;
use husk_daemon::api::runs::RunList;
use husk_daemon::api::url;
use husk_daemon::manager::{Cancelled, Created};
use husk_runtime::Event;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Unix socket to listen on (default: $XDG_RUNTIME_DIR/husk.sock, …).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Also listen on TCP, e.g. tcp://127.0.0.1:7070 (bearer token required).
    #[arg(long, value_name = "tcp://HOST:PORT", value_parser = parse_listen)]
    listen: Option<SocketAddr>,
    /// The bearer token's file (mode 0600) for --listen.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Where runs, events and artifacts are kept (default: ~/.local/share/husk).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Most runs active at once.
    #[arg(long, value_name = "N", default_value_t = husk_daemon::DEFAULT_MAX_ACTIVE_RUNS)]
    max_active_runs: usize,
    /// Close a connection that has not sent a complete request head within
    /// this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = husk_daemon::listen::DEFAULT_HEADER_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout_secs: u64,
    /// Most open TCP connections (more are closed at once).
    #[arg(long, value_name = "N", default_value_t = husk_daemon::listen::DEFAULT_MAX_TCP_CONNECTIONS)]
    max_tcp_connections: usize,
    /// Keep ready sandboxes for runs to claim, e.g. microvm=2,namespace=4
    /// (stages whose sandbox has the default settings use them).
    #[arg(long, value_name = "BACKEND=N,…", value_parser = parse_pool)]
    pool: Option<PoolList>,
    /// Keep the warm pools a YAML file lists, each with its own size
    /// (`memory_mb`, `vcpus`, `disk_mb`); see docs/daemon.md.
    #[arg(long, value_name = "FILE")]
    pool_config: Option<PathBuf>,
    /// Replace a pooled sandbox that has been idle this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = husk_sandbox::pool::DEFAULT_IDLE_LIMIT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pool_idle_secs: u64,
}

/// The pools of one `--pool` (a newtype: clap would take a `Vec` for a
/// repeated option).
#[derive(Debug, Clone)]
struct PoolList(Vec<husk_daemon::pools::PoolRequest>);

fn parse_pool(s: &str) -> Result<PoolList, String> {
    husk_daemon::pools::parse(s)
        .map(PoolList)
        .map_err(|e| e.to_string())
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let rest = s
        .strip_prefix("tcp://")
        .ok_or_else(|| format!("{s:?}: expected tcp://HOST:PORT"))?;
    rest.parse().map_err(|e| format!("{s:?}: {e}"))
}

pub async fn serve(a: ServeArgs) -> CliResult<i32> {
    let from_file = match &a.pool_config {
        Some(path) => husk_daemon::pool_config::load(path)?,
        None => Vec::new(),
    };
    let pools = husk_daemon::pools::merge(a.pool.map(|p| p.0).unwrap_or_default(), from_file)?;
    let opts = husk_daemon::ServeOptions {
        socket: a.socket,
        tcp: a.listen,
        token_file: a.token_file,
        data_dir: a.data_dir,
        max_active_runs: a.max_active_runs.max(1),
        header_timeout: std::time::Duration::from_secs(a.header_timeout_secs),
        max_tcp_connections: a.max_tcp_connections.max(1),
        pools,
        pool_idle: std::time::Duration::from_secs(a.pool_idle_secs),
    };
    husk_daemon::serve(opts, |line| eprintln!("husk serve: {line}")).await?;
    eprintln!("husk serve: stopped");
    Ok(0)
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Also show finished runs.
    #[arg(short, long)]
    all: bool,
    #[arg(long)]
    json: bool,
}

pub async fn ps(a: PsArgs) -> CliResult<i32> {
    let path = if a.all {
        "/v1/runs"
    } else {
        "/v1/runs?state=active"
    };
    let v = DaemonClient::from_env()
        .call(Method::GET, path, None)
        .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let list: RunList = typed(v, "run list")?;
    if list.runs.is_empty() {
        println!("no {}runs", if a.all { "" } else { "active " });
        return Ok(0);
    }
    println!(
        "{:<18} {:<10} {:<25} {:<7} FILE",
        "RUN", "STATUS", "STARTED", "STAGES"
    );
    for r in &list.runs {
        println!(
            "{:<18} {:<10} {:<25} {:<7} {}",
            r.id,
            r.status.as_str(),
            r.started_at,
            r.stage_states.len(),
            r.file
        );
    }
    Ok(0)
}

/// A daemon answer as the daemon's own type; `what` names it in the error.
fn typed<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> CliResult<T> {
    serde_json::from_value(v).map_err(|e| format!("the daemon's {what} did not parse: {e}").into())
}

#[derive(Debug, Args)]
pub struct RunRef {
    /// The run id.
    run: String,
    #[arg(long)]
    json: bool,
}

pub async fn inspect(a: RunRef) -> CliResult<i32> {
    let v = DaemonClient::from_env()
        .call(Method::GET, &url::path(&["v1", "runs", &a.run]), None)
        .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let r: husk_runtime::RunRecord = typed(v, "run record")?;
    print_record(&r);
    Ok(0)
}

/// A run record for a person: status, stages, publication, messaging.
fn print_record(r: &husk_runtime::RunRecord) {
    println!("run {}  {}", r.id, r.status.as_str().to_uppercase());
    println!("  file      {}", r.file);
    println!("  started   {}", r.started_at);
    if let Some(f) = &r.finished_at {
        println!(
            "  finished  {f} ({})",
            r.terminal_reason.as_deref().unwrap_or("-")
        );
    }
    match &r.report {
        Some(rep) => {
            for st in &rep.stages {
                println!(
                    "  stage {:<14} {:<10} {}",
                    st.name,
                    st.status,
                    st.error.as_deref().unwrap_or("")
                );
            }
        }
        None => {
            for (k, st) in &r.stage_states {
                println!("  stage {k:<14} {st}");
            }
        }
    }
    let publications = r
        .events
        .iter()
        .filter(|e| e.event_type == "run.output_ready")
        .count();
    println!(
        "  output    {}",
        if r.output_ready {
            format!("ready (published {publications}×)")
        } else {
            "not ready".into()
        }
    );
    for m in &r.artifact_publication.manifest {
        println!(
            "  artifact  {}/{} ({} bytes, {}) {}",
            m.stage, m.name, m.size_bytes, m.media_type, m.retrieval_path
        );
    }
    if let Some(sc) = &r.sidecar {
        println!(
            "  sidecar   {:?}, {} intents buffered, inbox version {}",
            sc.status, sc.buffer_depth, sc.inbox_version
        );
    }
    if !r.undrained_intents.is_empty() {
        println!("  intents   {} left undrained", r.undrained_intents.len());
    }
    if let Some(e) = &r.error {
        println!("  error     {e}");
    }
    println!("  events    {}", r.events.len());
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    run: String,
    /// Follow the run live until it ends.
    #[arg(short, long)]
    follow: bool,
    /// One JSON event per line.
    #[arg(long)]
    json: bool,
}

pub async fn logs(a: LogsArgs) -> CliResult<i32> {
    let client = DaemonClient::from_env();
    let print = |e: &Event| {
        if a.json {
            match serde_json::to_string(e) {
                Ok(line) => println!("{line}"),
                Err(err) => eprintln!("husk: event {}: {err}", e.event_id),
            }
        } else {
            println!("{}", event_line(e));
        }
    };
    if a.follow {
        client.follow(&a.run, print).await?;
    } else {
        let v = client
            .call(
                Method::GET,
                &url::path(&["v1", "runs", &a.run, "events"]),
                None,
            )
            .await?;
        let events: Vec<Event> = typed(v, "event list")?;
        events.iter().for_each(print);
    }
    Ok(0)
}

/// One event for a person: time, stage (or `run`), type, message.
fn event_line(e: &Event) -> String {
    format!(
        "{} {:<12} {:<18} {}",
        e.timestamp,
        e.stage_name.as_deref().unwrap_or("run"),
        e.event_type,
        e.message
    )
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    run: String,
    /// Why (recorded with the cancellation).
    #[arg(long)]
    reason: Option<String>,
    #[arg(long)]
    json: bool,
}

pub async fn cancel(a: CancelArgs) -> CliResult<i32> {
    let body = json!({ "reason": a.reason });
    let v = DaemonClient::from_env()
        .call(
            Method::POST,
            &url::path(&["v1", "runs", &a.run, "cancel"]),
            Some(&body),
        )
        .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let c: Cancelled = typed(v, "cancel answer")?;
        println!(
            "run {}: {} (terminal event {})",
            c.run_id,
            c.state.as_str(),
            c.terminal_event_id.as_deref().unwrap_or("-")
        );
    }
    Ok(0)
}

/// `husk run --detach`: hands the spec to the daemon and prints the run id.
pub async fn run_detached(
    spec: &std::path::Path,
    input: Option<Value>,
    json_out: bool,
) -> CliResult<i32> {
    let file = spec
        .canonicalize()
        .map_err(|e| format!("{}: {e}", spec.display()))?;
    let body = json!({ "file": file, "input": input });
    let v = DaemonClient::from_env()
        .call(Method::POST, "/v1/runs", Some(&body))
        .await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let c: Created = typed(v, "answer to the new run")?;
        println!("{}", c.run_id);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_answers_parse_into_the_daemons_types() {
        let policy = husk_runtime::RunPolicy::default();
        let live = husk_runtime::live::LiveRun::pending("run-1", "/specs/a.yaml", &policy);
        let list = serde_json::to_value(RunList {
            runs: vec![live.snapshot()],
        })
        .unwrap();
        let back: RunList = typed(list, "run list").unwrap();
        assert_eq!(back.runs[0].id, "run-1");
        assert_eq!(back.runs[0].file, "/specs/a.yaml");
        let err = typed::<RunList>(json!({"runs": 3}), "run list").unwrap_err();
        assert!(
            err.to_string()
                .contains("the daemon's run list did not parse"),
            "{err}"
        );
    }

    #[test]
    fn events_read_as_one_line_each() {
        let mut e = Event::new(
            "run-1",
            1,
            7,
            husk_runtime::Level::Info,
            "stage.started",
            "stage a started",
        );
        e.stage_name = Some("a".into());
        let line = event_line(&e);
        assert!(line.starts_with(&e.timestamp), "{line}");
        assert!(line.contains(" a "), "{line}");
        assert!(
            line.ends_with("stage.started      stage a started"),
            "{line}"
        );
        let run_level = Event::new(
            "run-1",
            1,
            8,
            husk_runtime::Level::Info,
            "run.started",
            "go",
        );
        assert!(event_line(&run_level).contains(" run "));
    }
}
