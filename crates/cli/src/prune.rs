//! `husk image prune`: frees the disk that old kernels, guest images,
//! snapshots and rootfs images hold in the cache. Every changed input
//! (a new guest agent, another kernel, another VM size) leaves its old
//! entries behind, and a snapshot is ~150 MiB, so a machine that builds
//! husk often fills its cache within days. The rules (what is current, in
//! use or recent is kept) are in `husk_sandbox::microvm::cache`.

use std::time::Duration;

use clap::Args;
use husk_sandbox::microvm::cache::{self, PruneOptions, PruneReport};
use husk_sandbox::microvm::image;

use crate::CliResult;

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Keep entries used within this long, e.g. `12h`, `7d`; never less
    /// than 10 minutes (`0`: whatever is older than that goes, if not
    /// current or in use).
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = parse_duration)]
    unused_for: Duration,
    /// Only say what would be removed.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 12h or 7d: {e}"))
}

pub async fn run(args: PruneArgs) -> CliResult<i32> {
    let report = tokio::task::spawn_blocking(move || {
        let (current, why_not) = current_images();
        if let Some(why) = &why_not {
            eprintln!(
                "husk: cannot tell the current guest image ({why}); \
                 no image counts as current"
            );
        }
        cache::prune(&PruneOptions {
            cache: image::cache_dir(),
            unused_for: args.unused_for,
            current_images: current,
            dry_run: args.dry_run,
        })
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    let failed = report
        .entries
        .iter()
        .any(|e| matches!(e.decision, cache::Decision::Failed(_)));
    Ok(if failed { 1 } else { 0 })
}

/// The key of the image this husk boots, when it can be told without
/// building anything.
pub(crate) fn current_images() -> (Vec<String>, Option<String>) {
    let quiet = |_: &str| {};
    let found = image::locate_static_guest().and_then(|guest| {
        image::current_key(&image::ImageOptions {
            guest_binary: guest,
            extra_binaries: Vec::new(),
            refresh_kernel: false,
            progress: &quiet,
        })
    });
    match found {
        Ok(Some(key)) => (vec![key], None),
        Ok(None) => (Vec::new(), Some("no kernel is cached".into())),
        Err(e) => (Vec::new(), Some(e.to_string())),
    }
}

/// How much a dry run with the default rules would free, for the hint
/// `husk image build` prints: `(entries, bytes)`.
pub fn prunable(current_images: Vec<String>) -> (usize, u64) {
    let report = dry_run(current_images);
    let n = report
        .entries
        .iter()
        .filter(|e| e.decision.removes())
        .count();
    (n, report.freed_bytes)
}

/// A dry run with the default rules.
pub fn dry_run(current_images: Vec<String>) -> PruneReport {
    cache::prune(&PruneOptions {
        cache: image::cache_dir(),
        unused_for: Duration::from_secs(86400),
        current_images,
        dry_run: true,
    })
}

pub fn human_bytes(b: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let b = b as f64;
    if b >= 1024.0 * MIB {
        format!("{:.1} GiB", b / (1024.0 * MIB))
    } else {
        format!("{:.1} MiB", b / MIB)
    }
}

fn print_human(r: &PruneReport) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for e in &r.entries {
        let idle = Duration::from_secs(now.saturating_sub(e.last_used_unix) / 60 * 60);
        let why = match &e.decision {
            cache::Decision::Failed(why) => format!(" ({why})"),
            _ => String::new(),
        };
        println!(
            "{:<14} {:<8} {:>10}  last used {:>8} ago  {}{why}",
            e.decision.label(),
            e.kind.as_str(),
            human_bytes(e.bytes),
            humantime::format_duration(idle).to_string(),
            e.path.display()
        );
    }
    let kept = r.entries.iter().filter(|e| !e.decision.removes()).count();
    let gone = r.entries.len() - kept;
    let verb = if r.dry_run { "would free" } else { "freed" };
    println!(
        "{verb} {} in {gone} entr{}; kept {} in {kept} ({})",
        human_bytes(r.freed_bytes),
        if gone == 1 { "y" } else { "ies" },
        human_bytes(r.kept_bytes),
        r.cache.display()
    );
}
