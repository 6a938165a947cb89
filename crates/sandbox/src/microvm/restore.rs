//! Restoring a sandbox from a checked snapshot (see `snapshot.rs`).
//!
//! QEMU starts with `-incoming defer`, its RAM a private mapping of the
//! snapshot's RAM file (handed over as an open descriptor, so it is the
//! file that was checked), and loads the device state that husk checked
//! and holds in memory from a pipe. husk is connected to the control port
//! before the VM resumes, so the guest never sees its host go away. The
//! first bytes the resumed guest reads are its [`Identity`]; the session
//! handshake follows with the new secret.
//!
//! Every step is bounded (`RESTORE_TIMEOUT` for the whole), and QEMU is
//! killed when anything fails or the caller drops the future.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use husk_protocol::restore::{IDENTITY_ENTROPY_LEN, Identity};
use husk_protocol::{Envelope, Secret, encode_frame};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::qemu::{self, VmMode};
use super::qmp::Qmp;
use super::rundir;
use super::snapshot::{self, Checked};
use crate::error::{Result, SandboxError};

/// Longest a restore may take, start to welcome, before the sandbox boots
/// cold instead.
pub const RESTORE_TIMEOUT: Duration = Duration::from_secs(10);

/// Descriptor numbers in QEMU: the migration stream and the RAM file.
const STATE_FD: i32 = 3;
const RAM_FD: i32 = 4;

/// Restores `checked` into a running sandbox whose guest expects `secret`.
pub async fn restore(
    spec: &qemu::VmSpec<'_>,
    checked: Checked,
    secret: &Secret,
    id: &str,
) -> Result<qemu::Vm> {
    let ram_path = format!("/proc/self/fd/{RAM_FD}");
    let spec = qemu::VmSpec {
        mode: VmMode::Restore {
            ram: Path::new(&ram_path),
        },
        boot_timeout: RESTORE_TIMEOUT,
        ..*spec
    };
    let identity = Identity {
        secret: secret.clone(),
        entropy: entropy()?,
        unix_secs: 0,
        unix_nanos: 0,
        sandbox_id: id.to_string(),
    };
    let run = rundir::create(id)?;
    let result = restore_in(&spec, &run, checked, identity, id).await;
    let _ = std::fs::remove_dir_all(&run);
    result
}

fn entropy() -> Result<Vec<u8>> {
    let mut buf = vec![0u8; IDENTITY_ENTROPY_LEN];
    getrandom::fill(&mut buf).map_err(|e| SandboxError::Config(format!("no randomness: {e}")))?;
    Ok(buf)
}

async fn restore_in(
    spec: &qemu::VmSpec<'_>,
    run: &Path,
    checked: Checked,
    identity: Identity,
    id: &str,
) -> Result<qemu::Vm> {
    let (state_rd, state_wr) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| SandboxError::io("creating a pipe", e.into()))?;
    let ram = OwnedFd::from(checked.ram);
    let (channels, mut fds) = qemu::Channels::new(spec.mode)?;
    fds.extend([(state_rd, STATE_FD), (ram, RAM_FD)]);
    let t = Instant::now();
    let (mut child, stderr) = qemu::spawn(spec, run, id, fds).await?;
    tracing::debug!(ms = super::ms(t), "QEMU spawned");
    let console_path = run.join("console.log");
    let resumed = resume(
        spec,
        channels,
        &mut child,
        checked.state,
        state_wr,
        identity,
    )
    .await;
    let console = std::fs::File::open(&console_path).ok();
    match resumed {
        Ok(client) => Ok(qemu::Vm {
            child,
            client: Some(client),
            console,
            held: Vec::new(),
        }),
        Err(e) => {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
            Err(qemu::explain(e, console, &stderr))
        }
    }
}

async fn resume(
    spec: &qemu::VmSpec<'_>,
    channels: qemu::Channels,
    child: &mut tokio::process::Child,
    state: Vec<u8>,
    state_wr: OwnedFd,
    mut identity: Identity,
) -> Result<crate::client::Client> {
    let started = Instant::now();
    let mut stream = qemu::tokio_stream(channels.control)?;
    let qmp = channels.qmp.ok_or_else(|| SandboxError::StartFailed {
        reason: "a restore without a QMP channel".into(),
        detail: String::new(),
    })?;
    let qmp = qemu::tokio_stream(qmp)?;
    // The pipe may hold less than the state: fed beside the load. QEMU
    // holds the only read end, so the feeder ends when QEMU does.
    let feeder =
        tokio::task::spawn_blocking(move || std::fs::File::from(state_wr).write_all(&state));
    let load = async {
        // One write: capabilities, ignore-shared, then the load from the
        // pipe; QEMU answers in order.
        let uri = format!("fd:{STATE_FD}");
        let mut qmp = Qmp::over_running(
            qmp,
            &[
                snapshot::ignore_shared(),
                ("migrate-incoming", json!({ "uri": uri })),
            ],
        )
        .await?;
        tracing::debug!(ms = super::ms(started), "QMP answered, loading");
        let left = spec.boot_timeout.saturating_sub(started.elapsed());
        snapshot::wait_migration(&mut qmp, left, "loading the device state").await?;
        feeder
            .await
            .map_err(|e| SandboxError::io("feeding the device state", std::io::Error::other(e)))?
            .map_err(|e| SandboxError::io("feeding the device state", e))?;
        qmp.execute("cont").await?;
        Ok::<(), SandboxError>(())
    };
    qemu::while_running(
        child,
        spec.boot_timeout,
        load,
        "loading the device state",
        "while loading the snapshot",
    )
    .await?;
    tracing::debug!(ms = super::ms(started), "device state loaded, VM resumed");
    // The clock is read as late as possible: the guest sets it at once.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    identity.unix_secs = now.as_secs();
    identity.unix_nanos = now.subsec_nanos();
    let mut frame = Vec::new();
    encode_frame(
        &Envelope {
            id: 0,
            msg: identity,
        },
        &mut frame,
    )
    .map_err(SandboxError::Encode)?;
    stream
        .write_all(&frame)
        .await
        .map_err(|e| SandboxError::io("sending the identity", e))?;
    let client = qemu::handshake(spec, stream, child, started).await?;
    tracing::debug!(ms = super::ms(started), "handshake done");
    Ok(client)
}
