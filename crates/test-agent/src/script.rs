//! The script: what the test agent does instead of asking a model.
//!
//! A script is a JSON object `{"steps": [...], "cost_usd", "input_tokens",
//! "output_tokens", "exit_code"}`. It is checked completely before anything
//! runs, so a typo fails fast with one line naming the step (numbered from
//! 1) and the problem, instead of half a run.

use std::path::Path;

use serde_json::{Map, Value};

/// The environment variable holding an inline script or a script file path.
pub const SCRIPT_ENV: &str = "HUSK_TEST_AGENT_SCRIPT";
/// The script file looked for in the working directory.
pub const SCRIPT_FILE: &str = ".husk-test-agent.json";
/// Where the default script writes when the prompt names no output file.
pub const DEFAULT_OUTPUT: &str = "/workspace/output.json";
/// What the default script writes.
pub const DEFAULT_RESULT: &str = r#"{"status":"success","summary":"test agent finished"}"#;

/// The step kinds, in the order the docs list them.
const KINDS: &[&str] = &[
    "text", "write", "read", "shell", "tool", "sleep_ms", "fail", "exit", "stderr",
];

/// A checked script.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub steps: Vec<Step>,
    pub cost_usd: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub exit_code: u8,
}

/// One step and whether its tool must succeed.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub kind: StepKind,
    pub expect_ok: bool,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// An assistant text message.
    Text(String),
    /// Write a file (the `Write` tool).
    Write { path: String, content: String },
    /// Read a file (the `Read` tool).
    Read(String),
    /// Run `sh -c` (the `Bash` tool).
    Shell(String),
    /// Call a tool of an MCP server.
    Tool {
        server: String,
        name: String,
        arguments: Value,
    },
    /// Pause.
    SleepMs(u64),
    /// Stop with an error result.
    Fail(String),
    /// Stop after the result line with this exit code.
    Exit(u8),
    /// Write a line to stderr.
    Stderr(String),
}

impl StepKind {
    /// Whether the step is an assistant turn (and so counts for usage and
    /// `--max-turns`).
    pub fn is_turn(&self) -> bool {
        matches!(
            self,
            Self::Text(_) | Self::Write { .. } | Self::Read(_) | Self::Shell(_) | Self::Tool { .. }
        )
    }
}

/// Finds the script: `$HUSK_TEST_AGENT_SCRIPT`, else `./.husk-test-agent.json`,
/// else the default script for `prompt`. Errors are one line.
pub fn load(prompt: &str) -> Result<Script, String> {
    if let Some(env) = std::env::var_os(SCRIPT_ENV).filter(|v| !v.is_empty()) {
        let text = env.to_string_lossy();
        if text.trim_start().starts_with('{') {
            return parse(&text).map_err(|e| format!("bad script in ${SCRIPT_ENV}: {e}"));
        }
        let path = Path::new(&env);
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read script {} (from ${SCRIPT_ENV}): {e}",
                path.display()
            )
        })?;
        return parse(&text).map_err(|e| format!("bad script {}: {e}", path.display()));
    }
    let path = Path::new(SCRIPT_FILE);
    if path.exists() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read script ./{SCRIPT_FILE}: {e}"))?;
        return parse(&text).map_err(|e| format!("bad script ./{SCRIPT_FILE}: {e}"));
    }
    Ok(default_script(prompt))
}

/// The script used when none is given: write a success result to the output
/// file the prompt names, then say so.
pub fn default_script(prompt: &str) -> Script {
    let path = find_output_path(prompt).unwrap_or_else(|| DEFAULT_OUTPUT.to_string());
    let text = format!("Done: wrote the result to {path}.");
    Script {
        steps: vec![
            Step {
                kind: StepKind::Write {
                    path,
                    content: DEFAULT_RESULT.to_string(),
                },
                expect_ok: true,
            },
            Step {
                kind: StepKind::Text(text),
                expect_ok: false,
            },
        ],
        cost_usd: 0.0,
        input_tokens: 0,
        output_tokens: 0,
        exit_code: 0,
    }
}

