//! Turning request bodies into typed values with errors that name the
//! field at fault (`kind: unknown variant …`, `entries[2].payload: …`).
//! serde does the parsing; `serde_path_to_error` adds the field path.

use serde::de::DeserializeOwned;
use serde_json::Value;
use thiserror::Error;

use crate::limits::{DEFAULT_TTL_ITERATIONS, MAX_TTL_ITERATIONS};
use crate::types::{Audience, InboxEntry, InboxLoad, Kind, Priority, SubmittedIntent};

/// A body that is not what the route takes. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct ParamError(pub String);

/// A submitted intent after validation: defaults applied, ranges checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    pub kind: Kind,
    pub audience: Audience,
    pub payload: Value,
    pub priority: Priority,
    pub ttl_iterations: u32,
}

impl TryFrom<SubmittedIntent> for Intent {
    type Error = ParamError;

    fn try_from(s: SubmittedIntent) -> Result<Intent, ParamError> {
        if s.payload.is_null() {
            return Err(ParamError("payload: must not be null".into()));
        }
        let ttl = s.ttl_iterations.unwrap_or(DEFAULT_TTL_ITERATIONS);
        if !(1..=MAX_TTL_ITERATIONS).contains(&ttl) {
            return Err(ParamError(format!(
                "ttl_iterations: {ttl} is out of range (1 to {MAX_TTL_ITERATIONS})"
            )));
        }
        Ok(Intent {
            kind: s.kind,
            audience: s.audience,
            payload: s.payload,
            priority: s.priority.unwrap_or_default(),
            ttl_iterations: ttl,
        })
    }
}

/// `POST /v1/intents` takes one intent object or a JSON array of them.
#[derive(Debug)]
pub enum IntentsBody {
    One(Value),
    Batch(Vec<Value>),
}

/// Splits a `POST /v1/intents` body; the items are validated one by one
/// (see [`intent`]) so a batch can stop at the first bad one.
pub fn intents_body(bytes: &[u8]) -> Result<IntentsBody, ParamError> {
    let value = json_value(bytes)?;
    match value {
        Value::Object(_) => Ok(IntentsBody::One(value)),
        Value::Array(items) if items.is_empty() => Err(ParamError(
            "the batch is empty: send one intent object or an array of them".into(),
        )),
        Value::Array(items) => Ok(IntentsBody::Batch(items)),
        other => Err(ParamError(format!(
            "the body must be an intent object or an array of them, not {}",
            type_name(&other)
        ))),
    }
}

/// Validates one intent; `index` is its place in a batch, for the message.
pub fn intent(value: Value, index: Option<usize>) -> Result<Intent, ParamError> {
    let at = match index {
        Some(i) => format!("intent [{i}]"),
        None => "intent".to_string(),
    };
    let submitted: SubmittedIntent = from_value(value, &at)?;
    Intent::try_from(submitted).map_err(|e| ParamError(format!("invalid {at}: {e}")))
}

/// Parses an orchestrator's inbox snapshot (`PUT /v1/runs/{id}/inbox`).
pub fn inbox_load(bytes: &[u8]) -> Result<InboxLoad, ParamError> {
    from_value(json_value(bytes)?, "inbox snapshot")
}

/// Parses one inbox entry (`POST /v1/runs/{id}/messages`).
pub fn inbox_entry(bytes: &[u8]) -> Result<InboxEntry, ParamError> {
    from_value(json_value(bytes)?, "inbox entry")
}

fn json_value(bytes: &[u8]) -> Result<Value, ParamError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ParamError("the request needs a JSON body".into()));
    }
    serde_json::from_slice(bytes).map_err(|e| ParamError(format!("invalid JSON body: {e}")))
}

