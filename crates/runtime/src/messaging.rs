//! A run's messaging sidecar, reached from its sandbox.
//!
//! One [`Sidecar`] per run with `agent.messaging.enabled` (its identity from
//! the run input, see docs/messaging.md). It lives on the host, in this
//! process, and never listens on a host port: the agent's sandbox gets a
//! sandbox-local port (`127.0.0.1:`[`SIDECAR_PORT`]) that the guest forwards
//! over the control channel ([`husk_sandbox::tunnel`]), each connection
//! served by the sidecar's HTTP router. So agents reach it with networking
//! off, and nothing else — no other sandbox, no host process — can.

use husk_sandbox::Sandbox;
use husk_sandbox::tunnel::Forward;
use husk_sidecar::Sidecar;

use crate::error::RunError;

/// The sidecar's port inside the sandbox.
pub const SIDECAR_PORT: u16 = 7777;

/// `VOID_SIDECAR_URL` / `HUSK_SIDECAR_URL` as the agent sees them.
pub fn sidecar_url() -> String {
    format!("http://127.0.0.1:{SIDECAR_PORT}")
}

/// The environment that points an agent at its sidecar.
pub fn env() -> Vec<(String, String)> {
    let url = sidecar_url();
    vec![
        ("VOID_SIDECAR_URL".into(), url.clone()),
        ("HUSK_SIDECAR_URL".into(), url),
    ]
}

/// Serves `sidecar` on the sandbox-local port until the returned handle
/// is dropped (or the sandbox stops).
pub async fn attach(sandbox: &Sandbox, sidecar: &Sidecar) -> Result<Forward, RunError> {
    let app = husk_sidecar::router(sidecar.clone());
    husk_sandbox::tunnel::forward(sandbox.client(), SIDECAR_PORT, move |io| {
        let app = app.clone();
        tokio::spawn(async move {
            let _ = husk_sidecar::serve_connection(io, app).await;
        });
    })
    .await
    .map_err(|e| RunError::Provision(format!("serving the messaging sidecar in the sandbox: {e}")))
}
