//! Publishing a stage's output: read the output file through the guest's
//! file RPCs, check it (see [`crate::output`]), and copy it and every
//! artifact it names out of the sandbox into the run's artifact directory
//! on the host, building the manifest.
//!
//! Everything a sandbox hands over is bounded: the output file
//! ([`MAX_OUTPUT_BYTES`]), each artifact ([`MAX_ARTIFACT_BYTES`]), the
//! count and total bytes per stage and the total per run (run policy).
//! Only regular files are read (a FIFO or device is refused after a
//! `stat`, before any open). Files are written 0600 and sparsely (runs of
//! zero blocks become holes), so a sparse file in the sandbox stays sparse
//! on the host. Malformed output is kept as `result.malformed` (bounded),
//! so the daemon can say it was malformed rather than missing.

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use husk_sandbox::Sandbox;
use husk_sandbox::protocol::{ErrorKind, FileKind};

use crate::context::RunContext;
use crate::error::RunError;
use crate::output::{self, MAX_OUTPUT_BYTES, OutputError, StructuredOutput};
use crate::record::ArtifactEntry;

/// Largest single artifact copied out of a sandbox.
pub const MAX_ARTIFACT_BYTES: u64 = 256 * 1024 * 1024;
/// File name of a stage's published output in its artifact directory.
pub const RESULT_NAME: &str = "result.json";
/// File name of malformed output bytes kept for diagnosis.
pub const MALFORMED_NAME: &str = "result.malformed";

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

/// Why a file in the sandbox cannot be read as output or artifact.
#[derive(Debug, Clone, PartialEq)]
pub enum Unreadable {
    Missing,
    /// Not a regular file (FIFO, device, directory, socket).
    NotRegular(FileKind),
    /// Larger than the limit.
    TooLarge {
        size: u64,
        limit: u64,
    },
    /// Refused by the guest (e.g. a symlink leading outside the roots).
    Refused(String),
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::Missing => f.write_str("does not exist"),
            Unreadable::NotRegular(k) => {
                let what = match k {
                    FileKind::Dir => "a directory",
                    FileKind::Symlink => "a symlink",
                    _ => "a FIFO, socket or device",
                };
                write!(f, "is {what}, not a regular file")
            }
            Unreadable::TooLarge { size, limit } => {
                write!(f, "is {size} bytes, over the limit of {limit} bytes")
            }
            Unreadable::Refused(why) => write!(f, "cannot be read: {why}"),
        }
    }
}

/// Stats `path` (following symlinks inside the roots) and reads it when it
/// is a regular file of at most `limit` bytes.
pub async fn read_regular(
    sandbox: &Sandbox,
    path: &str,
    limit: u64,
) -> Result<Result<Vec<u8>, Unreadable>, RunError> {
    let st = match sandbox.client().stat(path, true).await {
        Ok(st) => st,
        Err(e) => return classify(e),
    };
    if st.kind != FileKind::File {
        return Ok(Err(Unreadable::NotRegular(st.kind)));
    }
    if st.size > limit {
        return Ok(Err(Unreadable::TooLarge {
            size: st.size,
            limit,
        }));
    }
    match sandbox.client().read_file(path, limit).await {
        Ok(bytes) => Ok(Ok(bytes)),
        Err(husk_sandbox::SandboxError::TooLarge(_)) => Ok(Err(Unreadable::TooLarge {
            size: limit + 1,
            limit,
        })),
        Err(e) => classify(e),
    }
}

fn classify<T>(e: husk_sandbox::SandboxError) -> Result<Result<T, Unreadable>, RunError> {
    match e.guest_kind() {
        Some(ErrorKind::NotFound) => Ok(Err(Unreadable::Missing)),
        Some(_) => Ok(Err(Unreadable::Refused(e.to_string()))),
        None => Err(e.into()),
    }
}

/// Reads the output file of a finished task stage and publishes it.
pub async fn collect(
    ctx: &RunContext,
    sandbox: &Sandbox,
    stage: &str,
    output_file: &str,
) -> Result<Collected, RunError> {
    let bytes = match read_regular(sandbox, output_file, MAX_OUTPUT_BYTES).await? {
        Ok(b) => Some(b),
        Err(Unreadable::Missing) => None,
        Err(why) => {
            return Err(OutputError::Malformed {
                path: output_file.into(),
                reason: format!("the output file {why}"),
            }
            .into());
        }
    };
    let parsed = match output::parse(output_file, stage, bytes.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            if let (Some(raw), OutputError::Malformed { .. }) = (&bytes, &e) {
                keep_malformed(ctx, stage, raw)?;
            }
            return Err(e.into());
        }
    };
    publish(ctx, sandbox, stage, bytes.unwrap_or_default(), parsed).await
}

