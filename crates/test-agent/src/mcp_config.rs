//! MCP server configuration, read the way Claude Code reads it: from each
//! `--mcp-config` (a file or an inline JSON object), or from `./.mcp.json`
//! when no `--mcp-config` is given and `--strict-mcp-config` is not set.
//!
//! Only stdio servers are spoken to. HTTP and SSE servers are accepted so a
//! config meant for Claude Code still loads, but are reported as failed:
//! the test agent deliberately carries no HTTP client.

use std::path::Path;

use serde_json::Value;

/// The project config file read in the working directory.
pub const PROJECT_CONFIG: &str = ".mcp.json";

/// One configured server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub name: String,
    pub transport: Transport,
}

/// How to reach a server.
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    /// A child process speaking newline-delimited JSON-RPC.
    Stdio {
        command: String,
        args: Vec<String>,
        env: Vec<(String, String)>,
    },
    /// A transport the test agent does not implement (`http`, `sse`).
    Unsupported { kind: String },
}

/// Loads every configured server; a later config replaces an earlier
/// server of the same name. Errors are one line naming the config.
pub fn load(flags: &[String], strict: bool) -> Result<Vec<ServerConfig>, String> {
    let mut servers = Vec::new();
    if flags.is_empty() {
        let path = Path::new(PROJECT_CONFIG);
        if !strict && path.exists() {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read ./{PROJECT_CONFIG}: {e}"))?;
            let found = parse(&text).map_err(|e| format!("./{PROJECT_CONFIG}: {e}"))?;
            merge(&mut servers, found);
        }
    }
    for flag in flags {
        let found = if flag.trim_start().starts_with('{') {
            parse(flag).map_err(|e| format!("inline --mcp-config: {e}"))?
        } else {
            let text = std::fs::read_to_string(flag)
                .map_err(|e| format!("cannot read --mcp-config {flag}: {e}"))?;
            parse(&text).map_err(|e| format!("--mcp-config {flag}: {e}"))?
        };
        merge(&mut servers, found);
    }
    Ok(servers)
}

fn merge(servers: &mut Vec<ServerConfig>, found: Vec<ServerConfig>) {
    for server in found {
        match servers.iter_mut().find(|s| s.name == server.name) {
            Some(existing) => *existing = server,
            None => servers.push(server),
        }
    }
}

/// Parses `{"mcpServers": {"NAME": {...}}}`.
pub fn parse(text: &str) -> Result<Vec<ServerConfig>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let Some(servers) = value.get("mcpServers") else {
        return Err(r#"missing "mcpServers" object"#.into());
    };
    let Value::Object(servers) = servers else {
        return Err(r#""mcpServers" must be an object"#.into());
    };
    servers
        .iter()
        .map(|(name, server)| {
            parse_server(server)
                .map(|transport| ServerConfig {
                    name: name.clone(),
                    transport,
                })
                .map_err(|e| format!("server {name:?}: {e}"))
        })
        .collect()
}

fn parse_server(server: &Value) -> Result<Transport, String> {
    let Value::Object(map) = server else {
        return Err("must be an object".into());
    };
    let kind = match map.get("type") {
        None if map.contains_key("url") && !map.contains_key("command") => "http",
        None => "stdio",
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(r#""type" must be a string"#.into()),
    };
    match kind {
        "stdio" => {}
        "http" | "sse" => return Ok(Transport::Unsupported { kind: kind.into() }),
        other => {
            return Err(format!(
                "unknown type {other:?} (expected stdio, http or sse)"
            ));
        }
    }
    let command = match map.get("command") {
        Some(Value::String(c)) if !c.is_empty() => c.clone(),
        Some(_) => return Err(r#""command" must be a non-empty string"#.into()),
        None => return Err(r#"missing "command""#.into()),
    };
    let args = match map.get("args") {
        None => Vec::new(),
        Some(Value::Array(args)) => args
            .iter()
            .map(|a| a.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or(r#""args" must be an array of strings"#)?,
        Some(_) => return Err(r#""args" must be an array of strings"#.into()),
    };
    let env = match map.get("env") {
        None => Vec::new(),
        Some(Value::Object(env)) => env
            .iter()
            .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
            .collect::<Option<Vec<_>>>()
            .ok_or(r#""env" values must be strings"#)?,
        Some(_) => return Err(r#""env" must be an object of strings"#.into()),
    };
    Ok(Transport::Stdio { command, args, env })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stdio_and_http_servers() {
        let servers = parse(
            r#"{"mcpServers": {
                "a": {"command": "srv", "args": ["-x"], "env": {"K": "V"}},
                "b": {"type": "http", "url": "http://127.0.0.1:1/mcp"},
                "c": {"url": "http://127.0.0.1:1/mcp"}
            }}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            servers[0].transport,
            Transport::Stdio {
                command: "srv".into(),
                args: vec!["-x".into()],
                env: vec![("K".into(), "V".into())]
            }
        );
        assert_eq!(
            servers[1].transport,
            Transport::Unsupported {
                kind: "http".into()
            }
        );
        assert_eq!(
            servers[2].transport,
            Transport::Unsupported {
                kind: "http".into()
            }
        );
    }

    #[test]
    fn rejects_bad_configs_with_the_server_name() {
        let e = |t: &str| parse(t).err().unwrap_or_default();
        assert_eq!(
            e(r#"{"mcpServers": {"a": {}}}"#),
            r#"server "a": missing "command""#
        );
        assert_eq!(
            e(r#"{"mcpServers": {"a": {"command": "x", "args": [1]}}}"#),
            r#"server "a": "args" must be an array of strings"#
        );
        assert!(e(r#"{"mcpServers": {"a": {"type": "ws"}}}"#).contains(r#"unknown type "ws""#));
        assert_eq!(e(r#"{"servers": {}}"#), r#"missing "mcpServers" object"#);
        assert!(e("nope").starts_with("invalid JSON"));
    }

    #[test]
    fn later_configs_replace_servers_of_the_same_name() {
        let a = r#"{"mcpServers": {"s": {"command": "one"}, "t": {"command": "t"}}}"#;
        let b = r#"{"mcpServers": {"s": {"command": "two"}}}"#;
        let servers = load(&[a.into(), b.into()], true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(servers.len(), 2);
        assert!(matches!(
            &servers[0].transport,
            Transport::Stdio { command, .. } if command == "two"
        ));
    }
}
