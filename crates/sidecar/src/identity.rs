//! Who the agent behind a sidecar is: execution, candidate, role, peers and
//! starting iteration, read from the run's input (void-control puts them
//! there) with the run id as the fallback, so a plain run still has a
//! usable identity.

use serde_json::{Map, Value};
use thiserror::Error;

/// The role when the input names none.
pub const DEFAULT_ROLE: &str = "candidate";

/// Objects of the run input searched for identity fields, most specific
/// first; the input's top level comes last.
pub const NESTED_KEYS: [&str; 2] = ["sidecar", "orchestration"];

/// The identity a sidecar stamps on intents and shows in `/v1/context`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub run_id: String,
    pub execution_id: String,
    pub candidate_id: String,
    pub role: String,
    pub peers: Vec<String>,
    /// The iteration before any inbox is loaded.
    pub iteration: u32,
}

/// A run input whose identity fields have the wrong shape.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("run input field {field}: {problem}")]
pub struct IdentityError {
    /// The field's path, e.g. `input.orchestration.peers[1]`.
    pub field: String,
    pub problem: String,
}

impl Identity {
    /// The identity of a run with no identity fields in its input.
    pub fn for_run(run_id: &str) -> Identity {
        Identity {
            run_id: run_id.to_string(),
            execution_id: run_id.to_string(),
            candidate_id: run_id.to_string(),
            role: DEFAULT_ROLE.to_string(),
            peers: Vec::new(),
            iteration: 0,
        }
    }

    /// Reads `execution_id`, `candidate_id`, `role` (strings, not empty),
    /// `peers` (array of strings) and `iteration` (integer ≥ 0) from the
    /// input's `sidecar` object, else its `orchestration` object, else its
    /// top level; a field found nowhere keeps its [`Identity::for_run`]
    /// value. An input that is not a JSON object has no identity fields.
    pub fn from_input(run_id: &str, input: Option<&Value>) -> Result<Identity, IdentityError> {
        let mut id = Identity::for_run(run_id);
        let Some(Value::Object(top)) = input else {
            return Ok(id);
        };
        let mut scopes: Vec<(String, &Map<String, Value>)> = Vec::new();
        for key in NESTED_KEYS {
            match top.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Object(m)) => scopes.push((format!("input.{key}"), m)),
                Some(_) => return Err(problem(format!("input.{key}"), "must be an object")),
            }
        }
        scopes.push(("input".to_string(), top));
        let find = |name: &str| {
            scopes.iter().find_map(|(path, m)| {
                m.get(name)
                    .filter(|v| !v.is_null())
                    .map(|v| (format!("{path}.{name}"), v))
            })
        };
        if let Some((path, v)) = find("execution_id") {
            id.execution_id = text(&path, v)?;
        }
        if let Some((path, v)) = find("candidate_id") {
            id.candidate_id = text(&path, v)?;
        }
        if let Some((path, v)) = find("role") {
            id.role = text(&path, v)?;
        }
        if let Some((path, v)) = find("peers") {
            id.peers = peers(&path, v)?;
        }
        if let Some((path, v)) = find("iteration") {
            id.iteration = v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| problem(path, "must be an integer from 0 to 4294967295"))?;
        }
        Ok(id)
    }
}

fn problem(field: String, what: &str) -> IdentityError {
    IdentityError {
        field,
        problem: what.to_string(),
    }
}

fn text(path: &str, v: &Value) -> Result<String, IdentityError> {
    match v.as_str() {
        Some(s) if !s.trim().is_empty() => Ok(s.to_string()),
        Some(_) => Err(problem(path.to_string(), "must not be empty")),
        None => Err(problem(path.to_string(), "must be a string")),
    }
}

fn peers(path: &str, v: &Value) -> Result<Vec<String>, IdentityError> {
    let Some(items) = v.as_array() else {
        return Err(problem(path.to_string(), "must be an array of strings"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, p)| text(&format!("{path}[{i}]"), p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn no_input_falls_back_to_the_run_id() {
        let id = Identity::from_input("run-1", None).unwrap();
        assert_eq!(id, Identity::for_run("run-1"));
        assert_eq!(id.execution_id, "run-1");
        assert_eq!(id.candidate_id, "run-1");
        assert_eq!(id.role, "candidate");
        assert!(id.peers.is_empty());
        assert_eq!(id.iteration, 0);
        // Non-object inputs carry no identity either.
        let id = Identity::from_input("run-1", Some(&json!("just text"))).unwrap();
        assert_eq!(id.candidate_id, "run-1");
    }

    #[test]
    fn top_level_fields_are_read() {
        let input = json!({"execution_id": "ex", "candidate_id": "c1", "role": "leader",
                           "peers": ["c2", "c3"], "iteration": 4, "task": "other"});
        let id = Identity::from_input("run-1", Some(&input)).unwrap();
        assert_eq!(id.run_id, "run-1");
        assert_eq!(id.execution_id, "ex");
        assert_eq!(id.candidate_id, "c1");
        assert_eq!(id.role, "leader");
        assert_eq!(id.peers, vec!["c2", "c3"]);
        assert_eq!(id.iteration, 4);
    }

    #[test]
    fn nested_objects_win_sidecar_first() {
        let input = json!({
            "candidate_id": "top",
            "role": "top-role",
            "orchestration": {"candidate_id": "orch", "execution_id": "orch-ex"},
            "sidecar": {"candidate_id": "side"}
        });
        let id = Identity::from_input("run-1", Some(&input)).unwrap();
        assert_eq!(id.candidate_id, "side");
        assert_eq!(id.execution_id, "orch-ex");
        assert_eq!(id.role, "top-role");
    }

    #[test]
    fn null_fields_count_as_absent() {
        let input = json!({"candidate_id": null, "sidecar": null});
        let id = Identity::from_input("run-1", Some(&input)).unwrap();
        assert_eq!(id.candidate_id, "run-1");
    }

    #[test]
    fn wrong_shapes_name_the_field() {
        let cases = [
            (json!({"candidate_id": 3}), "input.candidate_id"),
            (json!({"execution_id": " "}), "input.execution_id"),
            (json!({"peers": "c2"}), "input.peers"),
            (
                json!({"orchestration": {"peers": ["ok", 5]}}),
                "input.orchestration.peers[1]",
            ),
            (json!({"iteration": -1}), "input.iteration"),
            (json!({"iteration": 1.5}), "input.iteration"),
            (json!({"iteration": 5_000_000_000u64}), "input.iteration"),
            (json!({"sidecar": [1]}), "input.sidecar"),
        ];
        for (input, field) in cases {
            let e = Identity::from_input("r", Some(&input)).unwrap_err();
            assert_eq!(e.field, field, "{input}");
            assert!(e.to_string().contains(field), "{e}");
        }
    }
}
