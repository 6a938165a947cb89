//! husk's daemon: the runs HTTP API of the runtime contract (§3),
//! compatible with void-box's v1 API so its orchestrator (void-control)
//! can drive husk, over a 0600 unix socket by default and optionally TCP
//! with a bearer token. Runs, events and artifacts are kept in a SQLite
//! store that survives a crash; runs go through `husk-runtime` exactly as
//! `husk run` does.

pub mod api;
pub mod auth;
pub mod manager;
pub mod socket;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use manager::DEFAULT_MAX_ACTIVE_RUNS;

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Unix socket (default: [`socket::default_path`]).
    pub socket: Option<PathBuf>,
    /// Also listen on TCP (requires the bearer token).
    pub tcp: Option<SocketAddr>,
    pub token_file: Option<PathBuf>,
    /// Store and artifacts (default: `$HUSK_DATA_DIR` or
    /// `$XDG_DATA_HOME/husk`).
    pub data_dir: Option<PathBuf>,
    pub max_active_runs: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Socket(#[from] socket::SocketError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Token(#[from] auth::TokenError),
    #[error("listening on {0}: {1}")]
    Tcp(SocketAddr, std::io::Error),
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// `$HUSK_DATA_DIR`, else `$XDG_DATA_HOME/husk`, else `~/.local/share/husk`.
pub fn default_data_dir() -> PathBuf {
    husk_runtime::store::runs_root()
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| "/tmp/husk".into())
}

/// Serves until SIGINT/SIGTERM; `ready` is called with a line per listener.
pub async fn serve(opts: ServeOptions, ready: impl Fn(&str)) -> Result<(), ServeError> {
    let data = opts.data_dir.clone().unwrap_or_else(default_data_dir);
    let store = Arc::new(store::Store::open(&data)?);
    let manager = manager::Manager::new(store, opts.max_active_runs)?;
    let path = opts.socket.clone().unwrap_or_else(socket::default_path);
    let unix = socket::bind(&path).await?;
    let _cleanup = socket::Cleanup(path.clone());
    let shutdown = shutdown_signal();
    let unix_app = api::router(api::AppState {
        manager: manager.clone(),
        token: None,
    });
    ready(&format!(
        "listening on unix:{} (mode 0600); data in {}",
        path.display(),
        data.display()
    ));
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = opts.tcp {
        let (token, source) = auth::resolve(opts.token_file.as_deref())?;
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| ServeError::Tcp(addr, e))?;
        let local = tcp.local_addr().unwrap_or(addr);
        ready(&format!(
            "listening on tcp://{local} (bearer token from {source})"
        ));
        let app = api::router(api::AppState {
            manager: manager.clone(),
            token: Some(Arc::new(token)),
        });
        let sd = shutdown.clone();
        tasks.spawn(async move {
            axum::serve(tcp, app)
                .with_graceful_shutdown(sd.cancelled_owned())
                .await
        });
    }
    let sd = shutdown.clone();
    tasks.spawn(async move {
        axum::serve(unix, unix_app)
            .with_graceful_shutdown(sd.cancelled_owned())
            .await
    });
    shutdown.cancelled().await;
    manager.cancel_all();
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(e)) = r {
            return Err(ServeError::Serve(e));
        }
    }
    Ok(())
}

/// Cancelled on SIGINT or SIGTERM.
fn shutdown_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        t.cancel();
    });
    token
}
