//! The namespace backend: the guest agent runs as PID 1 in fresh user,
//! pid, ipc, uts, mount, cgroup and (unless networking is asked for)
//! network namespaces, with a read-only view of the host's system
//! directories and private writable `/workspace`, `/tmp`, `/home/sandbox`
//! (tmpfs mounts, sized from `disk_mb` because their pages are host RAM;
//! the root and `/dev` are read-only).
//!
//! The layout is decided here once ([`layout`]) and built by a launcher:
//! husk's own (`husk-guest launch`, the guest binary's launcher mode, which
//! reads it as a plan) or bubblewrap (the same steps as arguments). The
//! native one is the default because it starts a sandbox in about half
//! bubblewrap's time (docs/BENCHMARKS.md); bubblewrap is used when the
//! native launcher reports that this host refuses it (user namespaces
//! restricted to labelled binaries, a kernel before 5.12), or when
//! `HUSK_NAMESPACE_LAUNCHER=bubblewrap` asks for it.
//!
//! The control channel is one end of a socketpair handed to the guest as
//! file descriptor 3, and the session secret arrives on descriptor 4; so
//! there is no socket file inside the sandbox for an agent to find or
//! replace. If the host process dies, the launcher dies with it
//! (`PR_SET_PDEATHSIG`, bubblewrap's `--die-with-parent`) and so does the
//! guest, PID 1 of the pid namespace, taking every remaining process in
//! the sandbox with it.
//!
//! Resource limits: this host kind has no delegated cgroup v2 subtree, so
//! limits are rlimits set on the launcher and inherited by everything
//! inside (`RLIMIT_DATA` per process for memory, `RLIMIT_NPROC` for
//! processes) and CPU affinity for CPUs. `SandboxInfo::limits` says which
//! applied.

mod layout;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use husk_protocol::Secret;
use tokio::process::{Child, Command};

use crate::backend::{Backend, BackendKind, Sandbox, SandboxConfig, SandboxControl, SandboxInfo};
use crate::client::Client;
use crate::error::{Result, SandboxError};
use crate::host;

pub use layout::SANDBOX_UID;

/// When husk runs as root, the launcher runs as this host uid, so that
/// root-owned host files do not look like the sandbox user's own.
const DEFAULT_UNPRIVILEGED_UID: u32 = 65534;
/// Chooses the launcher: `native` or `bubblewrap`.
const LAUNCHER_VAR: &str = "HUSK_NAMESPACE_LAUNCHER";
/// The native launcher's exit status for "this host cannot run me"
/// (`husk-guest launch`, see its module docs).
const NATIVE_UNSUPPORTED_EXIT: i32 = 97;

static NEXT_CPU: AtomicUsize = AtomicUsize::new(0);
/// Why the native launcher cannot run on this host, once a start found
/// out (the host does not change while husk runs).
static NATIVE_UNSUPPORTED: OnceLock<String> = OnceLock::new();

/// What builds a namespace sandbox and execs the guest agent in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// `husk-guest launch`: husk's own, the default.
    Native,
    /// bubblewrap: the fallback where the native launcher cannot run
    /// (unprivileged user namespaces refused to unlabelled binaries, a
    /// kernel before 5.12).
    Bubblewrap,
}

impl Launcher {
    fn describe(self) -> &'static str {
        match self {
            Launcher::Native => "husk launcher",
            Launcher::Bubblewrap => "bubblewrap",
        }
    }

    /// From `HUSK_NAMESPACE_LAUNCHER` (unset: native).
    fn from_env(value: Option<&std::ffi::OsStr>) -> Result<Launcher> {
        match value.map(|v| v.to_str()) {
            None => Ok(Launcher::Native),
            Some(Some("native")) => Ok(Launcher::Native),
            Some(Some("bubblewrap" | "bwrap")) => Ok(Launcher::Bubblewrap),
            Some(other) => Err(SandboxError::Config(format!(
                "{LAUNCHER_VAR}={:?} is not a launcher (expected native or bubblewrap)",
                other.unwrap_or("(not UTF-8)")
            ))),
        }
    }
}

