//! Claude Code in print mode: `claude -p PROMPT --output-format stream-json
//! --verbose`, permissions bypassed (the sandbox is the boundary), MCP
//! servers from the config husk wrote. Its stream-json lines (`system`
//! init, `assistant` messages with text and `tool_use` blocks, `user`
//! messages with `tool_result` blocks, a final `result`) become events.

use serde_json::Value;

use super::{AgentEvent, LaunchContext, LaunchPlan, StreamParser, base_env, preview};

pub fn plan(ctx: &LaunchContext) -> LaunchPlan {
    let long = ctx.prompt.len() > super::MAX_ARGV_PROMPT;
    let mut argv = vec![ctx.program.clone(), "-p".into()];
    if !long {
        argv.push(ctx.prompt.clone());
    }
    argv.extend([
        "--output-format".into(),
        "stream-json".into(),
        "--verbose".into(),
        "--permission-mode".into(),
        "bypassPermissions".into(),
    ]);
    if let Some(cfg) = &ctx.mcp_config {
        argv.extend(["--mcp-config".into(), cfg.clone()]);
    }
    if let Some(model) = &ctx.model {
        argv.extend(["--model".into(), model.clone()]);
    }
    let mut env = base_env(ctx);
    env.extend(
        [
            ("IS_SANDBOX", "1"),
            ("DISABLE_AUTOUPDATER", "1"),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
            ("ENABLE_TOOL_SEARCH", "false"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    env.push(("CLAUDE_CONFIG_DIR".into(), format!("{}/.claude", ctx.home)));
    if let Some(url) = &ctx.base_url {
        env.push(("ANTHROPIC_BASE_URL".into(), url.clone()));
    }
    LaunchPlan {
        argv,
        env,
        stdin: long.then(|| ctx.prompt.clone().into_bytes()),
    }
}

/// Parses stream-json lines.
#[derive(Default)]
pub struct ClaudeParser {
    last_text: String,
}

impl StreamParser for ClaudeParser {
    fn line(&mut self, line: &str) -> Vec<AgentEvent> {
        let Ok(v) = serde_json::from_str::<Value>(line.trim()) else {
            return Vec::new(); // not JSON: plain log output
        };
        match v.get("type").and_then(Value::as_str) {
            Some("system") if v.get("subtype").and_then(Value::as_str) == Some("init") => {
                vec![init(&v)]
            }
            Some("assistant") => self.assistant(&v),
            Some("user") => tool_results(&v),
            Some("result") => vec![result(&v, &self.last_text)],
            _ => Vec::new(),
        }
    }
}

fn init(v: &Value) -> AgentEvent {
    let mcp_servers = v
        .get("mcp_servers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| (str_of(s, "name"), str_of(s, "status")))
                .collect()
        })
        .unwrap_or_default();
    AgentEvent::Init {
        model: v.get("model").and_then(Value::as_str).map(str::to_string),
        mcp_servers,
        tools: v.get("tools").and_then(Value::as_array).map_or(0, Vec::len),
    }
}

impl ClaudeParser {
    fn assistant(&mut self, v: &Value) -> Vec<AgentEvent> {
        let mut out = Vec::new();
        for block in content(v) {
            match block.get("type").and_then(Value::as_str) {
                Some("text") => {
                    let text = str_of(block, "text");
                    self.last_text = text.clone();
                    out.push(AgentEvent::Text { text });
                }
                Some("tool_use") => out.push(AgentEvent::ToolCall {
                    name: str_of(block, "name"),
                    input: block.get("input").cloned().unwrap_or(Value::Null),
                }),
                _ => {}
            }
        }
        out
    }
}

fn tool_results(v: &Value) -> Vec<AgentEvent> {
    content(v)
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        .map(|b| AgentEvent::ToolResult {
            is_error: b.get("is_error").and_then(Value::as_bool).unwrap_or(false),
            preview: preview(&text_of(b.get("content")), 200),
        })
        .collect()
}

fn result(v: &Value, last_text: &str) -> AgentEvent {
    let usage = v.get("usage");
    let tokens = |k: &str| {
        usage
            .and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let text = v
        .get("result")
        .and_then(Value::as_str)
        .unwrap_or(last_text)
        .to_string();
    AgentEvent::Result {
        is_error: v.get("is_error").and_then(Value::as_bool).unwrap_or(false),
        subtype: str_of(v, "subtype"),
        text,
        cost_usd: v
            .get("total_cost_usd")
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
        input_tokens: tokens("input_tokens")
            + tokens("cache_creation_input_tokens")
            + tokens("cache_read_input_tokens"),
        output_tokens: tokens("output_tokens"),
        turns: v.get("num_turns").and_then(Value::as_u64).unwrap_or(0),
    }
}

fn content(v: &Value) -> &[Value] {
    v.get("message")
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn str_of(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A tool result's content: a string, or a list of text blocks.
fn text_of(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_session() {
        let mut p = ClaudeParser::default();
        let lines = [
            r#"{"type":"system","subtype":"init","model":"m","tools":["Bash","mcp__husk__x"],"mcp_servers":[{"name":"husk","status":"connected"}]}"#,
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":"hi"},{"type":"tool_use","id":"t1","name":"mcp__husk__x","input":{"a":1}}]}}"#,
            r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"ok"}]}]}}"#,
            r#"{"type":"result","subtype":"success","is_error":false,"result":"done","total_cost_usd":0.5,"num_turns":2,"usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":7}}"#,
            "plain text",
        ];
        let evs: Vec<_> = lines.iter().flat_map(|l| p.line(l)).collect();
        assert_eq!(evs.len(), 5, "{evs:?}");
        assert_eq!(
            evs[0],
            AgentEvent::Init {
                model: Some("m".into()),
                mcp_servers: vec![("husk".into(), "connected".into())],
                tools: 2
            }
        );
        assert_eq!(evs[1], AgentEvent::Text { text: "hi".into() });
        assert!(matches!(&evs[2], AgentEvent::ToolCall { name, .. } if name == "mcp__husk__x"));
        assert_eq!(
            evs[3],
            AgentEvent::ToolResult {
                is_error: false,
                preview: "ok".into()
            }
        );
        assert_eq!(
            evs[4],
            AgentEvent::Result {
                is_error: false,
                subtype: "success".into(),
                text: "done".into(),
                cost_usd: 0.5,
                input_tokens: 15,
                output_tokens: 7,
                turns: 2
            }
        );
    }

    #[test]
    fn a_long_prompt_goes_to_stdin_once() {
        let prompt = "x".repeat(512 * 1024);
        let ctx = LaunchContext {
            program: "claude".into(),
            prompt: prompt.clone(),
            model: None,
            mcp_config: None,
            base_url: None,
            credential: None,
            workdir: "/workspace".into(),
            home: "/home/sandbox".into(),
        };
        let p = plan(&ctx);
        assert_eq!(p.stdin.as_deref(), Some(prompt.as_bytes()));
        assert!(p.argv.iter().all(|a| a.len() < 1024), "{:?}", p.argv);
        assert!(p.env.iter().all(|(_, v)| v.len() < 1024));
        // The exec request now fits a protocol frame.
        let mut req = husk_sandbox::protocol::ExecRequest::new(p.argv);
        req.env = p.env;
        let mut frame = Vec::new();
        husk_sandbox::protocol::encode_frame(
            &husk_sandbox::protocol::Envelope {
                id: 1,
                msg: husk_sandbox::protocol::HostMsg::Exec(req),
            },
            &mut frame,
        )
        .unwrap();
        // A short prompt stays an argument, and is not repeated in env.
        let short = plan(&LaunchContext {
            prompt: "do it".into(),
            ..ctx
        });
        assert!(short.stdin.is_none() && short.argv.contains(&"do it".to_string()));
        assert!(short.env.iter().all(|(k, _)| k != "HUSK_PROMPT"));
    }

    #[test]
    fn plan_has_print_mode_flags_and_no_secret_in_argv() {
        let ctx = LaunchContext {
            program: "claude".into(),
            prompt: "do it".into(),
            model: Some("sonnet".into()),
            mcp_config: Some("/workspace/.mcp.json".into()),
            base_url: None,
            credential: Some(("ANTHROPIC_API_KEY".into(), "sk-secret".into())),
            workdir: "/workspace".into(),
            home: "/home/sandbox".into(),
        };
        let p = plan(&ctx);
        let argv = p.argv.join(" ");
        assert!(
            argv.starts_with("claude -p do it --output-format stream-json --verbose"),
            "{argv}"
        );
        assert!(
            argv.contains("--mcp-config /workspace/.mcp.json") && argv.contains("--model sonnet")
        );
        assert!(!argv.contains("sk-secret"));
        assert!(
            p.env
                .contains(&("ANTHROPIC_API_KEY".into(), "sk-secret".into()))
        );
    }
}
