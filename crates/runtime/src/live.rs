//! The live run record: the one place a run's state changes while it runs.
//!
//! The runtime owns the state machine (typed transitions: a stage starts,
//! ends, publishes; a sandbox comes up or goes away) and every reader —
//! the daemon's `GET /v1/runs/{id}`, its store, the CLI — sees snapshots of
//! the same record. Nobody infers state from event names or message text.
//! Each change bumps a version, so a persister can tell whether a snapshot
//! is newer than the last one it wrote.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::record::{
    ArtifactEntry, ArtifactPublication, PublicationStatus, RunPolicy, RunRecord, RunStatus,
    StageStatus, now_rfc3339,
};

/// A run's record while it runs.
pub struct LiveRun {
    record: Mutex<RunRecord>,
    version: AtomicU64,
}

impl std::fmt::Debug for LiveRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveRun")
            .field("version", &self.version())
            .finish()
    }
}

impl LiveRun {
    pub fn new(record: RunRecord) -> Self {
        LiveRun {
            record: Mutex::new(record),
            version: AtomicU64::new(1),
        }
    }

    /// A `pending` record for a run that has not started yet.
    pub fn pending(id: &str, file: &str, policy: &RunPolicy) -> Self {
        let now = now_rfc3339();
        LiveRun::new(RunRecord {
            id: id.into(),
            status: RunStatus::Pending,
            file: file.into(),
            report: None,
            error: None,
            events: Vec::new(),
            attempt_id: 1,
            started_at: now.clone(),
            updated_at: now,
            finished_at: None,
            terminal_reason: None,
            exit_code: None,
            active_stage_count: 0,
            active_microvm_count: 0,
            policy: policy.clone(),
            terminal_event_id: None,
            stage_states: Default::default(),
            artifact_publication: ArtifactPublication::default(),
            output_ready: false,
            sidecar: None,
            undrained_intents: Vec::new(),
            artifacts_dir: None,
        })
    }

    /// The current record.
    pub fn snapshot(&self) -> RunRecord {
        self.lock().clone()
    }

    /// Bumped by every change.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RunRecord> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `f` to the record and bumps the version.
    pub fn update<T>(&self, f: impl FnOnce(&mut RunRecord) -> T) -> T {
        let mut r = self.lock();
        let out = f(&mut r);
        r.updated_at = now_rfc3339();
        self.version.fetch_add(1, Ordering::SeqCst);
        out
    }

    /// Replaces the whole record (the final one).
    pub fn replace(&self, record: RunRecord) {
        self.update(|r| *r = record);
    }

    pub fn set_status(&self, status: RunStatus) {
        self.update(|r| {
            if !r.status.is_terminal() {
                r.status = status;
            }
        });
    }

    pub fn stage_queued(&self, stage: &str) {
        self.update(|r| {
            r.stage_states.insert(stage.into(), StageStatus::Queued);
        });
    }

    /// A stage started: the run is `running`.
    pub fn stage_running(&self, stage: &str) {
        self.update(|r| {
            let before = r.stage_states.insert(stage.into(), StageStatus::Running);
            if before != Some(StageStatus::Running) {
                r.active_stage_count += 1;
            }
            if !r.status.is_terminal() {
                r.status = RunStatus::Running;
            }
        });
    }

    /// A stage ended (succeeded, failed or skipped).
    pub fn stage_ended(&self, stage: &str, status: StageStatus) {
        self.update(|r| {
            let before = r.stage_states.insert(stage.into(), status);
            if before == Some(StageStatus::Running) {
                r.active_stage_count = r.active_stage_count.saturating_sub(1);
            }
        });
    }

    /// A sandbox came up; `microvm` says which backend really started it.
    pub fn sandbox_started(&self, microvm: bool) {
        if microvm {
            self.update(|r| r.active_microvm_count += 1);
        }
    }

    /// A sandbox was stopped.
    pub fn sandbox_stopped(&self, microvm: bool) {
        if microvm {
            self.update(|r| r.active_microvm_count = r.active_microvm_count.saturating_sub(1));
        }
    }

    /// A stage published (or republished) its output: its entries replace
    /// its earlier ones in the manifest; the run's output is ready.
    pub fn published(&self, stage: &str, entries: &[ArtifactEntry]) {
        self.update(|r| {
            let p = &mut r.artifact_publication;
            p.manifest.retain(|e| e.stage != stage);
            p.manifest.extend(entries.iter().cloned());
            p.status = PublicationStatus::Published;
            p.published_at = Some(now_rfc3339());
            r.output_ready = true;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(stage: &str, name: &str) -> ArtifactEntry {
        ArtifactEntry {
            name: name.into(),
            stage: stage.into(),
            media_type: "application/json".into(),
            size_bytes: 1,
            retrieval_path: format!("/x/{stage}/{name}"),
        }
    }

    #[test]
    fn stages_count_and_status() {
        let l = LiveRun::pending("r", "f", &RunPolicy::default());
        l.stage_queued("a");
        assert_eq!(l.snapshot().status, RunStatus::Pending);
        let v = l.version();
        l.stage_running("a");
        assert!(l.version() > v);
        l.stage_running("a");
        let r = l.snapshot();
        assert_eq!(r.status, RunStatus::Running);
        assert_eq!(r.active_stage_count, 1);
        l.stage_ended("a", StageStatus::Succeeded);
        let r = l.snapshot();
        assert_eq!(r.active_stage_count, 0);
        assert_eq!(r.stage_states["a"], StageStatus::Succeeded);
    }

    #[test]
    fn microvms_are_counted_from_the_backend() {
        let l = LiveRun::pending("r", "f", &RunPolicy::default());
        l.sandbox_started(false);
        assert_eq!(l.snapshot().active_microvm_count, 0);
        l.sandbox_started(true);
        l.sandbox_started(true);
        l.sandbox_stopped(true);
        assert_eq!(l.snapshot().active_microvm_count, 1);
    }

    #[test]
    fn republication_replaces_the_stage_entries() {
        let l = LiveRun::pending("r", "f", &RunPolicy::default());
        l.published("main", &[entry("main", "result.json"), entry("main", "a")]);
        l.published("other", &[entry("other", "result.json")]);
        l.published("main", &[entry("main", "result.json")]);
        let r = l.snapshot();
        assert!(r.output_ready);
        assert_eq!(r.artifact_publication.status, PublicationStatus::Published);
        let names: Vec<_> = r
            .artifact_publication
            .manifest
            .iter()
            .map(|e| format!("{}/{}", e.stage, e.name))
            .collect();
        assert_eq!(names, ["other/result.json", "main/result.json"]);
    }

    #[test]
    fn terminal_status_sticks() {
        let l = LiveRun::pending("r", "f", &RunPolicy::default());
        l.set_status(RunStatus::Cancelled);
        l.set_status(RunStatus::Running);
        assert_eq!(l.snapshot().status, RunStatus::Cancelled);
    }
}
