//! The `Backend` trait and what every backend shares: the sandbox
//! configuration and the running-sandbox handle.

use std::path::PathBuf;

use async_trait::async_trait;
use husk_protocol::Secret;
use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::error::Result;

/// Which isolation a sandbox uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Linux namespaces (husk's own launcher, or bubblewrap): shared kernel,
    /// weaker isolation.
    Namespace,
    /// A QEMU micro-VM with its own kernel.
    Microvm,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Namespace => "namespace",
            BackendKind::Microvm => "microvm",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host directory made visible in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub host: PathBuf,
    pub guest: String,
    pub writable: bool,
}

/// What a sandbox should look like. Backends honour every field or refuse
/// the configuration with a clear error.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Memory limit (namespace: per-process data limit unless cgroups are
    /// delegated; micro-VM: guest RAM).
    pub memory_mb: u32,
    /// Writable storage, in MiB. Every writable filesystem of a sandbox is
    /// a tmpfs (host RAM for namespace sandboxes, guest RAM for micro-VMs);
    /// [`SandboxConfig::disk_split`] says how this is divided among them.
    pub disk_mb: u32,
    /// CPUs (namespace: CPU affinity; micro-VM: vCPUs).
    pub vcpus: u32,
    /// Most processes the sandbox user may have at once.
    pub max_processes: u32,
    /// Network access; off by default.
    pub network: bool,
    /// Environment every exec starts with (requests may override it).
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    /// Root filesystem instead of the default: a directory (namespace:
    /// its system directories are bound read-only; micro-VM: turned into a
    /// cached ext4 image) or an ext4 image file (micro-VM only).
    pub rootfs: Option<PathBuf>,
    /// The guest agent binary to run; found automatically when `None`.
    pub guest_binary: Option<PathBuf>,
    /// Testing hook: present this secret in the handshake instead of the
    /// sandbox's own (the guest must refuse it).
    pub present_secret: Option<Secret>,
    /// Seconds to wait for the guest's handshake.
    pub start_timeout_secs: u64,
    /// Seconds the guest gets to answer a call it answers at once (file
    /// RPCs, stat, ping, signal, the start of an exec) before the call fails
    /// with `SandboxError::Timeout` (see `Client::rpc_timeout`).
    pub rpc_timeout_secs: u64,
    /// Micro-VM: boot the kernel even when a snapshot could be restored
    /// (`husk exec --cold`). Other backends always start fresh.
    pub cold_boot: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            memory_mb: 1024,
            disk_mb: DEFAULT_DISK_MB,
            vcpus: 1,
            max_processes: 1024,
            network: false,
            env: Vec::new(),
            mounts: Vec::new(),
            rootfs: None,
            guest_binary: None,
            present_secret: None,
            start_timeout_secs: 10,
            rpc_timeout_secs: crate::client::DEFAULT_RPC_TIMEOUT.as_secs(),
            cold_boot: false,
        }
    }
}

/// Default [`SandboxConfig::disk_mb`].
pub const DEFAULT_DISK_MB: u32 = 1024;
/// Smallest [`SandboxConfig::disk_mb`].
pub const MIN_DISK_MB: u32 = 8;

/// Sizes, in MiB, of a sandbox's writable in-memory filesystems, from
/// [`SandboxConfig::disk_mb`]. Both backends size their tmpfs mounts with
/// it, so one `disk_mb` means the same everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSplit {
    /// `/workspace`: all of `disk_mb`.
    pub workspace_mb: u32,
    /// `/tmp`: half of `disk_mb`.
    pub tmp_mb: u32,
    /// `/home/sandbox`: half of `disk_mb` (namespace: plus the size of the
    /// host files copied into it).
    pub home_mb: u32,
    /// `/dev/shm`: half of `disk_mb`, at most 64.
    pub shm_mb: u32,
    /// `/run`: fixed and small (the guest's own files).
    pub run_mb: u32,
    /// Micro-VM with a rootfs image: the overlay that takes writes to the
    /// rest of the root filesystem; half of `disk_mb`.
    pub overlay_mb: u32,
}

