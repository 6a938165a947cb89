//! The orchestrator's side of a run's messaging sidecar (contract §3, §5):
//! load an inbox snapshot, drain the intents agents submitted, push one
//! message live. The same in-memory state the agent reaches from its
//! sandbox; 404 for a run without a sidecar.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde_json::Value;

use super::error::{ApiError, ApiResult, Code};
use super::{AppState, PathParam};
use husk_sidecar::InboxError;

fn inbox_error(e: InboxError) -> ApiError {
    match e {
        InboxError::Closed => ApiError::new(
            Code::AlreadyTerminal,
            "the run's messaging sidecar is closed (the run is ending)",
        ),
        other => ApiError::params(other.to_string()),
    }
}

/// What `PUT /v1/runs/{id}/inbox` answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct InboxLoaded {
    pub run_id: String,
    pub version: u64,
    pub iteration: u32,
    /// The same version with the same content was loaded already.
    pub unchanged: bool,
}

/// What `POST /v1/runs/{id}/messages` answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct MessagePushed {
    pub run_id: String,
    pub inbox_version: u64,
}

/// `PUT /v1/runs/{id}/inbox`: `version` optional (previous + 1 when absent).
pub async fn put_inbox(
    State(s): State<AppState>,
    PathParam(id): PathParam<String>,
    body: Bytes,
) -> ApiResult<Json<InboxLoaded>> {
    let sc = s.manager.sidecar(&id)?;
    let load = husk_sidecar::parse_inbox_load(&body).map_err(|e| ApiError::params(e.0))?;
    let loaded = sc.load_inbox(load).map_err(inbox_error)?;
    Ok(Json(InboxLoaded {
        run_id: id,
        version: loaded.version,
        iteration: loaded.iteration,
        unchanged: loaded.unchanged,
    }))
}

/// `GET /v1/runs/{id}/intents`: drains (a second call returns `[]`).
pub async fn intents(
    State(s): State<AppState>,
    PathParam(id): PathParam<String>,
) -> ApiResult<Json<Value>> {
    let drained = s.manager.drain_intents(&id)?;
    Ok(Json(
        serde_json::to_value(drained).map_err(ApiError::internal)?,
    ))
}

/// `POST /v1/runs/{id}/messages`: one inbox entry, live; bumps the inbox
/// version.
pub async fn push_message(
    State(s): State<AppState>,
    PathParam(id): PathParam<String>,
    body: Bytes,
) -> ApiResult<Json<MessagePushed>> {
    let sc = s.manager.sidecar(&id)?;
    let entry = husk_sidecar::parse_inbox_entry(&body).map_err(|e| ApiError::params(e.0))?;
    let inbox_version = sc.push_message(entry).map_err(inbox_error)?;
    Ok(Json(MessagePushed {
        run_id: id,
        inbox_version,
    }))
}
