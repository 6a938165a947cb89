//! The micro-VM backend: QEMU's `microvm` machine with the husk guest agent
//! as `/init` of a Debian cloud kernel.
//!
//! - Accelerator: KVM only when a probe VM really boots under it within a
//!   few seconds (some hosts expose `/dev/kvm` but hang guests); TCG software
//!   emulation otherwise. The probe's verdict is cached per host boot.
//! - Control channel: a virtio-serial port named `husk.control`, backed by
//!   a socketpair husk hands QEMU at its start; the session secret reaches the guest
//!   through fw_cfg from a 0600 file (never on a command line).
//! - Teardown: husk kills QEMU (nothing in the VM is kept: the root disk is
//!   read-only, guest storage is guest RAM). QEMU gets `PR_SET_PDEATHSIG`,
//!   so it dies with husk even on SIGKILL.
//! - Snapshots: when `husk image build` saved a template VM for this guest
//!   image and configuration, a sandbox is restored from it instead of
//!   booting (see `snapshot.rs`, `restore.rs`); a snapshot that cannot be
//!   used is reported and the sandbox boots cold.

pub mod cache;
mod clock;
mod derived;
mod floor;
pub mod image;
mod qemu;
mod qmp;
mod restore;
mod rootfs;
mod rundir;
pub mod snapshot;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use husk_protocol::Secret;
use serde::{Deserialize, Serialize};

use crate::backend::{
    Backend, BackendKind, BootPath, Sandbox, SandboxConfig, SandboxControl, SandboxInfo,
};
use crate::client::Client;
use crate::error::{Result, SandboxError};
use crate::host;
use image::GuestImage;

pub use floor::{BareFloor, FloorKernel};
pub use image::KernelBoot;
pub use qemu::console_tail;

/// Where per-VM run directories live while VMs boot.
pub fn run_base_dir() -> PathBuf {
    rundir::base_dir()
}

/// Which accelerator a VM runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl std::str::FromStr for AccelChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(AccelChoice::Auto),
            "kvm" => Ok(AccelChoice::Kvm),
            "tcg" => Ok(AccelChoice::Tcg),
            other => Err(format!(
                "unknown accelerator {other:?} (expected auto, kvm or tcg)"
            )),
        }
    }
}

/// Seconds a probe VM gets to boot under KVM before KVM is declared unusable.
const KVM_PROBE_SECS: u64 = 4;

/// Creates micro-VM sandboxes.
#[derive(Clone)]
pub struct MicrovmBackend {
    qemu: PathBuf,
    image: GuestImage,
    accel: Accel,
    accel_reason: String,
    /// Where snapshots live (`<cache>/snapshots`).
    snapshots: PathBuf,
}

impl std::fmt::Debug for MicrovmBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MicrovmBackend")
            .field("accel", &self.accel)
            .finish()
    }
}

/// Finds QEMU or says how to install it.
pub fn find_qemu() -> Result<PathBuf> {
    host::which("qemu-system-x86_64").ok_or_else(|| SandboxError::MissingTool {
        tool: "QEMU (qemu-system-x86_64)",
        hint: "install it with `apt-get install qemu-system-x86`".into(),
    })
}

impl MicrovmBackend {
    /// Finds QEMU, builds (or reuses) the guest image and settles the
    /// accelerator, probing KVM when `choice` is `Auto`.
    pub async fn new(choice: AccelChoice, progress: &(dyn Fn(&str) + Sync)) -> Result<Self> {
        Self::with_guest(choice, image::locate_static_guest()?, progress).await
    }