impl DiskSplit {
    /// The most RAM all of them together can hold.
    pub fn total_mb(&self) -> u64 {
        [
            self.workspace_mb,
            self.tmp_mb,
            self.home_mb,
            self.shm_mb,
            self.run_mb,
            self.overlay_mb,
        ]
        .iter()
        .map(|&m| u64::from(m))
        .sum()
    }
}

impl SandboxConfig {
    /// How [`SandboxConfig::disk_mb`] is divided among the sandbox's
    /// writable filesystems.
    pub fn disk_split(&self) -> DiskSplit {
        let half = (self.disk_mb / 2).max(1);
        DiskSplit {
            workspace_mb: self.disk_mb,
            tmp_mb: half,
            home_mb: half,
            shm_mb: half.min(64),
            run_mb: 8,
            overlay_mb: half,
        }
    }

    /// Checks limits every backend shares.
    pub fn validate(&self) -> Result<()> {
        use crate::error::SandboxError::Config;
        if self.memory_mb < 64 {
            return Err(Config(format!(
                "memory_mb must be at least 64, got {}",
                self.memory_mb
            )));
        }
        if self.disk_mb < MIN_DISK_MB {
            return Err(Config(format!(
                "disk_mb must be at least {MIN_DISK_MB}, got {}",
                self.disk_mb
            )));
        }
        if self.vcpus == 0 || self.vcpus > 64 {
            return Err(Config(format!(
                "vcpus must be between 1 and 64, got {}",
                self.vcpus
            )));
        }
        if self.max_processes < 8 {
            return Err(Config(format!(
                "max_processes must be at least 8, got {}",
                self.max_processes
            )));
        }
        for m in &self.mounts {
            if !m.guest.starts_with('/') || m.guest.split('/').any(|c| c == "..") {
                return Err(Config(format!(
                    "mount target {:?} must be an absolute path without '..'",
                    m.guest
                )));
            }
            if !m.host.exists() {
                return Err(Config(format!(
                    "mount source {} does not exist",
                    m.host.display()
                )));
            }
        }
        if self.rpc_timeout_secs == 0 {
            return Err(Config("rpc_timeout_secs must be at least 1".into()));
        }
        for (k, _) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(Config(format!("invalid environment variable name {k:?}")));
            }
        }
        Ok(())
    }
}

/// Facts about a running sandbox, for run metadata and `husk doctor`.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxInfo {
    pub backend: BackendKind,
    /// How strongly the sandbox is isolated, in words.
    pub isolation: String,
    /// How resource limits are enforced, in words.
    pub limits: String,
    pub guest_kernel: String,
    pub guest_agent_version: String,
    /// How the sandbox came up.
    pub boot: BootPath,
}

/// How a sandbox came up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BootPath {
    /// Started from scratch (a namespace sandbox, a micro-VM's kernel boot).
    Fresh,
    /// A micro-VM restored from the snapshot in `snapshot`.
    Restored { snapshot: PathBuf },
    /// A snapshot existed but could not be used (`reason` says why); the
    /// micro-VM booted its kernel instead.
    ColdFallback { reason: String },
}

/// Backend-specific teardown.
#[async_trait]
pub trait SandboxControl: Send + Sync {
    /// Stops the sandbox; nothing it ran is left behind.
    async fn stop(&mut self, client: &Client) -> Result<()>;
    /// The last lines of the sandbox's own console (a micro-VM's serial
    /// log), for diagnosing a sandbox that misbehaves. `None` when the
    /// backend has no console.
    fn console_tail(&self, _lines: usize) -> Option<String> {
        None
    }
    /// The host process that holds the sandbox (the namespace launcher,
    /// QEMU), for host-side resource accounting. `None` once stopped.
    fn host_pid(&self) -> Option<u32> {
        None
    }
}

/// How host binaries (agents, husk's helpers) get into a sandbox of a
/// backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolDelivery {
    /// Bind-mounted read-only through [`SandboxConfig::mounts`]: no copy,
    /// however large the binary (the sandbox shares the host's kernel and
    /// filesystem).
    Mount,
    /// Copied in through the guest's file RPCs after the start (the
    /// sandbox cannot see host paths).
    Copy,
}