/// Creates namespace sandboxes.
#[derive(Debug, Clone)]
pub struct NamespaceBackend {
    /// bubblewrap, when installed.
    bwrap: Option<PathBuf>,
    launcher: Launcher,
    /// The host uid the launcher runs as when husk is root.
    host_uid: u32,
}

impl NamespaceBackend {
    /// The backend with the launcher `HUSK_NAMESPACE_LAUNCHER` names
    /// (native unless it says `bubblewrap`). Fails with install
    /// instructions when bubblewrap is asked for and absent, and with a
    /// clear error when `HUSK_SANDBOX_HOST_UID` is not a uid.
    pub fn new() -> Result<Self> {
        let launcher = Launcher::from_env(std::env::var_os(LAUNCHER_VAR).as_deref())?;
        let host_uid = host_uid(std::env::var_os(HOST_UID_VAR).as_deref())?;
        let backend = NamespaceBackend {
            bwrap: host::which("bwrap"),
            launcher: Launcher::Native,
            host_uid,
        };
        backend.with_launcher(launcher)
    }

    /// The same backend with launcher `launcher`; bubblewrap must be
    /// installed to be chosen.
    pub fn with_launcher(mut self, launcher: Launcher) -> Result<Self> {
        if launcher == Launcher::Bubblewrap && self.bwrap.is_none() {
            return Err(no_bwrap());
        }
        self.launcher = launcher;
        Ok(self)
    }

    /// Runs the launcher as host uid `uid` when husk is root, instead of
    /// `HUSK_SANDBOX_HOST_UID` or 65534. `RLIMIT_NPROC` counts per host
    /// uid, so sandboxes that must not share a process limit with others
    /// (a test of that limit) need their own.
    pub fn with_host_uid(mut self, uid: u32) -> Self {
        self.host_uid = uid;
        self
    }