    /// As [`MicrovmBackend::new`], with this (static) guest agent.
    pub async fn with_guest(
        choice: AccelChoice,
        guest: PathBuf,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Self> {
        let qemu = find_qemu()?;
        let opts = image::ImageOptions {
            guest_binary: guest,
            extra_binaries: Vec::new(),
            refresh_kernel: false,
            progress,
        };
        let t = std::time::Instant::now();
        let image = blocking(|| image::build_or_get(&opts))?;
        tracing::debug!(
            ms = ms(t),
            boot = image.boot.as_str(),
            note = %image.boot_note,
            "guest image resolved"
        );
        let t = std::time::Instant::now();
        let (accel, accel_reason) = match choice {
            AccelChoice::Tcg => (Accel::Tcg, "tcg asked for".to_string()),
            AccelChoice::Kvm => (Accel::Kvm, "kvm asked for".to_string()),
            AccelChoice::Auto => kvm_verdict(&qemu, &image, progress).await,
        };
        tracing::debug!(ms = ms(t), "accelerator settled");
        // The image holds its kernel and initramfs in the cache for as
        // long as this backend (for a daemon: the process) lives.
        Ok(MicrovmBackend {
            qemu,
            image,
            accel,
            accel_reason,
            snapshots: probe_cache_dir().join("snapshots"),
        })
    }

    /// One backend per accelerator choice for the whole process: the
    /// image lookup (hashing the guest agent and busybox, reading the
    /// kernel's module tree) and the KVM verdict are settled once, not for
    /// every sandbox a daemon starts. Failures are not cached.
    pub async fn shared(
        choice: AccelChoice,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Arc<Self>> {
        static SHARED: std::sync::Mutex<Vec<(AccelChoice, Arc<MicrovmBackend>)>> =
            std::sync::Mutex::new(Vec::new());
        let cached = || {
            SHARED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .find(|(c, _)| *c == choice)
                .map(|(_, b)| b.clone())
        };
        if let Some(b) = cached() {
            return Ok(b);
        }
        let built = Arc::new(MicrovmBackend::new(choice, progress).await?);
        let mut all = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        match all.iter().find(|(c, _)| *c == choice) {
            Some((_, b)) => Ok(b.clone()),
            None => {
                all.push((choice, built.clone()));
                Ok(built)
            }
        }
    }

    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// Why this accelerator.
    pub fn accel_reason(&self) -> &str {
        &self.accel_reason
    }

    pub fn image(&self) -> &GuestImage {
        &self.image
    }

    /// The same backend with snapshots in `dir` instead of the cache.
    pub fn with_snapshot_dir(mut self, dir: PathBuf) -> Self {
        self.snapshots = dir;
        self
    }

    /// Where this backend's snapshots live.
    pub fn snapshot_dir(&self) -> &std::path::Path {
        &self.snapshots
    }

    /// Where the snapshot for `config` is (or would be).
    pub fn snapshot_path(&self, config: &SandboxConfig) -> PathBuf {
        snapshot::slot_dir(&self.snapshots, &self.slot(config))
    }

    /// Whether a start with `config` finds a saved snapshot to restore
    /// (a look at the disk, not a check: a snapshot that turns out
    /// unusable still falls back to a cold boot).
    pub fn has_snapshot(&self, config: &SandboxConfig) -> bool {
        !config.cold_boot
            && snapshot::eligible(config).is_ok()
            && self.snapshot_path(config).join("meta.json").is_file()
    }

    fn slot(&self, config: &SandboxConfig) -> String {
        snapshot::Inputs {
            image_key: &self.image.key,
            boot: self.image.boot,
            accel: self.accel,
            config,
        }
        .slot()
    }

    /// Boots a template VM for `config` and saves it, replacing the
    /// snapshot of the same inputs. Sandboxes with this configuration are
    /// then restored from it.
    pub async fn build_snapshot(
        &self,
        config: &SandboxConfig,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<snapshot::SnapshotInfo> {
        config.validate()?;
        preflight(config, &self.image)?;
        snapshot::eligible(config).map_err(SandboxError::Config)?;
        let nobody = Secret([0; 32]);
        let spec = self.spec(config, &nobody, &nobody, None, None);
        snapshot::build(&spec, &self.snapshots, &self.slot(config), progress).await
    }

    /// Restores a sandbox when a usable snapshot exists: `Ok(None)` when
    /// there is none (or `config` cannot have one), `Err` with the reason
    /// when one exists but could not be used. A guest that refuses the
    /// handshake was restored fine: that refusal is the caller's error
    /// (`Restore::Refused`), not a reason to boot cold.
    async fn try_restore(
        &self,
        config: &SandboxConfig,
        secret: &Secret,
        present: &Secret,
        id: &str,
    ) -> std::result::Result<Option<qemu::Vm>, Restore> {
        if config.cold_boot || snapshot::eligible(config).is_err() {
            return Ok(None);
        }
        let t = std::time::Instant::now();
        let slot = self.slot(config);
        // Held before it is read, so a prune cannot take it halfway; one
        // being pruned right now counts as missing.
        let held = match cache::hold(
            &snapshot::slot_dir(&self.snapshots, &slot),
            cache::Shape::Dir,
        ) {
            Ok(h) => Some(h),
            Err(cache::HoldError::Gone(_) | cache::HoldError::Pruning(_)) => return Ok(None),
            Err(e @ cache::HoldError::Io { .. }) => {
                tracing::debug!("snapshot not held: {e}");
                None
            }
        };
        let checked = match snapshot::check(&self.snapshots, &slot, &self.qemu) {
            Ok(c) => {
                tracing::debug!(ms = ms(t), "snapshot checked");
                c
            }
            Err(snapshot::SnapshotProblem::Missing) => return Ok(None),
            Err(p) => return Err(Restore::Unusable(p)),
        };
        let dir = checked.dir.clone();
        let spec = self.spec(config, secret, present, None, None);
        match restore::restore(&spec, checked, secret, id).await {
            Ok(mut vm) => {
                vm.held.extend(held);
                Ok(Some(vm))
            }
            Err(e @ SandboxError::Rejected(_)) => Err(Restore::Refused(e)),
            Err(e) => Err(Restore::Unusable(
                snapshot::SnapshotProblem::RestoreFailed {
                    dir,
                    reason: e.to_string(),
                },
            )),
        }
    }

    /// `config.rootfs`: an ext4 image file as is, a directory built into
    /// one (and held in the cache while the VM runs).
    fn resolve_rootfs(
        &self,
        config: &SandboxConfig,
    ) -> Result<Option<(PathBuf, Option<cache::Hold>)>> {
        let Some(path) = &config.rootfs else {
            return Ok(None);
        };
        if path.is_file() {
            return Ok(Some((path.clone(), None)));
        }
        let quiet = |_: &str| {};
        blocking(|| rootfs::build_ext4(path, &probe_cache_dir(), &quiet))
            .map(|(image, held)| Some((image, held)))
    }

    /// Builds (or reuses) the ext4 image of a rootfs directory.
    pub fn build_rootfs(
        dir: &std::path::Path,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<PathBuf> {
        rootfs::build_ext4(dir, &probe_cache_dir(), progress).map(|(image, _)| image)
    }

    fn boot_timeout(&self) -> Duration {
        match self.accel {
            Accel::Kvm => Duration::from_secs(15),
            Accel::Tcg => Duration::from_secs(60),
        }
    }

    /// Boots the same kernel and initramfs with `/husk-floor` as init (it
    /// powers off at once) and waits for QEMU to exit: the bare-boot floor.
    pub async fn floor_boot(&self, config: &SandboxConfig) -> Result<Duration> {
        let t = std::time::Instant::now();
        let secret = Secret(crate::namespace::random_bytes()?);
        let spec = self.spec(config, &secret, &secret, Some("/husk-floor"), None);
        let id = new_id()?;
        let dir = rundir::create(&id)?;
        let result = async {
            std::fs::write(dir.join("secret"), secret.to_hex())
                .map_err(|e| SandboxError::io("secret", e))?;
            // QEMU needs its end of the control channel even though this
            // guest never opens it.
            let (_channels, fds) = qemu::Channels::new(spec.mode)?;
            let (mut child, stderr) = qemu::spawn(&spec, &dir, &id, fds).await?;
            let status = tokio::time::timeout(spec.boot_timeout, child.wait()).await;
            match status {
                Ok(Ok(s)) if s.success() => Ok(()),
                Ok(status) => {
                    // Let the stderr reader catch up with QEMU's last words.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err(SandboxError::StartFailed {
                        reason: format!("the floor boot failed ({status:?})"),
                        detail: crate::stderr::text(&stderr),
                    })
                }
                Err(_) => Err(SandboxError::StartFailed {
                    reason: format!(
                        "the floor boot did not power off within {}s",
                        spec.boot_timeout.as_secs()
                    ),
                    detail: String::new(),
                }),
            }
        }
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        result?;
        Ok(t.elapsed())
    }

    /// The bare-boot floor of this backend's kernel and machine: a
    /// busybox-only initramfs whose init powers off (see `floor.rs`),
    /// booting `kernel`'s file.
    pub fn bare_floor(&self, config: &SandboxConfig, kernel: FloorKernel) -> Result<BareFloor> {
        BareFloor::new(&self.qemu, &self.image, self.accel, config, kernel)
    }

    fn spec<'a>(
        &'a self,
        config: &'a SandboxConfig,
        secret: &'a Secret,
        present: &'a Secret,
        rdinit: Option<&'a str>,
        rootfs: Option<&'a std::path::Path>,
    ) -> qemu::VmSpec<'a> {
        qemu::VmSpec {
            qemu: &self.qemu,
            image: &self.image,
            accel: self.accel,
            config,
            secret,
            present,
            boot_timeout: self.boot_timeout(),
            rdinit,
            rootfs,
            mode: qemu::VmMode::Cold,
        }
    }
}