fn from_value<T: DeserializeOwned>(value: Value, what: &str) -> Result<T, ParamError> {
    serde_path_to_error::deserialize(value).map_err(|e| ParamError(format!("invalid {what}: {e}")))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(v: Value) -> Result<Intent, String> {
        intent(v, None).map_err(|e| e.0)
    }

    #[test]
    fn defaults_apply() {
        let i =
            one(json!({"kind": "signal", "audience": "broadcast", "payload": {"a": 1}})).unwrap();
        assert_eq!(i.priority, Priority::Normal);
        assert_eq!(i.ttl_iterations, 1);
        let i = one(
            json!({"kind": "proposal", "audience": "leader", "payload": 1,
                           "priority": "high", "ttl_iterations": 4}),
        )
        .unwrap();
        assert_eq!(i.kind, Kind::Proposal);
        assert_eq!(i.audience, Audience::Leader);
        assert_eq!(i.priority, Priority::High);
        assert_eq!(i.ttl_iterations, 4);
        let i = one(
            json!({"kind": "evaluation", "audience": "leader", "payload": "x",
                           "priority": null, "ttl_iterations": null}),
        )
        .unwrap();
        assert_eq!((i.priority, i.ttl_iterations), (Priority::Normal, 1));
    }

    #[test]
    fn bad_values_name_the_field() {
        let base = json!({"kind": "signal", "audience": "broadcast", "payload": {}});
        let cases = [
            ("kind", json!("gossip")),
            ("audience", json!("everyone")),
            ("priority", json!("urgent")),
            ("ttl_iterations", json!(0)),
            ("ttl_iterations", json!(5)),
            ("ttl_iterations", json!(-1)),
            ("ttl_iterations", json!("2")),
            ("payload", json!(null)),
            ("kind", json!(7)),
        ];
        for (field, value) in cases {
            let mut v = base.clone();
            v[field] = value.clone();
            let e = one(v).unwrap_err();
            assert!(e.contains(field), "{field}={value}: {e}");
        }
    }

    #[test]
    fn missing_and_unknown_fields_are_named() {
        let e = one(json!({"kind": "signal", "audience": "broadcast"})).unwrap_err();
        assert!(e.contains("missing field `payload`"), "{e}");
        let e = one(json!({"kind": "signal", "payload": 1})).unwrap_err();
        assert!(e.contains("missing field `audience`"), "{e}");
        let e =
            one(json!({"kind": "signal", "audience": "leader", "payload": 1, "priorty": "high"}))
                .unwrap_err();
        assert!(e.contains("priorty"), "{e}");
    }

    #[test]
    fn batch_index_is_named() {
        let e = intent(json!({"kind": "nope"}), Some(2)).unwrap_err().0;
        assert!(e.starts_with("invalid intent [2]: kind"), "{e}");
    }

    #[test]
    fn bodies_are_split() {
        assert!(matches!(intents_body(b"{}").unwrap(), IntentsBody::One(_)));
        assert!(
            matches!(intents_body(b"[{}, {}]").unwrap(), IntentsBody::Batch(v) if v.len() == 2)
        );
        let e = intents_body(b"[]").unwrap_err().0;
        assert!(e.contains("empty"), "{e}");
        let e = intents_body(b"42").unwrap_err().0;
        assert!(e.contains("not a number"), "{e}");
        let e = intents_body(b"  ").unwrap_err().0;
        assert!(e.contains("needs a JSON body"), "{e}");
        let e = intents_body(b"{\"kind\":").unwrap_err().0;
        assert!(e.starts_with("invalid JSON body"), "{e}");
    }

    #[test]
    fn inbox_bodies_name_the_field() {
        let load = inbox_load(br#"{"entries": []}"#).unwrap();
        assert_eq!(load.version, None);
        assert_eq!(load.iteration, None);
        let e = inbox_load(br#"{"version": 2}"#).unwrap_err().0;
        assert!(e.contains("missing field `entries`"), "{e}");
        let e = inbox_load(
            br#"{"entries": [{"message_id": "m", "from_candidate_id": "c", "kind": "chat", "payload": 1}]}"#,
        )
        .unwrap_err()
        .0;
        assert!(e.contains("entries[0].kind"), "{e}");
        let e = inbox_load(br#"{"version": -1, "entries": []}"#)
            .unwrap_err()
            .0;
        assert!(e.contains("version"), "{e}");
        let e = inbox_entry(br#"{"message_id": "m", "kind": "signal", "payload": 1}"#)
            .unwrap_err()
            .0;
        assert!(e.contains("from_candidate_id"), "{e}");
    }
}
