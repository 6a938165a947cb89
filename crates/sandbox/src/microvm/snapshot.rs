//! Micro-VM snapshots: a template VM booted once per guest image and
//! configuration, saved while its guest waits for an identity, and
//! restored into new sandboxes in a fraction of a cold boot.
//!
//! Layout: `<cache>/snapshots/<slot>/{meta.json,state,ram}`. The guest's
//! RAM is a file QEMU maps (`memory-backend-file`): shared while the
//! template runs, so the save (`x-ignore-shared`) writes only device state
//! to `state`; privately on restore, so pages load on first touch and no
//! sandbox ever writes to the file.
//!
//! The *slot* is a SHA-256 over every input of the guest's memory: the
//! guest image key (kernel, guest agent, busybox, modules, tools), the
//! restore layout version, the accelerator, memory, vCPUs, disk split,
//! extra kernel arguments and the VM's device layout (no balloon: see
//! `qemu::BALLOON_DEVICE`; the reporting order). A changed input is a different slot, so a
//! snapshot of another guest agent is never found, let alone used. Facts of
//! the host that a snapshot also depends on — the QEMU version and the CPU
//! model — are recorded in `meta.json` and compared before each restore;
//! a mismatch, like a truncated or corrupt file, is reported with what is
//! wrong and the sandbox boots cold.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use husk_protocol::restore::{Parked, RESTORE_VERSION};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::qemu::{self, VmMode};
use super::{Accel, rundir};
use crate::backend::SandboxConfig;
use crate::error::{Result, SandboxError};

/// Bump when the snapshot files change meaning.
const FORMAT: u32 = 1;
/// Longest a save (device state only) may take.
const SAVE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a snapshot's `meta.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub format: u32,
    /// Hex SHA-256 of the guest-side inputs (see the module docs).
    pub slot: String,
    pub image_key: String,
    pub restore_version: u16,
    pub accel: Accel,
    pub memory_mb: u32,
    pub vcpus: u32,
    pub disk_mb: u32,
    pub kernel_args: String,
    /// `qemu-system-x86_64 --version`, first line.
    pub qemu_version: String,
    /// The host CPU (model name and a digest of its feature flags).
    pub cpu_model: String,
    /// Hex SHA-256 and size of the device state.
    pub state_sha256: String,
    pub state_bytes: u64,
    /// Size of the RAM file (the guest's RAM) and how much of it holds data.
    pub ram_bytes: u64,
    pub ram_allocated_bytes: u64,
    /// How long the template took from start to saved.
    pub build_ms: u64,
}

/// What a built snapshot looks like, for `husk image build`.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotInfo {
    pub dir: PathBuf,
    #[serde(flatten)]
    pub meta: SnapshotMeta,
}

/// Why a snapshot was not used. Everything but `Missing` is worth telling
/// the user: the sandbox boots cold instead.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotProblem {
    #[error("no snapshot for this guest image and configuration")]
    Missing,
    #[error("snapshot {dir} is unreadable: {reason}")]
    Unreadable { dir: PathBuf, reason: String },
    #[error("snapshot {dir} was made with {what} {was:?}, this host has {now:?}")]
    Mismatch {
        dir: PathBuf,
        what: &'static str,
        was: String,
        now: String,
    },
    #[error("snapshot {dir}: {file} is {actual} bytes, expected {expected} (truncated?)")]
    Truncated {
        dir: PathBuf,
        file: &'static str,
        actual: u64,
        expected: u64,
    },
    #[error("snapshot {dir}: the device state does not match its checksum (corrupt)")]
    Corrupt { dir: PathBuf },
    #[error("restoring snapshot {dir} failed: {reason}")]
    RestoreFailed { dir: PathBuf, reason: String },
}

/// The inputs of one snapshot slot.
pub struct Inputs<'a> {
    pub image_key: &'a str,
    /// How the template's kernel booted (its memory layout differs).
    pub boot: super::image::KernelBoot,
    pub accel: Accel,
    pub config: &'a SandboxConfig,
}

