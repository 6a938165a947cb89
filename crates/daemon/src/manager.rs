//! Runs owned by the daemon: starting them (from a spec file or inline
//! text), the live record while they run (status, stage states, counts),
//! live event fan-out, cancellation, and recovery after a restart.
//!
//! Every event goes to the store first and only then to live subscribers,
//! so what a client sees is durable.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use husk_runtime::events::Level;
use husk_runtime::live::LiveRun;
use husk_runtime::record::{RunRecord, StageStatus, new_run_id, now_rfc3339};
use husk_runtime::sandbox::Backend;
use husk_runtime::telemetry::{Page, Telemetry};
use husk_runtime::{Event, EventSink, RunOptions, RunPolicy, RunStatus};
use husk_spec::Spec;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::api::error::{ApiError, ApiResult, Code};
use crate::store::Store;

/// Most runs active at once (more: `RESOURCE_LIMIT_EXCEEDED`, retryable).
pub const DEFAULT_MAX_ACTIVE_RUNS: usize = 256;

/// At shutdown, how long past the largest cancel grace period to wait for
/// the runs' final records (the sandbox teardown after the kill).
pub const SHUTDOWN_MARGIN: Duration = Duration::from_secs(15);

/// `POST /v1/runs`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    /// Spec path on the daemon's host.
    pub file: Option<String>,
    /// The spec text inline (husk extension).
    pub spec: Option<String>,
    /// The run's input, any JSON (written to `/workspace/input.json`).
    pub input: Option<serde_json::Value>,
    /// A caller-chosen run id (else one is generated).
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub run_id: Option<String>,
    #[schema(value_type = Option<husk_runtime::RunPolicy>)]
    pub policy: Option<serde_json::Value>,
}

/// The answer to `POST /v1/runs`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Created {
    pub run_id: String,
    pub attempt_id: u32,
    pub state: RunStatus,
}

/// The answer to `POST /v1/runs/{id}/cancel`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cancelled {
    pub run_id: String,
    pub state: RunStatus,
    /// The run's terminal event (`null` only while it is still stopping).
    pub terminal_event_id: Option<String>,
}

/// A run in flight.
struct Live {
    record: Arc<LiveRun>,
    telemetry: Arc<Telemetry>,
    /// The run's messaging sidecar (`agent.messaging.enabled`).
    sidecar: Option<husk_sidecar::Sidecar>,
    cancel: CancellationToken,
    events: broadcast::Sender<Event>,
    done: watch::Sender<bool>,
}

pub struct Manager {
    store: Arc<Store>,
    live: Mutex<HashMap<String, Arc<Live>>>,
    max_active: usize,
    started: Instant,
    /// Set at shutdown (before the live map is read): no new runs.
    closing: AtomicBool,
    /// Runs started by this daemon (each spawned driver counts once).
    runs_started: AtomicU64,
    /// Serialises drains of ended runs' undrained intents.
    drain_lock: Mutex<()>,
    /// Warm pools (`--pool`), set once at start.
    pools: std::sync::OnceLock<husk_sandbox::pool::Pools>,
    /// The backend every run's sandboxes start on; `None`: chosen per
    /// stage from the spec (tests give `husk_runtime::testing::FakeBackend`).
    backend: Option<Arc<dyn Backend>>,
}

impl Manager {
    /// Opens the manager over a store, failing runs a previous daemon left
    /// unfinished (`terminal_reason: daemon_restarted`).
    pub fn new(
        store: Arc<Store>,
        max_active: usize,
    ) -> Result<Arc<Self>, crate::store::StoreError> {
        Self::with_backend(store, max_active, None)
    }

