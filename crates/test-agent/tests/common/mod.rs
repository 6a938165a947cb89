//! Helpers shared by the integration tests: run the real binary in a
//! directory, with a time limit, and parse what it printed.

#![allow(dead_code)]

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The longest any single run may take before the test fails.
const LIMIT: Duration = Duration::from_secs(60);

/// What one run of the agent did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Every stdout line parsed as JSON; fails the test on any other line.
    pub fn events(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n{self:?}"))
            })
            .collect()
    }

    /// The last event, which must be the result.
    pub fn result(&self) -> Value {
        let events = self.events();
        let last = events.last().cloned().unwrap_or_default();
        assert_eq!(last["type"], "result", "{self:?}");
        last
    }

    /// The tool results, in order: `(content, is_error)`.
    pub fn tool_results(&self) -> Vec<(Value, bool)> {
        self.events()
            .iter()
            .filter(|e| e["type"] == "user")
            .map(|e| {
                let block = &e["message"]["content"][0];
                assert_eq!(block["type"], "tool_result", "{e}");
                (block["content"].clone(), block["is_error"] == true)
            })
            .collect()
    }

    /// The tool uses, in order: `(name, input)`.
    pub fn tool_uses(&self) -> Vec<(String, Value)> {
        self.events()
            .iter()
            .filter(|e| e["type"] == "assistant")
            .map(|e| &e["message"]["content"][0])
            .filter(|block| block["type"] == "tool_use")
            .map(|block| {
                (
                    block["name"].as_str().unwrap_or_default().to_string(),
                    block["input"].clone(),
                )
            })
            .collect()
    }
}

/// The agent binary, run in `dir` with a clean script and MCP environment
/// and no stdin.
pub fn agent(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_husk-test-agent"));
    command
        .current_dir(dir)
        .env_remove("HUSK_TEST_AGENT_SCRIPT")
        .env_remove("MCP_TIMEOUT")
        .env_remove("MCP_TOOL_TIMEOUT")
        .stdin(Stdio::null());
    command
}

/// `agent(dir)` with the usual stream-json flags and an inline script.
pub fn stream(dir: &Path, script: &Value, extra: &[&str]) -> Run {
    let mut command = agent(dir);
    command
        .env("HUSK_TEST_AGENT_SCRIPT", script.to_string())
        .args([
            "-p",
            "do the task",
            "--output-format",
            "stream-json",
            "--verbose",
        ])
        .args(extra);
    run(&mut command)
}

/// Runs to completion (at most `LIMIT`), collecting both outputs.
pub fn run(command: &mut Command) -> Run {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the agent: {e}"));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            other => {
                let _ = child.kill();
                panic!("the agent did not finish within {LIMIT:?}: {other:?}");
            }
        }
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}
