//! The sidecar's JSON types (runtime contract §5, void-box v1 field names).
//!
//! Kinds, audiences and priorities are enums rather than strings so that a
//! value outside the contract is refused where it enters (void-box accepted
//! anything and the orchestrator found out later).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What an intent or inbox entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Proposal,
    Signal,
    Evaluation,
}

/// Who an intent is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    Broadcast,
    Leader,
}

/// How urgent an intent is; `normal` when not given.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Proposal, Kind::Signal, Kind::Evaluation];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Proposal => "proposal",
            Kind::Signal => "signal",
            Kind::Evaluation => "evaluation",
        }
    }
}

impl Audience {
    pub const ALL: [Audience; 2] = [Audience::Broadcast, Audience::Leader];

    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Broadcast => "broadcast",
            Audience::Leader => "leader",
        }
    }
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

/// The inbox as agents read it (`GET /v1/inbox`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InboxSnapshot {
    pub version: u64,
    pub execution_id: String,
    pub candidate_id: String,
    pub iteration: u32,
    pub entries: Vec<InboxEntry>,
}

/// One message in the inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboxEntry {
    pub message_id: String,
    pub from_candidate_id: String,
    pub kind: Kind,
    pub payload: Value,
}

/// What the orchestrator loads (`PUT /v1/runs/{id}/inbox`). Everything but
/// `entries` is optional: `version` defaults to the current version + 1,
/// `iteration` to the current iteration, the ids to the run's identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboxLoad {
    #[serde(default)]
    pub version: Option<u64>,
    #[serde(default)]
    pub execution_id: Option<String>,
    #[serde(default)]
    pub candidate_id: Option<String>,
    #[serde(default)]
    pub iteration: Option<u32>,
    pub entries: Vec<InboxEntry>,
}

/// An intent as an agent submits it (`POST /v1/intents`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmittedIntent {
    pub kind: Kind,
    pub audience: Audience,
    pub payload: Value,
    #[serde(default)]
    pub priority: Option<Priority>,
    #[serde(default)]
    pub ttl_iterations: Option<u32>,
}

/// An accepted intent, stamped by the sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StampedIntent {
    pub intent_id: String,
    pub from_candidate_id: String,
    pub iteration: u32,
    pub kind: Kind,
    pub audience: Audience,
    pub payload: Value,
    pub priority: Priority,
    pub ttl_iterations: u32,
}

/// Who the agent is (`GET /v1/context`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SidecarContext {
    pub execution_id: String,
    pub candidate_id: String,
    pub iteration: u32,
    pub role: String,
    pub peers: Vec<String>,
    pub sidecar_version: String,
}

/// Whether the sidecar still takes intents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Serving: intents are accepted.
    Ok,
    /// [`crate::Sidecar::close`] was called: reads still answer, intents
    /// and orchestrator writes are refused.
    Closed,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SidecarHealth {
    pub status: Status,
    pub sidecar_version: String,
    pub run_id: String,
    pub buffer_depth: usize,
    pub inbox_version: u64,
    pub uptime_ms: u64,
}

/// The run record's `sidecar` field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SidecarStatus {
    pub status: Status,
    pub buffer_depth: usize,
    pub inbox_version: u64,
}
