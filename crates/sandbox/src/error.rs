//! Errors of sandboxes and their control channel.

use std::path::PathBuf;

use husk_protocol::{ErrorKind, ErrorReply};

/// Everything that can go wrong starting, using or stopping a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The guest refused a request (bad path, missing program, …).
    #[error("{0}")]
    Guest(ErrorReply),
    /// The control channel is gone: the sandbox died or was stopped.
    #[error("sandbox is gone: {0}")]
    Closed(String),
    /// The guest refused the session (wrong secret, no common version).
    #[error("guest refused the session: {0}")]
    Rejected(String),
    /// The guest sent something the protocol does not allow here.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A required host tool is missing.
    #[error("{tool} not found: {hint}")]
    MissingTool { tool: &'static str, hint: String },
    /// The guest agent binary could not be found.
    #[error("guest agent binary not found (looked at {}); build it with `scripts/build-guest --release` (a static build, which micro-VMs need) or set HUSK_GUEST_BIN", looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    GuestBinaryMissing { looked: Vec<PathBuf> },
    /// The sandbox did not come up.
    #[error("sandbox failed to start: {reason}{}", detail_suffix(detail))]
    StartFailed { reason: String, detail: String },
    /// The sandbox configuration is not usable.
    #[error("invalid sandbox configuration: {0}")]
    Config(String),
    /// This backend cannot run on this host (and why).
    #[error("{backend} backend unavailable: {reason}")]
    Unavailable {
        backend: &'static str,
        reason: String,
    },
    /// A host-side I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// An output limit of a host-side collector was hit.
    #[error("{0}")]
    TooLarge(String),
    /// A request could not be encoded (it is over the frame size limit);
    /// nothing was sent.
    #[error("request not sent: {0}")]
    Encode(#[source] husk_protocol::FrameError),
    /// The guest did not answer a call it answers at once in time (see
    /// `Client::rpc_timeout`).
    #[error("the guest did not answer {what} within {after:?}")]
    Timeout {
        what: String,
        after: std::time::Duration,
    },
}

fn detail_suffix(detail: &str) -> String {
    if detail.trim().is_empty() {
        String::new()
    } else {
        format!("\n--- last output ---\n{}", detail.trim_end())
    }
}

impl SandboxError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SandboxError::Io {
            context: context.into(),
            source,
        }
    }

    /// The guest's error kind, when the guest refused the request.
    pub fn guest_kind(&self) -> Option<ErrorKind> {
        match self {
            SandboxError::Guest(r) => Some(r.kind),
            _ => None,
        }
    }
}

pub type Result<T, E = SandboxError> = std::result::Result<T, E>;