/// Saves checked output `raw` (parsed as `parsed`) and copies the
/// artifacts it names, replacing what the stage published before.
pub async fn publish(
    ctx: &RunContext,
    sandbox: &Sandbox,
    stage: &str,
    raw: Vec<u8>,
    parsed: StructuredOutput,
) -> Result<Collected, RunError> {
    let limits = &ctx.policy;
    if parsed.artifacts.len() > limits.max_artifacts_per_stage as usize {
        return Err(RunError::Agent(format!(
            "the output names {} artifacts; at most {} per stage (policy.max_artifacts_per_stage)",
            parsed.artifacts.len(),
            limits.max_artifacts_per_stage
        )));
    }
    let stage_dir = stage_dir(ctx, stage)?;
    let mut copies = Vec::new();
    let mut stage_bytes = raw.len() as u64;
    for a in &parsed.artifacts {
        let path = if a.path.starts_with('/') {
            a.path.clone()
        } else {
            format!("/workspace/{}", a.path)
        };
        let per_file = MAX_ARTIFACT_BYTES.min(
            limits
                .max_artifact_bytes_per_stage
                .saturating_sub(stage_bytes),
        );
        let data = match read_regular(sandbox, &path, per_file).await? {
            Ok(d) => d,
            Err(Unreadable::TooLarge { size, .. }) if size <= MAX_ARTIFACT_BYTES => {
                return Err(RunError::Agent(format!(
                    "artifact `{}` ({path}): the stage's artifacts exceed {} bytes \
                     (policy.max_artifact_bytes_per_stage)",
                    a.name, limits.max_artifact_bytes_per_stage
                )));
            }
            Err(why) => {
                return Err(RunError::Agent(format!(
                    "artifact `{}`: the output names {path}, which {why}",
                    a.name
                )));
            }
        };
        stage_bytes += data.len() as u64;
        copies.push((a, data));
    }
    ctx.reserve_artifact_bytes(stage, stage_bytes)?;
    save(&stage_dir.join(RESULT_NAME), &raw)?;
    let _ = std::fs::remove_file(stage_dir.join(MALFORMED_NAME));
    let mut manifest = vec![ArtifactEntry {
        name: RESULT_NAME.into(),
        stage: stage.into(),
        media_type: "application/json".into(),
        size_bytes: raw.len() as u64,
        retrieval_path: format!("/v1/runs/{}/stages/{stage}/output-file", ctx.run_id),
    }];
    for (a, data) in copies {
        save(&stage_dir.join(&a.name), &data)?;
        manifest.push(ArtifactEntry {
            name: a.name.clone(),
            stage: stage.into(),
            media_type: a.media_type.clone(),
            size_bytes: data.len() as u64,
            retrieval_path: format!(
                "/v1/runs/{}/stages/{stage}/artifacts/{}",
                ctx.run_id, a.name
            ),
        });
    }
    Ok(Collected {
        output: parsed,
        manifest,
    })
}

/// Keeps the bytes of a malformed output file (already bounded by the
/// read limit) so it can be told apart from a missing one.
pub fn keep_malformed(ctx: &RunContext, stage: &str, raw: &[u8]) -> Result<(), RunError> {
    let dir = stage_dir(ctx, stage)?;
    save(&dir.join(MALFORMED_NAME), raw)
}

/// Copies a stage's published files to another stage name (a workflow's
/// output step is also served as `main`), with the manifest to match.
pub fn alias(
    ctx: &RunContext,
    entries: &[ArtifactEntry],
    from: &str,
    to: &str,
) -> Result<Vec<ArtifactEntry>, RunError> {
    if from == to {
        return Ok(Vec::new());
    }
    let (src, dst) = (stage_dir(ctx, from)?, stage_dir(ctx, to)?);
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| e.stage == from) {
        let data = std::fs::read(src.join(&e.name)).map_err(|err| io(&src.join(&e.name), err))?;
        save(&dst.join(&e.name), &data)?;
        let mut m = e.clone();
        m.stage = to.into();
        m.retrieval_path =
            m.retrieval_path
                .replacen(&format!("/stages/{from}/"), &format!("/stages/{to}/"), 1);
        out.push(m);
    }
    Ok(out)
}

fn stage_dir(ctx: &RunContext, stage: &str) -> Result<PathBuf, RunError> {
    let dir = ctx.artifacts_dir.join(stage);
    private_dir(&ctx.artifacts_dir)?;
    private_dir(&dir)?;
    Ok(dir)
}

/// Creates `dir` (and parents) and makes it 0700.
fn private_dir(dir: &Path) -> Result<(), RunError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| io(dir, e))
}

const BLOCK: usize = 4096;

/// Writes `data` to `path` atomically (temp file, rename), 0600, leaving
/// holes where whole blocks are zero.
fn save(path: &Path, data: &[u8]) -> Result<(), RunError> {
    let tmp = path.with_extension("husk-tmp");
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        for block in data.chunks(BLOCK) {
            if block.len() == BLOCK && block.iter().all(|b| *b == 0) {
                f.seek(SeekFrom::Current(BLOCK as i64))?;
            } else {
                f.write_all(block)?;
            }
        }
        f.set_len(data.len() as u64)?;
        Ok(())
    };
    write().map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

fn io(path: &Path, e: std::io::Error) -> RunError {
    RunError::Internal(format!("storing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn saves_sparsely_and_privately() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        let mut data = vec![0u8; 10 * 1024 * 1024];
        data[5] = 1;
        data[10 * 1024 * 1024 - 1] = 2;
        save(&p, &data).unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.len(), data.len() as u64);
        assert_eq!(std::fs::read(&p).unwrap(), data);
        // 512-byte blocks actually allocated: far fewer than 10 MiB worth.
        assert!(
            meta.blocks() * 512 < 1024 * 1024,
            "{} blocks",
            meta.blocks()
        );
        assert_eq!(meta.mode() & 0o777, 0o600);
    }
}