/// The first absolute path ending in `.json` after the first "output" or
/// "write" (any case) in the prompt, without surrounding quotes or
/// punctuation.
pub fn find_output_path(prompt: &str) -> Option<String> {
    // ASCII lowercasing keeps byte offsets, and both words are ASCII, so
    // `start` is a character boundary of `prompt` too.
    let lower = prompt.to_ascii_lowercase();
    let start = ["output", "write"]
        .iter()
        .filter_map(|word| lower.find(word))
        .min()?;
    prompt[start..].split_whitespace().find_map(|token| {
        let path = token
            .trim_start_matches(['"', '\'', '`', '(', '[', '<', '{'])
            .trim_end_matches([
                '"', '\'', '`', ')', ']', '>', '}', ',', ';', ':', '.', '!', '?',
            ]);
        (path.starts_with('/') && path.ends_with(".json") && path.len() > "/.json".len())
            .then(|| path.to_string())
    })
}

/// Parses and checks a script.
pub fn parse(text: &str) -> Result<Script, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err(r#"a script must be a JSON object like {"steps": [...]}"#.into());
    };
    for key in map.keys() {
        let known = matches!(
            key.as_str(),
            "steps" | "cost_usd" | "input_tokens" | "output_tokens" | "exit_code"
        );
        if !known && !key.starts_with('_') {
            return Err(format!(
                "unknown top-level key {key:?} (expected steps, cost_usd, input_tokens, output_tokens, exit_code)"
            ));
        }
    }
    let steps = match map.get("steps") {
        Some(Value::Array(steps)) => steps,
        Some(_) => return Err(r#""steps" must be an array"#.into()),
        None => return Err(r#"missing "steps" array"#.into()),
    };
    let steps = steps
        .iter()
        .enumerate()
        .map(|(i, step)| parse_step(step).map_err(|e| format!("step {}: {e}", i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    let cost_usd = match map.get("cost_usd") {
        None => 0.0,
        Some(v) => v
            .as_f64()
            .filter(|c| c.is_finite() && *c >= 0.0)
            .ok_or(r#""cost_usd" must be a number >= 0"#)?,
    };
    let exit_code = match map.get("exit_code") {
        None => 0,
        Some(v) => exit_code(v).ok_or(r#""exit_code" must be an integer from 0 to 255"#)?,
    };
    Ok(Script {
        steps,
        cost_usd,
        input_tokens: count(&map, "input_tokens")?,
        output_tokens: count(&map, "output_tokens")?,
        exit_code,
    })
}

fn count(map: &Map<String, Value>, key: &str) -> Result<u64, String> {
    match map.get(key) {
        None => Ok(0),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| format!("{key:?} must be an integer >= 0")),
    }
}

fn exit_code(v: &Value) -> Option<u8> {
    v.as_u64().and_then(|n| u8::try_from(n).ok())
}

fn parse_step(step: &Value) -> Result<Step, String> {
    let Value::Object(map) = step else {
        return Err(r#"a step must be an object like {"text": "hello"}"#.into());
    };
    let mut kind = None;
    let mut expect_ok = None;
    for (key, value) in map {
        if key == "expect_ok" {
            expect_ok = Some(
                value
                    .as_bool()
                    .ok_or(r#""expect_ok" must be true or false"#)?,
            );
        } else if key.starts_with('_') {
            // A comment.
        } else if !KINDS.contains(&key.as_str()) {
            return Err(format!(
                "unknown step kind {key:?} (expected one of {})",
                KINDS.join(", ")
            ));
        } else if let Some((previous, _)) = kind {
            return Err(format!(
                "more than one step kind ({previous:?} and {key:?})"
            ));
        } else {
            kind = Some((key.as_str(), value));
        }
    }
    let Some((key, value)) = kind else {
        return Err(format!(
            "no step kind (expected one of {})",
            KINDS.join(", ")
        ));
    };
    let kind = parse_kind(key, value)?;
    let expect_ok = match expect_ok {
        Some(true)
            if !matches!(
                kind,
                StepKind::Write { .. }
                    | StepKind::Read(_)
                    | StepKind::Shell(_)
                    | StepKind::Tool { .. }
            ) =>
        {
            return Err(format!(
                r#""expect_ok" only applies to write, read, shell and tool steps, not {key:?}"#
            ));
        }
        other => other.unwrap_or(false),
    };
    Ok(Step { kind, expect_ok })
}

fn parse_kind(key: &str, value: &Value) -> Result<StepKind, String> {
    let string = || {
        value
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{key:?} must be a string"))
    };
    Ok(match key {
        "text" => StepKind::Text(string()?),
        "read" => StepKind::Read(non_empty(key, string()?)?),
        "shell" => StepKind::Shell(string()?),
        "fail" => StepKind::Fail(string()?),
        "stderr" => StepKind::Stderr(string()?),
        "sleep_ms" => StepKind::SleepMs(
            value
                .as_u64()
                .ok_or(r#""sleep_ms" must be an integer >= 0"#)?,
        ),
        "exit" => {
            StepKind::Exit(exit_code(value).ok_or(r#""exit" must be an integer from 0 to 255"#)?)
        }
        "write" => parse_write(value)?,
        "tool" => parse_tool(value)?,
        other => return Err(format!("unknown step kind {other:?}")),
    })
}

fn non_empty(key: &str, s: String) -> Result<String, String> {
    if s.is_empty() {
        Err(format!("{key:?} must not be empty"))
    } else {
        Ok(s)
    }
}

/// Fetches `fields` of `value` (an object named `what`), refusing any other.
fn fields<'a>(
    what: &str,
    value: &'a Value,
    allowed: &[&str],
) -> Result<&'a Map<String, Value>, String> {
    let Value::Object(map) = value else {
        return Err(format!(
            "{what:?} must be an object with {}",
            allowed.join(", ")
        ));
    };
    if let Some(key) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "{what}: unknown key {key:?} (expected {})",
            allowed.join(", ")
        ));
    }
    Ok(map)
}

fn required_string(what: &str, map: &Map<String, Value>, key: &str) -> Result<String, String> {
    match map.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(format!("{what}: {key:?} must be a non-empty string")),
        None => Err(format!("{what}: missing {key:?}")),
    }
}

fn parse_write(value: &Value) -> Result<StepKind, String> {
    let map = fields("write", value, &["path", "content", "json"])?;
    let path = required_string("write", map, "path")?;
    let content = match (map.get("content"), map.get("json")) {
        (Some(Value::String(s)), None) => s.clone(),
        (Some(_), None) => return Err(r#"write: "content" must be a string"#.into()),
        (None, Some(json)) => json.to_string(),
        _ => return Err(r#"write: needs exactly one of "content" or "json""#.into()),
    };
    Ok(StepKind::Write { path, content })
}

fn parse_tool(value: &Value) -> Result<StepKind, String> {
    let map = fields("tool", value, &["server", "name", "arguments"])?;
    let server = required_string("tool", map, "server")?;
    let name = required_string("tool", map, "name")?;
    let arguments = match map.get("arguments") {
        None => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => return Err(r#"tool: "arguments" must be an object"#.into()),
    };
    Ok(StepKind::Tool {
        server,
        name,
        arguments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(script) => panic!("expected an error, parsed {script:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_every_step_kind() {
        let script = parse(
            r#"{"steps": [
                {"text": "hi"},
                {"write": {"path": "/a/b.txt", "content": "x"}},
                {"write": {"path": "/a/c.json", "json": {"k": [1, 2]}}},
                {"read": "/a/b.txt", "expect_ok": true},
                {"shell": "true", "expect_ok": false},
                {"tool": {"server": "s", "name": "t", "arguments": {"a": 1}}},
                {"tool": {"server": "s", "name": "t"}, "_note": "no arguments"},
                {"sleep_ms": 5},
                {"stderr": "log"},
                {"exit": 3},
                {"fail": "boom"}
            ], "cost_usd": 0.5, "input_tokens": 10, "output_tokens": 7, "exit_code": 4, "_comment": 1}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(script.steps.len(), 11);
        assert_eq!(script.steps[0].kind, StepKind::Text("hi".into()));
        assert_eq!(
            script.steps[2].kind,
            StepKind::Write {
                path: "/a/c.json".into(),
                content: r#"{"k":[1,2]}"#.into()
            }
        );
        assert!(script.steps[3].expect_ok);
        assert!(!script.steps[4].expect_ok);
        assert_eq!(
            script.steps[6].kind,
            StepKind::Tool {
                server: "s".into(),
                name: "t".into(),
                arguments: serde_json::json!({})
            }
        );
        assert_eq!(script.steps[9].kind, StepKind::Exit(3));
        assert_eq!(script.cost_usd, 0.5);
        assert_eq!((script.input_tokens, script.output_tokens), (10, 7));
        assert_eq!(script.exit_code, 4);
    }

    #[test]
    fn names_the_step_and_the_problem() {
        let e = err(r#"{"steps": [{"text": "a"}, {"text": "b"}, {"wirte": {}}]}"#);
        assert!(e.starts_with(r#"step 3: unknown step kind "wirte""#), "{e}");
        assert_eq!(
            err(r#"{"steps": [{"text": "a", "shell": "b"}]}"#),
            r#"step 1: more than one step kind ("shell" and "text")"#
        );
        assert!(err(r#"{"steps": [{}]}"#).starts_with("step 1: no step kind"));
        assert_eq!(
            err(r#"{"steps": [{"text": 3}]}"#),
            r#"step 1: "text" must be a string"#
        );
        assert_eq!(
            err(r#"{"steps": [{"write": {"path": "/x"}}]}"#),
            r#"step 1: write: needs exactly one of "content" or "json""#
        );
        assert!(
            err(r#"{"steps": [{"write": {"path": "/x", "contents": ""}}]}"#)
                .starts_with(r#"step 1: write: unknown key "contents""#)
        );
        assert_eq!(
            err(r#"{"steps": [{"tool": {"name": "t"}}]}"#),
            r#"step 1: tool: missing "server""#
        );
        assert!(
            err(r#"{"steps": [{"text": "a", "expect_ok": true}]}"#)
                .contains("only applies to write, read, shell and tool")
        );
        assert_eq!(
            err(r#"{"steps": [{"exit": 256}]}"#),
            r#"step 1: "exit" must be an integer from 0 to 255"#
        );
        assert!(
            err(r#"{"steps": [], "stpes": []}"#).starts_with(r#"unknown top-level key "stpes""#)
        );
        assert_eq!(err(r#"{"cost_usd": 1}"#), r#"missing "steps" array"#);
        assert!(err("[1]").starts_with("a script must be a JSON object"));
        assert!(err("{").starts_with("invalid JSON: "));
        assert!(!err(r#"{"steps": [], "cost_usd": -1}"#).is_empty());
    }

    #[test]
    fn finds_the_output_path_after_output_or_write() {
        let find = |p: &str| find_output_path(p);
        assert_eq!(
            find("Fix the bug, then write your result as JSON to /tmp/x/out.json when done."),
            Some("/tmp/x/out.json".into())
        );
        assert_eq!(
            find("Read /in/spec.json. OUTPUT: \"/out/r.json\", nothing else"),
            Some("/out/r.json".into())
        );
        assert_eq!(
            find("Write the report to `/w/report.json`."),
            Some("/w/report.json".into())
        );
        // A path before the keyword does not count, nor a relative one.
        assert_eq!(find("Use /in/spec.json as input"), None);
        assert_eq!(find("write it to out.json"), None);
        assert_eq!(find(""), None);
        // Non-ASCII text before the keyword is fine.
        assert_eq!(
            find("Größe prüfen — write to /ü/o.json"),
            Some("/ü/o.json".into())
        );
    }

    #[test]
    fn default_script_writes_the_result_where_the_prompt_says() {
        let script = default_script("please write JSON to /tmp/q/out.json");
        assert_eq!(
            script.steps[0].kind,
            StepKind::Write {
                path: "/tmp/q/out.json".into(),
                content: DEFAULT_RESULT.into()
            }
        );
        assert!(script.steps[0].expect_ok);
        let fallback = default_script("do the thing");
        assert!(matches!(
            &fallback.steps[0].kind,
            StepKind::Write { path, .. } if path == DEFAULT_OUTPUT
        ));
    }
}
