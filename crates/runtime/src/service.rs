//! Service mode (contract §4): a long-lived process whose `output_file` is
//! published whenever it appears or changes, while the process keeps
//! running.
//!
//! The output file is watched through the guest's `Stat`/`ReadFile` RPCs on
//! the same control channel as the service's exec — never by running
//! commands in the sandbox. Watching is a poll of one `Stat` every
//! [`POLL`]: a stat round trip costs well under a millisecond of CPU on
//! either backend, so ten a second stay far below 1% of a core per
//! service, and publication latency stays within two intervals. (An
//! inotify watch in the guest would need a new protocol stream for a gain
//! of tens of milliseconds; the poll is simpler and backend-neutral.)
//!
//! A change of mtime or size triggers a read; the bytes are hashed, and
//! only new content is considered. Content that does not parse is given
//! one more interval (it may be half-written); if it is unchanged and
//! still bad, that is reported once (`service.output_invalid`) and the last
//! good publication stays. Good content is published: saved as the stage's
//! `result.json` with its artifacts, the manifest replaced, the run's
//! `output_ready` set, and a `run.output_ready` event recorded. The run
//! stays `running`.
//!
//! Ending: exit 0 → succeeded ("service exited cleanly"); another code →
//! failed ("service exited with error"); a signal or a vanished sandbox →
//! failed ("service crashed", with the cause); cancel → SIGTERM, grace,
//! SIGKILL → cancelled. Nothing fails a healthy service for living long;
//! `ready_timeout_secs` fails one that never publishes.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use husk_sandbox::Sandbox;
use husk_sandbox::protocol::{ErrorKind, ExecRequest, FileKind};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::agents::StreamParser;
use crate::collect::{self, Unreadable};
use crate::context::RunContext;
use crate::error::RunError;
use crate::events::{Level, Scope};
use crate::output::{self, MAX_OUTPUT_BYTES};
use crate::process::{self, Finished, Io};
use crate::record::ArtifactEntry;

/// Time between two looks at a service's output file.
pub const POLL: Duration = Duration::from_millis(100);

/// What a service publishes, and where.
pub struct Watch<'a> {
    pub stage: &'a str,
    pub output_file: &'a str,
    /// Fail the service when nothing was published after this long.
    pub ready_timeout: Option<Duration>,
    /// Also publish under this stage name (a workflow's output step is
    /// served as `main` too).
    pub alias: Option<&'a str>,
    /// Called once, at the first publication.
    pub on_first_publish: Option<&'a (dyn Fn() + Sync)>,
}

/// How a service ended, with its last publication.
#[derive(Debug)]
pub struct Ended {
    pub outcome: Result<(), RunError>,
    pub finished: Option<Finished>,
    /// The last published output.
    pub output: Option<Value>,
    /// The last publication's manifest (alias entries included).
    pub manifest: Vec<ArtifactEntry>,
    pub publications: u32,
}

/// Runs `req` as a service in `sandbox` until it exits, crashes, is
/// cancelled or misses its ready timeout, publishing its output file.
#[allow(clippy::too_many_arguments)]
pub async fn supervise(
    ctx: &RunContext,
    sandbox: &Sandbox,
    scope: &Scope,
    req: &ExecRequest,
    io: Io,
    parser: &mut dyn StreamParser,
    watch: &Watch<'_>,
) -> Ended {
    let stop = ctx.cancel.child_token();
    let exited = CancellationToken::new();
    let mut w = Watcher::default();
    let mut ready_missed = false;
    let t0 = Instant::now();
    let proc_side = async {
        let r = process::run(
            sandbox,
            req,
            io,
            parser,
            &ctx.emitter,
            scope,
            &stop,
            ctx.grace(),
        )
        .await;
        exited.cancel();
        r
    };
    let watch_side = async {
        loop {
            tokio::select! {
                _ = exited.cancelled() => break,
                _ = tokio::time::sleep(POLL) => {}
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                () = w.tick(ctx, sandbox, scope, watch) => {}
            }
            if let Some(limit) = watch.ready_timeout
                && w.publications == 0
                && t0.elapsed() >= limit
            {
                ready_missed = true;
                stop.cancel();
                break;
            }
        }
    };
    let (fin, ()) = tokio::join!(proc_side, watch_side);
    let outcome = match &fin {
        Ok(f) if !f.cancelled => {
            // What the service wrote just before it exited still counts.
            w.tick(ctx, sandbox, scope, watch).await;
            ending(f)
        }
        Ok(_) if ctx.cancel.is_cancelled() => {
            Err(RunError::Cancelled("the run was cancelled".into()))
        }
        Ok(_) if ready_missed => Err(RunError::Agent(format!(
            "service did not publish {} within {} s (ready_timeout_secs); it was stopped",
            watch.output_file,
            watch.ready_timeout.unwrap_or_default().as_secs()
        ))),
        Ok(f) => ending(f),
        Err(_) if ctx.cancel.is_cancelled() => {
            Err(RunError::Cancelled("the run was cancelled".into()))
        }
        Err(e) => Err(RunError::Agent(format!(
            "service crashed: the sandbox went away ({e})"
        ))),
    };
    Ended {
        outcome,
        finished: fin.ok(),
        output: w.output,
        manifest: w.manifest,
        publications: w.publications,
    }
}

/// The contract's words for how a service's process ended.
fn ending(f: &Finished) -> Result<(), RunError> {
    let mut tail = f
        .stderr_tail
        .last()
        .map(|l| format!(": {l}"))
        .unwrap_or_default();
    if let Some(cause) = f.status.cause.describe() {
        tail = format!(" ({cause}){tail}");
    }
    match (f.status.code, f.status.signal) {
        (Some(0), _) => Ok(()),
        (Some(c), _) => Err(RunError::Agent(format!(
            "service exited with error (code {c}){tail}"
        ))),
        (None, Some(s)) => Err(RunError::Agent(format!(
            "service crashed: killed by signal {s}{tail}"
        ))),
        (None, None) => Err(RunError::Agent("service crashed: no exit status".into())),
    }
}

