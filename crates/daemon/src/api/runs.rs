//! Run routes: create, list, show, cancel, stages, health.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use husk_runtime::record::{RunRecord, StageReport, StageStatus};
use husk_runtime::telemetry::Sample;
use serde::{Deserialize, Serialize};

use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult};
use super::{AppState, PathParam, QueryParams, json_body};
use crate::manager::{Cancelled, CreateRun, Created};

/// `GET /v1/health`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    status: HealthStatus,
    /// husk's version.
    version: &'static str,
    active_runs: usize,
    uptime_ms: u64,
    /// Warm pools (`husk serve --pool`), one per backend; empty without.
    pools: Vec<crate::pools::PoolHealth>,
}

/// Always `ok`: a daemon that answers is healthy.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
}

pub async fn health(State(s): State<AppState>) -> Json<Health> {
    Json(Health {
        status: HealthStatus::Ok,
        version: env!("CARGO_PKG_VERSION"),
        active_runs: s.manager.active_count(),
        uptime_ms: s.manager.uptime().as_millis() as u64,
        pools: crate::pools::health(&s.manager.pools()),
    })
}

/// `GET /v1/metrics`: Prometheus text.
pub async fn metrics(State(s): State<AppState>) -> impl axum::response::IntoResponse {
    let m = &s.manager;
    let body = crate::pools::metrics(&m.pools(), m.active_count(), m.runs_started());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
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

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only active or only terminal runs (all when absent).
    #[param(value_type = Option<StateFilter>, inline)]
    state: Option<String>,
}

/// The values of `state` (parsed by hand, for an error that names them).
#[derive(Clone, Copy, ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum StateFilter {
    Active,
    Terminal,
}

impl StateFilter {
    fn parse(s: &str) -> ApiResult<Self> {
        match s {
            "active" => Ok(StateFilter::Active),
            "terminal" => Ok(StateFilter::Terminal),
            other => Err(ApiError::params(format!(
                "state {other:?}: use `active` or `terminal`"
            ))),
        }
    }
}

/// `GET /v1/runs`: records without their events.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<RunRecord>,
}

pub async fn list(
    State(s): State<AppState>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<RunList>> {
    let terminal = match q.state.as_deref().map(StateFilter::parse).transpose()? {
        None => None,
        Some(StateFilter::Active) => Some(false),
        Some(StateFilter::Terminal) => Some(true),
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
    Ok(Json(RunList { runs }))
}

pub async fn show(
    State(s): State<AppState>,
    PathParam(id): PathParam<String>,
) -> ApiResult<Json<RunRecord>> {
    let mut r = s.manager.record(&id)?;
    r.events = s.manager.store().events_after(&id, 0)?;
    Ok(Json(r))
}

/// `POST /v1/runs/{id}/cancel` (the body may be empty).
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Why (logged by the daemon).
    reason: Option<String>,
}

pub async fn cancel(
    State(s): State<AppState>,
    PathParam(id): PathParam<String>,
    body: Bytes,
) -> ApiResult<Json<Cancelled>> {
    let req: CancelBody = if body.iter().all(u8::is_ascii_whitespace) {
        CancelBody::default()
    } else {
        json_body(&body)?
    };
    let c = s.manager.cancel(&id, req.reason).await?;
    Ok(Json(c))
}

/// `GET /v1/runs/{id}/stages`.
#[derive(Serialize, ToSchema)]
pub struct Stages {
    run_id: String,
    stages: Vec<StageEntry>,
}

/// One stage: its full report once the run has ended, its name and status
/// while it runs.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum StageEntry {
    Report(StageReport),
    Live(LiveStage),
}

/// A stage of a run still in progress.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LiveStage {
    name: String,
    status: StageStatus,
}

pub async fn stages(
    State(s): State<AppState>,
    PathParam(id): PathParam<String>,
) -> ApiResult<Json<Stages>> {
    let r = s.manager.record(&id)?;
    let stages = match r.report {
        Some(rep) => rep.stages.into_iter().map(StageEntry::Report).collect(),
        None => r
            .stage_states
            .into_iter()
            .map(|(name, status)| StageEntry::Live(LiveStage { name, status }))
            .collect(),
    };
    Ok(Json(Stages {
        run_id: r.id,
        stages,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TelemetryQuery {
    /// Samples with `seq` at least this (0 when absent).
    #[param(value_type = Option<u64>)]
    from_seq: Option<String>,
    /// Only this stage's samples (404 for a stage the run does not have).
    stage_name: Option<String>,
}

/// `GET /v1/runs/{id}/telemetry`.
#[derive(Serialize, ToSchema)]
pub struct TelemetryPage {
    run_id: String,
    attempt_id: u32,
    /// What to pass as `from_seq` next time.
    next_seq: u64,
    samples: Vec<Sample>,
}

/// `GET /v1/runs/{id}/telemetry?from_seq=N&stage_name=S`.
pub async fn telemetry(
    State(s): State<AppState>,
    PathParam(id): PathParam<String>,
    QueryParams(q): QueryParams<TelemetryQuery>,
) -> ApiResult<Json<TelemetryPage>> {
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
    Ok(Json(TelemetryPage {
        run_id: r.id,
        attempt_id: r.attempt_id,
        next_seq: page.next_seq,
        samples: page.samples,
    }))
}
