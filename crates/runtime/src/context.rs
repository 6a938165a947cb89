//! What every stage of a run shares: its id, event emitter, live record,
//! artifact directory and byte budget, cancellation, policy, input,
//! telemetry and where the spec lives.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::error::RunError;
use crate::events::Emitter;
use crate::live::LiveRun;
use crate::provision::ToolLocator;
use crate::record::RunPolicy;
use crate::telemetry::Telemetry;

pub struct RunContext {
    pub run_id: String,
    pub emitter: Arc<Emitter>,
    /// The run's record while it runs (typed state transitions).
    pub live: Arc<LiveRun>,
    /// Resource samples of running stages.
    pub telemetry: Arc<Telemetry>,
    /// `<artifacts root>/<run id>`: one directory per stage below it.
    pub artifacts_dir: PathBuf,
    pub cancel: CancellationToken,
    pub policy: RunPolicy,
    /// Directory of the spec file (resolves relative `file:` skills).
    pub spec_dir: PathBuf,
    /// The run input (`/workspace/input.json`).
    pub input: Option<Value>,
    pub tools: Arc<dyn ToolLocator + Send + Sync>,
    /// The backend every sandbox of the run starts on; `None`: chosen per
    /// stage from the spec's `sandbox.mode`.
    pub backend: Option<Arc<dyn husk_sandbox::Backend>>,
    /// The run's messaging sidecar (`agent.messaging.enabled`).
    pub sidecar: Option<husk_sidecar::Sidecar>,
    /// Warm pools of ready sandboxes (the daemon's `--pool`).
    pub pools: husk_sandbox::pool::Pools,
    /// Bytes each stage has published (its latest publication).
    pub published_bytes: Mutex<HashMap<String, u64>>,
}

impl RunContext {
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.policy.cancel_grace_period_secs)
    }

    /// Accounts `bytes` as stage `stage`'s publication (replacing its
    /// previous one); refuses when the run's total would pass the policy.
    pub fn reserve_artifact_bytes(&self, stage: &str, bytes: u64) -> Result<(), RunError> {
        let mut m = self
            .published_bytes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let others: u64 = m
            .iter()
            .filter(|(s, _)| s.as_str() != stage)
            .map(|(_, b)| b)
            .sum();
        if others + bytes > self.policy.max_artifact_bytes_per_run {
            return Err(RunError::Agent(format!(
                "publishing {bytes} bytes from stage {stage} would pass the run's limit of {} bytes \
                 (policy.max_artifact_bytes_per_run; {others} bytes already published)",
                self.policy.max_artifact_bytes_per_run
            )));
        }
        m.insert(stage.to_string(), bytes);
        Ok(())
    }
}
