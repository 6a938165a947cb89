//! A sandbox backend that lives in memory, for tests of the runtime and
//! the daemon that must run in milliseconds and without bubblewrap, QEMU
//! or KVM (feature `testing`; see docs/testing.md).
//!
//! [`FakeBackend`] implements the real [`Backend`] trait, and its sandboxes
//! are real [`husk_sandbox::Sandbox`]es: the runtime talks to them through
//! the real [`husk_sandbox::Client`] over the real protocol, carried by an
//! in-process byte stream to a fake guest ([`guest`]) instead of a socket
//! to a guest in a namespace or VM. Only the guest's side is scripted:
//!
//! - files live in a map per sandbox (the file RPCs read and write it);
//! - every exec runs a [`Script`] that the test chooses from the request
//!   (argv, environment): output lines, file writes, pauses, meeting other
//!   processes at a barrier, then an exit code, a hang until signalled or
//!   timed out, or a crash of the whole sandbox;
//! - starts can fail ([`StartFault`]) or take time.
//!
//! What the fake saw (every exec, every sandbox's configuration and
//! files) is kept for assertions.

mod guest;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use husk_sandbox::protocol::{ExecRequest, Secret};
use husk_sandbox::{
    Backend, BackendKind, Client, Mount, Sandbox, SandboxConfig, SandboxControl, SandboxError,
    SandboxInfo, ToolDelivery,
};
use tokio::sync::Barrier;

use crate::provision::ToolLocator;

/// What a scripted process does, in order.
#[derive(Clone)]
pub enum Step {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// Writes a file in the sandbox (parents are created).
    Write {
        path: String,
        bytes: Vec<u8>,
    },
    /// Waits this long (the process can be signalled meanwhile).
    Sleep(Duration),
    /// Waits until every party of the barrier has arrived: proves that
    /// processes run side by side (run one at a time, they never meet).
    Meet(Arc<Barrier>),
    /// Waits until the host has read the file at `path` as it is now and
    /// then looked at it again (a `Stat`): a service watcher does that
    /// only after it has finished with what it read (published it).
    /// Orders a script after the host's polling without guessing at time.
    AwaitPickedUp(String),
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Stdout(b) => write!(f, "Stdout({:?})", String::from_utf8_lossy(b)),
            Step::Stderr(b) => write!(f, "Stderr({:?})", String::from_utf8_lossy(b)),
            Step::Write { path, bytes } => write!(f, "Write({path}, {} bytes)", bytes.len()),
            Step::Sleep(d) => write!(f, "Sleep({d:?})"),
            Step::Meet(_) => f.write_str("Meet"),
            Step::AwaitPickedUp(p) => write!(f, "AwaitPickedUp({p})"),
        }
    }
}

/// How a scripted process ends once its steps are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    /// Runs until it is signalled or its `timeout_ms` passes.
    Hang,
    /// The whole sandbox dies: its control channel closes.
    Crash,
}

/// One process's behaviour.
#[derive(Debug, Clone)]
pub struct Script {
    pub steps: Vec<Step>,
    pub exit: Exit,
}

impl Script {
    /// Exits with `code` at once.
    pub fn exit(code: i32) -> Script {
        Script {
            steps: Vec::new(),
            exit: Exit::Code(code),
        }
    }

    /// Adds a step.
    pub fn then(mut self, step: Step) -> Script {
        self.steps.push(step);
        self
    }

    /// Prints `line` (and a newline) on stdout.
    pub fn stdout(self, line: &str) -> Script {
        self.then(Step::Stdout(format!("{line}\n").into_bytes()))
    }

    /// Prints `line` (and a newline) on stderr.
    pub fn stderr(self, line: &str) -> Script {
        self.then(Step::Stderr(format!("{line}\n").into_bytes()))
    }

    /// Writes `json` to `path`.
    pub fn write_json(self, path: &str, json: &serde_json::Value) -> Script {
        self.then(Step::Write {
            path: path.into(),
            bytes: json.to_string().into_bytes(),
        })
    }

    pub fn sleep(self, d: Duration) -> Script {
        self.then(Step::Sleep(d))
    }

    /// Ends with `exit` instead.
    pub fn ending(mut self, exit: Exit) -> Script {
        self.exit = exit;
        self
    }
}

/// How a sandbox start goes wrong.
#[derive(Debug, Clone)]
pub enum StartFault {
    /// A boot that went wrong (`SandboxError::StartFailed`: the runtime
    /// retries it).
    Boot(String),
    /// A configuration the backend refuses (`SandboxError::Config`: never
    /// retried).
    Config(String),
}