/// A way to create sandboxes.
#[async_trait]
pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;
    /// How the caller puts host binaries into this backend's sandboxes.
    fn tool_delivery(&self) -> ToolDelivery;
    /// Starts a sandbox and returns it once its guest has answered.
    async fn start(&self, config: &SandboxConfig) -> Result<Sandbox>;
}

/// How a sandbox came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Started for its caller.
    Cold,
    /// Started ahead of time by a warm pool and claimed.
    Pool,
}

/// A running sandbox: a control client plus the means to stop it. Dropping
/// it without [`Sandbox::stop`] still kills it (backends kill on drop).
pub struct Sandbox {
    client: Client,
    control: Box<dyn SandboxControl>,
    info: SandboxInfo,
    default_env: Vec<(String, String)>,
    origin: Origin,
    stopped: bool,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("info", &self.info).finish()
    }
}

impl Sandbox {
    pub fn new(
        client: Client,
        control: Box<dyn SandboxControl>,
        info: SandboxInfo,
        config: &SandboxConfig,
    ) -> Self {
        client.set_rpc_timeout(std::time::Duration::from_secs(config.rpc_timeout_secs));
        Sandbox {
            client,
            control,
            info,
            default_env: config.env.clone(),
            origin: Origin::Cold,
            stopped: false,
        }
    }

    /// The control channel (exec, files, …).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn info(&self) -> &SandboxInfo {
        &self.info
    }

    pub fn origin(&self) -> Origin {
        self.origin
    }

    pub(crate) fn set_origin(&mut self, origin: Origin) {
        self.origin = origin;
    }

    /// Replaces the environment every exec starts with (a pooled sandbox
    /// gets its stage's when claimed).
    pub fn set_default_env(&mut self, env: Vec<(String, String)>) {
        self.default_env = env;
    }

    /// `req` with the sandbox's default environment merged under its own.
    pub fn with_default_env(&self, req: &husk_protocol::ExecRequest) -> husk_protocol::ExecRequest {
        let mut out = req.clone();
        let mut env = self.default_env.clone();
        env.retain(|(k, _)| !req.env.iter().any(|(rk, _)| rk == k));
        env.extend(req.env.iter().cloned());
        out.env = env;
        out
    }

    /// Starts a process with the sandbox's default environment.
    pub async fn exec(&self, req: &husk_protocol::ExecRequest) -> Result<crate::client::Process> {
        self.client.exec(&self.with_default_env(req)).await
    }

    /// The last `lines` lines of the sandbox's console, if it has one.
    pub fn console_tail(&self, lines: usize) -> Option<String> {
        self.control.console_tail(lines)
    }

    /// The host process holding the sandbox (its process tree is the
    /// sandbox's host-side cost), while it runs.
    pub fn host_pid(&self) -> Option<u32> {
        self.control.host_pid()
    }

    /// Stops the sandbox and waits until nothing of it is left.
    pub async fn stop(mut self) -> Result<()> {
        self.stopped = true;
        self.control.stop(&self.client).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_mb_split_and_bounds() {
        let cfg = SandboxConfig {
            disk_mb: 16,
            ..SandboxConfig::default()
        };
        let d = cfg.disk_split();
        assert_eq!(
            (
                d.workspace_mb,
                d.tmp_mb,
                d.home_mb,
                d.shm_mb,
                d.run_mb,
                d.overlay_mb
            ),
            (16, 8, 8, 8, 8, 8)
        );
        let big = SandboxConfig::default().disk_split();
        assert_eq!((big.workspace_mb, big.shm_mb), (1024, 64));
        assert_eq!(big.total_mb(), 1024 + 3 * 512 + 64 + 8);
        let err = SandboxConfig {
            disk_mb: 4,
            ..SandboxConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(
            err.to_string().contains("disk_mb must be at least 8"),
            "{err}"
        );
    }
}
