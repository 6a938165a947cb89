//! `husk image build`: builds (or finds in the cache) the micro-VM guest
//! image, saves a snapshot of a booted VM for `husk exec`'s default
//! configuration (or the one given) so micro-VMs are restored instead of
//! booted, and optionally builds an ext4 rootfs image from a directory,
//! showing each step as it happens.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand};
use husk_sandbox::SandboxConfig;
use husk_sandbox::microvm::{AccelChoice, MicrovmBackend, image, snapshot::SnapshotInfo};
use serde::Serialize;

use crate::CliResult;

#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Build the guest kernel + initramfs (cached; rebuilt only when an input changes).
    Build(BuildArgs),
    /// Remove cached kernels, images, snapshots and rootfs images that are
    /// not current, not in use and not used recently.
    Prune(crate::prune::PruneArgs),
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// Also build a read-only ext4 rootfs image from this directory.
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// Use the cached kernel without asking apt for a newer one.
    #[arg(long)]
    offline: bool,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Do not save a micro-VM snapshot.
    #[arg(long)]
    no_snapshot: bool,
    /// Snapshot for micro-VMs with this much memory (MiB).
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    memory: u32,
    /// Snapshot for micro-VMs with this many CPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    cpus: u32,
    /// Snapshot for micro-VMs with this much writable storage (MiB; a
    /// spec's `disk_mb`).
    #[arg(
        long,
        value_name = "MIB",
        default_value_t = husk_sandbox::backend::DEFAULT_DISK_MB,
        value_parser = clap::value_parser!(u32).range(husk_sandbox::backend::MIN_DISK_MB as i64..)
    )]
    disk: u32,
    /// Accelerator the snapshot is for: auto, kvm or tcg.
    #[arg(long, default_value = "auto", value_parser = parse_accel)]
    accel: AccelChoice,
}

fn parse_accel(s: &str) -> Result<AccelChoice, String> {
    s.parse()
}

#[derive(Serialize)]
struct Report {
    image: image::GuestImage,
    rootfs: Option<PathBuf>,
    snapshot: Option<SnapshotInfo>,
    cache_dir: PathBuf,
    seconds: f64,
    /// Bytes `husk image prune` would free with its default rules.
    prunable_bytes: u64,
    #[serde(skip)]
    prunable_entries: usize,
}

pub async fn run(args: ImageArgs) -> CliResult<i32> {
    match args.command {
        ImageCommand::Build(b) => build(b).await,
        ImageCommand::Prune(p) => crate::prune::run(p).await,
    }
}

async fn build(args: BuildArgs) -> CliResult<i32> {
    if let Some(dir) = &args.rootfs
        && !dir.is_dir()
    {
        return Err(format!("--rootfs {}: not a directory", dir.display()).into());
    }
    let t = Instant::now();
    let (no_snapshot, accel) = (args.no_snapshot, args.accel);
    let config = SandboxConfig {
        memory_mb: args.memory,
        vcpus: args.cpus,
        disk_mb: args.disk,
        ..SandboxConfig::default()
    };
    let mut report = tokio::task::spawn_blocking(move || -> CliResult<Report> {
        let progress = &crate::exec::progress;
        let guest = image::locate_static_guest()?;
        let opts = image::ImageOptions {
            guest_binary: guest,
            extra_binaries: Vec::new(),
            refresh_kernel: !args.offline,
            progress,
        };
        let image = image::build_or_get(&opts)?;
        let rootfs = match &args.rootfs {
            Some(dir) => Some(MicrovmBackend::build_rootfs(dir, progress)?),
            None => None,
        };
        Ok(Report {
            image,
            rootfs,
            snapshot: None,
            cache_dir: image::cache_dir(),
            seconds: t.elapsed().as_secs_f64(),
            prunable_bytes: 0,
            prunable_entries: 0,
        })
    })
    .await??;
    if !no_snapshot {
        let progress = &crate::exec::progress;
        let backend = MicrovmBackend::new(accel, progress).await?;
        report.snapshot = Some(backend.build_snapshot(&config, progress).await?);
        report.seconds = t.elapsed().as_secs_f64();
    }
    let key = report.image.key.clone();
    (report.prunable_entries, report.prunable_bytes) =
        tokio::task::spawn_blocking(move || crate::prune::prunable(vec![key])).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    Ok(0)
}

fn print_human(r: &Report) {
    let img = &r.image;
    let state = if img.built { "built" } else { "cached" };
    println!(
        "guest image {} ({state}, {:.1} s)",
        &img.key[..16],
        r.seconds
    );
    println!(
        "  kernel     {} ({})",
        img.kernel.display(),
        img.kernel_package
    );
    println!("  boot       {} ({})", img.boot.as_str(), img.boot_note);
    println!(
        "  initramfs  {} ({:.1} MiB)",
        img.initramfs.display(),
        img.initramfs_bytes as f64 / 1048576.0
    );
    println!("  modules    {}", img.modules.join(" "));
    if let Some(rootfs) = &r.rootfs {
        println!("  rootfs     {}", rootfs.display());
    }
    if let Some(s) = &r.snapshot {
        let m = &s.meta;
        println!(
            "  snapshot   {} ({} MiB, {} vCPU, {}; {:.1} MiB of RAM in use, saved in {:.1} s)",
            s.dir.display(),
            m.memory_mb,
            m.vcpus,
            m.accel.as_str(),
            m.ram_allocated_bytes as f64 / 1048576.0,
            m.build_ms as f64 / 1000.0
        );
    }
    if r.prunable_entries > 0 {
        println!(
            "  cache      {} older entries unused for a day hold {}: `husk image prune` removes them",
            r.prunable_entries,
            crate::prune::human_bytes(r.prunable_bytes)
        );
    }
}
