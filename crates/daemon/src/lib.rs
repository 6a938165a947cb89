//! husk's daemon: the runs HTTP API of the runtime contract (§3),
//! compatible with void-box's v1 API so its orchestrator (void-control)
//! can drive husk, over a 0600 unix socket by default and optionally TCP
//! with a bearer token. Runs, events and artifacts are kept in a SQLite
//! store that survives a crash; runs go through `husk-runtime` exactly as
//! `husk run` does.

pub mod api;
pub mod auth;
pub mod listen;
pub mod manager;
pub mod pool_config;
pub mod pools;
pub mod socket;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    /// A connection must send a complete request head within this.
    pub header_timeout: Duration,
    /// Most open TCP connections (lowered under a low open-files limit).
    pub max_tcp_connections: usize,
    /// Warm pools to keep (`--pool`).
    pub pools: Vec<pools::PoolRequest>,
    /// A pooled sandbox idle this long is replaced.
    pub pool_idle: Duration,
}

impl ServeOptions {
    /// Defaults for everything but the listeners and the data directory.
    pub fn new() -> Self {
        ServeOptions {
            socket: None,
            tcp: None,
            token_file: None,
            data_dir: None,
            max_active_runs: DEFAULT_MAX_ACTIVE_RUNS,
            header_timeout: listen::DEFAULT_HEADER_TIMEOUT,
            max_tcp_connections: listen::DEFAULT_MAX_TCP_CONNECTIONS,
            pools: Vec::new(),
            pool_idle: husk_sandbox::pool::DEFAULT_IDLE_LIMIT,
        }
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self::new()
    }
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
    #[error(transparent)]
    Pool(#[from] pools::PoolError),
}

/// `$HUSK_DATA_DIR`, else `$XDG_DATA_HOME/husk`, else `~/.local/share/husk`.
pub fn default_data_dir() -> PathBuf {
    husk_runtime::store::runs_root()
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| "/tmp/husk".into())
}

/// After the runs have ended at shutdown, how long open connections get to
/// finish their responses.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Serves until SIGINT/SIGTERM; `ready` is called with a line per listener.
///
/// Shutdown: both listeners stop accepting, every active run is cancelled
/// and its final record written (bounded by the largest cancel grace
/// period plus a margin), open connections get [`DRAIN_LIMIT`] to finish,
/// then the socket is removed.
pub async fn serve(opts: ServeOptions, ready: impl Fn(&str)) -> Result<(), ServeError> {
    let data = opts.data_dir.clone().unwrap_or_else(default_data_dir);
    let store = Arc::new(store::Store::open(&data)?);
    let manager = manager::Manager::new(store, opts.max_active_runs)?;
    let pools = pools::start(&opts.pools, opts.pool_idle).await?;
    for s in pools.status() {
        ready(&format!(
            "warm pool: {} {} sandboxes (filling in the background)",
            s.target, s.backend
        ));
    }
    manager.set_pools(pools.clone());
    let path = opts.socket.clone().unwrap_or_else(socket::default_path);
    let fd_limit = listen::raise_fd_limit();
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
        let limits = listen::Limits {
            header_timeout: opts.header_timeout,
            // TCP may use half the descriptors, the unix socket a quarter.
            max_connections: listen::cap_to_fd_limit(opts.max_tcp_connections, fd_limit, 2),
        };
        ready(&format!(
            "listening on tcp://{local} (bearer token from {source}; at most {} connections)",
            limits.max_connections
        ));
        let app = api::router(api::AppState {
            manager: manager.clone(),
            token: Some(Arc::new(token)),
        });
        tasks.spawn(listen::serve(tcp, app, limits, shutdown.clone(), "tcp"));
    }
    let limits = listen::Limits {
        header_timeout: opts.header_timeout,
        max_connections: listen::cap_to_fd_limit(listen::MAX_UNIX_CONNECTIONS, fd_limit, 4),
    };
    tasks.spawn(listen::serve(
        unix,
        unix_app,
        limits,
        shutdown.clone(),
        "unix",
    ));
    shutdown.cancelled().await;
    manager.shutdown().await;
    pools.shutdown().await;
    let drained = tokio::time::timeout(DRAIN_LIMIT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still open after {DRAIN_LIMIT:?}; closing them");
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
