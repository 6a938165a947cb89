//! What every stage of a run shares: its id, event emitter, artifact
//! directory, cancellation, policy, input and where the spec lives.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::events::Emitter;
use crate::provision::ToolLocator;
use crate::record::RunPolicy;

pub struct RunContext {
    pub run_id: String,
    pub emitter: Arc<Emitter>,
    /// `<artifacts root>/<run id>`: one directory per stage below it.
    pub artifacts_dir: PathBuf,
    pub cancel: CancellationToken,
    pub policy: RunPolicy,
    /// Directory of the spec file (resolves relative `file:` skills).
    pub spec_dir: PathBuf,
    /// The run input (`/workspace/input.json`).
    pub input: Option<Value>,
    pub tools: Arc<dyn ToolLocator + Send + Sync>,
}

impl RunContext {
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.policy.cancel_grace_period_secs)
    }
}
