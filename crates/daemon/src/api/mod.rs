//! The HTTP API (runtime contract §3, void-box v1 compatible). Routes are
//! listed once in [`ROUTES`]; the router and the OpenAPI document are both
//! built from it, and a test checks they agree.
//!
//! Every error answer is the JSON envelope `{code, message, retryable}`:
//! handlers return [`ApiError`], path parameters go through [`PathParam`]
//! (axum's own rejection is plain text), and [`json_errors`] turns any
//! other non-JSON error response (extractor rejections, body limits) into
//! the envelope with the same status.

pub mod error;
mod events;
mod files;
mod messaging;
pub mod openapi;
mod routes;
pub mod runs;
pub mod sessions;
pub mod url;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};

use crate::manager::Manager;
use error::{ApiError, Code};
pub use routes::{ROUTES, Route};

/// Request bodies over this are refused with 413.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub manager: Arc<Manager>,
    /// Bearer token required on every route (TCP listeners).
    pub token: Option<Arc<String>>,
}

/// A route in ROUTES without a handler is a programming error caught by
/// the route test; answer 500 rather than panic.
fn unreachable_route() -> MethodRouter<AppState> {
    get(|| async { ApiError::internal("route without handler") })
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let mut r: Router<AppState> = Router::new();
    let mut paths: Vec<&str> = ROUTES.iter().map(|r| r.path).collect();
    paths.dedup();
    for path in paths {
        let mut m: Option<MethodRouter<AppState>> = None;
        for route in ROUTES.iter().filter(|x| x.path == path) {
            let h = routes::handler(route);
            m = Some(match m {
                Some(prev) => prev.merge(h),
                None => h,
            });
        }
        if let Some(m) = m {
            r = r.route(path, m.fallback(method_not_allowed));
        }
    }
    r.fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn(json_errors))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("no route {} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        Code::MethodNotAllowed,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// Bearer auth on every route when a token is configured (TCP).
async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.token
        && !crate::auth::bearer_ok(req.headers(), token)
    {
        return ApiError::new(
            Code::Unauthorized,
            "missing or wrong bearer token (Authorization: Bearer …)",
        )
        .into_response();
    }
    next.run(req).await
}

/// The error envelope on every error answer: a declared Content-Length
/// over the limit is refused before reading; any error response that is
/// not JSON already (axum's rejections, its body limit) is rewritten with
/// the same status and a code for it.
async fn json_errors(req: Request, next: Next) -> Response {
    if declared_len(req.headers()).is_some_and(|n| n > MAX_BODY_BYTES as u64) {
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
    // Rejection texts are short; cap what is read anyway.
    let text = axum::body::to_bytes(resp.into_body(), 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = match status {
        StatusCode::UNAUTHORIZED => Code::Unauthorized,
        StatusCode::NOT_FOUND => Code::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => Code::MethodNotAllowed,
        StatusCode::TOO_MANY_REQUESTS => Code::TooManyRequests,
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

/// Query parameters whose problems are the JSON envelope (400
/// `INVALID_PARAMS`): unknown or repeated fields, and percent-encoding that
/// is not UTF-8 (which a plain `Query` would decode lossily to U+FFFD).
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let raw = parts.uri.query().unwrap_or("");
        for pair in raw.split('&') {
            if percent_encoding::percent_decode_str(pair)
                .decode_utf8()
                .is_err()
            {
                return Err(ApiError::params(format!(
                    "query {pair:?}: percent-encoding that is not UTF-8"
                )));
            }
        }
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(t)| QueryParams(t))
            .map_err(|e| ApiError::params(format!("query: {}", e.body_text())))
    }
}

/// Path parameters whose rejection (bad percent-encoding, bad UTF-8) is
/// the JSON envelope (400 `INVALID_PARAMS`) naming the path.
#[derive(Debug)]
pub struct PathParam<T>(pub T);

impl<S, T> FromRequestParts<S> for PathParam<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(t)) => Ok(PathParam(t)),
            Err(e) => Err(ApiError::params(format!(
                "path {}: {}",
                parts.uri.path(),
                e.body_text()
            ))),
        }
    }
}

fn declared_len(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn too_large() -> Response {
    ApiError::new(
        Code::PayloadTooLarge,
        format!("request body over {} MiB", MAX_BODY_BYTES >> 20),
    )
    .into_response()
}

/// Parses a JSON body into `T`, naming what is wrong.
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::params("the request needs a JSON body"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::params(format!("invalid JSON body: {e}")))
}
