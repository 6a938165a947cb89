//! Warm pools: sandboxes started ahead of time, so a run claims a ready
//! one instead of paying for a boot (seconds for a micro-VM under TCG).
//!
//! A [`Pool`] keeps `target` sandboxes of one backend and one
//! configuration (its template) ready. A claim takes one out, checks that
//! its guest still answers (one ping), gives it the stage's environment and
//! RPC timeout, and returns it; the pool then starts a replacement in the
//! background. A claimed sandbox belongs to its run and is stopped with
//! it: nothing is ever handed out twice. Sandboxes idle longer than the
//! idle limit are stopped and replaced (a fresh guest, a fresh clock).
//!
//! Only a stage whose sandbox is the template, apart from the environment
//! and timeouts, can use the pool ([`Pool::fits`]): mounts, limits, rootfs
//! and network are fixed when a sandbox starts. Anything else starts cold,
//! as does a claim that finds the pool empty (a miss).
//!
//! Before a new sandbox is offered, the refill runs one throwaway command
//! in it (`true`, as the stage's default user, like a stage's first
//! command). A micro-VM under TCG translates every guest code path the
//! first time it takes it, in each QEMU process anew, so a restored VM's
//! first exec costs some 40–100 ms more than its second; the warm-up pays
//! that in the background instead of in the claiming run. It leaves
//! nothing behind but a used process id. A root image without `true`
//! still makes a good sandbox (the guest answers "not found"); any other
//! failure, or no answer in [`WARM_UP_TIMEOUT`], is a failed start: a
//! sandbox that cannot run `true` is not offered to a run.
//!
//! The refill task starts one sandbox at a time, backs off after a failed
//! start (the error is kept for `status`), and ends with the pool:
//! [`Pool::shutdown`] stops every ready sandbox, and dropping them kills
//! them anyway (backends kill on drop).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Notify;

use crate::backend::{
    Backend, BackendKind, BootPath, Origin, Sandbox, SandboxConfig, ToolDelivery,
};
use crate::error::{Result, SandboxError};
use husk_protocol::{ErrorKind, ExecRequest};

/// How long a claimed sandbox's guest gets to answer its ping.
const CLAIM_PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a new sandbox's warm-up command may take before the sandbox
/// is given up as a failed start.
pub const WARM_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait between failed starts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Default [`PoolOptions::idle_limit`].
pub const DEFAULT_IDLE_LIMIT: Duration = Duration::from_secs(600);

/// How a pool is sized and recycled.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Sandboxes kept ready.
    pub target: usize,
    /// A ready sandbox older than this is stopped and replaced.
    pub idle_limit: Duration,
}

/// A pool's counters and state, for health and metrics.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PoolStatus {
    pub backend: BackendKind,
    /// The template's guest memory, CPUs and writable space: what a
    /// stage's sandbox must ask for to claim from this pool.
    pub memory_mb: u32,
    pub vcpus: u32,
    pub disk_mb: u32,
    pub target: usize,
    pub ready: usize,
    pub starting: usize,
    /// Claims served from the pool.
    pub claims: u64,
    /// Claims that found no ready sandbox (the stage started cold).
    pub misses: u64,
    /// Sandboxes the pool started.
    pub started: u64,
    /// Starts that failed.
    pub failed: u64,
    /// Ready sandboxes stopped for idling too long, or found dead at a claim.
    pub recycled: u64,
    /// The last failed start, until a start succeeds.
    pub last_error: Option<String>,
}

struct Ready {
    sandbox: Sandbox,
    since: Instant,
}

#[derive(Default)]
struct State {
    ready: VecDeque<Ready>,
    starting: usize,
    last_error: Option<String>,
    closed: bool,
}

#[derive(Default)]
struct Counters {
    claims: AtomicU64,
    misses: AtomicU64,
    started: AtomicU64,
    failed: AtomicU64,
    recycled: AtomicU64,
}

/// Ready sandboxes of one backend and configuration.
pub struct Pool {
    backend: Arc<dyn Backend>,
    template: SandboxConfig,
    options: PoolOptions,
    state: Mutex<State>,
    counters: Counters,
    /// Wakes the refill task (a claim, shutdown).
    wake: Notify,
    /// Wakes [`Pool::claim_wait`] callers (a sandbox became ready).
    ready_changed: Notify,
}

