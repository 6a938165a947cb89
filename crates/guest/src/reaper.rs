//! Child reaping for a PID 1.
//!
//! As PID 1 the guest inherits every orphan in the sandbox and must reap
//! them, so it cannot let a library wait on specific children behind its
//! back. Instead one task reaps *all* children on `SIGCHLD` and hands the
//! statuses of the processes the guest started to whoever registered for
//! them. Statuses of unregistered pids (reparented orphans) are dropped.
//!
//! Registration happens right after `spawn()` with no `.await` in between,
//! and the guest runs a single-threaded runtime, so the reaper task can never
//! observe a child before it is registered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustix::process::{Pid, WaitOptions, WaitStatus};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

/// How a child ended, as the kernel reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    Code(i32),
    Signal(i32),
}

type Waiters = Arc<Mutex<HashMap<i32, oneshot::Sender<ChildExit>>>>;

/// Handle to the reaper task.
#[derive(Clone)]
pub struct Reaper {
    waiters: Waiters,
}

impl Reaper {
    /// Installs the `SIGCHLD` handler and starts reaping.
    pub fn start() -> std::io::Result<Reaper> {
        let waiters: Waiters = Arc::default();
        let mut sigchld = signal(SignalKind::child())?;
        let task_waiters = waiters.clone();
        tokio::spawn(async move {
            loop {
                reap_all(&task_waiters);
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(Reaper { waiters })
    }

    /// Asks to be told when `pid` ends. Call right after spawning it.
    pub fn register(&self, pid: u32) -> oneshot::Receiver<ChildExit> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .expect("reaper lock")
            .insert(pid as i32, tx);
        rx
    }
}

fn reap_all(waiters: &Waiters) {
    loop {
        match rustix::process::wait(WaitOptions::NOHANG) {
            Ok(Some((pid, status))) => deliver(waiters, pid, status),
            Ok(None) | Err(_) => return,
        }
    }
}

fn deliver(waiters: &Waiters, pid: Pid, status: WaitStatus) {
    let exit = if let Some(code) = status.exit_status() {
        ChildExit::Code(code)
    } else if let Some(sig) = status.terminating_signal() {
        ChildExit::Signal(sig)
    } else {
        return; // stopped/continued: not an exit
    };
    let tx = waiters
        .lock()
        .expect("reaper lock")
        .remove(&pid.as_raw_nonzero().get());
    if let Some(tx) = tx {
        let _ = tx.send(exit);
    }
}
