//! A minimal QMP client: enough to save and load snapshots (`migrate`,
//! `migrate-incoming`, `cont`, `quit` after a save). One JSON object per
//! line each way. Cold VMs have no QMP socket.

use std::path::Path;

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
    pub async fn connect(path: &Path) -> Result<Qmp> {
        let s = UnixStream::connect(path)
            .await
            .map_err(|e| SandboxError::io(format!("connecting to QMP at {}", path.display()), e))?;
        let (rd, wr) = s.into_split();
        let mut q = Qmp {
            rd: BufReader::new(rd),
            wr,
        };
        q.read_value().await?; // greeting
        q.execute("qmp_capabilities").await?;
        Ok(q)
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
        let request = if args.is_null() {
            json!({ "execute": command })
        } else {
            json!({ "execute": command, "arguments": args })
        };
        let mut msg = serde_json::to_vec(&request).expect("JSON values serialize");
        msg.push(b'\n');
        self.wr
            .write_all(&msg)
            .await
            .map_err(|e| SandboxError::io("writing QMP", e))?;
        let v = self.read_value().await?;
        if let Some(err) = v.get("error") {
            return Err(SandboxError::Protocol(format!(
                "QMP {command} failed: {err}"
            )));
        }
        Ok(v.get("return").cloned().unwrap_or(Value::Null))
    }
}