/// Runs blocking work (image builds) without stalling other tasks when the
/// runtime allows it.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Where the per-boot KVM verdict is cached (next to the image cache).
fn probe_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HUSK_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("husk")
}

/// Milliseconds since `t`, for the phase timings logged at debug level.
fn ms(t: std::time::Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1e4).round() / 10.0
}

fn new_id() -> Result<String> {
    let b = crate::namespace::random_bytes()?;
    Ok(b[..8].iter().map(|x| format!("{x:02x}")).collect())
}

#[async_trait]
impl Backend for MicrovmBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Microvm
    }

    fn tool_delivery(&self) -> crate::backend::ToolDelivery {
        crate::backend::ToolDelivery::Copy
    }

    async fn start(&self, config: &SandboxConfig) -> Result<Sandbox> {
        config.validate()?;
        preflight(config, &self.image)?;
        let secret = Secret(crate::namespace::random_bytes()?);
        let present = config
            .present_secret
            .clone()
            .unwrap_or_else(|| secret.clone());
        let id = new_id()?;
        let (mut vm, boot) = match self.try_restore(config, &secret, &present, &id).await {
            Ok(Some(vm)) => {
                let snapshot = self.snapshot_path(config);
                (vm, BootPath::Restored { snapshot })
            }
            Ok(None) => (
                self.boot_cold(config, &secret, &present, &id).await?,
                BootPath::Fresh,
            ),
            Err(Restore::Refused(e)) => return Err(e),
            Err(Restore::Unusable(problem)) => {
                let reason = format!("{problem}; booting cold instead");
                // The caller says it to the user (`husk exec` on stderr, a
                // run in its events, a pool in the daemon's log): logged
                // here only as a diagnostic, so nobody reads it twice.
                tracing::info!("{reason}");
                let vm = self.boot_cold(config, &secret, &present, &id).await?;
                (vm, BootPath::ColdFallback { reason })
            }
        };
        let client = vm.client.take().expect("booted VM has a client");
        let info = SandboxInfo {
            backend: BackendKind::Microvm,
            isolation: format!(
                "micro-VM (QEMU microvm, {}), own kernel",
                self.accel.as_str()
            ),
            limits: format!(
                "{} MiB guest RAM, {} vCPU(s)",
                config.memory_mb, config.vcpus
            ),
            guest_kernel: client.welcome().kernel.clone(),
            guest_agent_version: client.welcome().agent_version.clone(),
            boot,
        };
        Ok(Sandbox::new(
            client,
            Box::new(VmControl { vm: Some(vm) }),
            info,
            config,
        ))
    }
}

