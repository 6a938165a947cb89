//! A minimal QMP client: enough to save and load snapshots (`migrate`,
//! `migrate-incoming`, `cont`, `quit` after a save). One JSON object per
//! line each way, over a socketpair husk hands QEMU at its start. Cold VMs
//! have no QMP.

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::error::{Result, SandboxError};

/// A connected QMP session (capabilities negotiated).
pub struct Qmp {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

impl Qmp {
    /// Negotiates QMP on a stream connected to QEMU's monitor.
    pub async fn over(s: UnixStream) -> Result<Qmp> {
        Self::over_running(s, &[]).await
    }

    /// Negotiates and runs `commands` with one write: QEMU answers a
    /// monitor's commands in order, so nothing waits on a round trip in
    /// between. Fails with the first error.
    pub async fn over_running(s: UnixStream, commands: &[(&str, Value)]) -> Result<Qmp> {
        let (rd, wr) = s.into_split();
        let mut q = Qmp {
            rd: BufReader::new(rd),
            wr,
        };
        q.run_all(commands).await?;
        Ok(q)
    }

    /// Sends `qmp_capabilities` and `commands` at once, then reads the
    /// greeting (QEMU sends it before it reads anything) and the replies.
    async fn run_all(&mut self, commands: &[(&str, Value)]) -> Result<()> {
        let mut msg = request("qmp_capabilities", &Value::Null);
        for (command, args) in commands {
            msg.extend(request(command, args));
        }
        self.wr
            .write_all(&msg)
            .await
            .map_err(|e| SandboxError::io("writing QMP", e))?;
        self.read_value().await?; // greeting
        for command in std::iter::once("qmp_capabilities").chain(commands.iter().map(|c| c.0)) {
            reply(command, self.read_value().await?)?;
        }
        Ok(())
    }

    async fn read_value(&mut self) -> Result<Value> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .rd
                .read_line(&mut line)
                .await
                .map_err(|e| SandboxError::io("reading QMP", e))?;
            if n == 0 {
                return Err(SandboxError::Closed("QMP connection closed".into()));
            }
            let v: Value = serde_json::from_str(&line)
                .map_err(|e| SandboxError::Protocol(format!("QMP sent invalid JSON: {e}")))?;
            if v.get("event").is_none() {
                return Ok(v);
            }
        }
    }

    /// Runs one command and returns its `return` value.
    pub async fn execute(&mut self, command: &str) -> Result<Value> {
        self.execute_with(command, Value::Null).await
    }

    /// Runs one command with arguments (none when `args` is null).
    pub async fn execute_with(&mut self, command: &str, args: Value) -> Result<Value> {
        self.wr
            .write_all(&request(command, &args))
            .await
            .map_err(|e| SandboxError::io("writing QMP", e))?;
        reply(command, self.read_value().await?)
    }
}

/// One command as a line of JSON (no arguments when `args` is null).
fn request(command: &str, args: &Value) -> Vec<u8> {
    let request = if args.is_null() {
        json!({ "execute": command })
    } else {
        json!({ "execute": command, "arguments": args })
    };
    let mut msg = serde_json::to_vec(&request).expect("JSON values serialize");
    msg.push(b'\n');
    msg
}

/// The `return` value of a reply to `command`, or its error.
fn reply(command: &str, v: Value) -> Result<Value> {
    if let Some(err) = v.get("error") {
        return Err(SandboxError::Protocol(format!(
            "QMP {command} failed: {err}"
        )));
    }
    Ok(v.get("return").cloned().unwrap_or(Value::Null))
}
