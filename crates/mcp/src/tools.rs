//! The four tools: their names, descriptions and input schemas (what the
//! model reads to decide how to call them), and the checking of a call's
//! arguments into a typed [`Call`].
//!
//! Arguments are checked here rather than left to the sidecar so that a
//! mistake is named in the tool's own terms (`summary_text`, not
//! `payload`) and costs no intent: the sidecar counts only accepted ones,
//! but a model that sees "invalid intent: payload" cannot tell what to fix.

use std::sync::Arc;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};
use thiserror::Error;

use crate::limits::{INTENT_PAYLOAD_BYTES, INTENTS_PER_ITERATION};

pub const READ_SHARED_CONTEXT: &str = "read_shared_context";
pub const READ_PEER_MESSAGES: &str = "read_peer_messages";
pub const BROADCAST_OBSERVATION: &str = "broadcast_observation";
pub const RECOMMEND_TO_LEADER: &str = "recommend_to_leader";

/// Every tool name, in the order `tools/list` gives them.
pub const NAMES: [&str; 4] = [
    READ_SHARED_CONTEXT,
    READ_PEER_MESSAGES,
    BROADCAST_OBSERVATION,
    RECOMMEND_TO_LEADER,
];

/// How urgent an intent is (the sidecar's `priority`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
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

/// What the agent recommends the leader do with the subject of its
/// summary. `promote` is a proposal; `refine` and `reject` are
/// evaluations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Disposition {
    #[default]
    Promote,
    Refine,
    Reject,
}

impl Disposition {
    pub const ALL: [Disposition; 3] = [
        Disposition::Promote,
        Disposition::Refine,
        Disposition::Reject,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Promote => "promote",
            Disposition::Refine => "refine",
            Disposition::Reject => "reject",
        }
    }

    /// The intent kind the sidecar gets.
    pub fn kind(self) -> &'static str {
        match self {
            Disposition::Promote => "proposal",
            Disposition::Refine | Disposition::Reject => "evaluation",
        }
    }
}

/// A tool call whose arguments were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    ReadSharedContext,
    ReadPeerMessages {
        since: Option<u64>,
    },
    BroadcastObservation {
        summary_text: String,
        priority: Priority,
    },
    RecommendToLeader {
        summary_text: String,
        disposition: Disposition,
        priority: Priority,
    },
}

impl Call {
    /// The intent to submit, for the two sending tools. The payload is
    /// `{summary_text}`, plus `disposition` for the leader (always, even
    /// the default, so the leader never has to know the default).
    pub fn intent(&self) -> Option<Value> {
        match self {
            Call::ReadSharedContext | Call::ReadPeerMessages { .. } => None,
            Call::BroadcastObservation {
                summary_text,
                priority,
            } => Some(json!({
                "kind": "signal",
                "audience": "broadcast",
                "priority": priority.as_str(),
                "payload": {"summary_text": summary_text},
            })),
            Call::RecommendToLeader {
                summary_text,
                disposition,
                priority,
            } => Some(json!({
                "kind": disposition.kind(),
                "audience": "leader",
                "priority": priority.as_str(),
                "payload": {"summary_text": summary_text, "disposition": disposition.as_str()},
            })),
        }
    }
}

/// A call to a tool this server does not have (a protocol error, -32602).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown tool {0:?}: this server's tools are {list}", list = NAMES.join(", "))]
pub struct UnknownTool(pub String);

/// Arguments a tool cannot take (a tool result with `isError`). Each
/// message names the argument and says how to call the tool instead.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ArgError {
    #[error("{tool}: unknown argument {name:?}; {tool} takes {}", takes(.tool))]
    Unknown { tool: &'static str, name: String },
    #[error("{tool}: {name} is required: call {tool} again with {name} set to {what}")]
    Missing {
        tool: &'static str,
        name: &'static str,
        what: &'static str,
    },
    #[error("{tool}: {name} must be {what}, not {got}")]
    Invalid {
        tool: &'static str,
        name: &'static str,
        what: &'static str,
        got: String,
    },
}

/// What each tool takes, for [`ArgError::Unknown`].
fn takes(tool: &str) -> &'static str {
    match tool {
        READ_SHARED_CONTEXT => "no arguments",
        READ_PEER_MESSAGES => "only the optional argument since (an integer >= 0)",
        BROADCAST_OBSERVATION => "summary_text (required) and priority (optional)",
        _ => "summary_text (required), disposition (optional) and priority (optional)",
    }
}

const SUMMARY_WHAT: &str = "a non-empty string (your message, at most 4 KiB)";
const PRIORITY_WHAT: &str = "one of \"high\", \"normal\", \"low\"";
const DISPOSITION_WHAT: &str = "one of \"promote\", \"refine\", \"reject\"";
const SINCE_WHAT: &str = "an integer >= 0 (the inbox version you last saw)";

