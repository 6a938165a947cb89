//! Output in Claude Code's print-mode formats.
//!
//! `stream-json` writes one JSON object per line, flushed at once so a
//! reader sees each event as it happens: `system`/`init`, then `assistant`
//! and `user` messages, then one `result`. `json` writes only the result
//! object, `text` only the final text. Ids are deterministic (`msg_test_N`,
//! `toolu_test_N`); only the session id is random, unless `--session-id`
//! fixes it.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::cli::OutputFormat;

/// How a run ended, for the result event.
#[derive(Debug, Clone, PartialEq)]
pub struct Ending {
    pub subtype: &'static str,
    pub is_error: bool,
    /// The last text, or the error message.
    pub text: String,
}

/// What the init event reports.
#[derive(Debug, Clone)]
pub struct Init {
    pub cwd: String,
    pub tools: Vec<String>,
    pub mcp_servers: Vec<(String, &'static str)>,
    pub permission_mode: String,
}

/// Token counts and cost of the whole run, from the script.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub cost_usd: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// How many assistant turns the script plans, to share the tokens.
    pub planned_turns: u64,
}

/// Writes events and keeps the counters they need.
pub struct Emitter {
    format: OutputFormat,
    session_id: String,
    model: String,
    totals: Totals,
    turns: u32,
    next_tool_id: u32,
    last_text: String,
}

impl Emitter {
    pub fn new(format: OutputFormat, session_id: String, model: String, totals: Totals) -> Self {
        Self {
            format,
            session_id,
            model,
            totals,
            turns: 0,
            next_tool_id: 1,
            last_text: String::new(),
        }
    }

    /// Assistant turns so far.
    pub fn turns(&self) -> u32 {
        self.turns
    }

    /// The text of the last assistant text message.
    pub fn last_text(&self) -> &str {
        &self.last_text
    }

    /// Writes one line; a closed stdout is not the agent's problem.
    fn line(&self, event: &Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", type_first(event)).and_then(|()| out.flush());
    }

    fn stream(&self, event: &Value) {
        if self.format == OutputFormat::StreamJson {
            self.line(event);
        }
    }

    pub fn init(&self, init: &Init) {
        let servers: Vec<Value> = init
            .mcp_servers
            .iter()
            .map(|(name, status)| json!({"name": name, "status": status}))
            .collect();
        self.stream(&json!({
            "type": "system",
            "subtype": "init",
            "cwd": init.cwd,
            "session_id": self.session_id,
            "tools": init.tools,
            "mcp_servers": servers,
            "model": self.model,
            "permissionMode": init.permission_mode,
            "slash_commands": [],
            "apiKeySource": "none",
            "output_style": "default",
        }));
    }

    /// One share of a total, the remainder going to the first turn.
    fn share(&self, total: u64, turn: u32) -> u64 {
        let n = self.totals.planned_turns.max(1);
        let turn = u64::from(turn);
        match turn {
            0 => total / n + total % n,
            t if t < n => total / n,
            _ => 0,
        }
    }

    fn assistant(&mut self, content: Value) {
        let turn = self.turns;
        self.turns += 1;
        self.stream(&json!({
            "type": "assistant",
            "message": {
                "id": format!("msg_test_{:04}", self.turns),
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": content,
                "stop_reason": null,
                "stop_sequence": null,
                "usage": usage(
                    self.share(self.totals.input_tokens, turn),
                    self.share(self.totals.output_tokens, turn),
                ),
            },
            "parent_tool_use_id": null,
            "session_id": self.session_id,
        }));
    }

    /// An assistant text message.
    pub fn text(&mut self, text: &str) {
        self.last_text = text.to_string();
        self.assistant(json!([{"type": "text", "text": text}]));
    }

    /// An assistant message calling `name`; returns the tool use id.
    pub fn tool_use(&mut self, name: &str, input: Value) -> String {
        let id = format!("toolu_test_{:04}", self.next_tool_id);
        self.next_tool_id += 1;
        self.assistant(json!([{"type": "tool_use", "id": id, "name": name, "input": input}]));
        id
    }

    /// The user message carrying a tool's result.
    pub fn tool_result(&self, tool_use_id: &str, content: &Value, is_error: bool) {
        self.stream(&json!({
            "type": "user",
            "message": {
                "role": "user",
                "content": [{
                    "type": "tool_result",
                    "tool_use_id": tool_use_id,
                    "content": content,
                    "is_error": is_error,
                }],
            },
            "parent_tool_use_id": null,
            "session_id": self.session_id,
        }));
    }

    /// The final event, in every format.
    pub fn result(&self, ending: &Ending, duration: Duration) {
        let event = json!({
            "type": "result",
            "subtype": ending.subtype,
            "is_error": ending.is_error,
            "duration_ms": u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            "duration_api_ms": 0,
            "num_turns": self.turns,
            "result": ending.text,
            "session_id": self.session_id,
            "total_cost_usd": self.totals.cost_usd,
            "usage": usage(self.totals.input_tokens, self.totals.output_tokens),
            "permission_denials": [],
        });
        match self.format {
            OutputFormat::StreamJson | OutputFormat::Json => self.line(&event),
            OutputFormat::Text => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", ending.text).and_then(|()| out.flush());
            }
        }
    }
}

/// Serializes an event with `type` and `subtype` first, as Claude Code
/// prints them (serde_json's map sorts keys), so logs read naturally.
fn type_first(event: &Value) -> String {
    let Value::Object(map) = event else {
        return event.to_string();
    };
    let first = ["type", "subtype"];
    let fields: Vec<String> = first
        .iter()
        .filter_map(|k| map.get_key_value(*k))
        .chain(map.iter().filter(|(k, _)| !first.contains(&k.as_str())))
        .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
        .collect();
    format!("{{{}}}", fields.join(","))
}

fn usage(input_tokens: u64, output_tokens: u64) -> Value {
    json!({
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    })
}

/// A random-looking version 4 UUID from the clock and the process id (no
/// random number crate needed; uniqueness, not secrecy, is the point).
pub fn new_session_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut state = (nanos as u64) ^ ((nanos >> 64) as u64) ^ (u64::from(std::process::id()) << 32);
    let mut next = || {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let (a, b) = (next(), next());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        ((b >> 48) & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_look_like_uuids() {
        let id = new_session_id();
        let parts: Vec<&str> = id.split('-').collect();
        let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
        assert_eq!(lens, [8, 4, 4, 4, 12], "{id}");
        assert!(parts[2].starts_with('4'), "{id}");
        assert!(
            id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
            "{id}"
        );
    }

    #[test]
    fn events_start_with_their_type() {
        let event = json!({"a": 1, "subtype": "init", "type": "system", "z": {"b": 2, "a": "\"q"}});
        let line = type_first(&event);
        assert!(
            line.starts_with(r#"{"type":"system","subtype":"init","a":1,"#),
            "{line}"
        );
        let back: Value = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(back, event);
        assert_eq!(type_first(&json!([1])), "[1]");
    }

    #[test]
    fn shares_add_up_to_the_totals() {
        let totals = Totals {
            input_tokens: 100,
            output_tokens: 7,
            planned_turns: 3,
            ..Totals::default()
        };
        let e = Emitter::new(OutputFormat::Json, "s".into(), "m".into(), totals);
        let input: u64 = (0..3).map(|t| e.share(100, t)).sum();
        let output: u64 = (0..3).map(|t| e.share(7, t)).sum();
        assert_eq!((input, output), (100, 7));
        assert_eq!(e.share(100, 3), 0);
    }
}