/// Why a sandbox was not restored.
enum Restore {
    /// The snapshot could not be used: boot cold.
    Unusable(snapshot::SnapshotProblem),
    /// The restored guest refused the handshake: the start fails.
    Refused(SandboxError),
}

impl MicrovmBackend {
    async fn boot_cold(
        &self,
        config: &SandboxConfig,
        secret: &Secret,
        present: &Secret,
        id: &str,
    ) -> Result<qemu::Vm> {
        let (rootfs, held) = self.resolve_rootfs(config)?.unzip();
        let spec = self.spec(config, secret, present, None, rootfs.as_deref());
        let mut vm = qemu::boot(&spec, id).await?;
        vm.held.extend(held.flatten());
        Ok(vm)
    }
}

/// Checks that fail fast with a clear message instead of a confusing boot.
fn preflight(config: &SandboxConfig, image: &GuestImage) -> Result<()> {
    if config.network {
        return Err(SandboxError::Config(
            "network access is not supported by the micro-VM backend yet".into(),
        ));
    }
    if !config.mounts.is_empty() {
        return Err(SandboxError::Config(
            "host mounts are not supported by the micro-VM backend yet".into(),
        ));
    }
    let initrd = std::fs::metadata(&image.initramfs)
        .map_err(|e| SandboxError::io(format!("guest initramfs {}", image.initramfs.display()), e))?
        .len();
    // The initramfs is unpacked into RAM next to the kernel and the agent's
    // processes: ask for at least 3x its size plus 64 MiB.
    let need_mb = (initrd * 3 / (1024 * 1024)) as u32 + 64;
    if config.memory_mb < need_mb {
        return Err(SandboxError::Config(format!(
            "memory_mb {} is too small for the {} MiB initramfs; use at least {need_mb}",
            config.memory_mb,
            initrd / (1024 * 1024)
        )));
    }
    if !image.kernel.is_file() {
        return Err(SandboxError::Config(format!(
            "guest kernel {} is missing",
            image.kernel.display()
        )));
    }
    Ok(())
}

