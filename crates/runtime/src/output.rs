//! Structured output of a task: the JSON file an agent leaves at its
//! `output_file`. It must be a JSON object with a `status` string;
//! `summary`, `metrics{}`, `artifacts[{name, path?, stage?, media_type?}]`
//! and `intents[]` are optional but checked when present. An artifact's
//! `path` defaults to its `name` (relative to `/workspace`), as void-box
//! and void-control write none; `stage`, when given, must name the stage
//! that wrote the file. Artifact names are unique per stage. Missing or malformed
//! output turns a successful exit into a failed stage, with a reason that
//! says which.

use serde::Serialize;
use serde_json::Value;

/// Largest output file read back (the file itself, not its artifacts).
pub const MAX_OUTPUT_BYTES: u64 = 4 * 1024 * 1024;

/// Why there is no usable structured output.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OutputError {
    #[error("structured output missing: the agent did not write {path}")]
    Missing { path: String },
    #[error("structured output malformed: {path}: {reason}")]
    Malformed { path: String, reason: String },
}

impl OutputError {
    /// The daemon's error code for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            OutputError::Missing { .. } => "STRUCTURED_OUTPUT_MISSING",
            OutputError::Malformed { .. } => "STRUCTURED_OUTPUT_MALFORMED",
        }
    }
}

/// An artifact the output names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArtifactRef {
    pub name: String,
    /// As written; relative paths are relative to `/workspace`.
    pub path: String,
    pub media_type: String,
}

/// A parsed, checked output file.
#[derive(Debug, Clone, PartialEq)]
pub struct StructuredOutput {
    pub value: Value,
    pub status: String,
    pub artifacts: Vec<ArtifactRef>,
}

impl StructuredOutput {
    /// Whether the agent itself reports failure (`failed`, `failure`,
    /// `error`); any other status counts as success.
    pub fn reports_failure(&self) -> bool {
        matches!(
            self.status.to_ascii_lowercase().as_str(),
            "failed" | "failure" | "error" | "errored"
        )
    }

    pub fn summary(&self) -> Option<&str> {
        self.value.get("summary").and_then(Value::as_str)
    }
}

/// Parses the bytes of `path` (`None`: the file does not exist), written
/// by stage `stage`.
pub fn parse(
    path: &str,
    stage: &str,
    bytes: Option<&[u8]>,
) -> Result<StructuredOutput, OutputError> {
    let bad = |reason: String| OutputError::Malformed {
        path: path.to_string(),
        reason,
    };
    let Some(bytes) = bytes else {
        return Err(OutputError::Missing {
            path: path.to_string(),
        });
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(bad("the file is empty".into()));
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not valid JSON ({e})")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad(format!("expected a JSON object, found {}", kind(&value))))?;
    let status = match obj.get("status") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => return Err(bad("`status` is empty".into())),
        Some(other) => {
            return Err(bad(format!(
                "`status` must be a string, found {}",
                kind(other)
            )));
        }
        None => return Err(bad("no `status` key".into())),
    };
    check_type(obj.get("summary"), "summary", Value::is_string, "a string").map_err(bad)?;
    check_type(obj.get("metrics"), "metrics", Value::is_object, "an object").map_err(bad)?;
    check_type(obj.get("intents"), "intents", Value::is_array, "a list").map_err(bad)?;
    let artifacts = match obj.get("artifacts") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => artifacts(items, stage).map_err(bad)?,
        Some(other) => {
            return Err(bad(format!(
                "`artifacts` must be a list, found {}",
                kind(other)
            )));
        }
    };
    Ok(StructuredOutput {
        value,
        status,
        artifacts,
    })
}

fn check_type(
    v: Option<&Value>,
    name: &str,
    ok: fn(&Value) -> bool,
    want: &str,
) -> Result<(), String> {
    match v {
        Some(v) if !v.is_null() && !ok(v) => {
            Err(format!("`{name}` must be {want}, found {}", kind(v)))
        }
        _ => Ok(()),
    }
}

fn artifacts(items: &[Value], stage: &str) -> Result<Vec<ArtifactRef>, String> {
    let mut out: Vec<ArtifactRef> = Vec::with_capacity(items.len());
    for (i, a) in items.iter().enumerate() {
        let a = artifact(i, a, stage)?;
        if let Some(j) = out.iter().position(|o| o.name == a.name) {
            return Err(format!(
                "artifacts[{i}].name: `{}` is already the name of artifacts[{j}]; names are unique per stage",
                a.name
            ));
        }
        out.push(a);
    }
    Ok(out)
}

