//! Starting one QEMU `microvm` and connecting to its guest agent.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use husk_protocol::Secret;
use tokio::process::{Child, Command};

use super::image::GuestImage;
use super::{Accel, qmp::Qmp, rundir};
use crate::backend::SandboxConfig;
use crate::client::Client;
use crate::error::{Result, SandboxError};

/// Lines of the serial console quoted when a boot fails.
const CONSOLE_TAIL_LINES: usize = 30;

/// The balloon device, used only for free page reporting: the guest
/// reports free blocks of its RAM and QEMU discards them, so host memory
/// follows what the guest uses instead of everything it ever touched. No
/// inflation, no statistics.
///
/// Cold VMs only. Templates and restored VMs have no balloon: their RAM
/// is the snapshot's file, and QEMU 7.2 discards a page of a file-backed
/// RAM block (a report, or an inflation a guest driver could send on its
/// own) by punching a hole in that file. A restored guest with a balloon —
/// even an unbound one its root could bind again — could zero pages of
/// the snapshot every other restored sandbox reads. A restore must match
/// its template's devices, so neither has one.
pub const BALLOON_DEVICE: &str = "virtio-balloon-device,free-page-reporting=on";

/// Smallest free block the guest reports, as a page order: 2^9 pages =
/// 2 MiB, the kernel's default (`pageblock_order`), spelled out so that it
/// is part of the snapshot slot.
pub const REPORTING_ORDER: u32 = 9;

/// The guest-visible devices and kernel settings of a snapshot VM
/// (template and restore) beyond the guest image: part of its slot.
pub fn device_layout() -> String {
    format!("no-balloon;page_reporting_order={REPORTING_ORDER};tcg-cpu={TCG_CPU}")
}

/// The vCPU model under TCG: all that TCG emulates (`max`) but ERMS and
/// FSRM. With those the guest kernel copies and clears memory with
/// `rep movsb`, which TCG executes one byte per dispatch of its translated
/// block; without them it picks `rep movsq` or unrolled loops, and guest
/// programs' `memcpy` picks vector loops. Measured on a cold boot: the
/// kernel reaches `/init` ~0.3 s sooner (unpacking the initramfs,
/// clearing pages). KVM guests get the host's CPU as it is.
pub const TCG_CPU: &str = "max,-erms,-fsrm";

/// `-accel` and `-cpu` for `accel` (shared with the bare-boot floor).
pub fn accel_args(accel: Accel) -> [&'static str; 4] {
    match accel {
        Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
        Accel::Tcg => ["-accel", "tcg", "-cpu", TCG_CPU],
    }
}

/// QEMU's descriptor for its end of the control channel.
pub const CONTROL_FD: i32 = 5;
/// QEMU's descriptor for its end of the QMP channel (templates, restores).
pub const QMP_FD: i32 = 6;

/// husk's ends of a VM's channels.
pub struct Channels {
    pub control: std::os::unix::net::UnixStream,
    pub qmp: Option<std::os::unix::net::UnixStream>,
}

/// Descriptors for QEMU, each with the number it gets there.
pub type QemuFds = Vec<(std::os::fd::OwnedFd, i32)>;

impl Channels {
    /// The control channel, and QMP unless `mode` is a cold boot: husk's
    /// ends, and QEMU's to pass to [`spawn`] (which closes husk's copies,
    /// so that QEMU's exit reads as end-of-file on husk's ends).
    pub fn new(mode: VmMode<'_>) -> Result<(Channels, QemuFds)> {
        let pair = || {
            std::os::unix::net::UnixStream::pair()
                .map_err(|e| SandboxError::io("creating a socketpair for QEMU", e))
        };
        let (control, theirs) = pair()?;
        let mut fds = vec![(theirs.into(), CONTROL_FD)];
        let qmp = if mode == VmMode::Cold {
            None
        } else {
            let (ours, theirs) = pair()?;
            fds.push((theirs.into(), QMP_FD));
            Some(ours)
        };
        Ok((Channels { control, qmp }, fds))
    }

    /// husk's ends as tokio streams (QMP negotiated), once QEMU runs. The
    /// QMP greeting is waited for without a bound of its own: callers
    /// with QMP race this against a timeout and QEMU's exit.
    pub async fn open(self) -> Result<(tokio::net::UnixStream, Option<Qmp>)> {
        let control = tokio_stream(self.control)?;
        let qmp = match self.qmp {
            Some(q) => Some(Qmp::over(tokio_stream(q)?).await?),
            None => None,
        };
        Ok((control, qmp))
    }
}

pub fn tokio_stream(s: std::os::unix::net::UnixStream) -> Result<tokio::net::UnixStream> {
    s.set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(s))
        .map_err(|e| SandboxError::io("QEMU channel", e))
}