    /// bubblewrap with exactly the sandbox's layout, running `true`
    /// instead of the guest (without the passwd/group files, which need
    /// the descriptor handover): the floor the benchmarks compare against.
    pub fn floor_command(&self, config: &SandboxConfig) -> Result<std::process::Command> {
        let bwrap = self.bwrap.as_ref().ok_or_else(no_bwrap)?;
        let steps = layout::steps(config, Some(Path::new("/bin/true")), &[], false);
        let args = layout::bwrap_args(config, &steps, &["/bin/true"]);
        let mut cmd = std::process::Command::new(bwrap);
        cmd.args(args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if rustix::process::geteuid().is_root() {
            use std::os::unix::process::CommandExt;
            cmd.uid(self.host_uid).gid(self.host_uid);
        }
        Ok(cmd)
    }

    /// The launcher a start uses: the chosen one, unless the native one
    /// already proved unusable here and bubblewrap is installed.
    fn effective_launcher(&self) -> Launcher {
        match self.launcher {
            Launcher::Native if NATIVE_UNSUPPORTED.get().is_some() && self.bwrap.is_some() => {
                Launcher::Bubblewrap
            }
            l => l,
        }
    }
}

fn no_bwrap() -> SandboxError {
    SandboxError::MissingTool {
        tool: "bubblewrap (bwrap)",
        hint: "install it with `apt-get install bubblewrap`".into(),
    }
}

/// Sizing tmpfs mounts (`--size`, bubblewrap 0.7 and later) is how
/// `disk_mb` is enforced. An older bubblewrap fails every start with
/// "Unknown option --size"; that failure is turned into this clear one
/// (found at the first start rather than by running `bwrap --help` before
/// each: an extra process on every `husk exec`).
fn explain_start_failure(bwrap_stderr: &str) -> Option<SandboxError> {
    let old = bwrap_stderr.contains("Unknown option") && bwrap_stderr.contains("--size");
    old.then(|| SandboxError::Unavailable {
        backend: "namespace",
        reason: "bubblewrap has no --size option (needed to bound each tmpfs by disk_mb); \
                 install bubblewrap 0.7 or later"
            .into(),
    })
}

/// Overrides [`DEFAULT_UNPRIVILEGED_UID`].
const HOST_UID_VAR: &str = "HUSK_SANDBOX_HOST_UID";

/// The host uid the launcher runs as when husk is root, from the value of
/// `HUSK_SANDBOX_HOST_UID` (`None`: unset). A value that is not a uid is an
/// error rather than silently ignored; `0` is allowed but warned about,
/// since the sandbox user then maps to host root.
fn host_uid(value: Option<&std::ffi::OsStr>) -> Result<u32> {
    let Some(value) = value else {
        return Ok(DEFAULT_UNPRIVILEGED_UID);
    };
    let bad = || {
        SandboxError::Config(format!(
            "{HOST_UID_VAR}={value:?} is not a uid (expected a number from 0 to {})",
            u32::MAX - 1
        ))
    };
    let uid: u32 = value
        .to_str()
        .ok_or_else(bad)?
        .trim()
        .parse()
        .map_err(|_| bad())?;
    // (uid_t)-1 means "no change" to setuid(2): never a real uid.
    if uid == u32::MAX {
        return Err(bad());
    }
    if uid == 0 {
        tracing::warn!(
            "{HOST_UID_VAR}=0: the sandbox user maps to host root, so root-owned host files \
             look like the sandbox user's own"
        );
    }
    Ok(uid)
}

/// The descriptors a sandbox starts with, before they are handed over.
struct Handover {
    control: OwnedFd,
    secret: OwnedFd,
    passwd: OwnedFd,
    group: OwnedFd,
    /// Sources of the copied mounts, in order, from
    /// [`layout::FIRST_COPY_FD`] on.
    copies: Vec<OwnedFd>,
    /// The native launcher's plan, after the copies.
    plan: Option<OwnedFd>,
}

#[async_trait]
impl Backend for NamespaceBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Namespace
    }

    fn tool_delivery(&self) -> crate::backend::ToolDelivery {
        crate::backend::ToolDelivery::Mount
    }

    async fn start(&self, config: &SandboxConfig) -> Result<Sandbox> {
        config.validate()?;
        if let Some(root) = config.rootfs.as_ref().filter(|r| !r.is_dir()) {
            return Err(SandboxError::Config(format!(
                "rootfs {}: the namespace backend needs a directory",
                root.display()
            )));
        }
        let guest = match &config.guest_binary {
            Some(p) => p.clone(),
            None => crate::guest_bin::locate_guest()?,
        };
        let shared = share_unreachable(config, self.host_uid).await;
        let launcher = self.effective_launcher();
        match self.start_with(&shared, &guest, launcher).await {
            Err(Started::NativeUnsupported(reason)) => {
                let _ = NATIVE_UNSUPPORTED.set(reason.clone());
                if self.bwrap.is_none() {
                    return Err(SandboxError::Unavailable {
                        backend: "namespace",
                        reason: format!(
                            "{reason}; install bubblewrap (`apt-get install bubblewrap`), \
                             which husk then uses instead"
                        ),
                    });
                }
                tracing::warn!("{reason}; using bubblewrap instead");
                self.start_with(&shared, &guest, Launcher::Bubblewrap)
                    .await
                    .map_err(Started::into_error)
            }
            other => other.map_err(Started::into_error),
        }
    }
}

/// How a start failed.
enum Started {
    /// The native launcher cannot run on this host (the reason).
    NativeUnsupported(String),
    Failed(SandboxError),
}

impl Started {
    fn into_error(self) -> SandboxError {
        match self {
            Started::NativeUnsupported(reason) => SandboxError::Unavailable {
                backend: "namespace",
                reason,
            },
            Started::Failed(e) => e,
        }
    }
}

impl From<SandboxError> for Started {
    fn from(e: SandboxError) -> Self {
        Started::Failed(e)
    }
}

