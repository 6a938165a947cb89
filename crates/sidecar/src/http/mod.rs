//! The agent-facing HTTP API (contract §5): health, context, inbox,
//! intents, and a 501 for signals. [`router`] is mounted by whoever owns
//! the connection (the sandbox port tunnel hands each forwarded connection
//! to [`serve_connection`]); [`serve_on`] serves a TCP listener (tests,
//! benchmarks).
//!
//! Every answer that is not a success is the JSON envelope, including
//! axum's own rejections (rewritten by [`json_errors`]) and any route or
//! method the contract does not list (404).

pub mod error;
#[cfg(test)]
mod tests;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, serve::ListenerExt};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::handle::Sidecar;
use crate::intake::{self, IntentsBody};
use crate::limits::{MAX_IDEMPOTENCY_KEY_BYTES, MAX_REQUEST_BYTES};
use crate::types::{InboxSnapshot, SidecarContext, SidecarHealth};
use error::{ApiError, Code};

/// The agent-facing API of one sidecar.
pub fn router(sidecar: Sidecar) -> Router {
    Router::new()
        .route("/v1/health", only(get(health)))
        .route("/v1/context", only(get(context)))
        .route("/v1/inbox", only(get(inbox)))
        .route("/v1/intents", only(post(intents)))
        .route("/v1/signals", only(get(signals)))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(middleware::from_fn(json_errors))
        .with_state(sidecar)
}

/// Serves the API on `listener` until the task is dropped or fails.
pub async fn serve_on(listener: TcpListener, sidecar: Sidecar) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        // Small request/response pairs: do not wait for Nagle.
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(sidecar)).await
}

/// Serves HTTP/1.1 (keep-alive) on one already-open connection, e.g. a
/// connection forwarded from inside a sandbox. `app` is [`router`]'s
/// result; build it once and clone it per connection.
pub async fn serve_connection<I>(io: I, app: Router) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app))
        .await
}

/// A route answers 404 (not 405) to methods it does not list: the
/// contract's "anything else → 404".
fn only(m: MethodRouter<Sidecar>) -> MethodRouter<Sidecar> {
    m.fallback(not_found)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        Code::NotFound,
        format!(
            "no route {} {}: the sidecar serves GET /v1/health, GET /v1/context, \
             GET /v1/inbox, POST /v1/intents",
            req.method(),
            req.uri().path()
        ),
    )
}

async fn health(State(s): State<Sidecar>) -> Json<SidecarHealth> {
    Json(s.health())
}

async fn context(State(s): State<Sidecar>) -> Json<SidecarContext> {
    Json(s.context())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InboxQuery {
    since: Option<u64>,
}

async fn inbox(State(s): State<Sidecar>, uri: Uri) -> Result<Json<InboxSnapshot>, ApiError> {
    let Query(q) = Query::<InboxQuery>::try_from_uri(&uri)
        .map_err(|e| ApiError::params(format!("query: {}", e.body_text())))?;
    Ok(Json(s.inbox(q.since)))
}

async fn signals() -> ApiError {
    ApiError::new(
        Code::NotImplemented,
        "GET /v1/signals is not implemented; read peer messages with GET /v1/inbox",
    )
}

async fn intents(State(s): State<Sidecar>, headers: HeaderMap, body: Bytes) -> Response {
    match submit(&s, &headers, &body) {
        Ok(accepted) => (StatusCode::CREATED, accepted).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Validates and submits a whole request under one lock, so a batch is
/// not interleaved with other requests. A batch stops at its first
/// rejection; the error then carries what was accepted before it.
fn submit(s: &Sidecar, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    let key = idempotency_key(headers)?;
    let (items, batch) = match intake::intents_body(body).map_err(|e| ApiError::params(e.0))? {
        IntentsBody::One(v) => (vec![v], false),
        IntentsBody::Batch(v) => (v, true),
    };
    let mut state = s.lock();
    let mut accepted = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let outcome = intake::intent(item, batch.then_some(i))
            .map_err(|e| ApiError::params(e.0))
            .and_then(|intent| {
                let k = key.as_ref().map(|k| (k.clone(), i));
                state.submit(intent, k).map_err(|r| ApiError::from(&r))
            });
        match outcome {
            Ok((stamped, _)) => accepted.push(stamped),
            Err(e) if batch => return Err(e.in_batch(accepted, i)),
            Err(e) => return Err(e),
        }
    }
    Ok(if batch {
        Json(accepted).into_response()
    } else {
        Json(accepted.remove(0)).into_response()
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let k = v
        .to_str()
        .map_err(|_| ApiError::params("Idempotency-Key: must be visible ASCII"))?
        .trim();
    if k.is_empty() {
        return Err(ApiError::params("Idempotency-Key: must not be empty"));
    }
    if k.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(ApiError::params(format!(
            "Idempotency-Key: {} bytes, over the limit of {MAX_IDEMPOTENCY_KEY_BYTES}",
            k.len()
        )));
    }
    Ok(Some(k.to_string()))
}

/// Refuses a declared body over the limit before reading it, and rewrites
/// any error answer that is not JSON yet (axum's rejections) into the
/// envelope with the same status.
async fn json_errors(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES as u64) {
        return too_large();
    }
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == "application/json");
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large();
    }
    let text = axum::body::to_bytes(resp.into_body(), 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = match status {
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => Code::NotFound,
        s if s.is_server_error() => Code::InternalError,
        _ => Code::InvalidParams,
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut out = ApiError::new(code, message).into_response();
    *out.status_mut() = status;
    out
}

fn too_large() -> Response {
    ApiError::new(
        Code::PayloadTooLarge,
        format!("request body over {} KiB", MAX_REQUEST_BYTES / 1024),
    )
    .into_response()
}
