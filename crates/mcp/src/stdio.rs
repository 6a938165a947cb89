//! The stdio transport: one JSON-RPC message per line on stdin and
//! stdout, logs on stderr, exit on EOF.
//!
//! rmcp has a stdio transport, but it stays silent on input it cannot
//! use (no answer to a line that is not JSON, a dropped over-long line)
//! and its handshake loop gives up for good on a notification sent
//! before `initialize`. husk-mcp answers every request-shaped mistake
//! with a JSON-RPC error instead, so a client that sent garbage learns
//! why and the next request is still served:
//!
//! | input | answer |
//! |---|---|
//! | a line that is not JSON (or not UTF-8) | `-32700` parse error, `id: null` |
//! | a line over [`MAX_MESSAGE_BYTES`] | `-32600`, `id: null` (the rest of the line is skipped) |
//! | a JSON array (a batch) or a non-object | `-32600`, `id: null` |
//! | a request whose `params` do not fit its method | `-32602`, with the request's `id` |
//! | an object with an `id` and no `method`, `result` or `error` | `-32600`, with its `id` |
//! | a notification or response that does not parse | nothing (JSON-RPC never answers those) |
//! | anything before `initialize` that is not a request | nothing; the handshake waits on |
//!
//! Framing is tokio-util's delimiter codec, bounded, which skips the rest
//! of an over-long line by itself.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rmcp::ServiceExt;
use rmcp::model::{
    CallToolRequestParams, ClientJsonRpcMessage, ClientRequest, InitializeRequestParams,
    ServerJsonRpcMessage,
};
use rmcp::service::{RoleServer, ServerInitializeError};
use rmcp::transport::Transport;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, Decoder};

use crate::limits::MAX_MESSAGE_BYTES;
use crate::server::HuskMcp;

/// Serves `server` on the process's stdin and stdout until stdin ends.
pub async fn serve(server: HuskMcp) {
    let (read, write) = rmcp::transport::stdio_pipes();
    serve_on(server, read, write).await;
}

/// Serves `server` on any reader and writer (the process's stdio in
/// [`serve`]). Returns when `read` ends or `write` fails.
pub async fn serve_on<R, W>(server: HuskMcp, read: R, write: W)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let transport = LineTransport::new(read, write);
    // A handshake that fails on one message (a notification before
    // `initialize`, a refused `initialize`) starts over on the same
    // stream; only the end of input or a broken stdout ends it.
    loop {
        match server.clone().serve(transport.clone()).await {
            Ok(running) => {
                let _ = running.waiting().await;
                return;
            }
            Err(ServerInitializeError::ConnectionClosed(_)) => return,
            Err(ServerInitializeError::TransportError { error, context }) => {
                eprintln!("husk-mcp: {context}: {error}");
                return;
            }
            Err(
                ServerInitializeError::ExpectedInitializeRequest(_)
                | ServerInitializeError::InitializeFailed(_),
            ) => continue,
            Err(e) => {
                eprintln!("husk-mcp: the MCP handshake failed: {e}");
                return;
            }
        }
    }
}

/// What one line of input turned out to be.
#[derive(Debug)]
enum Line {
    Message(Box<ClientJsonRpcMessage>),
    /// Answer this error (already a full JSON-RPC error object).
    Reply(Value),
    /// Nothing to deliver and nothing to answer.
    Skip,
}

/// Newline-delimited JSON-RPC over a reader and a writer. Clones share
/// both ends, so a handshake can be retried on the same stream.
struct LineTransport<R, W> {
    reader: Arc<Mutex<Input<R>>>,
    writer: Arc<Mutex<W>>,
}

impl<R, W> Clone for LineTransport<R, W> {
    fn clone(&self) -> Self {
        LineTransport {
            reader: self.reader.clone(),
            writer: self.writer.clone(),
        }
    }
}

impl<R, W> LineTransport<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    fn new(read: R, write: W) -> Self {
        LineTransport {
            reader: Arc::new(Mutex::new(Input {
                lines: LineReader::new(read),
                replies: Vec::new(),
            })),
            writer: Arc::new(Mutex::new(write)),
        }
    }
}

/// The input side: the lines, and the error replies still being written
/// (waited for at the end of input, so none is lost when the process
/// exits right after).
struct Input<R> {
    lines: LineReader<R>,
    replies: Vec<JoinHandle<()>>,
}

/// Writes one message and its newline under the writer's lock, so lines
/// never interleave.
async fn write_line<W: AsyncWrite + Unpin>(
    writer: &Mutex<W>,
    mut line: Vec<u8>,
) -> std::io::Result<()> {
    line.push(b'\n');
    let mut w = writer.lock().await;
    w.write_all(&line).await?;
    w.flush().await
}

