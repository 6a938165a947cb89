//! Run routes: create, list, show, cancel, stages, health.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::{AppState, PathParam, QueryParams, json_body};
use crate::manager::{CreateRun, Created};

pub async fn health(State(s): State<AppState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "active_runs": s.manager.active_count(),
        "uptime_ms": s.manager.uptime().as_millis() as u64,
    }))
}

pub async fn create(State(s): State<AppState>, body: Bytes) -> ApiResult<Json<Created>> {
    let req: CreateRun = json_body(&body)?;
    // Loading a spec file touches the disk: keep it off the async workers.
    let m = s.manager.clone();
    let created = tokio::task::spawn_blocking(move || m.create(req))
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(created))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
}

pub async fn list(
    State(s): State<AppState>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Value>> {
    let terminal = match q.state.as_deref() {
        None => None,
        Some("active") => Some(false),
        Some("terminal") => Some(true),
        Some(other) => {
            return Err(ApiError::params(format!(
                "state {other:?}: use `active` or `terminal`"
            )));
        }
    };
    let mut runs = s.manager.store().list_runs(terminal)?;
    // Live runs: the in-memory record is the fresher one.
    for r in &mut runs {
        if !r.status.is_terminal()
            && let Ok(live) = s.manager.record(&r.id)
        {
            *r = live;
        }
    }
    Ok(Json(json!({ "runs": runs })))
}

pub async fn show(
    State(s): State<AppState>,
    PathParam(id): PathParam<String>,
) -> ApiResult<Json<Value>> {
    let mut r = s.manager.record(&id)?;
    r.events = s.manager.store().events_after(&id, 0)?;
    Ok(Json(serde_json::to_value(r).map_err(ApiError::internal)?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    reason: Option<String>,
}

pub async fn cancel(
    State(s): State<AppState>,
    PathParam(id): PathParam<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: CancelBody = if body.iter().all(u8::is_ascii_whitespace) {
        CancelBody::default()
    } else {
        json_body(&body)?
    };
    let c = s.manager.cancel(&id, req.reason).await?;
    Ok(Json(serde_json::to_value(c).map_err(ApiError::internal)?))
}

pub async fn stages(
    State(s): State<AppState>,
    PathParam(id): PathParam<String>,
) -> ApiResult<Json<Value>> {
    let r = s.manager.record(&id)?;
    let stages = match &r.report {
        Some(rep) => serde_json::to_value(&rep.stages).map_err(ApiError::internal)?,
        None => Value::Array(
            r.stage_states
                .iter()
                .map(|(name, status)| json!({"name": name, "status": status}))
                .collect(),
        ),
    };
    Ok(Json(json!({ "run_id": r.id, "stages": stages })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryQuery {
    from_seq: Option<String>,
    stage_name: Option<String>,
}

/// `GET /v1/runs/{id}/telemetry?from_seq=N&stage_name=S`.
pub async fn telemetry(
    State(s): State<AppState>,
    PathParam(id): PathParam<String>,
    QueryParams(q): QueryParams<TelemetryQuery>,
) -> ApiResult<Json<Value>> {
    let from_seq = match q.from_seq.as_deref() {
        None => 0,
        Some(v) => v.parse::<u64>().map_err(|_| {
            ApiError::params(format!(
                "from_seq {v:?}: give a whole number from 0 to {}",
                u64::MAX
            ))
        })?,
    };
    let (r, page) = s
        .manager
        .telemetry(&id, from_seq, q.stage_name.as_deref())?;
    Ok(Json(json!({
        "run_id": r.id,
        "attempt_id": r.attempt_id,
        "next_seq": page.next_seq,
        "samples": page.samples,
    })))
}
