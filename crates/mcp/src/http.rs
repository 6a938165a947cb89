//! The Streamable HTTP transport (`--http --port N`): rmcp's tower
//! service at `/mcp`, mounted in axum, on 127.0.0.1 only.
//!
//! rmcp does the protocol side (sessions with `Mcp-Session-Id`, SSE or
//! JSON answers, 202 for notifications, `MCP-Protocol-Version` checks,
//! 413 over the body limit). husk-mcp sets the guards: loopback `Host`
//! values only (rmcp's default, against DNS rebinding) and, when a
//! browser sends an `Origin`, only loopback origins (403 otherwise).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::serve::ListenerExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::limits::MAX_MESSAGE_BYTES;
use crate::server::HuskMcp;

/// The endpoint's path.
pub const PATH: &str = "/mcp";

/// Origins accepted when a request carries one (any port).
pub const ALLOWED_ORIGINS: [&str; 3] =
    ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"];

/// The axum app serving `server` at [`PATH`]; cancelling `stop` ends
/// every session and open stream (so a graceful shutdown does not wait
/// on a client's long-lived SSE stream).
pub fn router(server: HuskMcp, stop: CancellationToken) -> axum::Router {
    let config = StreamableHttpServerConfig::default()
        .with_cancellation_token(stop)
        .with_allowed_origins(ALLOWED_ORIGINS)
        .enforce_origin_validation()
        .with_max_request_body_bytes(MAX_MESSAGE_BYTES);
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    axum::Router::new().nest_service(PATH, service)
}

/// Binds 127.0.0.1:`port` (0: any free port).
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await
}

/// Serves until SIGINT or SIGTERM, then ends the MCP sessions and lets
/// open requests finish.
pub async fn serve(listener: TcpListener, server: HuskMcp) -> std::io::Result<()> {
    let stop = CancellationToken::new();
    let app = router(server, stop.clone());
    // Small request/answer pairs (and SSE frames): do not wait for Nagle.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            stop_signal().await;
            stop.cancel();
        })
        .await
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