/// One exec the fake guest received.
#[derive(Debug, Clone)]
pub struct ExecRecord {
    /// Which sandbox (the order of starts, from 0).
    pub sandbox: usize,
    pub argv: Vec<String>,
    /// The environment as the guest got it (the sandbox's defaults merged
    /// under the request's own).
    pub env: Vec<(String, String)>,
    pub timeout_ms: Option<u64>,
}

impl ExecRecord {
    pub fn env(&self, name: &str) -> Option<&str> {
        env_of(&self.env, name)
    }
}

/// `name`'s value in an exec's environment.
pub fn env_of<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A file in a fake sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeFile {
    pub bytes: Vec<u8>,
    pub mode: u32,
    /// Bumped on every write (the guest's "mtime").
    pub version: u64,
}

/// One fake sandbox: its configuration and filesystem.
pub struct FakeSandbox {
    pub config: SandboxConfig,
    pub files: Mutex<BTreeMap<String, FakeFile>>,
    pub dirs: Mutex<std::collections::BTreeSet<String>>,
    /// Set once it was stopped (or crashed).
    pub stopped: std::sync::atomic::AtomicBool,
    /// Per path: the version the host last read, and whether it has
    /// stat'ed the path since.
    reads: Mutex<std::collections::HashMap<String, (u64, bool)>>,
    read_notify: tokio::sync::Notify,
}

impl FakeSandbox {
    /// A file's content, if it exists.
    pub fn file(&self, path: &str) -> Option<Vec<u8>> {
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .map(|f| f.bytes.clone())
    }

    /// The host has read `path` at its current version and stat'ed it
    /// since.
    fn picked_up(&self, path: &str) -> bool {
        let Some(version) = lock(&self.files).get(path).map(|f| f.version) else {
            return false;
        };
        lock(&self.reads).get(path) == Some(&(version, true))
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::SeqCst)
    }
}

type ScriptFn = dyn Fn(&ExecRequest) -> Script + Send + Sync;

/// The in-memory backend; cheap to clone (clones share what they saw).
#[derive(Clone)]
pub struct FakeBackend {
    shared: Arc<Shared>,
}

struct Shared {
    kind: BackendKind,
    delivery: ToolDelivery,
    script: Box<ScriptFn>,
    faults: Mutex<VecDeque<StartFault>>,
    start_delay: Mutex<Duration>,
    boot: Mutex<husk_sandbox::BootPath>,
    sandboxes: Mutex<Vec<Arc<FakeSandbox>>>,
    execs: Mutex<Vec<ExecRecord>>,
}