/// Checks a call's arguments. `Err(Ok(_))` is an unknown tool,
/// `Err(Err(_))` bad arguments.
pub fn parse(name: &str, args: Option<&JsonObject>) -> Result<Call, Result<UnknownTool, ArgError>> {
    let empty = JsonObject::new();
    let args = args.unwrap_or(&empty);
    let tool = NAMES
        .iter()
        .copied()
        .find(|n| *n == name)
        .ok_or_else(|| Ok(UnknownTool(name.to_string())))?;
    parse_known(tool, args).map_err(Err)
}

fn parse_known(tool: &'static str, args: &JsonObject) -> Result<Call, ArgError> {
    let allowed: &[&str] = match tool {
        READ_SHARED_CONTEXT => &[],
        READ_PEER_MESSAGES => &["since"],
        BROADCAST_OBSERVATION => &["summary_text", "priority"],
        _ => &["summary_text", "disposition", "priority"],
    };
    if let Some(name) = args.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ArgError::Unknown {
            tool,
            name: name.clone(),
        });
    }
    Ok(match tool {
        READ_SHARED_CONTEXT => Call::ReadSharedContext,
        READ_PEER_MESSAGES => Call::ReadPeerMessages {
            since: since(tool, args)?,
        },
        BROADCAST_OBSERVATION => Call::BroadcastObservation {
            summary_text: summary(tool, args)?,
            priority: choice(tool, args, "priority", &Priority::ALL, Priority::as_str)?,
        },
        _ => Call::RecommendToLeader {
            summary_text: summary(tool, args)?,
            disposition: choice(
                tool,
                args,
                "disposition",
                &Disposition::ALL,
                Disposition::as_str,
            )?,
            priority: choice(tool, args, "priority", &Priority::ALL, Priority::as_str)?,
        },
    })
}

/// A JSON value as an argument error quotes it (shortened).
fn shown(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

fn summary(tool: &'static str, args: &JsonObject) -> Result<String, ArgError> {
    match args.get("summary_text") {
        None | Some(Value::Null) => Err(ArgError::Missing {
            tool,
            name: "summary_text",
            what: SUMMARY_WHAT,
        }),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(v) => Err(ArgError::Invalid {
            tool,
            name: "summary_text",
            what: SUMMARY_WHAT,
            got: shown(v),
        }),
    }
}

fn since(tool: &'static str, args: &JsonObject) -> Result<Option<u64>, ArgError> {
    match args.get("since") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| ArgError::Invalid {
            tool,
            name: "since",
            what: SINCE_WHAT,
            got: shown(v),
        }),
    }
}

/// An optional enum-valued argument: absent or null is the default.
fn choice<T: Copy + Default>(
    tool: &'static str,
    args: &JsonObject,
    name: &'static str,
    all: &[T],
    as_str: fn(T) -> &'static str,
) -> Result<T, ArgError> {
    let what = if name == "priority" {
        PRIORITY_WHAT
    } else {
        DISPOSITION_WHAT
    };
    match args.get(name) {
        None | Some(Value::Null) => Ok(T::default()),
        Some(v) => v
            .as_str()
            .and_then(|s| all.iter().copied().find(|t| as_str(*t) == s))
            .ok_or_else(|| ArgError::Invalid {
                tool,
                name,
                what,
                got: shown(v),
            }),
    }
}

fn schema(v: Value) -> Arc<JsonObject> {
    match v {
        Value::Object(m) => Arc::new(m),
        _ => Arc::new(JsonObject::new()),
    }
}

fn priority_schema() -> Value {
    json!({
        "type": "string",
        "enum": ["high", "normal", "low"],
        "default": "normal",
        "description": "How urgent: \"high\" only for what changes others' work right now; \"normal\" by default; \"low\" for background notes."
    })
}

fn summary_schema(what: &str) -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "description": format!(
            "{what} Plain text, at most {INTENT_PAYLOAD_BYTES} bytes once JSON-encoded: keep it short and point to files instead of pasting them."
        )
    })
}

