//! A minimal MCP client over stdio: newline-delimited JSON-RPC 2.0 to a
//! child process, with the `initialize` → `notifications/initialized`
//! handshake (protocol version 2025-06-18), `tools/list` and `tools/call`.
//!
//! Every server is started and listed once at startup (to fill the init
//! event), kept alive across steps, and at exit gets its stdin closed, a
//! short grace period, then a kill. A reader thread per server turns its
//! stdout into a channel so every wait has a timeout: `MCP_TIMEOUT`
//! (startup) and `MCP_TOOL_TIMEOUT` (tool calls), in milliseconds, as in
//! Claude Code.

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::mcp_config::{ServerConfig, Transport};
use crate::steps::ToolOutput;

/// The protocol version sent in `initialize`.
pub const PROTOCOL_VERSION: &str = "2025-06-18";
/// How long a server may take to exit after its stdin is closed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Why a request got no result.
#[derive(Debug)]
enum CallError {
    /// The server could not be reached or did not answer in time.
    Transport(String),
    /// The server answered with a JSON-RPC error.
    Rpc { code: i64, message: String },
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transport(e) => f.write_str(e),
            Self::Rpc { code, message } => write!(f, "MCP error {code}: {message}"),
        }
    }
}

/// A running stdio server.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<Value>,
    next_id: u64,
}

impl Client {
    fn spawn(command: &str, args: &[String], env: &[(String, String)]) -> Result<Self, String> {
        let mut child = Command::new(command)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {command:?}: {e}"))?;
        let stdin = child.stdin.take();
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("no stdout pipe".into());
        };
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                match serde_json::from_str::<Value>(line) {
                    Ok(message) if message.is_object() => {
                        if tx.send(message).is_err() {
                            break;
                        }
                    }
                    _ => eprintln!(
                        "husk-test-agent: ignoring a non-JSON-RPC line from an MCP server: {line}"
                    ),
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            rx,
            next_id: 1,
        })
    }

    fn send(&mut self, message: &Value) -> Result<(), CallError> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| CallError::Transport("the server's stdin is closed".into()))?;
        let mut line = message.to_string();
        line.push('\n');
        stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| CallError::Transport(format!("cannot write to the server: {e}")))
    }

    fn notify(&mut self, method: &str) -> Result<(), CallError> {
        self.send(&json!({"jsonrpc": "2.0", "method": method}))
    }

    /// Sends a request and waits for its response, answering any request
    /// the server makes meanwhile.
    fn request(
        &mut self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = match self.rx.recv_timeout(left) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(CallError::Transport(format!(
                        "no answer to {method} within {} ms",
                        timeout.as_millis()
                    )));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(CallError::Transport(format!(
                        "the server closed its output before answering {method}"
                    )));
                }
            };
            if let Some(server_method) = message.get("method").and_then(Value::as_str) {
                if let Some(request_id) = message.get("id") {
                    self.answer(request_id.clone(), server_method)?;
                }
                continue;
            }
            if message.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(error) = message.get("error") {
                return Err(CallError::Rpc {
                    code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
                    message: error
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("(no message)")
                        .to_string(),
                });
            }
            return Ok(message.get("result").cloned().unwrap_or(Value::Null));
        }
    }

    /// Answers a request from the server: `ping`, and nothing else.
    fn answer(&mut self, id: Value, method: &str) -> Result<(), CallError> {
        let reply = if method == "ping" {
            json!({"jsonrpc": "2.0", "id": id, "result": {}})
        } else {
            json!({"jsonrpc": "2.0", "id": id,
                   "error": {"code": -32601, "message": format!("method not found: {method}")}})
        };
        self.send(&reply)
    }

    /// The handshake, then the names of all tools (following pagination).
    fn initialize(&mut self, timeout: Duration) -> Result<Vec<String>, CallError> {
        let params = json!({
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "husk-test-agent", "version": env!("CARGO_PKG_VERSION")},
        });
        let result = self.request("initialize", params, timeout)?;
        if !result.is_object() {
            return Err(CallError::Transport(
                "initialize returned no result object".into(),
            ));
        }
        self.notify("notifications/initialized")?;
        let mut tools = Vec::new();
        let mut cursor: Option<Value> = None;
        for _ in 0..100 {
            let params = match cursor.take() {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let page = self.request("tools/list", params, timeout)?;
            let listed = page.get("tools").and_then(Value::as_array);
            tools.extend(
                listed
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.get("name").and_then(Value::as_str))
                    .map(str::to_string),
            );
            match page.get("nextCursor") {
                Some(c) if !c.is_null() => cursor = Some(c.clone()),
                _ => break,
            }
        }
        Ok(tools)
    }

    /// Closes stdin and waits up to `deadline` for the server to exit,
    /// then kills it.
    fn stop(&mut self, deadline: Instant) {
        self.stdin.take();
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop(Instant::now());
    }
}

