//! Port forwarding from inside the sandbox to the host (protocol 3).
//!
//! The host asks the guest to listen on `127.0.0.1:PORT`; every connection
//! a process in the sandbox makes to it is carried over the control channel
//! as `Accepted` / `ConnData` / `ConnClosed` messages under the `Listen`
//! request's id, and the host answers with `ConnSend` / `ConnClose`. This
//! is how agents reach their run's messaging sidecar with networking off:
//! the sidecar never listens on a host port, and only this sandbox's
//! control channel leads to it.
//!
//! Nothing here blocks the control loop: `ConnSend` hands bytes to the
//! connection's writer task through a bounded queue (a connection whose
//! client does not read is closed rather than waited for), and each
//! connection's reads run in their own task. Bounds: [`MAX_CONNS`] open
//! connections (more are closed on accept), [`QUEUE`] chunks queued per
//! connection.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use husk_protocol::{ErrorKind, GuestMsg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::files::reply;
use crate::server::Outbox;

/// Forwarded connections open at once, per session.
pub const MAX_CONNS: usize = 64;
/// Chunks queued for one connection's client before it is closed.
pub const QUEUE: usize = 64;
/// Largest chunk read from a client in one message.
const CHUNK: usize = 16 * 1024;

/// The forwarded connections of one session.
#[derive(Default)]
pub struct Tunnels {
    conns: Mutex<HashMap<u64, mpsc::Sender<Vec<u8>>>>,
    next: AtomicU64,
    listeners: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Tunnels {
    /// Ends every listener and connection (the session is over).
    pub fn shutdown(&self) {
        for l in self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            l.abort();
        }
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Binds `127.0.0.1:port` and forwards its connections under request
    /// `id` until the session ends.
    pub async fn listen(self: &std::sync::Arc<Self>, id: u64, port: u16, out: Outbox) {
        let listener = match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => l,
            Err(e) => {
                let msg = format!("listening on 127.0.0.1:{port}: {e}");
                out.send(id, GuestMsg::Error(reply(ErrorKind::Io, msg)))
                    .await;
                return;
            }
        };
        out.send(id, GuestMsg::Listening { port }).await;
        let me = self.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                me.accepted(id, stream, &out).await;
            }
        });
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }

    async fn accepted(self: &std::sync::Arc<Self>, id: u64, stream: TcpStream, out: &Outbox) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let conn = {
            let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            if conns.len() >= MAX_CONNS {
                return; // dropping the stream closes it
            }
            let conn = self.next.fetch_add(1, Ordering::Relaxed) + 1;
            conns.insert(conn, tx);
            conn
        };
        out.send(id, GuestMsg::Accepted { conn }).await;
        let (mut rd, wr) = stream.into_split();
        tokio::spawn(write_task(wr, rx));
        let (me, out) = (self.clone(), out.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; CHUNK];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let data = buf[..n].to_vec();
                        out.send(id, GuestMsg::ConnData { conn, data }).await;
                    }
                }
            }
            // The client is done sending (or gone); its write side stays
            // open for the answer until the host closes it.
            let _ = &me;
            out.send(id, GuestMsg::ConnClosed { conn }).await;
        });
    }

    /// Bytes from the host for `conn`; never waits. A connection whose
    /// queue is full (its client is not reading) is closed.
    pub fn send(&self, conn: u64, data: Vec<u8>) {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let full = match conns.get(&conn) {
            Some(tx) => tx.try_send(data).is_err(),
            None => false,
        };
        if full {
            conns.remove(&conn);
        }
    }

    /// The host is done with `conn`: its writer finishes and shuts the
    /// write side (the client sees EOF).
    pub fn close(&self, conn: u64) {
        self.forget(conn);
    }

    fn forget(&self, conn: u64) {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&conn);
    }
}

async fn write_task(mut wr: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(data) = rx.recv().await {
        if wr.write_all(&data).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}
