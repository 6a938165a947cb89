//! The daemon's unix socket: where it lives (the first usable of
//! `$XDG_RUNTIME_DIR/husk.sock`, `$TMPDIR/husk-$UID.sock`,
//! `/tmp/husk-$UID.sock`), binding it 0600, replacing a stale one,
//! refusing a live one or a non-socket file, and removing it on shutdown.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("{0} exists and is not a socket; remove it or choose another --socket")]
    NotASocket(PathBuf),
    #[error("a daemon is already listening on {0}")]
    InUse(PathBuf),
    #[error("binding {0}: {1}")]
    Bind(PathBuf, std::io::Error),
}

/// The default socket path (the client and the daemon agree on it).
pub fn default_path() -> PathBuf {
    let uid = rustix::process::getuid().as_raw();
    let usable =
        |d: &Path| d.is_dir() && rustix::fs::access(d, rustix::fs::Access::WRITE_OK).is_ok();
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from)
        && !d.as_os_str().is_empty()
        && usable(&d)
    {
        return d.join("husk.sock");
    }
    if let Some(d) = std::env::var_os("TMPDIR").map(PathBuf::from)
        && !d.as_os_str().is_empty()
        && usable(&d)
    {
        return d.join(format!("husk-{uid}.sock"));
    }
    PathBuf::from(format!("/tmp/husk-{uid}.sock"))
}

/// Binds `path` with mode 0600, replacing a stale socket.
pub async fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(SocketError::NotASocket(path.into()));
        }
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(SocketError::InUse(path.into()));
        }
        std::fs::remove_file(path).map_err(|e| SocketError::Bind(path.into(), e))?;
    }
    // The socket is created 0600: no window in which others could connect.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let bound = UnixListener::bind(path);
    rustix::process::umask(old);
    bound.map_err(|e| SocketError::Bind(path.into(), e))
}

/// Removes the socket when dropped (normal shutdown).
pub struct Cleanup(pub PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