/// What a VM needs to start.
pub struct VmSpec<'a> {
    pub qemu: &'a Path,
    pub image: &'a GuestImage,
    pub accel: Accel,
    pub config: &'a SandboxConfig,
    /// Secret the guest expects.
    pub secret: &'a Secret,
    /// Secret the host presents (differs only in tests).
    pub present: &'a Secret,
    pub boot_timeout: Duration,
    /// Kernel `rdinit=` override (the benchmark's bare-boot floor).
    pub rdinit: Option<&'a str>,
    /// A read-only ext4 root image on virtio-blk (the guest overlays it).
    pub rootfs: Option<&'a Path>,
    /// Cold boot, snapshot template, or restore.
    pub mode: VmMode<'a>,
}

/// How a VM comes to life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmMode<'a> {
    /// Boots the kernel; the secret comes through fw_cfg.
    Cold,
    /// Boots the kernel as a snapshot template (`husk.template`, no
    /// secret), its RAM a shared mapping of `ram` so that saving it writes
    /// only device state.
    Template { ram: &'a Path },
    /// Waits for a saved template's device state (`-incoming defer`) and
    /// maps its RAM file privately: pages load on first touch, and the
    /// sandbox's writes never reach the file.
    Restore { ram: &'a Path },
}

/// Escapes a value for QEMU's `key=value,…` option syntax.
fn opt_value(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

/// A booted VM.
pub struct Vm {
    pub child: Child,
    pub client: Option<Client>,
    /// The console log, unlinked but still open for reading.
    pub console: Option<File>,
    /// Cache entries this VM reads while it runs (its snapshot, its
    /// rootfs): no prune removes them before the VM ends.
    pub held: Vec<super::cache::Hold>,
}

/// Builds QEMU's argument list.
pub fn qemu_args(spec: &VmSpec<'_>, dir: &Path, id: &str) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let machine = match spec.mode {
        VmMode::Cold => "microvm,x-option-roms=off",
        // Same machine for both: a restore must match its template.
        VmMode::Template { .. } | VmMode::Restore { .. } => {
            "microvm,x-option-roms=off,memory-backend=husk.ram"
        }
    };
    push(&[
        "-M",
        machine,
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
    ]);
    push(&accel_args(spec.accel));
    let mem = format!("{}M", spec.config.memory_mb);
    let smp = spec.config.vcpus.to_string();
    push(&["-m", &mem, "-smp", &smp]);
    if let VmMode::Template { ram } | VmMode::Restore { ram } = spec.mode {
        let share = if matches!(spec.mode, VmMode::Template { .. }) {
            "on"
        } else {
            "off"
        };
        let backend = format!(
            "memory-backend-file,id=husk.ram,size={mem},mem-path={},share={share}",
            opt_value(ram)
        );
        push(&["-object", &backend]);
    }
    let kernel = spec.image.kernel.to_string_lossy().into_owned();
    let initrd = spec.image.initramfs.to_string_lossy().into_owned();
    let mut append = format!(
        "console=ttyS0 quiet panic=-1 husk.id={id} husk.memory_mb={}",
        spec.config.memory_mb
    );
    // The guest sizes its tmpfs mounts (guest RAM) from disk_mb, split as
    // on the namespace backend.
    let d = spec.config.disk_split();
    append.push_str(&format!(
        " husk.tmpfs=/workspace:{},/tmp:{},/home/sandbox:{},/dev/shm:{},/run:{},/.rw:{}",
        d.workspace_mb, d.tmp_mb, d.home_mb, d.shm_mb, d.run_mb, d.overlay_mb
    ));
    append.push_str(&format!(
        " page_reporting.page_reporting_order={REPORTING_ORDER}"
    ));
    if spec.accel == Accel::Tcg {
        append.push_str(&super::clock::tcg_kernel_args());
    }
    // Extra kernel arguments for debugging boots, e.g. `loglevel=7`.
    if let Ok(extra) = std::env::var("HUSK_KERNEL_ARGS") {
        append.push(' ');
        append.push_str(&extra);
    }
    if let VmMode::Template { .. } = spec.mode {
        append.push_str(" husk.template");
    }
    if let Some(init) = spec.rdinit {
        append.push_str(&format!(" rdinit={init}"));
    }
    if let Some(img) = spec.rootfs {
        append.push_str(" husk.root=vda");
        let drive = format!(
            "file={},if=none,id=root,format=raw,readonly=on",
            img.to_string_lossy()
        );
        push(&["-drive", &drive, "-device", "virtio-blk-device,drive=root"]);
    }
    if let VmMode::Restore { .. } = spec.mode {
        // The kernel is already in the restored RAM. Without `-kernel`
        // QEMU neither reads the kernel into its own memory (~14 MiB per
        // VM) nor maps the initramfs; the id stays on the command line.
        push(&["-name", &format!("guest=husk.id={id}")]);
    } else {
        push(&["-kernel", &kernel, "-initrd", &initrd, "-append", &append]);
    }
    push(&["-serial", &format!("file:{}", p("console.log"))]);
    // One port is all husk uses; the default of 31 costs ~60 virtqueues
    // that the guest driver sets up at boot (~80 ms under TCG).
    push(&["-device", "virtio-serial-device,max_ports=2"]);
    // The control channel (and QMP) are socketpairs husk made before it
    // started QEMU: connected from the first instant, no socket file to
    // wait for.
    push(&[
        "-chardev",
        &format!("socket,id=husk,fd={CONTROL_FD}"),
        "-device",
        "virtserialport,chardev=husk,name=husk.control",
    ]);
    if spec.mode == VmMode::Cold {
        push(&["-device", BALLOON_DEVICE]);
    }
    // QMP saves a template and loads a restore; a cold VM is stopped by
    // killing QEMU and needs no monitor.
    if spec.mode != VmMode::Cold {
        push(&[
            "-chardev",
            &format!("socket,id=qmp,fd={QMP_FD}"),
            "-mon",
            "chardev=qmp,mode=control",
        ]);
    }
    match spec.mode {
        VmMode::Cold => push(&[
            "-fw_cfg",
            &format!("name=opt/husk/secret,file={}", p("secret")),
        ]),
        // Neither has a secret: a restored guest gets its own from the
        // host on the control port.
        VmMode::Template { .. } => {}
        VmMode::Restore { .. } => push(&["-incoming", "defer"]),
    }
    a
}

/// Boots a VM and completes the handshake, or explains why not.
pub async fn boot(spec: &VmSpec<'_>, id: &str) -> Result<Vm> {
    let dir = rundir::create(id)?;
    let result = boot_in(spec, &dir, id).await;
    // Whatever happened, nothing of the run directory stays on disk: the
    // channels are socketpairs and the console is open.
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn boot_in(spec: &VmSpec<'_>, dir: &Path, id: &str) -> Result<Vm> {
    write_private(&dir.join("secret"), spec.secret.to_hex().as_bytes())?;
    let (channels, fds) = Channels::new(spec.mode)?;
    let (mut child, stderr) = spawn(spec, dir, id, fds).await?;
    let console_path = dir.join("console.log");
    let started = Instant::now();
    let connected = async {
        // A cold boot has no QMP: nothing here waits.
        debug_assert!(channels.qmp.is_none());
        let (stream, _) = channels.open().await?;
        handshake(spec, stream, &mut child, started).await
    }
    .await;
    let console = File::open(&console_path).ok();
    match connected {
        Ok(client) => Ok(Vm {
            child,
            client: Some(client),
            console,
            held: Vec::new(),
        }),
        Err(mut e) => {
            if matches!(e, SandboxError::Closed(_))
                && let Ok(Ok(status)) =
                    tokio::time::timeout(Duration::from_secs(1), child.wait()).await
            {
                let reason =
                    format!("the VM stopped before its guest agent answered (QEMU {status})");
                e = SandboxError::StartFailed {
                    reason,
                    detail: String::new(),
                };
            }
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
            Err(explain(e, console, &stderr))
        }
    }
}

/// Starts QEMU for `spec` (killed on drop and when husk dies). Each of
/// `fds` becomes the child's descriptor of the number it is paired with:
/// the channels' 5 and 6, a restore's migration stream 3 and RAM file 4.
pub async fn spawn(
    spec: &VmSpec<'_>,
    dir: &Path,
    id: &str,
    fds: Vec<(std::os::fd::OwnedFd, i32)>,
) -> Result<(Child, crate::stderr::StderrBuf)> {
    use std::os::fd::AsRawFd;
    let mut cmd = Command::new(spec.qemu);
    cmd.args(qemu_args(spec, dir, id))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd.kill_on_drop(true);
    debug_assert!(
        fds.iter().all(|(_, t)| *t >= 3)
            && fds
                .iter()
                .enumerate()
                .all(|(i, (_, t))| fds[..i].iter().all(|(_, u)| u != t)),
        "descriptor numbers for QEMU must be distinct and above stderr"
    );
    // Above every target number first, so one dup2 cannot clobber the
    // source of the next.
    let mut high = Vec::with_capacity(fds.len());
    for (fd, target) in &fds {
        let copy = rustix::io::fcntl_dupfd_cloexec(fd, 64)
            .map_err(|e| SandboxError::io("passing a descriptor to QEMU", e.into()))?;
        high.push((copy, *target));
    }
    drop(fds);
    let raw: Vec<(i32, i32)> = high.iter().map(|(f, t)| (f.as_raw_fd(), *t)).collect();
    // prctl(PR_SET_PDEATHSIG) and dup2 are async-signal-safe and allocate
    // nothing; they run in the forked child before exec. The descriptors in
    // `raw` stay open in the parent until the spawn has returned (`high` is
    // dropped after it), and dup2 leaves the targets without close-on-exec.
    // SAFETY: only async-signal-safe calls in the child, on valid descriptors.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            for &(fd, target) in &raw {
                if libc::dup2(fd, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = crate::spawner::spawn(cmd)
        .await
        .map_err(|e| SandboxError::io(format!("starting {}", spec.qemu.display()), e))?;
    drop(high);
    let stderr = crate::stderr::collect(&mut child);
    Ok((child, stderr))
}

/// The session handshake on a connected control stream, bounded by the
/// boot timeout and by QEMU's life.
pub async fn handshake<S>(
    spec: &VmSpec<'_>,
    stream: S,
    child: &mut Child,
    started: Instant,
) -> Result<Client>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let left = spec.boot_timeout.saturating_sub(started.elapsed());
    let roots = spec.config.mounts.iter().map(|m| m.guest.clone()).collect();
    tokio::select! {
        r = tokio::time::timeout(left, Client::connect(stream, spec.present, roots)) => match r {
            Ok(r) => r,
            Err(_) => Err(timeout_error(spec)),
        },
        status = child.wait() => Err(SandboxError::StartFailed {
            reason: format!("QEMU exited during boot ({})", status.map(|s| s.to_string()).unwrap_or_default()),
            detail: String::new(),
        }),
    }
}

/// Runs `work` bounded by `limit` and raced against QEMU's exit. A failure
/// is said as "`what` did not finish", or as QEMU exiting `when` with its
/// status (also when `work` failed on a channel QEMU's exit closed).
pub async fn while_running<T>(
    child: &mut Child,
    limit: Duration,
    work: impl std::future::Future<Output = Result<T>>,
    what: &str,
    when: &str,
) -> Result<T> {
    let done = tokio::select! {
        r = tokio::time::timeout(limit, work) => match r {
            Ok(r) => r,
            Err(_) => Err(SandboxError::StartFailed {
                reason: format!("{what} did not finish within {}s", limit.as_secs()),
                detail: String::new(),
            }),
        },
        status = child.wait() => Err(SandboxError::StartFailed {
            reason: format!("QEMU exited {when} ({})", status.map(|s| s.to_string()).unwrap_or_default()),
            detail: String::new(),
        }),
    };
    match done {
        Ok(v) => Ok(v),
        Err(e) => Err(or_exited(child, e, when).await),
    }
}

/// `e`, unless it is a channel closing or failing because QEMU exited
/// (seen within a second): then that QEMU exited `when`, with its status,
/// which says more.
async fn or_exited(child: &mut Child, e: SandboxError, when: &str) -> SandboxError {
    if !matches!(e, SandboxError::Closed(_) | SandboxError::Io { .. }) {
        return e;
    }
    match tokio::time::timeout(Duration::from_secs(1), child.wait()).await {
        Ok(Ok(status)) => SandboxError::StartFailed {
            reason: format!("QEMU exited {when} ({status})"),
            detail: String::new(),
        },
        _ => e,
    }
}

pub fn timeout_error(spec: &VmSpec<'_>) -> SandboxError {
    SandboxError::StartFailed {
        reason: format!(
            "the guest agent did not answer within {}s ({} boot)",
            spec.boot_timeout.as_secs(),
            spec.accel.as_str()
        ),
        detail: String::new(),
    }
}

pub fn explain(
    e: SandboxError,
    console: Option<File>,
    stderr: &crate::stderr::StderrBuf,
) -> SandboxError {
    if let SandboxError::Rejected(_) = e {
        return e;
    }
    let mut detail = String::new();
    let qemu_err = crate::stderr::text(stderr).trim().to_string();
    if !qemu_err.is_empty() {
        detail.push_str(&format!("qemu: {qemu_err}\n"));
    }
    if let Some(tail) = console.and_then(|f| console_tail(f, CONSOLE_TAIL_LINES)) {
        detail.push_str("serial console:\n");
        detail.push_str(&tail);
    }
    match e {
        SandboxError::StartFailed { reason, .. } => SandboxError::StartFailed { reason, detail },
        other => SandboxError::StartFailed {
            reason: other.to_string(),
            detail,
        },
    }
}

/// The last `lines` lines of the console log.
pub fn console_tail(mut f: File, lines: usize) -> Option<String> {
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(64 * 1024);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    (!tail.trim().is_empty()).then_some(tail)
}

fn write_private(path: &PathBuf, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| SandboxError::io(format!("writing {}", path.display()), e))?;
    f.write_all(data)
        .map_err(|e| SandboxError::io(format!("writing {}", path.display()), e))
}