/// The tools as `tools/list` gives them.
pub fn list() -> Vec<Tool> {
    let limits = format!(
        "Limits: at most {INTENTS_PER_ITERATION} intents per iteration across both sending tools \
         (more are refused until the next iteration's inbox arrives; sending the same text to the \
         same audience again in an iteration returns the first intent and costs nothing), payload \
         at most {INTENT_PAYLOAD_BYTES} bytes."
    );
    vec![
        Tool::new(
            READ_SHARED_CONTEXT,
            "Who you are in this run's orchestration: execution_id, your candidate_id, your role, \
             your peers' candidate ids, the current iteration and the sidecar's version. Takes no \
             arguments. Call it once at the start to know whom you work with.",
            schema(json!({"type": "object", "properties": {}, "additionalProperties": false})),
        )
        .with_title("Read shared context")
        .annotate(read_only()),
        Tool::new(
            READ_PEER_MESSAGES,
            "Read the messages your peers sent you (the inbox the orchestrator delivers between \
             iterations): version, iteration and entries, each with message_id, from_candidate_id, \
             kind (proposal, signal or evaluation) and payload (usually {\"summary_text\": …}). \
             Pass since = the version you last saw to get entries only when the inbox changed; \
             version 0 means no inbox has been delivered yet.",
            schema(json!({
                "type": "object",
                "properties": {
                    "since": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "The inbox version you last read; entries come back only if the inbox is newer."
                    }
                },
                "additionalProperties": false
            })),
        )
        .with_title("Read peer messages")
        .annotate(read_only()),
        Tool::new(
            BROADCAST_OBSERVATION,
            format!(
                "Tell every peer something that saves them work: a finding, a warning, progress \
                 (sent as a signal to broadcast; peers see it in their next inbox). Returns the \
                 accepted intent with its intent_id. {limits}"
            ),
            schema(json!({
                "type": "object",
                "properties": {
                    "summary_text": summary_schema("The observation, e.g. \"the parser fails on empty input; fixed in src/parse.rs\"."),
                    "priority": priority_schema()
                },
                "required": ["summary_text"],
                "additionalProperties": false
            })),
        )
        .with_title("Broadcast an observation")
        .annotate(sends()),
        Tool::new(
            RECOMMEND_TO_LEADER,
            format!(
                "Recommend a decision to the leader only. disposition \"promote\" (default) proposes \
                 that the leader adopt what summary_text describes (sent as a proposal); \"refine\" \
                 or \"reject\" is your evaluation of a peer's proposal or result (sent as an \
                 evaluation). The payload carries summary_text and disposition. Returns the \
                 accepted intent with its intent_id. {limits}"
            ),
            schema(json!({
                "type": "object",
                "properties": {
                    "summary_text": summary_schema("What you recommend and why, e.g. \"adopt my patch in src/lib.rs: all 42 tests pass\"."),
                    "disposition": {
                        "type": "string",
                        "enum": ["promote", "refine", "reject"],
                        "default": "promote",
                        "description": "promote: adopt it; refine: promising but needs the changes you describe; reject: do not adopt, and why."
                    },
                    "priority": priority_schema()
                },
                "required": ["summary_text"],
                "additionalProperties": false
            })),
        )
        .with_title("Recommend to the leader")
        .annotate(sends()),
    ]
}

fn read_only() -> ToolAnnotations {
    ToolAnnotations::new()
        .read_only(true)
        .destructive(false)
        .idempotent(true)
        .open_world(false)
}

