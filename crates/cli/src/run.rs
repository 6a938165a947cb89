//! `husk run SPEC`: runs an agent, workflow or pipeline spec in sandboxes,
//! shows progress per stage while it runs, then a summary (or, with
//! `--json`, the run record). Exit 0 only when the run succeeded.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use husk_runtime::RunOptions;
use husk_runtime::record::{RunRecord, RunStatus};
use tokio_util::sync::CancellationToken;

use crate::CliResult;
use crate::render::Renderer;

/// Exit code of a run that did not succeed.
const EXIT_RUN_FAILED: i32 = 1;
/// Exit code of an invalid spec or input.
const EXIT_INVALID: i32 = 2;
/// Exit code when the user cancelled the run (Ctrl-C).
const EXIT_CANCELLED: i32 = 130;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The spec (YAML or JSON).
    #[arg(value_name = "SPEC")]
    spec: PathBuf,
    /// Run input: a JSON file, written to /workspace/input.json.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Print the run record as JSON on stdout (progress stays off).
    #[arg(long)]
    json: bool,
    /// Hand the run to the daemon (`husk serve`) and print its id at once.
    #[arg(short, long)]
    detach: bool,
    /// Where run records and artifacts go (default: ~/.local/share/husk/runs).
    #[arg(long, value_name = "DIR")]
    runs_dir: Option<PathBuf>,
}

pub async fn run(args: RunArgs, global_verbose: bool) -> CliResult<i32> {
    let spec = match husk_spec::load_file(&args.spec) {
        Ok(s) => s,
        Err(errors) => {
            eprintln!("husk: {} is not a valid spec:", args.spec.display());
            for e in &errors.0 {
                eprintln!("  {e}");
            }
            return Ok(EXIT_INVALID);
        }
    };
    let input = match &args.input {
        Some(path) => match read_input(path) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("husk: error: {e}");
                return Ok(EXIT_INVALID);
            }
        },
        None => None,
    };
    if args.detach {
        return crate::daemon_cmds::run_detached(&args.spec, input, args.json).await;
    }
    let root = args
        .runs_dir
        .clone()
        .unwrap_or_else(husk_runtime::store::runs_root);
    if let Err(e) = check_writable(&root) {
        eprintln!(
            "husk: error: the runs directory {} is not writable ({e}); choose another with --runs-dir",
            root.display()
        );
        return Ok(EXIT_INVALID);
    }
    let mut opts = RunOptions::for_spec_file(&args.spec, root.clone());
    opts.input = input;
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("husk: cancelling (Ctrl-C again to stop waiting)…");
            on_signal.cancel();
            let _ = tokio::signal::ctrl_c().await;
            std::process::exit(EXIT_CANCELLED);
        }
    });
    let sink = Arc::new(Renderer::new(global_verbose, args.json));
    let record = husk_runtime::run(&spec, opts, sink, cancel).await;
    let saved = husk_runtime::store::save(&root, &record);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        summary(&record, saved.as_ref().ok());
    }
    if let Err(e) = saved {
        eprintln!(
            "husk: warning: could not save the run record under {}: {e}",
            root.display()
        );
    }
    Ok(match record.status {
        RunStatus::Succeeded => 0,
        RunStatus::Cancelled => EXIT_CANCELLED,
        _ => EXIT_RUN_FAILED,
    })
}

/// Fails when records and artifacts could not be kept under `root`
/// (checked before the run, not noticed after it).
fn check_writable(root: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(root)?;
    let probe = root.join(format!(".husk-write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

fn read_input(path: &std::path::Path) -> Result<serde_json::Value, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--input {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("--input {}: not valid JSON: {e}", path.display()))
}

fn summary(r: &RunRecord, dir: Option<&PathBuf>) {
    let Some(report) = &r.report else { return };
    println!();
    println!(
        "run {}  {}  ({} `{}`)",
        r.id,
        r.status.as_str().to_uppercase(),
        report.kind,
        report.name
    );
    for s in &report.stages {
        let secs = s.duration_ms as f64 / 1000.0;
        let extra = s
            .error
            .as_deref()
            .map(|e| format!("  — {e}"))
            .unwrap_or_default();
        println!("  {:<16} {:<10} {secs:6.1} s{extra}", s.name, s.status);
    }
    println!(
        "  cost ${:.4}, tokens {} in / {} out",
        report.total_cost_usd, report.input_tokens, report.output_tokens
    );
    if let Some(out) = &report.output {
        let summary = out.get("summary").and_then(|v| v.as_str()).unwrap_or("");
        let status = out.get("status").and_then(|v| v.as_str()).unwrap_or("?");
        println!(
            "  output: status {status}{}",
            if summary.is_empty() {
                String::new()
            } else {
                format!(" — {summary}")
            }
        );
    }
    for a in &r.artifact_publication.manifest {
        if let Some(d) = dir {
            println!(
                "  artifact {}/{}/{} ({} bytes)",
                d.display(),
                a.stage,
                a.name,
                a.size_bytes
            );
        }
    }
    if !r.undrained_intents.is_empty() {
        println!("  intents the agent sent ({}):", r.undrained_intents.len());
        for i in &r.undrained_intents {
            let summary = i
                .payload
                .get("summary_text")
                .and_then(|v| v.as_str())
                .map_or_else(|| i.payload.to_string(), str::to_string);
            println!(
                "    {} → {} [{}]: {summary}",
                i.kind.as_str(),
                i.audience.as_str(),
                i.priority.as_str()
            );
        }
    }
    if let Some(e) = &r.error {
        println!("  error: {e}");
    }
}