impl Inputs<'_> {
    /// Extra kernel arguments for debugging (`HUSK_KERNEL_ARGS`).
    fn kernel_args() -> String {
        std::env::var("HUSK_KERNEL_ARGS").unwrap_or_default()
    }

    /// The slot: SHA-256 over every guest-side input.
    pub fn slot(&self) -> String {
        self.slot_with(&qemu::device_layout())
    }

    /// The slot for a given device layout (QEMU devices and fixed kernel
    /// settings the guest sees).
    fn slot_with(&self, devices: &str) -> String {
        let mut h = Sha256::new();
        let mut field = |tag: &str, bytes: &[u8]| {
            h.update(tag.as_bytes());
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        let d = self.config.disk_split();
        field("format", &FORMAT.to_le_bytes());
        field("image", self.image_key.as_bytes());
        field("boot", self.boot.as_str().as_bytes());
        field("restore", &RESTORE_VERSION.to_le_bytes());
        field("accel", self.accel.as_str().as_bytes());
        field("memory", &self.config.memory_mb.to_le_bytes());
        field("vcpus", &self.config.vcpus.to_le_bytes());
        let split = [
            d.workspace_mb,
            d.tmp_mb,
            d.home_mb,
            d.shm_mb,
            d.run_mb,
            d.overlay_mb,
        ];
        for mb in split {
            field("disk", &mb.to_le_bytes());
        }
        field("kernel-args", Self::kernel_args().as_bytes());
        field("devices", devices.as_bytes());
        super::image::hex(&h.finalize())
    }
}

/// Whether a configuration can come from a snapshot. A rootfs disk is
/// part of the guest's state but not of the snapshot: such sandboxes (and
/// the configurations the backend refuses anyway) always boot cold.
pub fn eligible(config: &SandboxConfig) -> std::result::Result<(), String> {
    if config.rootfs.is_some() {
        return Err("sandboxes with a rootfs always boot cold".into());
    }
    if config.network || !config.mounts.is_empty() {
        return Err("network and mounts are not supported by the micro-VM backend".into());
    }
    Ok(())
}

/// Where one slot's snapshot lives.
pub fn slot_dir(root: &Path, slot: &str) -> PathBuf {
    root.join(&slot[..32])
}

/// The QEMU version line, asked once per binary and process, and kept on
/// disk for the same binary (see `derived`): running `--version` costs
/// 20–40 ms of every restored start otherwise.
pub fn qemu_version(qemu: &Path) -> String {
    static CACHE: OnceLock<std::sync::Mutex<Vec<(PathBuf, String)>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut all = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, v)) = all.iter().find(|(p, _)| p == qemu) {
        return v.clone();
    }
    let ask = || {
        std::process::Command::new(qemu)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(str::to_string)
            })
    };
    let v = super::derived::from_running(&super::probe_cache_dir(), "qemu-version", qemu, ask)
        .unwrap_or_else(|| "unknown".into());
    all.push((qemu.to_path_buf(), v.clone()));
    v
}

/// The host CPU: its model name and a digest of its feature flags.
pub fn cpu_model() -> String {
    static MODEL: OnceLock<String> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            let field = |name: &str| {
                info.lines()
                    .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
                    .unwrap_or_default()
            };
            let flags = super::image::hex(&Sha256::digest(field("flags").as_bytes()));
            format!("{} (flags {})", field("model name"), &flags[..12])
        })
        .clone()
}

/// A snapshot checked and ready to restore: its device state is in memory
/// (so what QEMU loads is what was checked) and its RAM file open (so a
/// rebuild cannot swap it underneath).
pub struct Checked {
    pub dir: PathBuf,
    pub meta: SnapshotMeta,
    pub state: Vec<u8>,
    pub ram: std::fs::File,
}

/// Finds and checks the snapshot of a slot against this host.
pub fn check(
    root: &Path,
    slot: &str,
    qemu: &Path,
) -> std::result::Result<Checked, SnapshotProblem> {
    let dir = slot_dir(root, slot);
    let meta_path = dir.join("meta.json");
    let text = match std::fs::read_to_string(&meta_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SnapshotProblem::Missing);
        }
        Err(e) => return Err(unreadable(&dir, format!("meta.json: {e}"))),
    };
    let meta: SnapshotMeta =
        serde_json::from_str(&text).map_err(|e| unreadable(&dir, format!("meta.json: {e}")))?;
    let mismatch = |what, was: &str, now: &str| SnapshotProblem::Mismatch {
        dir: dir.clone(),
        what,
        was: was.into(),
        now: now.into(),
    };
    if meta.format != FORMAT || meta.slot != slot {
        return Err(mismatch(
            "snapshot format/slot",
            &format!("{}/{}", meta.format, meta.slot),
            &format!("{FORMAT}/{slot}"),
        ));
    }
    let now = qemu_version(qemu);
    if meta.qemu_version != now {
        return Err(mismatch("QEMU", &meta.qemu_version, &now));
    }
    let cpu = cpu_model();
    if meta.cpu_model != cpu {
        return Err(mismatch("CPU", &meta.cpu_model, &cpu));
    }
    let state = read_capped(&dir.join("state"), meta.state_bytes)
        .map_err(|e| unreadable(&dir, format!("state: {e}")))?;
    if (state.len() as u64) < meta.state_bytes {
        return Err(SnapshotProblem::Truncated {
            dir,
            file: "state",
            actual: state.len() as u64,
            expected: meta.state_bytes,
        });
    }
    if super::image::hex(&Sha256::digest(&state)) != meta.state_sha256 {
        return Err(SnapshotProblem::Corrupt { dir });
    }
    let ram = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("ram"))
        .map_err(|e| unreadable(&dir, format!("ram: {e}")))?;
    let ram_len = ram
        .metadata()
        .map_err(|e| unreadable(&dir, format!("ram: {e}")))?
        .len();
    if ram_len != meta.ram_bytes {
        return Err(SnapshotProblem::Truncated {
            dir,
            file: "ram",
            actual: ram_len,
            expected: meta.ram_bytes,
        });
    }
    Ok(Checked {
        dir,
        meta,
        state,
        ram,
    })
}

