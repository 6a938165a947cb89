//! Codex CLI: `codex exec --json --skip-git-repo-check -C DIR PROMPT`, with
//! `CODEX_HOME` pointing at the config husk wrote (MCP servers, and a
//! provider block when a base URL is given). Its JSONL events
//! (`item.started|completed` with `agent_message`, `mcp_tool_call`,
//! `command_execution` items; `turn.completed` with usage; `error`) become
//! events.

use serde_json::Value;

use super::{AgentEvent, LaunchContext, LaunchPlan, StreamParser, base_env, preview};

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