fn sends() -> ToolAnnotations {
    ToolAnnotations::new()
        .read_only(false)
        .destructive(false)
        .idempotent(false)
        .open_world(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> JsonObject {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn call(name: &str, v: Value) -> Result<Call, Result<UnknownTool, ArgError>> {
        parse(name, Some(&args(v)))
    }

    #[test]
    fn good_calls_parse_with_defaults() {
        assert_eq!(
            parse(READ_SHARED_CONTEXT, None),
            Ok(Call::ReadSharedContext)
        );
        assert_eq!(
            call(READ_PEER_MESSAGES, json!({})),
            Ok(Call::ReadPeerMessages { since: None })
        );
        assert_eq!(
            call(READ_PEER_MESSAGES, json!({"since": 4})),
            Ok(Call::ReadPeerMessages { since: Some(4) })
        );
        assert_eq!(
            call(BROADCAST_OBSERVATION, json!({"summary_text": "x"})),
            Ok(Call::BroadcastObservation {
                summary_text: "x".into(),
                priority: Priority::Normal
            })
        );
        assert_eq!(
            call(
                RECOMMEND_TO_LEADER,
                json!({"summary_text": "y", "disposition": "reject", "priority": "high"})
            ),
            Ok(Call::RecommendToLeader {
                summary_text: "y".into(),
                disposition: Disposition::Reject,
                priority: Priority::High
            })
        );
        assert_eq!(
            call(
                RECOMMEND_TO_LEADER,
                json!({"summary_text": "y", "priority": null})
            ),
            Ok(Call::RecommendToLeader {
                summary_text: "y".into(),
                disposition: Disposition::Promote,
                priority: Priority::Normal
            })
        );
    }

    #[test]
    fn intents_follow_the_contract() {
        let i = Call::BroadcastObservation {
            summary_text: "s".into(),
            priority: Priority::Low,
        }
        .intent()
        .unwrap();
        assert_eq!(
            i,
            json!({"kind": "signal", "audience": "broadcast", "priority": "low",
                   "payload": {"summary_text": "s"}})
        );
        for (d, kind) in [
            (Disposition::Promote, "proposal"),
            (Disposition::Refine, "evaluation"),
            (Disposition::Reject, "evaluation"),
        ] {
            let i = Call::RecommendToLeader {
                summary_text: "s".into(),
                disposition: d,
                priority: Priority::Normal,
            }
            .intent()
            .unwrap();
            assert_eq!(
                i,
                json!({"kind": kind, "audience": "leader", "priority": "normal",
                       "payload": {"summary_text": "s", "disposition": d.as_str()}})
            );
        }
        assert_eq!(Call::ReadSharedContext.intent(), None);
    }

    #[test]
    fn bad_arguments_name_the_argument_and_the_fix() {
        let cases = [
            (BROADCAST_OBSERVATION, json!({}), "summary_text is required"),
            (
                BROADCAST_OBSERVATION,
                json!({"summary_text": null}),
                "summary_text is required",
            ),
            (
                BROADCAST_OBSERVATION,
                json!({"summary_text": "  "}),
                "summary_text must be",
            ),
            (BROADCAST_OBSERVATION, json!({"summary_text": 5}), "not 5"),
            (
                BROADCAST_OBSERVATION,
                json!({"summary_text": "x", "priority": "urgent"}),
                "priority must be one of \"high\", \"normal\", \"low\", not \"urgent\"",
            ),
            (
                RECOMMEND_TO_LEADER,
                json!({"summary_text": "x", "disposition": "accept"}),
                "disposition must be one of",
            ),
            (
                RECOMMEND_TO_LEADER,
                json!({"disposition": "refine"}),
                "summary_text is required",
            ),
            (
                READ_PEER_MESSAGES,
                json!({"since": -1}),
                "since must be an integer >= 0",
            ),
            (READ_PEER_MESSAGES, json!({"since": "3"}), "not \"3\""),
            (READ_PEER_MESSAGES, json!({"since": 1.5}), "since must be"),
            (
                READ_SHARED_CONTEXT,
                json!({"x": 1}),
                "unknown argument \"x\"",
            ),
            (
                BROADCAST_OBSERVATION,
                json!({"summary_text": "x", "audience": "leader"}),
                "unknown argument \"audience\"",
            ),
        ];
        for (tool, a, needle) in cases {
            let e = call(tool, a.clone()).unwrap_err().unwrap_err();
            let text = e.to_string();
            assert!(text.starts_with(tool), "{tool} {a}: {text}");
            assert!(text.contains(needle), "{tool} {a}: {text}");
        }
    }

    #[test]
    fn unknown_tools_list_the_real_ones() {
        let e = parse("send_email", None).unwrap_err().unwrap();
        let text = e.to_string();
        assert!(text.contains("\"send_email\""), "{text}");
        for n in NAMES {
            assert!(text.contains(n), "{text}");
        }
    }

    #[test]
    fn listed_schemas_match_what_parse_accepts() {
        let tools = list();
        assert_eq!(
            tools.iter().map(|t| t.name.as_ref()).collect::<Vec<_>>(),
            NAMES
        );
        for t in &tools {
            let s = &t.input_schema;
            assert_eq!(s["type"], "object");
            assert_eq!(s["additionalProperties"], false);
            let props: Vec<&String> = s["properties"].as_object().unwrap().keys().collect();
            // Every listed property is accepted; nothing else is.
            let mut a = JsonObject::new();
            for p in &props {
                let v = match p.as_str() {
                    "since" => json!(1),
                    "priority" => json!("low"),
                    "disposition" => json!("refine"),
                    _ => json!("text"),
                };
                a.insert(p.to_string(), v);
            }
            assert!(parse(&t.name, Some(&a)).is_ok(), "{}: {a:?}", t.name);
            a.insert("extra".into(), json!(1));
            assert!(parse(&t.name, Some(&a)).is_err(), "{}", t.name);
            let desc = t.description.as_deref().unwrap();
            assert!(desc.len() > 80, "{}: {desc}", t.name);
        }
        for t in &tools[2..] {
            assert_eq!(t.input_schema["required"], json!(["summary_text"]));
            let desc = t.description.as_deref().unwrap();
            assert!(desc.contains("at most 3 intents per iteration"), "{desc}");
            assert!(desc.contains("4096 bytes"), "{desc}");
            assert_eq!(
                t.input_schema["properties"]["priority"]["enum"],
                json!(["high", "normal", "low"])
            );
        }
    }
}