impl<R, W> Transport<RoleServer> for LineTransport<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let writer = self.writer.clone();
        async move {
            let line = serde_json::to_vec(&item).map_err(std::io::Error::other)?;
            write_line(&writer, line).await
        }
    }

    async fn receive(&mut self) -> Option<ClientJsonRpcMessage> {
        let mut input = self.reader.lock().await;
        input.replies.retain(|h| !h.is_finished());
        loop {
            let reply = match input.lines.next().await {
                Ok(Read::Line(bytes)) => match classify(&bytes) {
                    Line::Message(m) => return Some(*m),
                    Line::Skip => continue,
                    Line::Reply(v) => v,
                },
                Ok(Read::Oversized) => error_reply(
                    None,
                    -32600,
                    format!(
                        "Invalid Request: message over {} KiB; husk-mcp reads one JSON-RPC message \
                         per line, each at most that long",
                        MAX_MESSAGE_BYTES / 1024
                    ),
                ),
                Ok(Read::Eof) => {
                    for h in input.replies.drain(..) {
                        let _ = h.await;
                    }
                    return None;
                }
                Err(e) => {
                    eprintln!("husk-mcp: reading stdin: {e}");
                    return None;
                }
            };
            // Written by its own task: `receive` may be dropped at any
            // await (rmcp polls it in a select), and a half-written line
            // would corrupt the stream.
            let writer = self.writer.clone();
            let line = reply.to_string().into_bytes();
            input.replies.push(tokio::spawn(async move {
                let _ = write_line(&writer, line).await;
            }));
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.writer.lock().await.flush().await
    }
}

fn error_reply(id: Option<Value>, code: i64, message: String) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id.unwrap_or(Value::Null),
        "error": {"code": code, "message": message},
    })
}

/// Sorts one line (newline removed) into a message, an error to answer,
/// or nothing.
fn classify(line: &[u8]) -> Line {
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Line::Skip;
    }
    let parse_error = match serde_json::from_slice::<ClientJsonRpcMessage>(line) {
        Ok(m) => return misread_request(&m).unwrap_or(Line::Message(Box::new(m))),
        Err(e) => e,
    };
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            return Line::Reply(error_reply(
                None,
                -32700,
                format!(
                    "Parse error: the line is not JSON ({e}); send one JSON-RPC message per line"
                ),
            ));
        }
    };
    let Value::Object(obj) = &value else {
        let what = if value.is_array() {
            "a batch (JSON array); MCP takes one message per line"
        } else {
            "not a JSON object"
        };
        return Line::Reply(error_reply(
            None,
            -32600,
            format!("Invalid Request: {what}"),
        ));
    };
    // A usable id is a string or an integer; anything else is answered
    // with null.
    let id = obj
        .get("id")
        .filter(|v| v.is_string() || v.is_i64() || v.is_u64())
        .cloned();
    let method = obj.get("method").and_then(Value::as_str);
    let is_response = obj.contains_key("result") || obj.contains_key("error");
    match (id, method) {
        // A notification or a response: JSON-RPC answers neither.
        (None, _) if !obj.contains_key("id") => Line::Skip,
        (_, None) if is_response => Line::Skip,
        (id, Some(method)) if obj.get("jsonrpc").and_then(Value::as_str) == Some("2.0") => {
            let method: String = method.chars().take(100).collect();
            Line::Reply(error_reply(
                id,
                -32602,
                format!("Invalid params for {method}: {parse_error}"),
            ))
        }
        (id, _) => Line::Reply(error_reply(
            id,
            -32600,
            "Invalid Request: a request needs \"jsonrpc\": \"2.0\", an \"id\" (string or integer) \
             and a \"method\" (string)"
                .to_string(),
        )),
    }
}

/// Client-to-server request methods of MCP. rmcp reads one of these
/// whose params do not fit as a custom request and would answer -32601
/// ("method not found"), which misleads: the method exists, the params
/// are wrong (-32602).
const STANDARD_REQUESTS: [&str; 15] = [
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "subscriptions/listen",
    "completion/complete",
    "logging/setLevel",
];

/// The -32602 answer to a standard method with params that do not fit.
fn misread_request(m: &ClientJsonRpcMessage) -> Option<Line> {
    let ClientJsonRpcMessage::Request(req) = m else {
        return None;
    };
    let ClientRequest::CustomRequest(c) = &req.request else {
        return None;
    };
    if !STANDARD_REQUESTS.contains(&c.method.as_str()) {
        return None;
    }
    let params = c.params.clone().unwrap_or(Value::Null);
    let detail = match c.method.as_str() {
        "tools/call" => serde_json::from_value::<CallToolRequestParams>(params).err(),
        "initialize" => serde_json::from_value::<InitializeRequestParams>(params).err(),
        _ => None,
    }
    .map_or_else(
        || "they do not fit the method".to_string(),
        |e| e.to_string(),
    );
    Some(Line::Reply(error_reply(
        Some(req.id.clone().into_json_value()),
        -32602,
        format!("Invalid params for {}: {detail}", c.method),
    )))
}

/// One read from the input.
#[derive(Debug, PartialEq)]
enum Read {
    Line(Bytes),
    /// A line over the limit, skipped.
    Oversized,
    Eof,
}

