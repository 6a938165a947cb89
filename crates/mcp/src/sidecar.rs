//! The client side of the messaging sidecar's agent API (GET /v1/context,
//! GET /v1/inbox, POST /v1/intents), as husk-mcp needs it: async (it runs
//! inside the MCP server's runtime), one pooled keep-alive connection (a
//! tool call should cost one round trip, not a TCP handshake), and every
//! call bounded by [`SIDECAR_TIMEOUT`].
//!
//! Answers are passed on as JSON values: husk-mcp does not interpret
//! what the sidecar says beyond its error envelope, so a newer sidecar
//! with more fields needs no new husk-mcp.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

use crate::limits::{MAX_SIDECAR_ANSWER_BYTES, SIDECAR_TIMEOUT};

/// Environment variables holding the sidecar URL, in the order read.
pub const URL_VARS: [&str; 2] = ["VOID_SIDECAR_URL", "HUSK_SIDECAR_URL"];

/// Overrides [`SIDECAR_TIMEOUT`] (milliseconds), e.g. for tests.
pub const TIMEOUT_VAR: &str = "HUSK_MCP_SIDECAR_TIMEOUT_MS";

/// Why the sidecar URL could not be had from the environment.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UrlError {
    #[error("{} (or {}) is not set: messaging is not enabled for this run", URL_VARS[0], URL_VARS[1])]
    Missing,
    #[error("{var} must be an http:// URL with a host (e.g. http://127.0.0.1:7777), not {value:?}")]
    Invalid { var: &'static str, value: String },
}

/// Reads the sidecar's base URL from the first of [`URL_VARS`] that is set
/// and not blank, through `get` (the process environment in `main`).
pub fn url_from(get: impl Fn(&str) -> Option<String>) -> Result<Uri, UrlError> {
    let (var, value) = URL_VARS
        .iter()
        .find_map(|v| get(v).filter(|s| !s.trim().is_empty()).map(|s| (*v, s)))
        .ok_or(UrlError::Missing)?;
    let trimmed = value.trim().trim_end_matches('/');
    let invalid = || UrlError::Invalid {
        var,
        value: value.clone(),
    };
    let uri: Uri = trimmed.parse().map_err(|_| invalid())?;
    let plain = uri.scheme_str() == Some("http")
        && uri.host().is_some_and(|h| !h.is_empty())
        && uri.query().is_none();
    if !plain {
        return Err(invalid());
    }
    Ok(uri)
}

/// A sidecar call that did not produce a success answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SidecarError {
    /// No HTTP answer at all: refused, reset, DNS, ….
    #[error("cannot reach the messaging sidecar at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// No full answer within the call's bound.
    #[error("the messaging sidecar at {url} did not answer within {}", human(*.after))]
    Timeout { url: String, after: Duration },
    /// An answer with status ≥ 400. `code` and `message` come from the
    /// sidecar's error envelope when it sent one.
    #[error("the sidecar answered HTTP {status}{}: {message}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Refused {
        status: u16,
        code: Option<String>,
        message: String,
        retryable: bool,
    },
    /// A success status whose body is not JSON.
    #[error("the sidecar's answer to {what} is not JSON: {reason}")]
    BadAnswer { what: String, reason: String },
}

/// The sidecar's error envelope (`{code, message, retryable}`); other
/// fields (a batch's `accepted`) are not needed here.
#[derive(Debug, Deserialize)]
struct Envelope {
    code: String,
    message: String,
    #[serde(default)]
    retryable: bool,
}

/// A handle to one sidecar. Clones share the connection pool.
#[derive(Clone)]
pub struct Sidecar {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for Sidecar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sidecar")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Sidecar {
    /// A client of the sidecar at `base` (scheme and authority; a path
    /// prefix is kept), each call bounded by `timeout`. Must be called
    /// inside a Tokio runtime.
    pub fn new(base: &Uri, timeout: Duration) -> Sidecar {
        let mut connector = HttpConnector::new();
        // Small request/answer pairs: do not wait for Nagle.
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Sidecar {
            base: base.to_string().trim_end_matches('/').to_string(),
            client,
            timeout,
        }
    }

    /// `GET /v1/context`.
    pub async fn context(&self) -> Result<Value, SidecarError> {
        self.call(Method::GET, "/v1/context".to_string(), None)
            .await
    }

    /// `GET /v1/inbox[?since=N]`.
    pub async fn inbox(&self, since: Option<u64>) -> Result<Value, SidecarError> {
        let path = match since {
            Some(n) => format!("/v1/inbox?since={n}"),
            None => "/v1/inbox".to_string(),
        };
        self.call(Method::GET, path, None).await
    }

    /// `POST /v1/intents` with one intent and a fresh `Idempotency-Key`.
    pub async fn submit(&self, intent: &Value) -> Result<Value, SidecarError> {
        let body = Bytes::from(intent.to_string());
        self.call(Method::POST, "/v1/intents".to_string(), Some(body))
            .await
    }

    async fn call(
        &self,
        method: Method,
        path: String,
        body: Option<Bytes>,
    ) -> Result<Value, SidecarError> {
        let url = format!("{}{path}", self.base);
        let what = format!("{method} {path}");
        match tokio::time::timeout(self.timeout, self.exchange(method, &url, body)).await {
            Ok(Ok((status, bytes))) => answer(&what, status, &bytes),
            Ok(Err(reason)) => Err(SidecarError::Unreachable {
                url: self.base.clone(),
                reason,
            }),
            Err(_) => Err(SidecarError::Timeout {
                url: self.base.clone(),
                after: self.timeout,
            }),
        }
    }

