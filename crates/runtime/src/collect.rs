//! After a task: read the output file through the guest's file RPCs,
//! check it (see [`crate::output`]), and copy it and every artifact it
//! names out of the sandbox into the run's artifact directory on the host,
//! building the manifest.

use std::path::Path;

use husk_sandbox::Sandbox;
use husk_sandbox::protocol::ErrorKind;

use crate::error::RunError;
use crate::output::{self, MAX_OUTPUT_BYTES, StructuredOutput};
use crate::record::ArtifactEntry;

/// Largest artifact copied out of a sandbox.
pub const MAX_ARTIFACT_BYTES: u64 = 256 * 1024 * 1024;

/// A stage's checked output and its published artifacts.
#[derive(Debug)]
pub struct Collected {
    pub output: StructuredOutput,
    pub manifest: Vec<ArtifactEntry>,
}

/// Reads a file from the sandbox; `None` when it does not exist.
pub async fn read_optional(
    sandbox: &Sandbox,
    path: &str,
    limit: u64,
) -> Result<Option<Vec<u8>>, RunError> {
    match sandbox.client().read_file(path, limit).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.guest_kind() == Some(ErrorKind::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Collects the output and artifacts of `stage` into `dir/<stage>/`.
pub async fn collect(
    sandbox: &Sandbox,
    run_id: &str,
    stage: &str,
    output_file: &str,
    dir: &Path,
) -> Result<Collected, RunError> {
    let bytes = read_optional(sandbox, output_file, MAX_OUTPUT_BYTES).await?;
    let parsed = output::parse(output_file, bytes.as_deref())?;
    let stage_dir = dir.join(stage);
    std::fs::create_dir_all(&stage_dir).map_err(|e| io(&stage_dir, e))?;
    let raw = bytes.unwrap_or_default();
    save(&stage_dir.join("result.json"), &raw)?;
    let mut manifest = vec![ArtifactEntry {
        name: "result.json".into(),
        stage: stage.into(),
        media_type: "application/json".into(),
        size_bytes: raw.len() as u64,
        retrieval_path: format!("/v1/runs/{run_id}/stages/{stage}/output-file"),
    }];
    for a in &parsed.artifacts {
        let path = if a.path.starts_with('/') {
            a.path.clone()
        } else {
            format!("/workspace/{}", a.path)
        };
        let data = read_optional(sandbox, &path, MAX_ARTIFACT_BYTES)
            .await?
            .ok_or_else(|| {
                RunError::Agent(format!(
                    "artifact `{}`: the output names {path}, which does not exist",
                    a.name
                ))
            })?;
        save(&stage_dir.join(&a.name), &data)?;
        manifest.push(ArtifactEntry {
            name: a.name.clone(),
            stage: stage.into(),
            media_type: a.media_type.clone(),
            size_bytes: data.len() as u64,
            retrieval_path: format!("/v1/runs/{run_id}/stages/{stage}/artifacts/{}", a.name),
        });
    }
    Ok(Collected {
        output: parsed,
        manifest,
    })
}

fn save(path: &Path, data: &[u8]) -> Result<(), RunError> {
    let tmp = path.with_extension("husk-tmp");
    std::fs::write(&tmp, data).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

fn io(path: &Path, e: std::io::Error) -> RunError {
    RunError::Internal(format!("storing {}: {e}", path.display()))
}