impl NamespaceBackend {
    async fn start_with(
        &self,
        config: &SandboxConfig,
        guest: &Path,
        launcher: Launcher,
    ) -> std::result::Result<Sandbox, Started> {
        let copied = copied_mounts(config, self.host_uid)?;
        let copied_idx: Vec<usize> = copied.iter().map(|(i, _)| *i).collect();
        let secret = Secret(random_bytes()?);
        let (host_end, guest_end) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| SandboxError::io("creating the control socketpair", e))?;
        let limits = Limits::from_config(config);
        let bound_guest = (launcher == Launcher::Bubblewrap).then_some(guest);
        let steps = layout::steps(config, bound_guest, &copied_idx, true);
        let root = rustix::process::geteuid().is_root();
        let (program, args, plan) = match launcher {
            Launcher::Native => {
                let host_id = root.then_some(self.host_uid);
                let plan = layout::plan(config, steps, limits.for_plan(), host_id);
                let plan_fd = layout::FIRST_COPY_FD + copied.len();
                let args = ["launch", "--fds-on-stdin", "--plan-fd"]
                    .map(String::from)
                    .into_iter()
                    .chain([plan_fd.to_string()])
                    .collect();
                (guest.to_path_buf(), args, Some(memfd_with(&plan.encode())?))
            }
            Launcher::Bubblewrap => {
                let args = layout::bwrap_args(config, &steps, layout::guest_command());
                (self.bwrap.clone().ok_or_else(no_bwrap)?, args, None)
            }
        };
        let handover = Handover {
            control: guest_end.into(),
            secret: pipe_with(secret.to_hex().as_bytes())?,
            passwd: pipe_with(PASSWD.as_bytes())?,
            group: pipe_with(GROUP.as_bytes())?,
            copies: copied.into_iter().map(|(_, fd)| fd).collect(),
            plan,
        };
        let mut cmd = Command::new(&program);
        // HUSK_GUEST_STDERR=inherit shows the guest's own diagnostics live.
        let inherit = std::env::var("HUSK_GUEST_STDERR").is_ok_and(|v| v == "inherit");
        let stderr = if inherit {
            Stdio::inherit()
        } else {
            Stdio::piped()
        };
        cmd.args(&args)
            .env_clear()
            .stdout(Stdio::null())
            .stderr(stderr);
        cmd.kill_on_drop(true);
        match launcher {
            // No pre_exec and no uid change: std spawns it with
            // posix_spawn (a vfork), and the launcher takes its
            // descriptors, ids and limits itself.
            Launcher::Native => {
                // PID 1's command line is the launcher's: no host path in it.
                cmd.arg0("husk-guest").stdin(send_on_socket(handover)?);
            }
            Launcher::Bubblewrap => {
                cmd.stdin(Stdio::null());
                if root {
                    cmd.uid(self.host_uid).gid(self.host_uid);
                }
                prepare_child(&mut cmd, handover, limits.clone())?;
            }
        }
        let mut child = crate::spawner::spawn(cmd)
            .await
            .map_err(|e| SandboxError::io(format!("starting {}", program.display()), e))?;
        let stderr = crate::stderr::collect(&mut child);

        let present = config.present_secret.clone().unwrap_or(secret);
        let stream = tokio::net::UnixStream::from_std({
            host_end
                .set_nonblocking(true)
                .map_err(|e| SandboxError::io("control socket", e))?;
            host_end
        })
        .map_err(|e| SandboxError::io("control socket", e))?;
        let roots = config.mounts.iter().map(|m| m.guest.clone()).collect();
        let timeout = Duration::from_secs(config.start_timeout_secs.max(1));
        let connected =
            tokio::time::timeout(timeout, Client::connect(stream, &present, roots)).await;
        let client = match connected {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                if launcher == Launcher::Native
                    && let Some(reason) = native_unsupported(&mut child, &stderr).await
                {
                    return Err(Started::NativeUnsupported(reason));
                }
                return Err(start_failure(child, stderr, e).await.into());
            }
            Err(_) => {
                let e = SandboxError::StartFailed {
                    reason: format!(
                        "the guest agent did not answer within {}s",
                        timeout.as_secs()
                    ),
                    detail: String::new(),
                };
                return Err(start_failure(child, stderr, e).await.into());
            }
        };
        let info = SandboxInfo {
            backend: BackendKind::Namespace,
            isolation: format!(
                "namespaces ({}): shared host kernel, weaker than a micro-VM",
                launcher.describe()
            ),
            limits: limits.describe(),
            guest_kernel: client.welcome().kernel.clone(),
            guest_agent_version: client.welcome().agent_version.clone(),
            boot: crate::backend::BootPath::Fresh,
        };
        let control = NamespaceControl { child: Some(child) };
        Ok(Sandbox::new(client, Box::new(control), info, config))
    }
}