    /// [`Manager::new`], with every run's sandboxes on `backend` when
    /// given.
    pub fn with_backend(
        store: Arc<Store>,
        max_active: usize,
        backend: Option<Arc<dyn Backend>>,
    ) -> Result<Arc<Self>, crate::store::StoreError> {
        for mut r in store.unfinished()? {
            let seq = store.last_seq(&r.id)? + 1;
            let ev = terminal_event(
                &r.id,
                r.attempt_id,
                seq,
                "run.failed",
                "the daemon restarted while the run was active; its sandbox is gone",
            );
            store.append_event(&ev)?;
            r.status = RunStatus::Failed;
            r.terminal_reason = Some("daemon_restarted".into());
            r.error = Some("the daemon restarted while the run was active".into());
            r.terminal_event_id = Some(ev.event_id.clone());
            r.finished_at = Some(now_rfc3339());
            r.updated_at = now_rfc3339();
            r.active_stage_count = 0;
            r.active_microvm_count = 0;
            for state in r.stage_states.values_mut() {
                if !state.is_terminal() {
                    *state = StageStatus::Failed;
                }
            }
            store.put_run(&r)?;
        }
        Ok(Arc::new(Manager {
            store,
            live: Mutex::new(HashMap::new()),
            max_active,
            started: Instant::now(),
            closing: AtomicBool::new(false),
            runs_started: AtomicU64::new(0),
            drain_lock: Mutex::new(()),
            pools: std::sync::OnceLock::new(),
            backend,
        }))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// How many runs this daemon has started since it began.
    pub fn runs_started(&self) -> u64 {
        self.runs_started.load(Ordering::SeqCst)
    }

    /// Gives the runs this daemon starts its warm pools (once).
    pub fn set_pools(&self, pools: husk_sandbox::pool::Pools) {
        let _ = self.pools.set(pools);
    }

    /// The warm pools (empty without `--pool`).
    pub fn pools(&self) -> husk_sandbox::pool::Pools {
        self.pools.get().cloned().unwrap_or_default()
    }

    pub fn active_count(&self) -> usize {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn live(&self, id: &str) -> Option<Arc<Live>> {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// The current record (live when running), without events.
    pub fn record(&self, id: &str) -> ApiResult<RunRecord> {
        if let Some(l) = self.live(id) {
            let mut r = l.record.snapshot();
            if let Some(sc) = &l.sidecar
                && !r.status.is_terminal()
            {
                r.sidecar = Some(sc.status());
            }
            return Ok(r);
        }
        self.store
            .get_run(id)?
            .ok_or_else(|| ApiError::not_found(format!("no run {id}")))
    }

    /// A live run's messaging sidecar: 404 when the run has none (or has
    /// ended: what it left undrained is in its record).
    pub fn sidecar(&self, id: &str) -> ApiResult<husk_sidecar::Sidecar> {
        let r = self.record(id)?;
        if let Some(sc) = self.live(id).and_then(|l| l.sidecar.clone()) {
            return Ok(sc);
        }
        let why = if r.sidecar.is_some() {
            "its messaging sidecar closed when the run ended"
        } else {
            "it has no messaging sidecar (agent.messaging.enabled is off)"
        };
        Err(ApiError::not_found(format!("run {id}: {why}")))
    }

    /// Drains a run's buffered intents: from its live sidecar, or, once
    /// the run has ended, the intents it left undrained (once).
    pub fn drain_intents(&self, id: &str) -> ApiResult<Vec<husk_sidecar::StampedIntent>> {
        if let Some(sc) = self.live(id).and_then(|l| l.sidecar.clone()) {
            return Ok(sc.drain_intents());
        }
        let _one_at_a_time = self.drain_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut r = self.record(id)?;
        if r.sidecar.is_none() {
            return Err(ApiError::not_found(format!(
                "run {id} has no messaging sidecar (agent.messaging.enabled is off)"
            )));
        }
        if !r.status.is_terminal() {
            // Between the sidecar's close and the final record: nothing to
            // hand out yet, and nothing lost.
            return Ok(Vec::new());
        }
        let left = std::mem::take(&mut r.undrained_intents);
        if !left.is_empty() {
            r.events = Vec::new();
            self.store.put_run(&r)?;
        }
        Ok(left)
    }

    /// Subscribes to a live run's events (`None` when it is not running).
    pub fn subscribe(
        &self,
        id: &str,
    ) -> Option<(broadcast::Receiver<Event>, watch::Receiver<bool>)> {
        self.live(id)
            .map(|l| (l.events.subscribe(), l.done.subscribe()))
    }

    /// Starts a run; idempotent for an active caller-chosen `run_id`.
    ///
    /// The id check and the insertion happen under the live-map lock (every
    /// new run is stored and inserted under it), so two concurrent requests
    /// with the same `run_id` start it once: the later one gets its state.
    pub fn create(self: &Arc<Self>, req: CreateRun) -> ApiResult<Created> {
        if let Some(id) = &req.run_id {
            check_run_id(id)?;
            // Fast answer without loading the spec; re-checked under the lock.
            if let Some(done) = self.existing(id)? {
                return done;
            }
        }
        let policy = parse_policy(req.policy)?;
        let (spec, mut opts) = load_spec(
            req.file.as_deref(),
            req.spec.as_deref(),
            self.store.runs_dir().to_path_buf(),
        )?;
        let id = req.run_id.unwrap_or_else(new_run_id);
        let mut live_map = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = live_map.get(&id) {
            let r = l.record.snapshot();
            return Ok(Created {
                run_id: id,
                attempt_id: r.attempt_id,
                state: r.status,
            });
        }
        if let Some(done) = self.existing(&id)? {
            return done;
        }
        if self.closing.load(Ordering::SeqCst) {
            return Err(ApiError::new(
                Code::ResourceLimitExceeded,
                "the daemon is shutting down; start the run on its next start",
            ));
        }
        if live_map.len() >= self.max_active {
            return Err(ApiError::new(
                Code::ResourceLimitExceeded,
                format!(
                    "{} runs are active, the daemon's limit; retry when one ends",
                    live_map.len()
                ),
            ));
        }
        // The run's directory is private whatever the umask (artifacts).
        create_private_dir(&self.store.runs_dir().join(&id))?;
        let sidecar = husk_runtime::run::messaging_sidecar(&spec, &id, req.input.as_ref(), None)
            .map_err(ApiError::params)?;
        let record = Arc::new(LiveRun::pending(&id, &opts.file, &policy));
        self.store.put_run(&record.snapshot())?;
        let live = Arc::new(Live {
            record,
            telemetry: Arc::default(),
            sidecar,
            cancel: CancellationToken::new(),
            events: broadcast::channel(1024).0,
            done: watch::channel(false).0,
        });
        live_map.insert(id.clone(), live.clone());
        drop(live_map);
        opts.run_id = Some(id.clone());
        opts.input = req.input;
        opts.policy = policy;
        opts.live = Some(live.record.clone());
        opts.telemetry = Some(live.telemetry.clone());
        opts.sidecar = live.sidecar.clone();
        opts.pools = self.pools();
        opts.backend = self.backend.clone();
        let me = self.clone();
        self.runs_started.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move { me.drive(spec, opts, live).await });
        Ok(Created {
            run_id: id,
            attempt_id: 1,
            state: RunStatus::Pending,
        })
    }

    async fn drive(self: Arc<Self>, spec: Spec, opts: RunOptions, live: Arc<Live>) {
        let id = opts.run_id.clone().unwrap_or_default();
        let sink = Arc::new(DaemonSink {
            store: self.store.clone(),
            live: live.clone(),
            persisted: Mutex::new(0),
        });
        let mut record = husk_runtime::run(&spec, opts, sink, live.cancel.clone()).await;
        record.events = Vec::new();
        if let Err(e) = self.store.put_run(&record) {
            tracing::error!("storing the final record of {id}: {e}");
        }
        save_telemetry(&self.store.runs_dir().join(&id), &live.telemetry.all());
        live.record.replace(record);
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        let _ = live.done.send(true);
    }

    /// Cancels a run and waits (bounded) until it is terminal. Repeated
    /// calls return the same terminal event.
    pub async fn cancel(&self, id: &str, reason: Option<String>) -> ApiResult<Cancelled> {
        if let Some(live) = self.live(id) {
            let grace = live.record.snapshot().policy.cancel_grace_period_secs;
            if !live.cancel.is_cancelled() {
                tracing::info!(
                    "cancelling {id}: {}",
                    reason.as_deref().unwrap_or("no reason given")
                );
                live.cancel.cancel();
            }
            let mut done = live.done.subscribe();
            let wait = Duration::from_secs(grace + 30);
            let _ = tokio::time::timeout(wait, done.wait_for(|d| *d)).await;
        }
        let r = self.record(id)?;
        Ok(Cancelled {
            run_id: r.id,
            state: r.status,
            terminal_event_id: r.terminal_event_id,
        })
    }

    /// Resource samples of a run's stages (`stage` filters; an unknown
    /// stage is `NOT_FOUND`).
    pub fn telemetry(
        &self,
        id: &str,
        from_seq: u64,
        stage: Option<&str>,
    ) -> ApiResult<(RunRecord, Page)> {
        let record = self.record(id)?;
        if let Some(s) = stage
            && !record.stage_states.contains_key(s)
        {
            return Err(ApiError::not_found(format!("run {id} has no stage {s}")));
        }
        let tel = match self.live(id) {
            Some(l) => l.telemetry.clone(),
            None => Arc::new(load_telemetry(&self.store.runs_dir().join(id))),
        };
        Ok((record, tel.page(from_seq, stage)))
    }

    /// A stored run with this id: its state when active, 409 when ended.
    fn existing(&self, id: &str) -> ApiResult<Option<ApiResult<Created>>> {
        let Some(r) = self.store.get_run(id)? else {
            return Ok(None);
        };
        if r.status.is_terminal() {
            return Ok(Some(Err(ApiError::new(
                Code::AlreadyTerminal,
                format!("run {id} already ended ({})", r.status.as_str()),
            ))));
        }
        Ok(Some(Ok(Created {
            run_id: id.to_string(),
            attempt_id: r.attempt_id,
            state: r.status,
        })))
    }

    /// Daemon shutdown: refuses new runs, cancels every active one and
    /// waits until each has written its final record (`cancelled`), bounded
    /// by the largest cancel grace period plus [`SHUTDOWN_MARGIN`].
    pub async fn shutdown(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let lives: Vec<Arc<Live>> = self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        if lives.is_empty() {
            return;
        }
        let grace = lives
            .iter()
            .map(|l| l.record.snapshot().policy.cancel_grace_period_secs)
            .max()
            .unwrap_or(0);
        tracing::info!("shutting down: cancelling {} active runs", lives.len());
        let waits = lives.iter().map(|l| {
            let mut done = l.done.subscribe();
            l.cancel.cancel();
            async move {
                let _ = done.wait_for(|d| *d).await;
            }
        });
        let all = futures_util::future::join_all(waits);
        let limit = Duration::from_secs(grace) + SHUTDOWN_MARGIN;
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!("runs still active {limit:?} after cancelling them; exiting anyway");
        }
    }
}

/// Stores each event, then the live record when it changed since it was
/// last stored, then tells subscribers.
struct DaemonSink {
    store: Arc<Store>,
    live: Arc<Live>,
    /// Version of the live record last stored.
    persisted: Mutex<u64>,
}

impl EventSink for DaemonSink {
    fn emit(&self, e: &Event) {
        if let Err(err) = self.store.append_event(e) {
            tracing::error!("storing event {} of {}: {err}", e.event_id, e.run_id);
            return;
        }
        let mut persisted = self.persisted.lock().unwrap_or_else(|x| x.into_inner());
        let version = self.live.record.version();
        if version != *persisted {
            let r = self.live.record.snapshot();
            match self.store.put_run(&r) {
                Ok(()) => *persisted = version,
                Err(err) => tracing::error!("storing run {}: {err}", r.id),
            }
        }
        drop(persisted);
        let _ = self.live.events.send(e.clone());
    }
}

fn terminal_event(run_id: &str, attempt_id: u32, seq: u64, ty: &str, message: &str) -> Event {
    let mut ev = Event::new(run_id, attempt_id, seq, Level::Error, ty, message);
    ev.payload = Some(serde_json::json!({"terminal_reason": "daemon_restarted"}));
    ev
}

const TELEMETRY_FILE: &str = "telemetry.json";

/// Keeps a finished run's samples beside its artifacts.
fn save_telemetry(run_dir: &std::path::Path, samples: &[husk_runtime::telemetry::Sample]) {
    if samples.is_empty() {
        return;
    }
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(run_dir)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(run_dir.join(TELEMETRY_FILE))?;
        f.write_all(&serde_json::to_vec(samples).unwrap_or_default())
    };
    if let Err(e) = write() {
        tracing::warn!("keeping telemetry in {}: {e}", run_dir.display());
    }
}