enum State {
    Connected { client: Client, tools: Vec<String> },
    Failed(String),
}

struct Server {
    name: String,
    state: State,
}

/// All configured servers.
pub struct Servers {
    servers: Vec<Server>,
}

fn env_ms(name: &str, default_ms: u64) -> Duration {
    let ms = std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default_ms);
    Duration::from_millis(ms)
}

fn connect(config: ServerConfig) -> Server {
    let state = match &config.transport {
        Transport::Unsupported { kind } => State::Failed(format!(
            "the {kind} transport is not supported by husk-test-agent (stdio only)"
        )),
        Transport::Stdio { command, args, env } => {
            let timeout = env_ms("MCP_TIMEOUT", 30_000);
            match Client::spawn(command, args, env) {
                Err(e) => State::Failed(e),
                Ok(mut client) => match client.initialize(timeout) {
                    Ok(tools) => State::Connected { client, tools },
                    Err(e) => State::Failed(e.to_string()),
                },
            }
        }
    };
    if let State::Failed(reason) = &state {
        eprintln!(
            "husk-test-agent: MCP server {:?} failed: {reason}",
            config.name
        );
    }
    Server {
        name: config.name,
        state,
    }
}

impl Servers {
    /// Starts and initializes every server, in parallel.
    pub fn connect_all(configs: Vec<ServerConfig>) -> Self {
        let servers = thread::scope(|scope| {
            let handles: Vec<_> = configs
                .into_iter()
                .map(|config| {
                    let name = config.name.clone();
                    (name, scope.spawn(move || connect(config)))
                })
                .collect();
            handles
                .into_iter()
                .map(|(name, handle)| {
                    handle.join().unwrap_or_else(|_| Server {
                        name,
                        state: State::Failed("connecting panicked".into()),
                    })
                })
                .collect()
        });
        Self { servers }
    }

    /// `(name, "connected" | "failed")` for the init event.
    pub fn statuses(&self) -> Vec<(String, &'static str)> {
        self.servers
            .iter()
            .map(|s| {
                let status = match s.state {
                    State::Connected { .. } => "connected",
                    State::Failed(_) => "failed",
                };
                (s.name.clone(), status)
            })
            .collect()
    }

    /// The tools as the model would see them: `mcp__<server>__<tool>`.
    pub fn tool_names(&self) -> Vec<String> {
        self.servers
            .iter()
            .flat_map(|s| {
                match &s.state {
                    State::Connected { tools, .. } => tools.as_slice(),
                    State::Failed(_) => &[],
                }
                .iter()
                .map(move |t| tool_name(&s.name, t))
            })
            .collect()
    }

    /// Calls `tool` on `server`; every failure becomes an error result, as
    /// the model would see it.
    pub fn call(&mut self, server: &str, tool: &str, arguments: &Value) -> ToolOutput {
        let Some(entry) = self.servers.iter_mut().find(|s| s.name == server) else {
            return ToolOutput::error(format!("No MCP server named {server:?} is configured"));
        };
        let client = match &mut entry.state {
            State::Connected { client, .. } => client,
            State::Failed(reason) => {
                return ToolOutput::error(format!(
                    "MCP server {server:?} is not connected: {reason}"
                ));
            }
        };
        let params = json!({"name": tool, "arguments": arguments});
        match client.request("tools/call", params, env_ms("MCP_TOOL_TIMEOUT", 60_000)) {
            Ok(result) => {
                let content = match (result.get("content"), result.get("structuredContent")) {
                    (Some(content @ Value::Array(_)), _) => content.clone(),
                    (_, Some(structured)) => {
                        json!([{"type": "text", "text": structured.to_string()}])
                    }
                    _ => json!([]),
                };
                ToolOutput {
                    content,
                    is_error: result
                        .get("isError")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                }
            }
            Err(e @ CallError::Rpc { .. }) => ToolOutput::error(e.to_string()),
            Err(e) => ToolOutput::error(format!("MCP server {server:?}: {e}")),
        }
    }

    /// Closes every server's stdin, then waits (briefly) for all to exit.
    pub fn shutdown(&mut self) {
        for server in &mut self.servers {
            if let State::Connected { client, .. } = &mut server.state {
                client.stdin.take();
            }
        }
        let deadline = Instant::now() + EXIT_GRACE;
        for server in &mut self.servers {
            if let State::Connected { client, .. } = &mut server.state {
                client.stop(deadline);
            }
        }
    }
}

/// The name Claude Code gives an MCP tool.
pub fn tool_name(server: &str, tool: &str) -> String {
    format!("mcp__{server}__{tool}")
}