/// When the native launcher exited with [`NATIVE_UNSUPPORTED_EXIT`], the
/// reason it gave.
async fn native_unsupported(
    child: &mut Child,
    stderr: &crate::stderr::StderrBuf,
) -> Option<String> {
    let status = tokio::time::timeout(Duration::from_secs(2), child.wait())
        .await
        .ok()?
        .ok()?;
    if status.code() != Some(NATIVE_UNSUPPORTED_EXIT) {
        return None;
    }
    // The launcher wrote its reason just before it exited; the collector
    // may still be reading it.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let text = crate::stderr::text(stderr);
    let reason = text
        .lines()
        .find_map(|l| l.strip_prefix("husk-guest launch: "))
        .unwrap_or("the native launcher cannot run here")
        .to_string();
    Some(reason)
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nsandbox:x:1000:1000:husk sandbox:/home/sandbox:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n";

/// `config` with its read-only file mounts that host uid `uid` cannot
/// reach pointed at their shared copy (see [`crate::shared_tools`]): one
/// copy on the host for every sandbox instead of one in each sandbox's
/// tmpfs. Runs off the async threads (a first copy can take a while); a
/// mount that cannot be shared stays as it is and is copied per sandbox
/// (see [`copied_mounts`]).
async fn share_unreachable(config: &SandboxConfig, uid: u32) -> SandboxConfig {
    let mut config = config.clone();
    let unreachable = move |m: &crate::backend::Mount| {
        !m.writable && m.host.is_file() && !reachable_by(&m.host, uid, uid)
    };
    if !rustix::process::geteuid().is_root() || !config.mounts.iter().any(unreachable) {
        return config;
    }
    let base = crate::shared_tools::dir();
    let mut mounts = config.mounts.clone();
    let shared = tokio::task::spawn_blocking(move || {
        for m in mounts.iter_mut().filter(|m| unreachable(m)) {
            match crate::shared_tools::shared_path(&m.host, &base, uid) {
                Ok(p) if reachable_by(&p, uid, uid) => m.host = p,
                Ok(p) => tracing::warn!(
                    "{} is not reachable by uid {uid}; copying {} into the sandbox instead",
                    p.display(),
                    m.host.display()
                ),
                Err(e) => tracing::warn!(
                    "sharing {} under {}: {e}; copying it into the sandbox instead",
                    m.host.display(),
                    base.display()
                ),
            }
        }
        mounts
    })
    .await;
    // A panicked task leaves the mounts as they were (copied per sandbox).
    if let Ok(mounts) = shared {
        config.mounts = mounts;
    }
    config
}

/// Read-only file mounts that bubblewrap could not reach by path, opened
/// here, with their index in `config.mounts`.
///
/// When husk is root, bubblewrap runs as an unprivileged host uid, which
/// cannot look into directories such as `/root` (where `npm install` or
/// Claude Code's own installer put `claude` for root). husk opens such a
/// file itself and bubblewrap copies it into the sandbox from the
/// descriptor (`--ro-bind-data`, on the sandbox's tmpfs) instead of
/// bind-mounting it. Directories and writable mounts stay bind mounts (and
/// bubblewrap names the path it cannot reach).
fn copied_mounts(config: &SandboxConfig, uid: u32) -> Result<Vec<(usize, OwnedFd)>> {
    if !rustix::process::geteuid().is_root() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (i, m) in config.mounts.iter().enumerate() {
        if m.writable || !m.host.is_file() || reachable_by(&m.host, uid, uid) {
            continue;
        }
        // Opened as root: no symlink an earlier sandbox could have left on
        // the way is followed (see `root_open`).
        let file = crate::root_open::open_untrusting(&m.host, uid)
            .map_err(|e| SandboxError::io(format!("opening {}", m.host.display()), e))?;
        out.push((i, OwnedFd::from(file)));
    }
    Ok(out)
}

/// Whether `uid`/`gid` (no supplementary groups, no capabilities) can
/// search every directory on the way to `path`, by the mode bits.
fn reachable_by(path: &Path, uid: u32, gid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(path) = path.canonicalize() else {
        return false;
    };
    path.ancestors().skip(1).all(|dir| {
        let Ok(meta) = std::fs::metadata(dir) else {
            return false;
        };
        let bit = if meta.uid() == uid {
            0o100
        } else if meta.gid() == gid {
            0o010
        } else {
            0o001
        };
        meta.mode() & bit != 0
    })
}

/// A file's permission bits (0 when it cannot be read).
fn source_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map_or(0, |m| m.permissions().mode() & 0o7777)
}