fn artifact(i: usize, a: &Value, stage: &str) -> Result<ArtifactRef, String> {
    if !a.is_object() {
        return Err(format!(
            "artifacts[{i}] must be an object {{name, path?, stage?, media_type?}}, found {}",
            kind(a)
        ));
    }
    let field = |k: &str| -> Result<Option<String>, String> {
        match a.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!(
                "artifacts[{i}].{k} must be a string, found {}",
                kind(other)
            )),
        }
    };
    let name = field("name")?.ok_or(format!("artifacts[{i}] needs a string `name`"))?;
    check_artifact_name(&name).map_err(|e| format!("artifacts[{i}].name: {e}"))?;
    let path = field("path")?.unwrap_or_else(|| name.clone());
    if path.is_empty() {
        return Err(format!("artifacts[{i}].path is empty"));
    }
    if let Some(s) = field("stage")?
        && s != stage
    {
        return Err(format!(
            "artifacts[{i}].stage is `{s}`, but stage `{stage}` wrote this output"
        ));
    }
    if name == "result.json" {
        return Err(format!(
            "artifacts[{i}].name: `result.json` is reserved for the output file"
        ));
    }
    let media_type = field("media_type")?.unwrap_or_else(|| media_type_for(&path).to_string());
    Ok(ArtifactRef {
        name,
        path,
        media_type,
    })
}

/// Artifact names become URL segments and file names: no separators, no
/// `..`, not empty, printable, at most 255 bytes.
pub fn check_artifact_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.contains('/') || name.contains('\\') || name == "." || name.contains("..") {
        return Err(format!("{name:?} may not contain `/`, `\\` or `..`"));
    }
    if name.len() > 255 || name.chars().any(char::is_control) {
        return Err(format!("{name:?} is too long or has control characters"));
    }
    Ok(())
}

/// A media type guessed from a file extension.
pub fn media_type_for(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "json" => "application/json",
        "md" => "text/markdown",
        "txt" | "log" => "text/plain",
        "html" => "text/html",
        "csv" => "text/csv",
        "yaml" | "yml" => "application/yaml",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "diff" | "patch" => "text/x-diff",
        _ => "application/octet-stream",
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/workspace/output.json";

    #[test]
    fn good_output() {
        let o = parse(
            P,
            "main",
            Some(br#"{"status":"success","summary":"done","artifacts":[{"name":"report.md","path":"report.md"}]}"#),
        )
        .unwrap();
        assert_eq!(o.status, "success");
        assert!(!o.reports_failure());
        assert_eq!(o.summary(), Some("done"));
        assert_eq!(o.artifacts[0].media_type, "text/markdown");
    }

    #[test]
    fn each_defect_is_named() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"not json", "not valid JSON"),
            (b"[1]", "expected a JSON object, found a list"),
            (b"{}", "no `status` key"),
            (
                br#"{"status": 3}"#,
                "`status` must be a string, found a number",
            ),
            (
                br#"{"status":"ok","metrics":[]}"#,
                "`metrics` must be an object",
            ),
            (
                br#"{"status":"ok","artifacts":[{"name":"../x","path":"x"}]}"#,
                "artifacts[0].name",
            ),
            (
                br#"{"status":"ok","artifacts":[{"path":"x"}]}"#,
                "artifacts[0] needs a string `name`",
            ),
            (
                br#"{"status":"ok","artifacts":[{"name":"x","stage":"other"}]}"#,
                "artifacts[0].stage is `other`, but stage `main` wrote this output",
            ),
            (
                br#"{"status":"ok","artifacts":[{"name":"x"},{"name":"y"},{"name":"x","path":"z"}]}"#,
                "artifacts[2].name: `x` is already the name of artifacts[0]",
            ),
            (br#"{"status":"ok","artifacts":["x"]}"#, "artifacts[0] must be an object"),
            (
                br#"{"status":"ok","artifacts":[{"name":"x","path":3}]}"#,
                "artifacts[0].path must be a string",
            ),
        ];
        for (bytes, needle) in cases {
            let e = parse(P, "main", Some(bytes)).unwrap_err();
            assert_eq!(e.code(), "STRUCTURED_OUTPUT_MALFORMED");
            assert!(
                e.to_string().contains(needle),
                "{e} should mention {needle}"
            );
        }
        let missing = parse(P, "main", None).unwrap_err();
        assert_eq!(missing.code(), "STRUCTURED_OUTPUT_MISSING");
        assert!(missing.to_string().contains(P));
    }

    #[test]
    fn void_control_artifacts_need_no_path() {
        let o = parse(
            P,
            "main",
            Some(br#"{"status":"ok","artifacts":[{"name":"report.md","stage":"main","media_type":"text/plain"},{"name":"b.json"}]}"#),
        )
        .unwrap();
        assert_eq!(o.artifacts[0].path, "report.md");
        assert_eq!(o.artifacts[0].media_type, "text/plain");
        assert_eq!(o.artifacts[1].path, "b.json");
        assert_eq!(o.artifacts[1].media_type, "application/json");
    }

    #[test]
    fn failure_statuses() {
        let o = parse(P, "main", Some(br#"{"status":"FAILED"}"#)).unwrap();
        assert!(o.reports_failure());
    }

    #[test]
    fn artifact_names() {
        for bad in ["", "a/b", "a\\b", "..", "x..y", "."] {
            assert!(check_artifact_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_artifact_name("report-1.md").is_ok());
    }
}
