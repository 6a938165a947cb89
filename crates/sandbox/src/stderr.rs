//! The stderr of a helper process (the namespace launcher and the guest,
//! QEMU), kept in memory so that a failed start can quote it. Bounded: only
//! the last [`KEEP`] bytes stay, which is where the reason for a failure is.

use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::process::Child;

/// Bytes of stderr kept.
pub const KEEP: usize = 16 * 1024;

pub type StderrBuf = Arc<Mutex<Vec<u8>>>;

/// Takes the child's stderr pipe and keeps reading it in the background.
pub fn collect(child: &mut Child) -> StderrBuf {
    let buf: StderrBuf = Arc::default();
    if let Some(mut err) = child.stderr.take() {
        let buf = buf.clone();
        tokio::spawn(async move {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = err.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                let mut b = buf.lock().unwrap_or_else(|e| e.into_inner());
                b.extend_from_slice(&chunk[..n]);
                let excess = b.len().saturating_sub(KEEP);
                b.drain(..excess);
            }
        });
    }
    buf
}

/// What was collected so far, as text.
pub fn text(buf: &StderrBuf) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}