/// rlimits and CPU affinity applied to bubblewrap (and so to everything in
/// the sandbox).
#[derive(Debug, Clone)]
struct Limits {
    data_bytes: u64,
    nproc: u64,
    cpus: Vec<usize>,
}

impl Limits {
    fn from_config(config: &SandboxConfig) -> Limits {
        let usable = host::usable_cpus();
        let n = (config.vcpus as usize).min(usable.len()).max(1);
        let start = NEXT_CPU.fetch_add(n, Ordering::Relaxed);
        let cpus = (0..n).map(|i| usable[(start + i) % usable.len()]).collect();
        Limits {
            data_bytes: config.memory_mb as u64 * 1024 * 1024,
            nproc: config.max_processes as u64,
            cpus,
        }
    }

    /// The same limits for the native launcher's plan.
    fn for_plan(&self) -> husk_protocol::launch::Limits {
        husk_protocol::launch::Limits {
            data_bytes: self.data_bytes,
            nproc: self.nproc,
            cpus: self.cpus.iter().map(|&c| c as u32).collect(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "rlimits: data {} MiB per process, {} processes; CPU affinity {:?} (no cgroup v2 delegation: {})",
            self.data_bytes / (1024 * 1024),
            self.nproc,
            self.cpus,
            cgroup_reason()
        )
    }
}

/// Why cgroups are not used, read once per process: it does not change
/// while husk runs, and each start would otherwise read /proc and /sys.
fn cgroup_reason() -> &'static str {
    static REASON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    REASON.get_or_init(|| host::cgroup_support().reason)
}

/// The handover's descriptors, in order, in one `SCM_RIGHTS` message on a
/// new socket whose other end is returned for the launcher's stdin.
fn send_on_socket(h: Handover) -> Result<OwnedFd> {
    use rustix::net::{AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use rustix::net::{SocketFlags, SocketType};
    let all = h.in_order();
    if all.len() > husk_protocol::launch::MAX_HANDOVER_FDS {
        return Err(SandboxError::Config(format!(
            "{} file mounts to copy into the sandbox; at most {} are supported",
            all.len() - 5,
            husk_protocol::launch::MAX_HANDOVER_FDS - 5
        )));
    }
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| SandboxError::io("creating the handover socket", e.into()))?;
    let borrowed: Vec<_> = all.iter().map(|fd| fd.as_fd()).collect();
    let mut space =
        vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(borrowed.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
        return Err(SandboxError::io(
            "handing descriptors over",
            std::io::Error::other("no room"),
        ));
    }
    let tag = std::io::IoSlice::new(husk_protocol::launch::HANDOVER_TAG);
    rustix::net::sendmsg(&ours, &[tag], &mut control, SendFlags::empty())
        .map_err(|e| SandboxError::io("handing descriptors over", e.into()))?;
    Ok(theirs)
}

impl Handover {
    /// The descriptors at 3, 4, … in the launcher.
    fn in_order(self) -> Vec<OwnedFd> {
        [self.control, self.secret, self.passwd, self.group]
            .into_iter()
            .chain(self.copies)
            .chain(self.plan)
            .collect()
    }
}