/// Stops a VM by killing QEMU. Nothing in the VM outlives it: the root
/// disk is attached `readonly=on`, a restored VM's RAM is a private
/// mapping of the snapshot, and every reply the host waited for has
/// arrived. A guest power-off first (what this did before) cost ~45 ms of
/// every `husk exec` under TCG for nothing the host keeps.
struct VmControl {
    vm: Option<qemu::Vm>,
}

#[async_trait]
impl SandboxControl for VmControl {
    fn host_pid(&self) -> Option<u32> {
        self.vm.as_ref().and_then(|vm| vm.child.id())
    }

    async fn stop(&mut self, _client: &Client) -> Result<()> {
        let Some(mut vm) = self.vm.take() else {
            return Ok(());
        };
        let _ = vm.child.start_kill();
        match tokio::time::timeout(Duration::from_secs(10), vm.child.wait()).await {
            Ok(r) => r
                .map(|_| ())
                .map_err(|e| SandboxError::io("waiting for QEMU", e)),
            Err(_) => Err(SandboxError::io(
                "waiting for QEMU",
                std::io::Error::other("still running 10 s after SIGKILL"),
            )),
        }
    }

    fn console_tail(&self, lines: usize) -> Option<String> {
        let file = self.vm.as_ref()?.console.as_ref()?.try_clone().ok()?;
        qemu::console_tail(file, lines)
    }
}

static KVM_VERDICT: OnceLock<(Accel, String)> = OnceLock::new();

