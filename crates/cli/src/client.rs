//! A client of the husk daemon over its unix socket (hyper, HTTP/1.1):
//! JSON requests, API errors turned into one readable line, and the SSE
//! event stream for `husk logs -f`. Paths are built with
//! [`husk_daemon::api::url::path`]: every segment percent-encoded.

use std::path::PathBuf;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

use crate::CliResult;

pub struct DaemonClient {
    socket: PathBuf,
}

impl DaemonClient {
    /// `$HUSK_SOCKET`, else the daemon's default socket.
    pub fn from_env() -> Self {
        let socket = std::env::var_os("HUSK_SOCKET")
            .map(PathBuf::from)
            .unwrap_or_else(husk_daemon::socket::default_path);
        DaemonClient { socket }
    }

    async fn connect(&self) -> CliResult<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|e| {
            format!(
                "no husk daemon at {} ({e}); start one with `husk serve`",
                self.socket.display()
            )
        })?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }

    fn request(
        method: Method,
        path: &str,
        body: Option<&Value>,
        accept: &str,
    ) -> CliResult<Request<Full<Bytes>>> {
        let bytes = body
            .map(serde_json::to_vec)
            .transpose()?
            .unwrap_or_default();
        Ok(Request::builder()
            .method(method)
            .uri(path)
            .header("host", "husk")
            .header("accept", accept)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))?)
    }

    /// A JSON call; an API error becomes `CODE: message`.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> CliResult<Value> {
        let mut send = self.connect().await?;
        let resp = send
            .send_request(Self::request(method, path, body, "application/json")?)
            .await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status != StatusCode::OK {
            let code = v["code"].as_str().unwrap_or("ERROR");
            let msg = v["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into());
            return Err(format!("{code}: {msg}").into());
        }
        Ok(v)
    }

    /// Follows a run's SSE stream, calling `on_event` per event, until the
    /// run's terminal event.
    pub async fn follow(
        &self,
        run: &str,
        mut on_event: impl FnMut(&husk_runtime::Event),
    ) -> CliResult<()> {
        let mut send = self.connect().await?;
        let req = Self::request(
            Method::GET,
            &husk_daemon::api::url::path(&["v1", "runs", run, "events"]),
            None,
            "text/event-stream",
        )?;
        let resp = send.send_request(req).await?;
        if resp.status() != StatusCode::OK {
            let bytes = resp.into_body().collect().await?.to_bytes();
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(format!(
                "{}: {}",
                v["code"].as_str().unwrap_or("ERROR"),
                v["message"].as_str().unwrap_or("")
            )
            .into());
        }
        let mut body = resp.into_body();
        let mut buf = String::new();
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            buf.push_str(&String::from_utf8_lossy(data));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                for line in block.lines() {
                    if let Some(json) = line.strip_prefix("data:") {
                        let event = serde_json::from_str(json.trim_start()).map_err(|e| {
                            format!("the daemon sent an event that did not parse: {e}")
                        })?;
                        on_event(&event);
                    }
                }
            }
        }
        Ok(())
    }
}
