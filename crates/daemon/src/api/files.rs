//! A stage's output file and artifacts, from the run's directory on disk.
//! Names are checked before any path is built: no separators, no `..`.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::Response;

use super::error::{ApiError, ApiResult, Code};
use super::{AppState, PathParam};
use husk_runtime::collect::{MALFORMED_NAME, RESULT_NAME};

fn check_segment(what: &str, s: &str) -> ApiResult<()> {
    husk_runtime::output::check_artifact_name(s)
        .map_err(|e| ApiError::params(format!("{what}: {e}")))
}

pub async fn output_file(
    State(s): State<AppState>,
    PathParam((id, stage)): PathParam<(String, String)>,
) -> ApiResult<Response> {
    check_segment("stage", &stage)?;
    let r = s.manager.record(&id)?;
    let dir = s.manager.store().runs_dir().join(&id).join(&stage);
    let published = r
        .artifact_publication
        .manifest
        .iter()
        .any(|m| m.stage == stage && m.name == RESULT_NAME);
    let bytes = match published {
        true => tokio::fs::read(dir.join(RESULT_NAME)).await.ok(),
        false => None,
    };
    let Some(bytes) = bytes else {
        return Err(no_output(&r, &id, &stage, &dir).await);
    };
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
    // Only what the manifest lists is served (not, say, kept malformed bytes).
    let bytes = match entry {
        Some(_) => tokio::fs::read(&path).await.ok(),
        None => None,
    };
    let bytes = bytes.ok_or_else(|| {
        if r.status.is_terminal() {
            let msg = format!("run {id} has no artifact {name} in stage {stage}");
            ApiError::new(Code::ArtifactNotFound, msg)
        } else {
            // Not published yet (a task publishes when it ends, a service
            // whenever it writes its output file): ask again later.
            let msg = format!(
                "run {id} is {}; artifact {name} of stage {stage} is not published yet",
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

/// Why a stage has no output to serve: malformed (its bytes were kept),
/// missing, or not published yet.
async fn no_output(
    r: &husk_runtime::RunRecord,
    id: &str,
    stage: &str,
    dir: &std::path::Path,
) -> ApiError {
    if let Ok(meta) = tokio::fs::metadata(dir.join(MALFORMED_NAME)).await {
        let why = r
            .report
            .as_ref()
            .and_then(|rep| rep.stages.iter().find(|s| s.name == stage))
            .and_then(|s| s.error.clone())
            .unwrap_or_else(|| "not JSON, or JSON without `status`".into());
        return ApiError::new(
            Code::StructuredOutputMalformed,
            format!(
                "stage {stage} of run {id} wrote a malformed output file ({} bytes kept): {why}",
                meta.len()
            ),
        );
    }
    let state = if r.status.is_terminal() {
        "has no output file"
    } else {
        "has not published an output file yet"
    };
    ApiError::new(
        Code::StructuredOutputMissing,
        format!("stage {stage} of run {id} {state}"),
    )
}

fn bytes_response(bytes: Vec<u8>, media: &str) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, media)
        .body(Body::from(bytes))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}