fn unreadable(dir: &Path, reason: String) -> SnapshotProblem {
    SnapshotProblem::Unreadable {
        dir: dir.to_path_buf(),
        reason,
    }
}

/// Reads a file, at most one byte more than `expected` (a longer file is
/// as corrupt as a shorter one, and must not be read whole).
fn read_capped(path: &Path, expected: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(expected + 1)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// Boots a template for `spec`'s configuration, saves it into `root`
/// (replacing the slot's old snapshot) and returns what was saved.
pub async fn build(
    spec: &qemu::VmSpec<'_>,
    root: &Path,
    slot: &str,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<SnapshotInfo> {
    let t = Instant::now();
    std::fs::create_dir_all(root)
        .map_err(|e| SandboxError::io(format!("creating {}", root.display()), e))?;
    let id = super::new_id()?;
    let tmp = root.join(format!(".tmp-{}-{id}", std::process::id()));
    std::fs::create_dir_all(&tmp)
        .map_err(|e| SandboxError::io(format!("creating {}", tmp.display()), e))?;
    let saved = save_template(spec, &tmp, &id, progress).await;
    let result = saved.and_then(|()| {
        let mut meta = describe(spec, &tmp, slot)?;
        meta.build_ms = t.elapsed().as_millis() as u64;
        let text = serde_json::to_string_pretty(&meta).expect("meta serializes");
        std::fs::write(tmp.join("meta.json"), text)
            .map_err(|e| SandboxError::io("writing meta.json", e))?;
        let dir = slot_dir(root, slot);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir)
            .map_err(|e| SandboxError::io(format!("storing {}", dir.display()), e))?;
        Ok(SnapshotInfo { dir, meta })
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

fn describe(spec: &qemu::VmSpec<'_>, dir: &Path, slot: &str) -> Result<SnapshotMeta> {
    use std::os::unix::fs::MetadataExt;
    let state = std::fs::read(dir.join("state"))
        .map_err(|e| SandboxError::io("reading the saved state", e))?;
    let ram = std::fs::metadata(dir.join("ram"))
        .map_err(|e| SandboxError::io("reading the saved RAM", e))?;
    Ok(SnapshotMeta {
        format: FORMAT,
        slot: slot.into(),
        image_key: spec.image.key.clone(),
        restore_version: RESTORE_VERSION,
        accel: spec.accel,
        memory_mb: spec.config.memory_mb,
        vcpus: spec.config.vcpus,
        disk_mb: spec.config.disk_mb,
        kernel_args: Inputs::kernel_args(),
        qemu_version: qemu_version(spec.qemu),
        cpu_model: cpu_model(),
        state_sha256: super::image::hex(&Sha256::digest(&state)),
        state_bytes: state.len() as u64,
        ram_bytes: ram.len(),
        ram_allocated_bytes: ram.blocks() * 512,
        build_ms: 0,
    })
}

/// Boots the template, waits until its guest is parked, saves it into
/// `dir` and ends it.
async fn save_template(
    spec: &qemu::VmSpec<'_>,
    dir: &Path,
    id: &str,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<()> {
    let ram = dir.join("ram");
    let spec = qemu::VmSpec {
        mode: VmMode::Template { ram: &ram },
        ..*spec
    };
    let run = rundir::create(id)?;
    let result = async {
        let (channels, fds) = qemu::Channels::new(spec.mode)?;
        let (mut child, stderr) = qemu::spawn(&spec, &run, id, fds).await?;
        let console = run.join("console.log");
        progress(&format!(
            "snapshot: booting a template VM ({} MiB, {} vCPU) …",
            spec.config.memory_mb, spec.config.vcpus
        ));
        let saved = park_and_save(&spec, channels, &mut child, &dir.join("state")).await;
        let console = std::fs::File::open(console).ok();
        let _ = child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
        saved.map_err(|e| qemu::explain(e, console, &stderr))
    }
    .await;
    let _ = std::fs::remove_dir_all(&run);
    result
}

async fn park_and_save(
    spec: &qemu::VmSpec<'_>,
    channels: qemu::Channels,
    child: &mut tokio::process::Child,
    state: &Path,
) -> Result<()> {
    let started = Instant::now();
    let (stream, qmp) = qemu::while_running(
        child,
        spec.boot_timeout,
        channels.open(),
        "QEMU's monitor greeting",
        "at its start",
    )
    .await?;
    let mut qmp = qmp.ok_or_else(|| SandboxError::StartFailed {
        reason: "a template without a QMP channel".into(),
        detail: String::new(),
    })?;
    let left = spec.boot_timeout.saturating_sub(started.elapsed());
    let mut frames = husk_protocol::FrameReader::new(stream);
    let parked = tokio::select! {
        r = tokio::time::timeout(left, frames.read::<Parked>()) => match r {
            Ok(Ok(Some(env))) => env.msg,
            Ok(Ok(None)) => return Err(SandboxError::Closed("the template guest closed its control port".into())),
            Ok(Err(e)) => return Err(SandboxError::Protocol(format!("template guest: {e}"))),
            Err(_) => return Err(qemu::timeout_error(spec)),
        },
        status = child.wait() => return Err(SandboxError::StartFailed {
            reason: format!("QEMU exited during the template boot ({})", status.map(|s| s.to_string()).unwrap_or_default()),
            detail: String::new(),
        }),
    };
    if parked.restore_version != RESTORE_VERSION {
        return Err(SandboxError::Protocol(format!(
            "the guest agent speaks restore version {}, this husk {RESTORE_VERSION}; rebuild the guest",
            parked.restore_version
        )));
    }
    qmp.execute("stop").await?;
    set_ignore_shared(&mut qmp).await?;
    let uri = format!("exec:cat > {}", shell_quote(&state.to_string_lossy()));
    qmp.execute_with("migrate", json!({ "uri": uri })).await?;
    wait_migration(&mut qmp, SAVE_TIMEOUT, "saving the template").await?;
    let _ = qmp.execute("quit").await;
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    // The control stream stays connected until here: the saved port state
    // says "host connected", as it is when a restore resumes.
    drop(frames);
    Ok(())
}

/// RAM that is a shared file mapping is not copied into the stream.
pub async fn set_ignore_shared(qmp: &mut super::qmp::Qmp) -> Result<()> {
    let (command, args) = ignore_shared();
    qmp.execute_with(command, args).await.map(|_| ())
}

/// The QMP command that turns `x-ignore-shared` on.
pub fn ignore_shared() -> (&'static str, serde_json::Value) {
    (
        "migrate-set-capabilities",
        json!({ "capabilities": [{ "capability": "x-ignore-shared", "state": true }] }),
    )
}

/// Polls `query-migrate` until the migration completed, failed or `limit`
/// passed.
pub async fn wait_migration(qmp: &mut super::qmp::Qmp, limit: Duration, what: &str) -> Result<()> {
    let start = Instant::now();
    loop {
        let r = qmp.execute("query-migrate").await?;
        match r.get("status").and_then(|s| s.as_str()) {
            Some("completed") => return Ok(()),
            Some("failed") | Some("cancelled") => {
                let why = r
                    .get("error-desc")
                    .and_then(|s| s.as_str())
                    .unwrap_or("no reason given");
                return Err(SandboxError::StartFailed {
                    reason: format!("{what} failed: {why}"),
                    detail: String::new(),
                });
            }
            _ => {}
        }
        if start.elapsed() > limit {
            return Err(SandboxError::StartFailed {
                reason: format!("{what} did not finish within {}s", limit.as_secs()),
                detail: String::new(),
            });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `'…'` for `sh`, with embedded quotes escaped.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::microvm::image::KernelBoot;

    #[test]
    fn every_guest_input_changes_the_slot() {
        let config = SandboxConfig::default();
        fn inputs<'a>(
            image_key: &'a str,
            boot: KernelBoot,
            accel: Accel,
            config: &'a SandboxConfig,
        ) -> Inputs<'a> {
            Inputs {
                image_key,
                boot,
                accel,
                config,
            }
        }
        let base = inputs("aaaa", KernelBoot::Pvh, Accel::Tcg, &config).slot();
        let other_image = inputs("aaab", KernelBoot::Pvh, Accel::Tcg, &config);
        assert_ne!(other_image.slot(), base, "guest image");
        let kvm = inputs("aaaa", KernelBoot::Pvh, Accel::Kvm, &config);
        assert_ne!(kvm.slot(), base, "accelerator");
        let bz = inputs("aaaa", KernelBoot::BzImage, Accel::Tcg, &config);
        assert_ne!(bz.slot(), base, "kernel boot");
        let same_devices = inputs("aaaa", KernelBoot::Pvh, Accel::Tcg, &config);
        assert_eq!(same_devices.slot_with(&qemu::device_layout()), base);
        assert_ne!(
            same_devices.slot_with("virtio-balloon-device,free-page-reporting=on"),
            base,
            "device layout"
        );
        for changed in [
            SandboxConfig {
                memory_mb: 512,
                ..SandboxConfig::default()
            },
            SandboxConfig {
                vcpus: 2,
                ..SandboxConfig::default()
            },
            SandboxConfig {
                disk_mb: 64,
                ..SandboxConfig::default()
            },
        ] {
            let i = inputs("aaaa", KernelBoot::Pvh, Accel::Tcg, &changed);
            assert_ne!(i.slot(), base, "{changed:?}");
        }
        // Host-side settings that do not reach the guest do not matter.
        let same = SandboxConfig {
            rpc_timeout_secs: 99,
            ..SandboxConfig::default()
        };
        let i = inputs("aaaa", KernelBoot::Pvh, Accel::Tcg, &same);
        assert_eq!(i.slot(), base);
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }

    fn write_snapshot(root: &Path, slot: &str, state: &[u8]) -> PathBuf {
        let dir = slot_dir(root, slot);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("state"), state).unwrap();
        std::fs::write(dir.join("ram"), vec![0u8; 4096]).unwrap();
        let meta = SnapshotMeta {
            format: FORMAT,
            slot: slot.into(),
            image_key: "img".into(),
            restore_version: RESTORE_VERSION,
            accel: Accel::Tcg,
            memory_mb: 1,
            vcpus: 1,
            disk_mb: 8,
            kernel_args: String::new(),
            qemu_version: qemu_version(Path::new("/bin/true")),
            cpu_model: cpu_model(),
            state_sha256: super::super::image::hex(&Sha256::digest(state)),
            state_bytes: state.len() as u64,
            ram_bytes: 4096,
            ram_allocated_bytes: 4096,
            build_ms: 1,
        };
        std::fs::write(dir.join("meta.json"), serde_json::to_string(&meta).unwrap()).unwrap();
        dir
    }

    #[test]
    fn checks_name_what_is_wrong() {
        let root = std::env::temp_dir().join(format!("husk-snapcheck-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let slot = "ab".repeat(32);
        let q = Path::new("/bin/true");
        assert!(matches!(
            check(&root, &slot, q),
            Err(SnapshotProblem::Missing)
        ));
        let dir = write_snapshot(&root, &slot, b"device state");
        let ok = check(&root, &slot, q).expect("a good snapshot passes");
        assert_eq!(ok.state, b"device state");
        // Truncated state.
        std::fs::write(dir.join("state"), b"device").unwrap();
        let e = check(&root, &slot, q).err().unwrap();
        assert!(
            matches!(e, SnapshotProblem::Truncated { file: "state", .. }),
            "{e}"
        );
        // Same length, other bytes.
        std::fs::write(dir.join("state"), b"device stat!").unwrap();
        let e = check(&root, &slot, q).err().unwrap();
        assert!(e.to_string().contains("corrupt"), "{e}");
        // Truncated RAM.
        write_snapshot(&root, &slot, b"device state");
        std::fs::write(dir.join("ram"), vec![0u8; 100]).unwrap();
        let e = check(&root, &slot, q).err().unwrap();
        assert!(
            matches!(e, SnapshotProblem::Truncated { file: "ram", .. }),
            "{e}"
        );
        // Another QEMU.
        write_snapshot(&root, &slot, b"device state");
        let text = std::fs::read_to_string(dir.join("meta.json")).unwrap();
        let mut meta: SnapshotMeta = serde_json::from_str(&text).unwrap();
        meta.qemu_version = "QEMU emulator version 1.0".into();
        std::fs::write(dir.join("meta.json"), serde_json::to_string(&meta).unwrap()).unwrap();
        let e = check(&root, &slot, q).err().unwrap();
        assert!(e.to_string().contains("made with QEMU"), "{e}");
        // Garbage metadata.
        std::fs::write(dir.join("meta.json"), b"{not json").unwrap();
        let e = check(&root, &slot, q).err().unwrap();
        assert!(e.to_string().contains("unreadable"), "{e}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
