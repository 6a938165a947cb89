//! Spawns sandbox processes from one long-lived thread.
//!
//! Backends ask the kernel to kill a sandbox when husk dies
//! (`PR_SET_PDEATHSIG`, through bubblewrap's `--die-with-parent` or QEMU's
//! equivalent). Linux ties that signal to the *thread* that forked the
//! child, not the process: a sandbox spawned from a short-lived thread (a
//! test thread, a blocking-pool thread) would be killed when that thread
//! ends. So every sandbox process is forked from this one thread, which
//! lives as long as the process.
//!
//! Each sandbox gets its own process group: a Ctrl-C in husk's terminal
//! (SIGINT to the foreground group) reaches husk, which cancels its runs
//! gracefully (SIGTERM to the agent, grace period, SIGKILL), instead of
//! killing every sandbox at once behind its back.

use std::sync::{LazyLock, Mutex, mpsc};

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

type Job = (
    Command,
    tokio::runtime::Handle,
    oneshot::Sender<std::io::Result<Child>>,
);

static SPAWNER: LazyLock<Mutex<mpsc::Sender<Job>>> = LazyLock::new(|| {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("husk-spawner".into())
        .spawn(move || {
            for (mut cmd, handle, reply) in rx {
                let _guard = handle.enter();
                let _ = reply.send(cmd.spawn());
            }
        })
        .expect("starting the husk-spawner thread");
    Mutex::new(tx)
});

/// Spawns `cmd` from the spawner thread, registered with the current
/// tokio runtime.
pub async fn spawn(mut cmd: Command) -> std::io::Result<Child> {
    cmd.process_group(0);
    let (tx, rx) = oneshot::channel();
    let job = (cmd, tokio::runtime::Handle::current(), tx);
    SPAWNER
        .lock()
        .map_err(|_| std::io::Error::other("spawner lock poisoned"))?
        .send(job)
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
    rx.await
        .map_err(|_| std::io::Error::other("spawner thread dropped the request"))?
}