fn load_telemetry(run_dir: &std::path::Path) -> Telemetry {
    let samples = std::fs::read(run_dir.join(TELEMETRY_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    Telemetry::from_samples(samples)
}

/// Caller-chosen run ids become URL segments and directory names.
fn check_run_id(id: &str) -> ApiResult<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::params(format!(
            "run_id {id:?}: use 1 to 64 letters, digits, `-` or `_`"
        )))
    }
}

fn parse_policy(v: Option<serde_json::Value>) -> ApiResult<RunPolicy> {
    let Some(v) = v else {
        return Ok(RunPolicy::default());
    };
    let p: RunPolicy = serde_json::from_value(v)
        .map_err(|e| ApiError::new(Code::InvalidPolicy, format!("policy: {e}")))?;
    p.validate()
        .map_err(|e| ApiError::new(Code::InvalidPolicy, e))?;
    Ok(p)
}

/// The spec from a file on this host or from inline text, with the run
/// options that say where it came from (artifacts under `runs_dir`).
fn load_spec(
    file: Option<&str>,
    text: Option<&str>,
    runs_dir: std::path::PathBuf,
) -> ApiResult<(Spec, RunOptions)> {
    let invalid = |e: husk_spec::SpecErrors| ApiError::new(Code::InvalidSpec, e.to_string());
    match (file, text) {
        (_, Some(text)) => {
            let spec = husk_spec::parse_str(text, "<inline>").map_err(invalid)?;
            let name = file.unwrap_or("<inline>");
            Ok((spec, RunOptions::for_spec_text(name, runs_dir)))
        }
        (Some(path), None) => {
            let p = std::path::Path::new(path);
            if !p.is_absolute() {
                return Err(ApiError::new(
                    Code::InvalidSpec,
                    format!("file {path:?}: give an absolute path on the daemon's host"),
                ));
            }
            let spec = husk_spec::load_file(p).map_err(invalid)?;
            Ok((spec, RunOptions::for_spec_file(p, runs_dir)))
        }
        (None, None) => Err(ApiError::params(
            "give `file` (a spec path on the daemon's host) or `spec` (the spec text)",
        )),
    }
}

/// Creates `dir` mode 0700 (whatever the umask), or makes an existing one
/// 0700.
fn create_private_dir(dir: &std::path::Path) -> ApiResult<()> {
    crate::store::private_dir(dir).map_err(ApiError::internal)
}
