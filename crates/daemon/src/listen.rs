//! The accept loops of the daemon's listeners (unix socket and TCP), on
//! hyper's HTTP/1 connection builder rather than `axum::serve`, because a
//! daemon on a network port needs two things `axum::serve` does not give:
//!
//! - a **header read timeout**: a connection that has not sent a complete
//!   request head within it (a half-sent request, or an idle keep-alive
//!   connection) is closed, so idle peers cannot pin file descriptors;
//! - a **cap on open connections per listener**: over it a new connection
//!   is closed at once (the peer sees the connection end without an answer
//!   and may retry), so one listener cannot use up the process's file
//!   descriptors and starve the other (the unix socket keeps answering
//!   while TCP is flooded).
//!
//! Shutdown: the loop stops accepting when the token is cancelled, then
//! waits for the open connections to finish their current response (idle
//! ones are closed). The caller bounds that wait.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Default header read timeout (`--header-timeout-secs`).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on open TCP connections (`--max-tcp-connections`).
pub const DEFAULT_MAX_TCP_CONNECTIONS: usize = 512;
/// Cap on open unix-socket connections (local clients only).
pub const MAX_UNIX_CONNECTIONS: usize = 256;
/// Pause after a failed accept (e.g. out of file descriptors) before the
/// next one, so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// A listener the loop can accept from (tokio's TCP and unix listeners).
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = std::io::Result<Self::Io>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<Self::Io> {
        let (s, _) = tokio::net::TcpListener::accept(self).await?;
        // Small JSON answers: do not wait to coalesce them.
        let _ = s.set_nodelay(true);
        Ok(s)
    }
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<Self::Io> {
        tokio::net::UnixListener::accept(self).await.map(|(s, _)| s)
    }
}

/// Serves `app` on `listener` until `shutdown`, then drains the open
/// connections (unbounded here: the caller bounds it).
pub async fn serve<L: Accept>(
    listener: L,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
    name: &'static str,
) {
    let slots = std::sync::Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        let io = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let io = match io {
            Ok(io) => io,
            Err(e) => {
                tracing::warn!("{name}: accept failed: {e}; retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                "{name}: {} connections open, the limit; closing a new one",
                limits.max_connections
            );
            drop(io);
            continue;
        };
        let svc = TowerToHyperService::new(app.clone());
        let conn = http.serve_connection(TokioIo::new(io), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("{name}: connection ended: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Raises the soft open-files limit to the hard one and returns the soft
/// limit in force (None when it cannot be read or is unlimited).
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (lim.current, lim.maximum)
        && cur < max
    {
        lim.current = Some(max);
        if setrlimit(Resource::Nofile, lim).is_err() {
            lim.current = Some(cur);
        }
    }
    lim.current
}

/// A listener's connection cap, lowered to `share` of the open-files limit
/// so that the caps of all listeners together leave descriptors for the
/// store and the sandboxes.
pub fn cap_to_fd_limit(wanted: usize, fd_limit: Option<u64>, share: u64) -> usize {
    match fd_limit {
        Some(n) => wanted.min((n / share.max(1)).max(1) as usize),
        None => wanted,
    }
    .max(1)
}

#[cfg(test)]
mod tests {
    use super::cap_to_fd_limit;

    #[test]
    fn the_cap_leaves_room_under_a_low_fd_limit() {
        assert_eq!(cap_to_fd_limit(512, Some(1024), 2), 512);
        assert_eq!(cap_to_fd_limit(512, Some(64), 2), 32);
        assert_eq!(cap_to_fd_limit(256, Some(64), 4), 16);
        assert_eq!(cap_to_fd_limit(512, None, 2), 512);
        assert_eq!(cap_to_fd_limit(0, Some(2), 4), 1);
    }
}
