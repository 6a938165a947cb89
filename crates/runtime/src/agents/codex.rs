//! Codex CLI: `codex exec --json --skip-git-repo-check -C DIR PROMPT`, with
//! `CODEX_HOME` pointing at the config husk wrote (MCP servers, and a
//! provider block when a base URL is given). Its JSONL events
//! (`item.started|completed` with `agent_message`, `mcp_tool_call`,
//! `command_execution` items; `turn.completed` with usage; `error`) become
//! events.
//!
//! The launcher also owns what Codex needs besides its argv: the
//! `config.toml` ([`config_toml`]) and the companion binaries its package
//! ships next to the `codex` binary ([`companions`]): without
//! `codex-code-mode-host`, Codex's default models get no tools at all
//! (their tools, MCP ones included, are called from code mode).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::{AgentEvent, LaunchContext, LaunchPlan, StreamParser, base_env, preview};

/// The provider name husk's config gives a custom base URL.
const PROVIDER: &str = "husk";

/// Codex's `config.toml` for a stage: the MCP servers (Claude Code
/// `mcpServers` entries: `command`/`args`/`env`, or `url`), each with its
/// tools approved (exec mode refuses unapproved tool calls), and, with a
/// base URL, a Responses-API provider reading its key from `key_env`.
pub fn config_toml(
    servers: &BTreeMap<String, Value>,
    base_url: Option<&str>,
    key_env: Option<&str>,
) -> String {
    let config = Config {
        model_provider: base_url.map(|_| PROVIDER),
        model_providers: base_url
            .map(|url| {
                let p = Provider {
                    name: PROVIDER,
                    base_url: url,
                    wire_api: "responses",
                    env_key: key_env,
                };
                BTreeMap::from([(PROVIDER, p)])
            })
            .unwrap_or_default(),
        mcp_servers: servers
            .iter()
            .map(|(name, entry)| (name.as_str(), McpServer::from_entry(entry)))
            .collect(),
    };
    // Plain strings, maps and lists always serialize.
    toml::to_string(&config).unwrap_or_default()
}

#[derive(Serialize)]
struct Config<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    model_provider: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    model_providers: BTreeMap<&'a str, Provider<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    mcp_servers: BTreeMap<&'a str, McpServer>,
}

#[derive(Serialize)]
struct Provider<'a> {
    name: &'a str,
    base_url: &'a str,
    wire_api: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    env_key: Option<&'a str>,
}

#[derive(Serialize)]
struct McpServer {
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    args: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    env: BTreeMap<String, String>,
    default_tools_approval_mode: &'static str,
}