/// Installs the descriptor handover and limits in bubblewrap's child
/// before exec.
fn prepare_child(cmd: &mut Command, h: Handover, limits: Limits) -> Result<()> {
    // Move every descriptor above the target numbers first, so dup2 in the
    // child can never overwrite one source with another.
    let all = h.in_order();
    let above = (3 + all.len()).max(10) as i32;
    let high = |fd: OwnedFd| -> Result<OwnedFd> {
        rustix::io::fcntl_dupfd_cloexec(&fd, above).map_err(|e| SandboxError::io("dup", e.into()))
    };
    let fds = all.into_iter().map(high).collect::<Result<Vec<_>>>()?;
    let mut cpuset = rustix::thread::CpuSet::new();
    for c in &limits.cpus {
        cpuset.set(*c);
    }
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    // The closure owns the descriptors so they stay open until spawn.
    let keep = Arc::new(fds);
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (dup2, setrlimit, sched_setaffinity);
    // it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            let _ = &keep;
            for (i, fd) in raw.iter().enumerate() {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            set_limit(libc::RLIMIT_DATA, limits.data_bytes)?;
            set_limit(libc::RLIMIT_NPROC, limits.nproc)?;
            let _ = rustix::thread::sched_setaffinity(None, &cpuset);
            Ok(())
        });
    }
    Ok(())
}

fn set_limit(resource: libc::__rlimit_resource_t, value: u64) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit reads the struct we pass by reference and nothing else.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A memory file holding `data`, read from the start by whoever gets it
/// (a plan can be larger than a pipe's buffer).
fn memfd_with(data: &[u8]) -> Result<OwnedFd> {
    use rustix::fs::{MemfdFlags, SeekFrom};
    let fd = rustix::fs::memfd_create("husk-plan", MemfdFlags::CLOEXEC)
        .map_err(|e| SandboxError::io("creating a memory file", e.into()))?;
    let mut written = 0;
    while written < data.len() {
        written += rustix::io::write(&fd, &data[written..])
            .map_err(|e| SandboxError::io("filling a memory file", e.into()))?;
    }
    rustix::fs::seek(&fd, SeekFrom::Start(0))
        .map_err(|e| SandboxError::io("rewinding a memory file", e.into()))?;
    Ok(fd)
}

fn pipe_with(data: &[u8]) -> Result<OwnedFd> {
    let (rd, wr) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| SandboxError::io("creating a pipe", e.into()))?;
    // Pipe buffers hold 64 KiB; everything we pass is far smaller.
    rustix::io::write(&wr, data).map_err(|e| SandboxError::io("filling a pipe", e.into()))?;
    Ok(rd)
}

pub(crate) fn random_bytes() -> Result<[u8; 32]> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| {
        SandboxError::io("reading random bytes", std::io::Error::other(e.to_string()))
    })?;
    Ok(b)
}

use crate::stderr::StderrBuf;

async fn start_failure(mut child: Child, stderr: StderrBuf, e: SandboxError) -> SandboxError {
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let detail = crate::stderr::text(&stderr);
    if let Some(clear) = explain_start_failure(&detail) {
        return clear;
    }
    match e {
        SandboxError::Rejected(_) => e,
        SandboxError::StartFailed { reason, .. } => SandboxError::StartFailed { reason, detail },
        other => SandboxError::StartFailed {
            reason: other.to_string(),
            detail,
        },
    }
}

/// Stops a namespace sandbox.
struct NamespaceControl {
    child: Option<Child>,
}

