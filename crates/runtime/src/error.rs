//! Why a run or a stage failed, in words a user can act on.

use husk_sandbox::SandboxError;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The spec is invalid (every problem, one per line).
    #[error("{0}")]
    Spec(#[from] husk_spec::SpecErrors),
    /// A skill, tool or agent binary could not be provisioned.
    #[error("{0}")]
    Provision(String),
    /// A credential the spec names is not set on the host.
    #[error(
        "credential {0} is not set in the host environment (the spec's llm.api_key_env names it)"
    )]
    MissingCredential(String),
    /// The sandbox did not start (retried per the run policy).
    #[error("sandbox did not start: {0}")]
    SandboxStart(SandboxError),
    /// The sandbox failed (exec, files).
    #[error("sandbox: {0}")]
    Sandbox(#[from] SandboxError),
    /// The stage ran longer than its timeout.
    #[error("timed out after {0} s")]
    Timeout(u64),
    /// The run was cancelled.
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// The stage's output is missing or malformed.
    #[error("{0}")]
    Output(#[from] crate::output::OutputError),
    /// The agent or command failed.
    #[error("{0}")]
    Agent(String),
    /// Something in husk itself.
    #[error("internal error: {0}")]
    Internal(String),
}