impl FakeBackend {
    /// A namespace-like backend (tools are mounted) whose processes do
    /// what `script` says for their request.
    pub fn new(script: impl Fn(&ExecRequest) -> Script + Send + Sync + 'static) -> FakeBackend {
        FakeBackend {
            shared: Arc::new(Shared {
                kind: BackendKind::Namespace,
                delivery: ToolDelivery::Mount,
                script: Box::new(script),
                faults: Mutex::new(VecDeque::new()),
                start_delay: Mutex::new(Duration::ZERO),
                boot: Mutex::new(husk_sandbox::BootPath::Fresh),
                sandboxes: Mutex::new(Vec::new()),
                execs: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Presents itself as `kind` and delivers tools by `delivery`. Call
    /// before the backend is shared.
    pub fn with_kind(mut self, kind: BackendKind, delivery: ToolDelivery) -> FakeBackend {
        let shared =
            Arc::get_mut(&mut self.shared).expect("with_kind before the backend is shared");
        shared.kind = kind;
        shared.delivery = delivery;
        self
    }

    /// The next starts fail, in order, one fault each.
    pub fn fail_starts(&self, faults: impl IntoIterator<Item = StartFault>) {
        lock(&self.shared.faults).extend(faults);
    }

    /// Every start takes this long before the sandbox answers.
    pub fn set_start_delay(&self, d: Duration) {
        *lock(&self.shared.start_delay) = d;
    }

    /// Every sandbox from now on reports that it came up this way (a
    /// restore, a cold boot after an unusable snapshot).
    pub fn set_boot(&self, boot: husk_sandbox::BootPath) {
        *lock(&self.shared.boot) = boot;
    }

    /// The backend as the runtime takes it.
    pub fn shared(&self) -> Arc<dyn Backend> {
        Arc::new(self.clone())
    }

    /// Every exec so far, in the order the guests received them.
    pub fn execs(&self) -> Vec<ExecRecord> {
        lock(&self.shared.execs).clone()
    }

    /// Every sandbox started so far, in order.
    pub fn sandboxes(&self) -> Vec<Arc<FakeSandbox>> {
        lock(&self.shared.sandboxes).clone()
    }

    /// How many start attempts were made (failed ones included).
    pub fn start_attempts(&self) -> usize {
        self.sandboxes().len()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl Backend for FakeBackend {
    fn kind(&self) -> BackendKind {
        self.shared.kind
    }

    fn tool_delivery(&self) -> ToolDelivery {
        self.shared.delivery
    }

    async fn start(&self, config: &SandboxConfig) -> husk_sandbox::Result<Sandbox> {
        let fault = lock(&self.shared.faults).pop_front();
        let sandbox = Arc::new(FakeSandbox {
            config: config.clone(),
            files: Mutex::new(BTreeMap::new()),
            dirs: Mutex::new(["/workspace".to_string(), "/tmp".to_string()].into()),
            stopped: false.into(),
            reads: Mutex::default(),
            read_notify: tokio::sync::Notify::new(),
        });
        let index = {
            let mut all = lock(&self.shared.sandboxes);
            all.push(sandbox.clone());
            all.len() - 1
        };
        let delay = *lock(&self.shared.start_delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match fault {
            Some(StartFault::Boot(why)) => {
                sandbox
                    .stopped
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                return Err(SandboxError::StartFailed {
                    reason: why,
                    detail: "fake backend: scripted start failure".into(),
                });
            }
            Some(StartFault::Config(why)) => {
                sandbox
                    .stopped
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                return Err(SandboxError::Config(why));
            }
            None => {}
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| SandboxError::StartFailed {
            reason: "no randomness for the session secret".into(),
            detail: e.to_string(),
        })?;
        let secret = Secret(secret);
        let (host, guest_end) = tokio::io::duplex(256 * 1024);
        let shared = self.shared.clone();
        let guest = guest::Guest {
            sandbox: sandbox.clone(),
            index,
            secret: secret.clone(),
            script: Arc::new(move |req: &ExecRequest| (shared.script)(req)),
            execs: {
                let shared = self.shared.clone();
                Arc::new(move |r: ExecRecord| lock(&shared.execs).push(r))
            },
        };
        tokio::spawn(guest.serve(guest_end));
        let client = Client::connect(host, &secret, Vec::new()).await?;
        let info = SandboxInfo {
            backend: self.shared.kind,
            isolation: "none: an in-memory fake for tests".into(),
            limits: "none".into(),
            guest_kernel: client.welcome().kernel.clone(),
            guest_agent_version: client.welcome().agent_version.clone(),
            boot: lock(&self.shared.boot).clone(),
        };
        Ok(Sandbox::new(
            client,
            Box::new(FakeControl { sandbox }),
            info,
            config,
        ))
    }
}

struct FakeControl {
    sandbox: Arc<FakeSandbox>,
}

#[async_trait]
impl SandboxControl for FakeControl {
    async fn stop(&mut self, client: &Client) -> husk_sandbox::Result<()> {
        // The guest ends its processes and the channel; a crashed one is
        // already gone, which is not a failure to stop.
        let _ = client.shutdown().await;
        self.sandbox
            .stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

impl Drop for FakeControl {
    fn drop(&mut self) {
        self.sandbox
            .stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A [`ToolLocator`] for fake runs: every program is "found" as one small
/// host file (its bytes are what a copying backend writes into the
/// sandbox).
pub struct FakeTools {
    path: PathBuf,
    _dir: tempfile_free::Dir,
}

impl FakeTools {
    /// Creates the stand-in binary under the system's temporary directory.
    pub fn new() -> std::io::Result<FakeTools> {
        let dir = tempfile_free::Dir::new()?;
        let path = dir.0.join("fake-tool");
        std::fs::write(&path, b"#!fake\n")?;
        Ok(FakeTools { path, _dir: dir })
    }

    /// The stand-in binary on the host.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl ToolLocator for FakeTools {
    fn locate(&self, _name: &str) -> Option<PathBuf> {
        Some(self.path.clone())
    }
}

/// A private temporary directory, removed on drop (the runtime has no
/// `tempfile` dependency outside its tests).
mod tempfile_free {
    use std::path::PathBuf;

    pub struct Dir(pub PathBuf);

    impl Dir {
        pub fn new() -> std::io::Result<Dir> {
            let mut r = [0u8; 8];
            getrandom::fill(&mut r).map_err(|e| std::io::Error::other(e.to_string()))?;
            let name: String = r.iter().map(|b| format!("{b:02x}")).collect();
            let p = std::env::temp_dir().join(format!("husk-fake-{name}"));
            std::fs::create_dir(&p)?;
            Ok(Dir(p))
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Whether a mount of the configuration puts `guest` in place.
pub fn mounted(config: &SandboxConfig, guest: &str) -> bool {
    config.mounts.iter().any(|m: &Mount| m.guest == guest)
}