#[async_trait]
impl SandboxControl for NamespaceControl {
    fn host_pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    async fn stop(&mut self, client: &Client) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // The guest kills everything and exits; if it cannot answer, kill it.
        let _ = tokio::time::timeout(Duration::from_secs(2), client.shutdown()).await;
        match tokio::time::timeout(Duration::from_secs(3), child.wait()).await {
            Ok(_) => Ok(()),
            Err(_) => {
                let _ = child.start_kill();
                child
                    .wait()
                    .await
                    .map(|_| ())
                    .map_err(|e| SandboxError::io("waiting for bubblewrap", e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Mount;

    fn mount(host: &str, guest: &str) -> Mount {
        Mount {
            host: host.into(),
            guest: guest.into(),
            writable: false,
        }
    }

    #[test]
    fn copied_mounts_come_from_descriptors_after_the_handover() {
        let config = SandboxConfig {
            mounts: vec![
                mount("/usr/bin/true", "/opt/a"),
                mount("/usr/bin/env", "/opt/b"),
                mount("/usr/bin/false", "/opt/c"),
            ],
            ..SandboxConfig::default()
        };
        let steps = layout::steps(&config, Some(Path::new("/g")), &[1, 2], true);
        let args = layout::bwrap_args(&config, &steps, &["/g"]).join(" ");
        assert!(args.contains("--ro-bind /usr/bin/true /opt/a"), "{args}");
        // Read and execute bits kept, write bits dropped.
        let mode = format!("{:04o}", source_mode(Path::new("/usr/bin/env")) & 0o555);
        assert!(
            args.contains(&format!("--perms {mode} --ro-bind-data 7 /opt/b")),
            "{args}"
        );
        assert!(args.contains("--ro-bind-data 8 /opt/c"), "{args}");
        assert!(!args.contains("/usr/bin/env"), "{args}");
    }

    #[test]
    fn a_copied_mount_never_follows_a_symlink_a_sandbox_left() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIP: needs root (files are copied only when husk is root)");
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("husk-planted-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("work")).unwrap();
        // Unreachable for uid 65534, so husk opens the mount itself.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(dir.join("secret"), "root only").unwrap();
        std::fs::write(dir.join("work/real"), "a tool").unwrap();
        std::os::unix::fs::symlink(dir.join("secret"), dir.join("work/tool")).unwrap();
        std::os::unix::fs::lchown(dir.join("work/tool"), Some(65534), None).unwrap();
        let config = |host: &Path| SandboxConfig {
            mounts: vec![mount(host.to_str().unwrap(), "/opt/tool")],
            ..SandboxConfig::default()
        };
        let e = copied_mounts(&config(&dir.join("work/tool")), 65534).unwrap_err();
        assert!(
            e.to_string()
                .contains("the symlink tool on the way is owned by"),
            "{e}"
        );
        // The user's file in the same place is copied as before.
        let ok = copied_mounts(&config(&dir.join("work/real")), 65534).unwrap();
        assert_eq!(ok.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Log lines written while `f` runs.
    fn logs_of<T>(f: impl FnOnce() -> T) -> (T, String) {
        let buf = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || LogSink(sink.clone()))
            .finish();
        let out = tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
        (out, text)
    }

    struct LogSink(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for LogSink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_old_bubblewrap_is_named() {
        let e = explain_start_failure("bwrap: Unknown option --size\n").unwrap();
        assert!(e.to_string().contains("bubblewrap 0.7 or later"), "{e}");
        assert!(explain_start_failure("bwrap: Creating new namespace failed").is_none());
    }

    #[test]
    fn host_uid_values() {
        use std::ffi::OsStr;
        let (uid, logs) = logs_of(|| host_uid(None).unwrap());
        assert_eq!((uid, logs.as_str()), (DEFAULT_UNPRIVILEGED_UID, ""));
        let (uid, logs) = logs_of(|| host_uid(Some(OsStr::new("1234"))).unwrap());
        assert_eq!((uid, logs.as_str()), (1234, ""));
        for bad in ["nobody", "-1", "", "12x", "4294967295", "99999999999"] {
            let err = host_uid(Some(OsStr::new(bad))).unwrap_err();
            assert!(matches!(err, SandboxError::Config(_)), "{bad}: {err}");
            let text = err.to_string();
            assert!(
                text.contains("HUSK_SANDBOX_HOST_UID") && text.contains("not a uid"),
                "{text}"
            );
        }
        let (uid, logs) = logs_of(|| host_uid(Some(OsStr::new("0"))).unwrap());
        assert_eq!(uid, 0);
        assert!(
            logs.contains("WARN") && logs.contains("maps to host root"),
            "{logs}"
        );
    }

    #[test]
    fn reachability_follows_the_search_bits_of_every_parent() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("husk-reach-{}", std::process::id()));
        let inner = base.join("inner");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = inner.join("tool");
        std::fs::write(&file, b"x").unwrap();
        let other = 54321; // neither the owner nor in the group
        assert!(reachable_by(&file, other, other));
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!reachable_by(&file, other, other));
        let me = rustix::process::geteuid().as_raw();
        assert!(reachable_by(&file, me, other), "the owner's bits apply");
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(!reachable_by(&base.join("missing"), other, other));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
