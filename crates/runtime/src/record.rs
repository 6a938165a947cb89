//! The run record: what a run is and how it ended, field for field as the
//! runtime contract (§2) describes, so the CLI's `--json`, the daemon's
//! `GET /v1/runs/{id}` and a stored run are the same document.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::events::Event;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Pending,
    Starting,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Starting => "starting",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

/// Limits of one run (optional on create; defaults per the contract).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RunPolicy {
    #[schema(minimum = 1)]
    pub max_parallel_microvms_per_run: u32,
    pub max_stage_retries: u32,
    #[schema(minimum = 1)]
    pub stage_timeout_secs: u64,
    pub cancel_grace_period_secs: u64,
    /// Most artifacts one stage's output may name.
    pub max_artifacts_per_stage: u32,
    /// Most bytes a stage publishes (output file and artifacts).
    pub max_artifact_bytes_per_stage: u64,
    /// Most bytes all stages of the run publish together.
    pub max_artifact_bytes_per_run: u64,
}

impl Default for RunPolicy {
    fn default() -> Self {
        RunPolicy {
            max_parallel_microvms_per_run: 4,
            max_stage_retries: 3,
            stage_timeout_secs: 3600,
            cancel_grace_period_secs: 30,
            max_artifacts_per_stage: 64,
            max_artifact_bytes_per_stage: 1 << 30,
            max_artifact_bytes_per_run: 4 << 30,
        }
    }
}

impl RunPolicy {
    /// Checks the contract's bounds; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_parallel_microvms_per_run < 1 {
            return Err("policy.max_parallel_microvms_per_run must be at least 1".into());
        }
        if self.stage_timeout_secs == 0 {
            return Err("policy.stage_timeout_secs must be greater than 0".into());
        }
        if self.max_artifact_bytes_per_run < self.max_artifact_bytes_per_stage {
            return Err(
                "policy.max_artifact_bytes_per_run must be at least max_artifact_bytes_per_stage"
                    .into(),
            );
        }
        Ok(())
    }
}

/// One artifact in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArtifactEntry {
    pub name: String,
    pub stage: String,
    pub media_type: String,
    pub size_bytes: u64,
    pub retrieval_path: String,
}

/// Where a run's artifact publication is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PublicationStatus {
    #[default]
    NotStarted,
    Publishing,
    Published,
    Failed,
}

/// Where one stage is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    #[default]
    Queued,
    Running,
    Succeeded,
    Failed,
    Skipped,
}

impl StageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::Queued => "queued",
            StageStatus::Running => "running",
            StageStatus::Succeeded => "succeeded",
            StageStatus::Failed => "failed",
            StageStatus::Skipped => "skipped",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StageStatus::Succeeded | StageStatus::Failed | StageStatus::Skipped
        )
    }
}

impl std::fmt::Display for StageStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Publication of a run's artifacts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArtifactPublication {
    pub status: PublicationStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<String>,
    pub manifest: Vec<ArtifactEntry>,
}

impl Default for ArtifactPublication {
    fn default() -> Self {
        ArtifactPublication {
            status: PublicationStatus::NotStarted,
            published_at: None,
            manifest: Vec::new(),
        }
    }
}

/// How one stage went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StageReport {
    pub name: String,
    pub status: StageStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub box_name: Option<String>,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The stage's structured output (the parsed output file), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    /// Which backend ran it and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    pub cost_usd: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub duration_ms: u64,
}

impl StageReport {
    pub fn queued(name: &str) -> Self {
        StageReport {
            name: name.into(),
            status: StageStatus::Queued,
            box_name: None,
            attempts: 0,
            started_at: None,
            finished_at: None,
            exit_code: None,
            error: None,
            output: None,
            sandbox: None,
            cost_usd: 0.0,
            input_tokens: 0,
            output_tokens: 0,
            duration_ms: 0,
        }
    }
}

/// The result of a finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Report {
    pub name: String,
    pub kind: String,
    pub success: bool,
    /// The run's structured output (of the output stage).
    pub output: Option<serde_json::Value>,
    pub stages: Vec<StageReport>,
    pub total_cost_usd: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// A run, as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunRecord {
    pub id: String,
    pub status: RunStatus,
    /// The spec file the run came from (or `<inline>`).
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub events: Vec<Event>,
    pub attempt_id: u32,
    pub started_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub active_stage_count: u32,
    pub active_microvm_count: u32,
    pub policy: RunPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_event_id: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stage_states: BTreeMap<String, StageStatus>,
    pub artifact_publication: ArtifactPublication,
    pub output_ready: bool,
    /// The messaging sidecar's state, for runs with `messaging.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<husk_sidecar::SidecarStatus>,
    /// Intents still buffered in the sidecar when the run ended (nobody
    /// drained them): reported here, never silently dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub undrained_intents: Vec<husk_sidecar::StampedIntent>,
    /// Where the CLI keeps this run's artifacts on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts_dir: Option<String>,
}

/// Now, as RFC 3339 with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// A fresh run id: `run-` and 12 random hex digits.
pub fn new_run_id() -> String {
    let mut b = [0u8; 6];
    let _ = getrandom::fill(&mut b);
    format!(
        "run-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_defaults_and_bounds() {
        let p: RunPolicy = serde_json::from_str("{}").unwrap();
        assert_eq!(p, RunPolicy::default());
        assert_eq!(p.max_parallel_microvms_per_run, 4);
        let bad = RunPolicy {
            stage_timeout_secs: 0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("stage_timeout_secs"));
        assert!(serde_json::from_str::<RunPolicy>(r#"{"max_stage_retry": 1}"#).is_err());
    }

    #[test]
    fn run_ids_are_distinct() {
        let (a, b) = (new_run_id(), new_run_id());
        assert_ne!(a, b);
        assert!(a.starts_with("run-") && a.len() == 16, "{a}");
    }

    #[test]
    fn statuses() {
        assert!(RunStatus::Cancelled.is_terminal());
        assert!(!RunStatus::Running.is_terminal());
        assert_eq!(
            serde_json::to_string(&RunStatus::Succeeded).unwrap(),
            "\"succeeded\""
        );
    }
}
