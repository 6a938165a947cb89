//! Run events: what happened, in order, with the dotted type names and the
//! PascalCase `event_type_v2` names of the runtime contract, so a run's
//! event log reads the same through the CLI, the daemon's JSON and SSE.
//!
//! Events go to an [`EventSink`]; the runtime never prints. The CLI's sink
//! renders progress for a person, the daemon's stores and broadcasts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Severity of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// One event of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// Unique within the run and ordered: `evt_<seq, zero-padded>`.
    pub event_id: String,
    pub seq: u64,
    pub ts_ms: u64,
    /// RFC 3339, UTC, milliseconds.
    pub timestamp: String,
    pub level: Level,
    /// Dotted name, e.g. `stage.started`.
    pub event_type: String,
    /// PascalCase name, e.g. `StageStarted`.
    pub event_type_v2: String,
    pub message: String,
    pub run_id: String,
    /// The run's attempt (contract §2: every event carries it).
    pub attempt_id: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub box_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

/// The event id of sequence number `seq`.
pub fn event_id(seq: u64) -> String {
    format!("evt_{seq:08}")
}

/// The contract's v2 name of a dotted event type. Names without a fixed
/// mapping PascalCase their dotted parts (`agent.tool_call` → `AgentToolCall`).
pub fn v2_name(dotted: &str) -> String {
    let fixed = match dotted {
        "run.started" => "RunStarted",
        "run.finished" => "RunCompleted",
        "run.failed" => "RunFailed",
        "run.cancelled" => "RunCancelled",
        "run.spec.loaded" => "SpecLoaded",
        "env.provisioned" => "EnvironmentProvisioned",
        "box.started" => "BoxStarted",
        "skill.mounted" => "SkillMounted",
        "workflow.planned" => "WorkflowPlanned",
        "log.chunk" => "LogChunk",
        "log.closed" => "LogClosed",
        "spec.parse_failed" => "SpecParseFailed",
        "stage.queued" => "StageQueued",
        "stage.started" => "StageStarted",
        "stage.completed" => "StageSucceeded",
        "stage.failed" => "StageFailed",
        "stage.skipped" => "StageSkipped",
        "run.output_ready" => "RunOutputReady",
        _ => "",
    };
    if !fixed.is_empty() {
        return fixed.to_string();
    }
    dotted
        .split(['.', '_'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

impl Event {
    /// Event number `seq` of attempt `attempt_id` of run `run_id`, stamped
    /// now, with both type names, about the whole run (no stage, box or
    /// payload: set those fields as needed).
    pub fn new(
        run_id: &str,
        attempt_id: u32,
        seq: u64,
        level: Level,
        event_type: &str,
        message: impl Into<String>,
    ) -> Event {
        let now = SystemTime::now();
        let ts_ms = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Event {
            event_id: event_id(seq),
            seq,
            ts_ms,
            timestamp: humantime::format_rfc3339_millis(now).to_string(),
            level,
            event_type: event_type.to_string(),
            event_type_v2: v2_name(event_type),
            message: message.into(),
            run_id: run_id.to_string(),
            attempt_id,
            stage_name: None,
            box_name: None,
            payload: None,
        }
    }
}

/// Where events go.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: &Event);
}

/// Sends each event to several sinks (e.g. the CLI's renderer and a log).
pub struct Fanout(pub Vec<Arc<dyn EventSink>>);

impl EventSink for Fanout {
    fn emit(&self, event: &Event) {
        for s in &self.0 {
            s.emit(event);
        }
    }
}

/// Keeps every event in memory (the run record's `events[]`).
#[derive(Default)]
pub struct MemoryLog {
    events: std::sync::Mutex<Vec<Event>>,
}

impl MemoryLog {
    pub fn snapshot(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl EventSink for MemoryLog {
    fn emit(&self, event: &Event) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event.clone());
    }
}

/// Stamps events of one run (ids, sequence, time) and hands them to a sink.
pub struct Emitter {
    run_id: String,
    attempt_id: u32,
    seq: AtomicU64,
    sink: Arc<dyn EventSink>,
}

/// What an event is about, below the run.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub stage: Option<String>,
    pub box_name: Option<String>,
}

impl Scope {
    pub fn stage(name: &str) -> Self {
        Scope {
            stage: Some(name.to_string()),
            box_name: None,
        }
    }
}

impl Emitter {
    /// `first_seq` lets a resumed run continue its numbering.
    pub fn new(run_id: &str, attempt_id: u32, first_seq: u64, sink: Arc<dyn EventSink>) -> Self {
        Emitter {
            run_id: run_id.to_string(),
            attempt_id,
            seq: AtomicU64::new(first_seq),
            sink,
        }
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Emits an event and returns it.
    pub fn emit(
        &self,
        level: Level,
        event_type: &str,
        scope: &Scope,
        message: impl Into<String>,
        payload: Option<serde_json::Value>,
    ) -> Event {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let mut event = Event::new(
            &self.run_id,
            self.attempt_id,
            seq,
            level,
            event_type,
            message,
        );
        event.stage_name = scope.stage.clone();
        event.box_name = scope.box_name.clone();
        event.payload = payload;
        self.sink.emit(&event);
        event
    }

    pub fn info(&self, event_type: &str, scope: &Scope, message: impl Into<String>) -> Event {
        self.emit(Level::Info, event_type, scope, message, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_names() {
        assert_eq!(v2_name("run.finished"), "RunCompleted");
        assert_eq!(v2_name("stage.completed"), "StageSucceeded");
        assert_eq!(v2_name("run.spec.loaded"), "SpecLoaded");
        assert_eq!(v2_name("agent.tool_call"), "AgentToolCall");
        assert_eq!(v2_name("artifact.published"), "ArtifactPublished");
    }

    #[test]
    fn emitter_orders_and_stamps() {
        let log = Arc::new(MemoryLog::default());
        let em = Emitter::new("run-1", 1, 0, log.clone());
        em.info("run.started", &Scope::default(), "go");
        em.emit(
            Level::Warn,
            "stage.failed",
            &Scope::stage("a"),
            "bad",
            Some(serde_json::json!({"x": 1})),
        );
        let evs = log.snapshot();
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].event_id, "evt_00000001");
        assert_eq!(evs[1].seq, 2);
        assert!(evs[0].event_id < evs[1].event_id);
        assert_eq!(evs[1].event_type_v2, "StageFailed");
        assert_eq!(evs[1].stage_name.as_deref(), Some("a"));
        assert!(evs[0].timestamp.ends_with('Z'), "{}", evs[0].timestamp);
        let json = serde_json::to_value(&evs[0]).unwrap();
        assert!(json.get("stage_name").is_none());
        assert_eq!(json["run_id"], "run-1");
        assert_eq!(json["attempt_id"], 1);
    }
}