/// Lines of at most [`MAX_MESSAGE_BYTES`], newline removed.
struct LineReader<R> {
    io: R,
    buf: BytesMut,
    codec: AnyDelimiterCodec,
    eof: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(io: R) -> Self {
        LineReader {
            io,
            buf: BytesMut::with_capacity(8 * 1024),
            codec: AnyDelimiterCodec::new_with_max_length(
                b"\n".to_vec(),
                Vec::new(),
                MAX_MESSAGE_BYTES,
            ),
            eof: false,
        }
    }

    /// Cancel safe: bytes read stay in `buf`, the codec keeps its place.
    async fn next(&mut self) -> std::io::Result<Read> {
        loop {
            let decoded = if self.eof {
                self.codec.decode_eof(&mut self.buf)
            } else {
                self.codec.decode(&mut self.buf)
            };
            match decoded {
                Ok(Some(line)) => return Ok(Read::Line(line)),
                Ok(None) if self.eof => return Ok(Read::Eof),
                Ok(None) => {}
                Err(AnyDelimiterCodecError::MaxChunkLengthExceeded) => return Ok(Read::Oversized),
                Err(AnyDelimiterCodecError::Io(e)) => return Err(e),
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                self.eof = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(line: &str) -> Value {
        match classify(line.as_bytes()) {
            Line::Reply(v) => v,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn good_messages_pass() {
        for line in [
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":2,"method":"no/such/method","params":{}}"#,
            "\u{feff}{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\"}\r",
        ] {
            assert!(
                matches!(classify(line.as_bytes()), Line::Message(_)),
                "{line}"
            );
        }
    }

    #[test]
    fn garbage_gets_the_right_error() {
        let v = reply("hello");
        assert_eq!(v["error"]["code"], -32700);
        assert_eq!(v["id"], Value::Null);
        assert_eq!(v["jsonrpc"], "2.0");
        assert_eq!(
            reply("{\"jsonrpc\":").as_object().unwrap()["error"]["code"],
            -32700
        );
        assert!(matches!(classify(b"\xff\xfe{}"), Line::Reply(v) if v["error"]["code"] == -32700));
        let v = reply(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#);
        assert_eq!(v["error"]["code"], -32600);
        assert!(v["error"]["message"].as_str().unwrap().contains("batch"));
        assert_eq!(reply("42")["error"]["code"], -32600);
        // Known method, wrong params: -32602 with the request's id.
        let v =
            reply(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"arguments":{}}}"#);
        assert_eq!(v["error"]["code"], -32602, "{v}");
        assert_eq!(v["id"], 7);
        let text = v["error"]["message"].as_str().unwrap();
        assert!(
            text.starts_with("Invalid params for tools/call: missing field `name`"),
            "{v}"
        );
        let v = reply(r#"{"jsonrpc":"2.0","id":"i","method":"initialize","params":{}}"#);
        assert_eq!(
            (v["error"]["code"].clone(), v["id"].clone()),
            (json!(-32602), json!("i"))
        );
        // Not JSON-RPC 2.0, or no method: -32600 with the id.
        let v = reply(r#"{"jsonrpc":"1.0","id":"x","method":"ping"}"#);
        assert_eq!(
            (v["error"]["code"].clone(), v["id"].clone()),
            (json!(-32600), json!("x"))
        );
        let v = reply(r#"{"jsonrpc":"2.0","id":9}"#);
        assert_eq!(
            (v["error"]["code"].clone(), v["id"].clone()),
            (json!(-32600), json!(9))
        );
        // An unusable id is answered with null.
        assert_eq!(
            reply(r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#)["id"],
            Value::Null
        );
    }

    #[test]
    fn notifications_and_responses_are_never_answered() {
        for line in [
            "",
            "   ",
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":"oops"}"#,
            r#"{"jsonrpc":"2.0","id":5,"error":"not an error object"}"#,
            r#"{"method":"x"}"#,
        ] {
            let got = classify(line.as_bytes());
            assert!(matches!(got, Line::Skip), "{line:?}: {got:?}");
        }
    }

    #[tokio::test]
    async fn reader_bounds_lines_and_resumes() {
        let long = "x".repeat(MAX_MESSAGE_BYTES + 10);
        let exact = "y".repeat(MAX_MESSAGE_BYTES);
        let input = format!("a\n{long}\nb\n{exact}\nlast");
        let mut r = LineReader::new(input.as_bytes());
        assert_eq!(r.next().await.unwrap(), Read::Line(Bytes::from("a")));
        assert_eq!(r.next().await.unwrap(), Read::Oversized);
        assert_eq!(r.next().await.unwrap(), Read::Line(Bytes::from("b")));
        assert_eq!(r.next().await.unwrap(), Read::Line(Bytes::from(exact)));
        assert_eq!(r.next().await.unwrap(), Read::Line(Bytes::from("last")));
        assert_eq!(r.next().await.unwrap(), Read::Eof);
        assert_eq!(r.next().await.unwrap(), Read::Eof);
    }
}
