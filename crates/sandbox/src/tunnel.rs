//! A sandbox-local port served by something in this process.
//!
//! [`forward`] asks the guest to listen on `127.0.0.1:PORT` inside the
//! sandbox (protocol 3) and hands each connection made to it, as a
//! [`DuplexStream`], to a function on the host — e.g. an HTTP server
//! (`hyper`) serving a run's messaging sidecar. No host port is opened: the
//! bytes travel over the sandbox's authenticated control channel, so only
//! processes in this sandbox reach the service, with networking off, on
//! either backend.
//!
//! Bounds: the guest keeps at most 64 connections open per session and
//! closes one whose client does not read; here each connection queues at
//! most [`QUEUE`] chunks towards the service before it is closed.

use std::collections::HashMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

use crate::client::{Client, ListenEvent};
use crate::error::Result;

/// Chunks queued towards the service per connection.
pub const QUEUE: usize = 64;
/// Buffer of each connection's in-process pipe.
const PIPE: usize = 64 * 1024;
/// Largest chunk sent to the guest in one message.
const CHUNK: usize = 64 * 1024;

/// A forwarded port; dropping it stops forwarding (connections open on it
/// end when the sandbox stops).
#[derive(Debug)]
pub struct Forward {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards `127.0.0.1:port` in the sandbox of `client` to `serve`, called
/// once per connection with the host end of it.
pub async fn forward<F>(client: &Client, port: u16, serve: F) -> Result<Forward>
where
    F: Fn(DuplexStream) + Send + Sync + 'static,
{
    let mut listener = client.listen(port).await?;
    let task = tokio::spawn(async move {
        let mut conns: HashMap<u64, mpsc::Sender<Vec<u8>>> = HashMap::new();
        while let Ok(ev) = listener.next().await {
            match ev {
                ListenEvent::Accepted(conn) => {
                    let (ours, theirs) = tokio::io::duplex(PIPE);
                    serve(theirs);
                    let (rd, wr) = tokio::io::split(ours);
                    let (tx, rx) = mpsc::channel(QUEUE);
                    tokio::spawn(to_service(wr, rx));
                    tokio::spawn(to_guest(rd, listener.client().clone(), conn));
                    conns.insert(conn, tx);
                }
                ListenEvent::Data(conn, data) => {
                    let full = conns
                        .get(&conn)
                        .is_some_and(|tx| tx.try_send(data).is_err());
                    if full {
                        conns.remove(&conn);
                        let _ = listener.client().conn_close(conn);
                    }
                }
                // The client is done sending: the service sees EOF.
                ListenEvent::Closed(conn) => {
                    conns.remove(&conn);
                }
            }
        }
    });
    Ok(Forward { task })
}

async fn to_service(mut wr: tokio::io::WriteHalf<DuplexStream>, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(data) = rx.recv().await {
        if wr.write_all(&data).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

async fn to_guest(mut rd: tokio::io::ReadHalf<DuplexStream>, client: Client, conn: u64) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if client.conn_send(conn, buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        }
    }
    let _ = client.conn_close(conn);
}