/// What the watcher knows about the output file.
#[derive(Default)]
struct Watcher {
    /// (mtime, size) last read.
    seen: Option<(i128, u64)>,
    published_hash: Option<[u8; 32]>,
    /// Bad content seen once; reported if it is still there next time.
    suspect: Option<[u8; 32]>,
    /// Problems already reported (each once).
    reported: HashSet<String>,
    publications: u32,
    output: Option<Value>,
    manifest: Vec<ArtifactEntry>,
}

impl Watcher {
    async fn tick(
        &mut self,
        ctx: &RunContext,
        sandbox: &Sandbox,
        scope: &Scope,
        watch: &Watch<'_>,
    ) {
        let path = watch.output_file;
        let st = match sandbox.client().stat(path, true).await {
            Ok(st) => st,
            Err(e) if e.guest_kind() == Some(ErrorKind::NotFound) => {
                if self.publications > 0 && self.seen.take().is_some() {
                    let msg = format!(
                        "{path} disappeared; publication #{} stays",
                        self.publications
                    );
                    self.report(ctx, scope, "gone", msg);
                }
                return;
            }
            Err(e) if e.guest_kind().is_some() => {
                let msg = format!("{path} cannot be watched: {e}");
                self.report(ctx, scope, &msg.clone(), msg);
                return;
            }
            // The channel itself failed: the process side reports the crash.
            Err(_) => return,
        };
        if st.kind != FileKind::File {
            let why = Unreadable::NotRegular(st.kind);
            let msg = format!("{path} {why}; it is not published");
            self.report(ctx, scope, &msg.clone(), msg);
            return;
        }
        if st.size > MAX_OUTPUT_BYTES {
            let msg = format!(
                "{path} is {} bytes, over the limit of {MAX_OUTPUT_BYTES} bytes; it is not published",
                st.size
            );
            self.seen = Some((st.mtime_ns, st.size));
            self.report(ctx, scope, &format!("big:{}", st.size), msg);
            return;
        }
        if self.seen == Some((st.mtime_ns, st.size)) {
            return;
        }
        let bytes = match collect::read_regular(sandbox, path, MAX_OUTPUT_BYTES).await {
            Ok(Ok(b)) => b,
            // Replaced or removed between stat and read: look again next time.
            Ok(Err(_)) | Err(_) => return,
        };
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        if self.published_hash == Some(hash) {
            self.seen = Some((st.mtime_ns, st.size));
            return;
        }
        let parsed = match output::parse(path, watch.stage, Some(&bytes)) {
            Ok(p) => p,
            Err(e) => {
                if self.suspect == Some(hash) {
                    self.seen = Some((st.mtime_ns, st.size));
                    let msg = format!("{e}; publication #{} stays", self.publications);
                    self.report(ctx, scope, &hex(&hash), msg);
                } else {
                    // Maybe half-written: give it one more interval.
                    self.suspect = Some(hash);
                }
                return;
            }
        };
        self.seen = Some((st.mtime_ns, st.size));
        self.publish(ctx, sandbox, scope, watch, bytes, parsed, hash)
            .await;
    }

    #[allow(clippy::too_many_arguments)]
    async fn publish(
        &mut self,
        ctx: &RunContext,
        sandbox: &Sandbox,
        scope: &Scope,
        watch: &Watch<'_>,
        bytes: Vec<u8>,
        parsed: output::StructuredOutput,
        hash: [u8; 32],
    ) {
        let size = bytes.len();
        let published = async {
            let c = collect::publish(ctx, sandbox, watch.stage, bytes, parsed).await?;
            let mut manifest = c.manifest.clone();
            if let Some(to) = watch.alias {
                manifest.extend(collect::alias(ctx, &c.manifest, watch.stage, to)?);
            }
            Ok::<_, RunError>((c, manifest))
        }
        .await;
        let (c, manifest) = match published {
            Ok(x) => x,
            Err(e) => {
                let msg = format!(
                    "publishing {}: {e}; publication #{} stays",
                    watch.output_file, self.publications
                );
                self.published_hash = Some(hash);
                self.report(ctx, scope, &format!("pub:{}", hex(&hash)), msg);
                return;
            }
        };
        self.publications += 1;
        self.published_hash = Some(hash);
        self.suspect = None;
        for stage in manifest
            .iter()
            .map(|e| e.stage.as_str())
            .collect::<HashSet<_>>()
        {
            let entries: Vec<_> = manifest
                .iter()
                .filter(|e| e.stage == stage)
                .cloned()
                .collect();
            ctx.live.published(stage, &entries);
        }
        let n = self.publications;
        let what = if n == 1 { "published" } else { "republished" };
        ctx.emitter.emit(
            Level::Info,
            "run.output_ready",
            scope,
            format!(
                "output ready: {} {what} (#{n}, {size} bytes)",
                watch.output_file
            ),
            Some(json!({
                "publication": n,
                "size_bytes": size,
                "sha256": hex(&hash),
                "status": c.output.status,
                "manifest": manifest,
            })),
        );
        self.output = Some(c.output.value);
        self.manifest = manifest;
        if n == 1
            && let Some(f) = watch.on_first_publish
        {
            f();
        }
    }

    /// Records a problem once per `key`.
    fn report(&mut self, ctx: &RunContext, scope: &Scope, key: &str, msg: String) {
        if self.reported.insert(key.to_string()) {
            ctx.emitter
                .emit(Level::Warn, "service.output_invalid", scope, msg, None);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