/// KVM if a probe VM boots under it in time, else TCG (with the reason).
/// Cached in memory and, per host boot, on disk.
async fn kvm_verdict(
    qemu: &std::path::Path,
    image: &GuestImage,
    progress: &(dyn Fn(&str) + Sync),
) -> (Accel, String) {
    if let Some(v) = KVM_VERDICT.get() {
        return v.clone();
    }
    let verdict = probe_cached(qemu, image, progress).await;
    let _ = KVM_VERDICT.set(verdict.clone());
    verdict
}

async fn probe_cached(
    qemu: &std::path::Path,
    image: &GuestImage,
    progress: &(dyn Fn(&str) + Sync),
) -> (Accel, String) {
    let dev = host::kvm_device();
    if !dev.present {
        return (Accel::Tcg, "no /dev/kvm".into());
    }
    if !dev.accessible {
        return (Accel::Tcg, "/dev/kvm is not accessible to this user".into());
    }
    if let Some(v) = cached_kvm_verdict() {
        return v;
    }
    progress(&format!(
        "probing KVM (a guest must boot within {KVM_PROBE_SECS}s) …"
    ));
    let verdict = probe_kvm(qemu, image).await;
    let _ = std::fs::create_dir_all(probe_cache_dir());
    let text = format!("{}\n{}\n", verdict.0.as_str(), verdict.1);
    let _ = std::fs::write(verdict_file(), text);
    verdict
}

/// The KVM verdict of an earlier probe since this host booted, if any. Lets
/// `--backend auto` settle without building a guest image.
pub fn cached_kvm_verdict() -> Option<(Accel, String)> {
    let text = std::fs::read_to_string(verdict_file()).ok()?;
    let (accel, reason) = text.split_once('\n')?;
    let accel = match accel {
        "kvm" => Accel::Kvm,
        "tcg" => Accel::Tcg,
        _ => return None,
    };
    Some((accel, reason.trim().to_string()))
}

/// One verdict per host boot: KVM's usability does not change until then.
fn verdict_file() -> PathBuf {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    probe_cache_dir().join(format!("kvm-probe-{}", boot_id.trim()))
}

async fn probe_kvm(qemu: &std::path::Path, image: &GuestImage) -> (Accel, String) {
    let Ok(bytes) = crate::namespace::random_bytes() else {
        return (Accel::Tcg, "no randomness for the probe".into());
    };
    let secret = Secret(bytes);
    let config = SandboxConfig {
        memory_mb: 256,
        ..SandboxConfig::default()
    };
    let spec = qemu::VmSpec {
        qemu,
        image,
        accel: Accel::Kvm,
        config: &config,
        secret: &secret,
        present: &secret,
        boot_timeout: Duration::from_secs(KVM_PROBE_SECS),
        rdinit: None,
        rootfs: None,
        mode: qemu::VmMode::Cold,
    };
    let Ok(id) = new_id() else {
        return (Accel::Tcg, "no randomness for the probe".into());
    };
    match qemu::boot(&spec, &id).await {
        Ok(mut vm) => {
            let t = vm.client.take();
            if let Some(c) = &t {
                let _ = c.shutdown().await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), vm.child.wait()).await;
            let _ = vm.child.start_kill();
            (Accel::Kvm, "a probe VM booted under KVM".into())
        }
        Err(e) => {
            // QEMU's own complaint says most ("failed to set MSR …");
            // else the first line of husk's error.
            let text = e.to_string();
            let first = text
                .lines()
                .find_map(|l| l.strip_prefix("qemu: "))
                .or_else(|| text.lines().next())
                .unwrap_or_default()
                .trim_start_matches("qemu-system-x86_64: ")
                .to_string();
            (
                Accel::Tcg,
                format!("/dev/kvm is present but a probe VM did not boot under it: {first}"),
            )
        }
    }
}

/// Shared handle type for callers that keep one backend.
pub type SharedMicrovm = Arc<MicrovmBackend>;