    /// One request and its whole answer; a failure is the reason text.
    async fn exchange(
        &self,
        method: Method,
        url: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), String> {
        let mut req = Request::builder()
            .method(method)
            .uri(url)
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            req = req
                .header(header::CONTENT_TYPE, "application/json")
                .header("idempotency-key", idempotency_key());
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| format!("bad request URL {url}: {e}"))?;
        let resp = self.client.request(req).await.map_err(|e| describe(&e))?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_SIDECAR_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok((status, bytes))
    }
}

/// "10 s", "250 ms".
fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// The bound on each sidecar call: [`SIDECAR_TIMEOUT`], or
/// [`TIMEOUT_VAR`] in milliseconds (1 to 600000) when set.
pub fn timeout_from(get: impl Fn(&str) -> Option<String>) -> Result<Duration, String> {
    let Some(v) = get(TIMEOUT_VAR) else {
        return Ok(SIDECAR_TIMEOUT);
    };
    match v.trim().parse::<u64>() {
        Ok(ms @ 1..=600_000) => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "{TIMEOUT_VAR} must be a number of milliseconds from 1 to 600000, not {v:?}"
        )),
    }
}

/// The whole chain of a client error ("client error (Connect): tcp
/// connect error: Connection refused (os error 111)"): hyper's top-level
/// text alone does not say what went wrong.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

fn answer(what: &str, status: StatusCode, bytes: &[u8]) -> Result<Value, SidecarError> {
    if status.as_u16() >= 400 {
        let refused = match serde_json::from_slice::<Envelope>(bytes) {
            Ok(env) => SidecarError::Refused {
                status: status.as_u16(),
                code: Some(env.code),
                message: env.message,
                retryable: env.retryable,
            },
            Err(_) => SidecarError::Refused {
                status: status.as_u16(),
                code: None,
                message: String::from_utf8_lossy(bytes)
                    .trim()
                    .chars()
                    .take(500)
                    .collect(),
                retryable: status.is_server_error(),
            },
        };
        return Err(refused);
    }
    serde_json::from_slice(bytes).map_err(|e| SidecarError::BadAnswer {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// 128 random bits as hex: the sidecar answers a replay of the same
/// request with the intent it accepted first; another call is new.
pub fn idempotency_key() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No random source: time and pid still differ between calls.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos ^ (u128::from(std::process::id()) << 96)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn url_prefers_void_then_husk_and_skips_blank() {
        let u = url_from(env(&[
            ("VOID_SIDECAR_URL", "http://127.0.0.1:1/"),
            ("HUSK_SIDECAR_URL", "http://127.0.0.1:2"),
        ]))
        .unwrap();
        assert_eq!(u.port_u16(), Some(1));
        let u = url_from(env(&[
            ("VOID_SIDECAR_URL", "  "),
            ("HUSK_SIDECAR_URL", "http://127.0.0.1:2"),
        ]))
        .unwrap();
        assert_eq!(u.port_u16(), Some(2));
        assert_eq!(url_from(env(&[])), Err(UrlError::Missing));
        assert!(UrlError::Missing.to_string().contains("VOID_SIDECAR_URL"));
    }

    #[test]
    fn url_must_be_plain_http() {
        for bad in [
            "https://127.0.0.1:1",
            "127.0.0.1:7777",
            "http://",
            "unix:///tmp/x",
            "http://h:1/?a=b",
            "not a url",
        ] {
            let e = url_from(env(&[("HUSK_SIDECAR_URL", bad)])).unwrap_err();
            assert!(
                matches!(&e, UrlError::Invalid { var: "HUSK_SIDECAR_URL", value } if value == bad),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn error_answers_keep_the_sidecars_code_and_message() {
        let e = answer(
            "POST /v1/intents",
            StatusCode::TOO_MANY_REQUESTS,
            br#"{"code":"TOO_MANY_REQUESTS","message":"3 intents were already accepted","retryable":true}"#,
        )
        .unwrap_err();
        assert_eq!(
            e,
            SidecarError::Refused {
                status: 429,
                code: Some("TOO_MANY_REQUESTS".into()),
                message: "3 intents were already accepted".into(),
                retryable: true,
            }
        );
        assert!(e.to_string().contains("HTTP 429 TOO_MANY_REQUESTS"), "{e}");
        // Not the envelope (a proxy's page): the text, shortened.
        let e = answer("GET /v1/context", StatusCode::BAD_GATEWAY, b"bad gateway\n").unwrap_err();
        assert!(
            matches!(&e, SidecarError::Refused { status: 502, code: None, message, retryable: true } if message == "bad gateway"),
            "{e:?}"
        );
        let e = answer("GET /v1/context", StatusCode::OK, b"<html>").unwrap_err();
        assert!(matches!(e, SidecarError::BadAnswer { .. }), "{e:?}");
        assert_eq!(
            answer("GET /v1/context", StatusCode::OK, br#"{"a":1}"#).unwrap(),
            serde_json::json!({"a": 1})
        );
    }

    #[test]
    fn timeout_defaults_and_overrides() {
        assert_eq!(timeout_from(env(&[])), Ok(SIDECAR_TIMEOUT));
        assert_eq!(
            timeout_from(env(&[(TIMEOUT_VAR, "250")])),
            Ok(Duration::from_millis(250))
        );
        for bad in ["0", "-1", "x", "600001"] {
            let e = timeout_from(env(&[(TIMEOUT_VAR, bad)])).unwrap_err();
            assert!(e.contains(TIMEOUT_VAR) && e.contains(bad), "{e}");
        }
        assert_eq!(human(Duration::from_secs(10)), "10 s");
        assert_eq!(human(Duration::from_millis(250)), "250 ms");
    }

    #[test]
    fn keys_are_fresh() {
        let a = idempotency_key();
        assert_eq!(a.len(), 32);
        assert_ne!(a, idempotency_key());
    }
}