impl Pool {
    /// Creates the pool and starts filling it in the background (on the
    /// current tokio runtime).
    pub fn start(
        backend: Arc<dyn Backend>,
        template: SandboxConfig,
        options: PoolOptions,
    ) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            backend,
            template,
            options,
            state: Mutex::new(State::default()),
            counters: Counters::default(),
            wake: Notify::new(),
            ready_changed: Notify::new(),
        });
        tokio::spawn(refill(Arc::downgrade(&pool)));
        pool
    }

    /// The backend the pool starts its sandboxes with.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Whether a sandbox of the template can serve `config`: the same
    /// sandbox apart from the environment and the timeouts.
    pub fn fits(&self, config: &SandboxConfig) -> bool {
        let (a, b) = (&self.template, config);
        a.memory_mb == b.memory_mb
            && a.disk_mb == b.disk_mb
            && a.vcpus == b.vcpus
            && a.max_processes == b.max_processes
            && a.network == b.network
            && a.mounts == b.mounts
            && a.rootfs == b.rootfs
            && a.guest_binary == b.guest_binary
            && a.cold_boot == b.cold_boot
            && b.present_secret.is_none()
    }

    /// A ready sandbox for `config`, or `None` (it does not fit, or the
    /// pool is empty: a miss). Never waits for a start.
    pub async fn claim(&self, config: &SandboxConfig) -> Option<Sandbox> {
        if !self.fits(config) {
            return None;
        }
        loop {
            let Some(ready) = self.take() else {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            if let Some(sandbox) = self.check(ready.sandbox, config).await {
                self.counters.claims.fetch_add(1, Ordering::Relaxed);
                return Some(sandbox);
            }
        }
    }

    /// Like [`Pool::claim`], but waits up to `timeout` for a sandbox to
    /// become ready (tests, and callers that prefer waiting to a cold
    /// start).
    pub async fn claim_wait(&self, config: &SandboxConfig, timeout: Duration) -> Option<Sandbox> {
        if !self.fits(config) {
            return None;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.ready_changed.notified();
            if let Some(ready) = self.take() {
                if let Some(sandbox) = self.check(ready.sandbox, config).await {
                    self.counters.claims.fetch_add(1, Ordering::Relaxed);
                    return Some(sandbox);
                }
                continue;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
    }

    fn take(&self) -> Option<Ready> {
        let ready = self.lock().ready.pop_front();
        self.wake.notify_one();
        ready
    }

    /// A taken sandbox, fitted to `config` if its guest still answers;
    /// otherwise it is stopped (in the background) and counted recycled.
    async fn check(&self, mut sandbox: Sandbox, config: &SandboxConfig) -> Option<Sandbox> {
        let alive = !sandbox.client().is_closed()
            && matches!(
                tokio::time::timeout(CLAIM_PING_TIMEOUT, sandbox.client().ping()).await,
                Ok(Ok(()))
            );
        if !alive {
            self.counters.recycled.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(sandbox.stop());
            return None;
        }
        sandbox.set_default_env(config.env.clone());
        sandbox.set_origin(Origin::Pool);
        sandbox
            .client()
            .set_rpc_timeout(Duration::from_secs(config.rpc_timeout_secs));
        Some(sandbox)
    }

    pub fn status(&self) -> PoolStatus {
        let s = self.lock();
        let c = &self.counters;
        PoolStatus {
            backend: self.kind(),
            memory_mb: self.template.memory_mb,
            vcpus: self.template.vcpus,
            disk_mb: self.template.disk_mb,
            target: self.options.target,
            ready: s.ready.len(),
            starting: s.starting,
            claims: c.claims.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            started: c.started.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            recycled: c.recycled.load(Ordering::Relaxed),
            last_error: s.last_error.clone(),
        }
    }

    /// Stops refilling and stops every ready sandbox (each stop bounded by
    /// the backend's own limits).
    pub async fn shutdown(&self) {
        let ready: Vec<Ready> = {
            let mut s = self.lock();
            s.closed = true;
            s.ready.drain(..).collect()
        };
        self.wake.notify_one();
        for r in ready {
            if let Err(e) = r.sandbox.stop().await {
                tracing::warn!("stopping a pooled sandbox: {e}");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Idle sandboxes past the limit, taken out; and the time until the
    /// next one would be.
    fn expired(&self, now: Instant) -> (Vec<Sandbox>, Option<Duration>) {
        let limit = self.options.idle_limit;
        let mut s = self.lock();
        let mut out = Vec::new();
        while s
            .ready
            .front()
            .is_some_and(|r| now.duration_since(r.since) >= limit)
        {
            out.extend(s.ready.pop_front().map(|r| r.sandbox));
        }
        let next = s
            .ready
            .front()
            .map(|r| limit.saturating_sub(now.duration_since(r.since)));
        (out, next)
    }

    /// Reserves one start if the pool is short.
    fn reserve_start(&self) -> bool {
        let mut s = self.lock();
        if s.closed || s.ready.len() + s.starting >= self.options.target {
            return false;
        }
        s.starting += 1;
        true
    }

    /// Records a finished start; a sandbox arriving after shutdown is
    /// handed back for stopping.
    fn finish_start(&self, outcome: Result<Sandbox>) -> Option<Sandbox> {
        let mut s = self.lock();
        s.starting -= 1;
        match outcome {
            Ok(sandbox) => {
                self.counters.started.fetch_add(1, Ordering::Relaxed);
                s.last_error = None;
                if s.closed {
                    return Some(sandbox);
                }
                s.ready.push_back(Ready {
                    sandbox,
                    since: Instant::now(),
                });
                drop(s);
                self.ready_changed.notify_waiters();
                None
            }
            Err(e) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                s.last_error = Some(e.to_string());
                None
            }
        }
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// A pool is a backend: a fitting stage gets a ready sandbox, anything
/// else (or a miss) a cold start of the pool's backend.
#[async_trait::async_trait]
impl Backend for Pool {
    fn kind(&self) -> BackendKind {
        self.backend.kind()
    }

    fn tool_delivery(&self) -> ToolDelivery {
        self.backend.tool_delivery()
    }

    async fn start(&self, config: &SandboxConfig) -> Result<Sandbox> {
        match self.claim(config).await {
            Some(sandbox) => Ok(sandbox),
            None => self.backend.start(config).await,
        }
    }
}

/// The pools of a daemon, at most one per backend and configuration.
#[derive(Default, Clone)]
pub struct Pools(Vec<Arc<Pool>>);

impl Pools {
    pub fn new(pools: Vec<Arc<Pool>>) -> Pools {
        Pools(pools)
    }

    /// The pool of `kind`'s sandboxes whose template fits `config`
    /// ([`Pool::fits`]), if there is one. A daemon keeps at most one pool
    /// per backend and configuration, so at most one fits.
    pub fn fitting(&self, kind: BackendKind, config: &SandboxConfig) -> Option<&Arc<Pool>> {
        self.0.iter().find(|p| p.kind() == kind && p.fits(config))
    }

    pub fn status(&self) -> Vec<PoolStatus> {
        self.0.iter().map(|p| p.status()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub async fn shutdown(&self) {
        for p in &self.0 {
            p.shutdown().await;
        }
    }
}

/// The background task: recycles idle sandboxes and starts replacements,
/// one at a time, until the pool is shut down or dropped.
async fn refill(pool: Weak<Pool>) {
    let mut failures = 0u32;
    let mut retry_at: Option<Instant> = None;
    loop {
        let Some(p) = pool.upgrade() else { return };
        if p.is_closed() {
            return;
        }
        let now = Instant::now();
        let (expired, next_expiry) = p.expired(now);
        for sandbox in expired {
            p.counters.recycled.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(sandbox.stop());
        }
        let may_start = retry_at.is_none_or(|t| now >= t);
        if may_start && p.reserve_start() {
            let outcome = match p.backend.start(&p.template).await {
                Ok(sandbox) => {
                    if let BootPath::ColdFallback { reason } = &sandbox.info().boot {
                        tracing::warn!(backend = %p.kind(), "pool sandbox: {reason}");
                    }
                    warm_up(sandbox).await
                }
                Err(e) => Err(e),
            };
            let failed = outcome.is_err();
            if let Some(late) = p.finish_start(outcome) {
                tokio::spawn(late.stop());
            }
            if failed {
                let e = p.status().last_error.unwrap_or_default();
                tracing::warn!(backend = %p.kind(), "pool start failed: {e}");
                failures = failures.saturating_add(1);
                retry_at = Some(Instant::now() + backoff(failures));
            } else {
                failures = 0;
                retry_at = None;
            }
            continue;
        }
        // Sleep until a claim, the next idle expiry or the end of a backoff.
        let mut wait = Duration::from_secs(60);
        if let Some(d) = next_expiry {
            wait = wait.min(d);
        }
        if let Some(t) = retry_at {
            wait = wait.min(t.saturating_duration_since(now));
        }
        let _ = tokio::time::timeout(wait, p.wake.notified()).await;
    }
}

/// Runs the warm-up command (see the module docs) in a new sandbox.
async fn warm_up(sandbox: Sandbox) -> Result<Sandbox> {
    let req = ExecRequest::new(["true"]);
    let ran = tokio::time::timeout(WARM_UP_TIMEOUT, sandbox.client().run(&req, 1024)).await;
    match warm_up_verdict(ran.ok().map(|r| r.map(drop))) {
        Ok(()) => Ok(sandbox),
        Err(reason) => {
            let detail = sandbox.console_tail(20).unwrap_or_default();
            tokio::spawn(sandbox.stop());
            Err(SandboxError::StartFailed { reason, detail })
        }
    }
}

/// Whether a warm-up's outcome (`None`: no answer in time) leaves a
/// sandbox worth offering. Any exit status does, and so does "not found"
/// (an image without `true`); a guest that cannot start a process at all
/// (out of memory or process ids, permission denied) does not.
fn warm_up_verdict(outcome: Option<Result<()>>) -> std::result::Result<(), String> {
    match outcome {
        Some(Ok(())) => Ok(()),
        Some(Err(SandboxError::Guest(refused))) if refused.kind == ErrorKind::NotFound => {
            tracing::debug!("pool warm-up: {refused}; sandbox kept");
            Ok(())
        }
        Some(Err(e)) => Err(format!("warm-up command failed: {e}")),
        None => Err(format!(
            "warm-up command got no answer in {} s",
            WARM_UP_TIMEOUT.as_secs()
        )),
    }
}

/// The wait after `failures` failed starts in a row: 1 s, doubling, at
/// most [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    (Duration::from_secs(1) * 2u32.pow(exp)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use husk_protocol::ErrorReply;

    fn refused(kind: ErrorKind, message: &str) -> Option<Result<()>> {
        Some(Err(SandboxError::Guest(ErrorReply {
            kind,
            message: message.into(),
        })))
    }

    #[test]
    fn a_warm_up_keeps_a_sandbox_that_ran_it_or_lacks_true() {
        assert_eq!(warm_up_verdict(Some(Ok(()))), Ok(()));
        let missing = refused(ErrorKind::NotFound, "true: command not found");
        assert_eq!(warm_up_verdict(missing), Ok(()));
    }

    #[test]
    fn a_sandbox_that_cannot_start_a_process_is_not_kept() {
        let spawn = refused(
            ErrorKind::SpawnFailed,
            "true: cannot start: Resource temporarily unavailable",
        );
        assert_eq!(
            warm_up_verdict(spawn).unwrap_err(),
            "warm-up command failed: true: cannot start: Resource temporarily unavailable"
        );
        let denied = refused(ErrorKind::PermissionDenied, "true: permission denied");
        assert!(warm_up_verdict(denied).is_err());
    }

    #[test]
    fn a_warm_up_without_an_answer_is_a_failed_start() {
        let gone = SandboxError::Closed("guest exited".into());
        let err = warm_up_verdict(Some(Err(gone))).unwrap_err();
        assert_eq!(err, "warm-up command failed: sandbox is gone: guest exited");
        let err = warm_up_verdict(None).unwrap_err();
        assert_eq!(err, "warm-up command got no answer in 30 s");
    }
}
