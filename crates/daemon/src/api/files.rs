//! A stage's output file and artifacts, from the run's directory on disk.
//! Names are checked before any path is built: no separators, no `..`.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::Response;

use super::error::{ApiError, ApiResult, Code};
use super::{AppState, PathParam};

fn check_segment(what: &str, s: &str) -> ApiResult<()> {
    husk_runtime::output::check_artifact_name(s)
        .map_err(|e| ApiError::params(format!("{what}: {e}")))
}

pub async fn output_file(
    State(s): State<AppState>,
    PathParam((id, stage)): PathParam<(String, String)>,
) -> ApiResult<Response> {
    check_segment("stage", &stage)?;
    s.manager.record(&id)?;
    let path = s
        .manager
        .store()
        .runs_dir()
        .join(&id)
        .join(&stage)
        .join("result.json");
    let bytes = tokio::fs::read(&path).await.map_err(|_| {
        ApiError::new(
            Code::StructuredOutputMissing,
            format!("stage {stage} of run {id} has no output file"),
        )
    })?;
    let json = serde_json::from_slice::<serde_json::Value>(&bytes).is_ok();
    Ok(bytes_response(
        bytes,
        if json {
            "application/json"
        } else {
            "application/octet-stream"
        },
    ))
}

pub async fn artifact(
    State(s): State<AppState>,
    PathParam((id, stage, name)): PathParam<(String, String, String)>,
) -> ApiResult<Response> {
    check_segment("stage", &stage)?;
    check_segment("artifact name", &name)?;
    let r = s.manager.record(&id)?;
    let entry = r
        .artifact_publication
        .manifest
        .iter()
        .find(|m| m.stage == stage && m.name == name);
    let path = s
        .manager
        .store()
        .runs_dir()
        .join(&id)
        .join(&stage)
        .join(&name);
    let bytes = tokio::fs::read(&path).await.map_err(|_| {
        if r.status.is_terminal() {
            let msg = format!("run {id} has no artifact {name} in stage {stage}");
            ApiError::new(Code::ArtifactNotFound, msg)
        } else {
            // Artifacts are published when their stage ends: ask again later.
            let msg = format!(
                "run {id} is {}; artifacts appear when their stage ends",
                r.status.as_str()
            );
            ApiError::new(Code::ArtifactPublicationIncomplete, msg)
        }
    })?;
    let media = entry
        .map_or("application/octet-stream", |e| e.media_type.as_str())
        .to_string();
    Ok(bytes_response(bytes, &media))
}

fn bytes_response(bytes: Vec<u8>, media: &str) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, media)
        .body(Body::from(bytes))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}