impl McpServer {
    fn from_entry(entry: &Value) -> McpServer {
        let text = |k: &str| entry.get(k).and_then(Value::as_str).map(str::to_string);
        let url = text("url");
        McpServer {
            command: if url.is_some() { None } else { text("command") },
            url,
            args: entry
                .get("args")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            env: entry
                .get("env")
                .and_then(Value::as_object)
                .map(|e| {
                    e.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            default_tools_approval_mode: "approve",
        }
    }
}

/// Binaries of the Codex package that must sit beside `codex` in the
/// sandbox, as (host path, name): `codex-code-mode-host` (same directory;
/// code mode, through which the default models call every tool) and `rg`
/// (the package's `codex-path/`, used for search). Missing ones are
/// skipped: an older or differently packaged Codex may not have them.
pub fn companions(codex: &Path) -> Vec<(PathBuf, String)> {
    let Some(bin_dir) = codex.parent() else {
        return Vec::new();
    };
    let candidates = [
        (bin_dir.join("codex-code-mode-host"), "codex-code-mode-host"),
        (bin_dir.join("../codex-path/rg"), "rg"),
    ];
    candidates
        .into_iter()
        .filter(|(p, _)| p.is_file())
        .map(|(p, name)| (p, name.to_string()))
        .collect()
}

pub fn plan(ctx: &LaunchContext) -> LaunchPlan {
    let mut argv = vec![
        ctx.program.clone(),
        "exec".into(),
        "--json".into(),
        "--skip-git-repo-check".into(),
        "--dangerously-bypass-approvals-and-sandbox".into(),
        "-C".into(),
        ctx.workdir.clone(),
    ];
    if let Some(model) = &ctx.model {
        argv.extend(["--model".into(), model.clone()]);
    }
    argv.push(ctx.prompt.clone());
    let mut env = base_env(ctx);
    env.push(("CODEX_HOME".into(), format!("{}/.codex", ctx.home)));
    LaunchPlan {
        argv,
        env,
        stdin: None,
    }
}

/// Parses `codex exec --json` lines; usage adds up over turns.
#[derive(Default)]
pub struct CodexParser {
    input_tokens: u64,
    output_tokens: u64,
    turns: u64,
    last_text: String,
    failed: Option<String>,
}

impl StreamParser for CodexParser {
    fn line(&mut self, line: &str) -> Vec<AgentEvent> {
        let Ok(v) = serde_json::from_str::<Value>(line.trim()) else {
            return Vec::new();
        };
        match v.get("type").and_then(Value::as_str).unwrap_or_default() {
            "thread.started" => vec![AgentEvent::Init {
                model: None,
                mcp_servers: Vec::new(),
                tools: 0,
            }],
            "item.started" => self.item(&v, true),
            "item.completed" => self.item(&v, false),
            "turn.completed" => {
                let usage = v.get("usage");
                let n = |k: &str| {
                    usage
                        .and_then(|u| u.get(k))
                        .and_then(Value::as_u64)
                        .unwrap_or(0)
                };
                self.input_tokens += n("input_tokens") + n("cached_input_tokens");
                self.output_tokens += n("output_tokens");
                self.turns += 1;
                vec![self.result()]
            }
            "turn.failed" | "error" => {
                let msg = v
                    .get("message")
                    .or_else(|| v.get("error").and_then(|e| e.get("message")))
                    .and_then(Value::as_str)
                    .unwrap_or("codex reported an error")
                    .to_string();
                self.failed = Some(msg.clone());
                vec![AgentEvent::Error { message: msg }]
            }
            _ => Vec::new(),
        }
    }
}

impl CodexParser {
    fn item(&mut self, v: &Value, started: bool) -> Vec<AgentEvent> {
        let Some(item) = v.get("item") else {
            return Vec::new();
        };
        let s = |k: &str| {
            item.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        match (
            item.get("type").and_then(Value::as_str).unwrap_or_default(),
            started,
        ) {
            ("agent_message", false) => {
                self.last_text = s("text");
                vec![AgentEvent::Text { text: s("text") }]
            }
            ("mcp_tool_call", true) => vec![AgentEvent::ToolCall {
                name: format!("mcp__{}__{}", s("server"), s("tool")),
                input: item.get("arguments").cloned().unwrap_or(Value::Null),
            }],
            ("command_execution", true) => vec![AgentEvent::ToolCall {
                name: "shell".into(),
                input: serde_json::json!({ "command": s("command") }),
            }],
            ("mcp_tool_call" | "command_execution", false) => {
                let status = s("status");
                let out = if s("aggregated_output").is_empty() {
                    status.clone()
                } else {
                    s("aggregated_output")
                };
                vec![AgentEvent::ToolResult {
                    is_error: status == "failed",
                    preview: preview(&out, 200),
                }]
            }
            _ => Vec::new(),
        }
    }

    /// A running total after each turn; the last one is the final word.
    fn result(&self) -> AgentEvent {
        AgentEvent::Result {
            is_error: self.failed.is_some(),
            subtype: if self.failed.is_some() {
                "error".into()
            } else {
                "success".into()
            },
            text: self
                .failed
                .clone()
                .unwrap_or_else(|| self.last_text.clone()),
            cost_usd: 0.0,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            turns: self.turns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_back_with_every_server_approved() {
        let servers = BTreeMap::from([
            (
                "husk".to_string(),
                serde_json::json!({"command": "/bin/x", "args": ["a \"q\""], "env": {"K": "v"}}),
            ),
            (
                "web".to_string(),
                serde_json::json!({"type": "http", "url": "http://127.0.0.1:9/mcp"}),
            ),
        ]);
        let t = config_toml(
            &servers,
            Some("http://127.0.0.1:1/v1"),
            Some("OPENAI_API_KEY"),
        );
        let v: toml::Table = toml::from_str(&t).expect(&t);
        assert_eq!(v["model_provider"].as_str(), Some("husk"), "{t}");
        let p = &v["model_providers"]["husk"];
        assert_eq!(p["base_url"].as_str(), Some("http://127.0.0.1:1/v1"));
        assert_eq!(p["wire_api"].as_str(), Some("responses"));
        assert_eq!(p["env_key"].as_str(), Some("OPENAI_API_KEY"));
        let husk = &v["mcp_servers"]["husk"];
        assert_eq!(husk["command"].as_str(), Some("/bin/x"));
        assert_eq!(husk["args"][0].as_str(), Some("a \"q\""));
        assert_eq!(husk["env"]["K"].as_str(), Some("v"));
        let web = &v["mcp_servers"]["web"];
        assert_eq!(web["url"].as_str(), Some("http://127.0.0.1:9/mcp"));
        assert!(web.get("command").is_none(), "{t}");
        for s in ["husk", "web"] {
            assert_eq!(
                v["mcp_servers"][s]["default_tools_approval_mode"].as_str(),
                Some("approve")
            );
        }
        // Codex reads top-level keys only before the first table.
        let first_table = t.find('[').unwrap();
        assert!(t[..first_table].contains("model_provider"), "{t}");
    }

    #[test]
    fn without_a_base_url_there_is_no_provider() {
        let t = config_toml(&BTreeMap::new(), None, Some("K"));
        let v: toml::Table = toml::from_str(&t).unwrap();
        assert!(v.is_empty(), "{t}");
    }

    #[test]
    fn companions_are_the_package_siblings_that_exist() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(dir.path().join("codex-path")).unwrap();
        std::fs::write(bin.join("codex"), b"").unwrap();
        assert!(companions(&bin.join("codex")).is_empty());
        std::fs::write(bin.join("codex-code-mode-host"), b"").unwrap();
        std::fs::write(dir.path().join("codex-path/rg"), b"").unwrap();
        let names: Vec<String> = companions(&bin.join("codex"))
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert_eq!(names, ["codex-code-mode-host", "rg"]);
    }

    #[test]
    fn parses_a_session() {
        let mut p = CodexParser::default();
        let lines = [
            r#"{"type":"thread.started","thread_id":"t"}"#,
            r#"{"type":"turn.started"}"#,
            r#"{"type":"item.started","item":{"id":"1","type":"mcp_tool_call","server":"husk","tool":"x","arguments":{"a":1},"status":"in_progress"}}"#,
            r#"{"type":"item.completed","item":{"id":"1","type":"mcp_tool_call","server":"husk","tool":"x","status":"completed"}}"#,
            r#"{"type":"item.completed","item":{"id":"2","type":"agent_message","text":"all done"}}"#,
            r#"{"type":"turn.completed","usage":{"input_tokens":100,"cached_input_tokens":20,"output_tokens":30}}"#,
        ];
        let evs: Vec<_> = lines.iter().flat_map(|l| p.line(l)).collect();
        assert!(
            matches!(&evs[1], AgentEvent::ToolCall { name, .. } if name == "mcp__husk__x"),
            "{evs:?}"
        );
        assert!(matches!(
            &evs[2],
            AgentEvent::ToolResult {
                is_error: false,
                ..
            }
        ));
        assert_eq!(
            evs[3],
            AgentEvent::Text {
                text: "all done".into()
            }
        );
        assert!(matches!(
            &evs[4],
            AgentEvent::Result { is_error: false, input_tokens: 120, output_tokens: 30, turns: 1, text, .. } if text == "all done"
        ));
    }

    #[test]
    fn errors_fail_the_result() {
        let mut p = CodexParser::default();
        p.line(r#"{"type":"error","message":"stream disconnected"}"#);
        let evs = p.line(r#"{"type":"turn.completed","usage":{}}"#);
        assert!(
            matches!(&evs[0], AgentEvent::Result { is_error: true, text, .. } if text == "stream disconnected")
        );
    }
}
