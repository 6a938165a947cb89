//! One control connection: handshake, then a reader loop that dispatches
//! each request to a task, and a writer task that batches replies.
//!
//! The reader loop itself never waits on anything but the channel: work
//! that can take time (processes, stdin, file RPCs) runs in tasks, and file
//! RPCs on tokio's blocking threads, so a slow disk or a pathological file
//! cannot keep `Signal`, `Ping` or a timeout from being served.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use husk_protocol::{
    Envelope, ErrorKind, FrameReader, GuestMsg, Hello, HostMsg, PROTOCOL_VERSION_MAX,
    PROTOCOL_VERSION_MIN, Secret, Welcome, encode_frame, negotiate_version,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::exec::{self, ExecCtx};
use crate::files::{Roots, reply};

/// Replies bound for the host. Cloneable; ordered per sender.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Envelope<GuestMsg>>,
    /// The agreed protocol version (0 before the handshake): replies are
    /// put in the form that version knows.
    version: Arc<AtomicU16>,
}

impl Outbox {
    fn new(tx: mpsc::Sender<Envelope<GuestMsg>>) -> Outbox {
        Outbox {
            tx,
            version: Arc::new(AtomicU16::new(0)),
        }
    }

    pub async fn send(&self, id: u64, msg: GuestMsg) {
        let msg = for_version(msg, self.version.load(Ordering::Relaxed));
        // A closed outbox means the host is gone; the caller's work is moot.
        let _ = self.tx.send(Envelope { id, msg }).await;
    }
}

/// `msg` as a peer speaking protocol `version` may receive it.
fn for_version(msg: GuestMsg, version: u16) -> GuestMsg {
    match msg {
        GuestMsg::Error(mut e) => {
            e.kind = e.kind.for_version(version);
            GuestMsg::Error(e)
        }
        GuestMsg::Finished(status) if version < 2 => GuestMsg::Exited(status.into()),
        other => other,
    }
}

/// Static facts about this guest, sent in the welcome.
pub struct GuestConfig {
    pub secret: Secret,
    /// uid for processes when a request names none (`None`: the guest's own).
    pub default_user: Option<u32>,
    /// Owner for files the guest creates (micro-VM: the sandbox user).
    pub file_owner: Option<(u32, u32)>,
    /// For telling why a process died.
    pub memory: crate::oom::MemoryFacts,
}

/// Why a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The host asked for shutdown.
    Shutdown,
    /// The stream closed or broke (host gone).
    Disconnected,
    /// The handshake failed.
    Rejected(String),
}

/// Serves one connection until it ends.
pub async fn serve<R, W>(reader: R, writer: W, cfg: &GuestConfig) -> SessionEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut frames = FrameReader::new(reader);
    let (tx, rx) = mpsc::channel(256);
    let out = Outbox::new(tx);
    let writer_task = tokio::spawn(write_loop(writer, rx));

    let hello = match frames.read::<HostMsg>().await {
        Ok(Some(Envelope {
            id,
            msg: HostMsg::Hello(h),
        })) => (id, h),
        Ok(Some(env)) => {
            return reject(out, writer_task, env.id, "expected Hello first".into()).await;
        }
        Ok(None) => return SessionEnd::Disconnected,
        Err(e) => return reject(out, writer_task, 0, format!("bad first frame: {e}")).await,
    };
    let (hello_id, hello) = hello;
    let ctx = match handshake(&hello, cfg) {
        Ok((welcome, ctx)) => {
            out.version.store(welcome.version, Ordering::Relaxed);
            out.send(hello_id, GuestMsg::Welcome(welcome)).await;
            Arc::new(ctx)
        }
        Err(reason) => return reject(out, writer_task, hello_id, reason).await,
    };

    let end = loop {
        let env = match frames.read::<HostMsg>().await {
            Ok(Some(env)) => env,
            Ok(None) => break SessionEnd::Disconnected,
            Err(e) => {
                eprintln!("husk-guest: closing control channel: {e}");
                break SessionEnd::Disconnected;
            }
        };
        if let HostMsg::Shutdown = env.msg {
            crate::kill_everything();
            out.send(env.id, GuestMsg::Done).await;
            break SessionEnd::Shutdown;
        }
        dispatch(&ctx, env.id, env.msg, &out).await;
    };
    ctx.procs.close_all();
    ctx.tunnels.shutdown();
    drop(out);
    let _ = writer_task.await;
    end
}

fn handshake(hello: &Hello, cfg: &GuestConfig) -> Result<(Welcome, ExecCtx), String> {
    if !cfg.secret.matches(&hello.secret) {
        return Err("session secret does not match".into());
    }
    let ours = (PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX);
    let Some(version) = negotiate_version(ours, (hello.min_version, hello.max_version)) else {
        return Err(format!(
            "no common protocol version: guest speaks {}..={}, host {}..={}",
            ours.0, ours.1, hello.min_version, hello.max_version
        ));
    };
    let welcome = Welcome {
        version,
        agent_version: env!("CARGO_PKG_VERSION").into(),
        kernel: rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned(),
        uid: rustix::process::geteuid().as_raw(),
    };
    let ctx = ExecCtx {
        procs: Default::default(),
        reaper: crate::reaper(),
        roots: Roots::new(&hello.extra_roots, cfg.file_owner),
        default_user: cfg.default_user,
        memory: cfg.memory,
        tunnels: Default::default(),
    };
    Ok((welcome, ctx))
}

async fn reject(
    out: Outbox,
    writer: tokio::task::JoinHandle<()>,
    id: u64,
    reason: String,
) -> SessionEnd {
    out.send(
        id,
        GuestMsg::Rejected {
            reason: reason.clone(),
        },
    )
    .await;
    drop(out);
    let _ = writer.await;
    SessionEnd::Rejected(reason)
}

async fn dispatch(ctx: &Arc<ExecCtx>, id: u64, msg: HostMsg, out: &Outbox) {
    let done = |r: Result<(), husk_protocol::ErrorReply>| match r {
        Ok(()) => GuestMsg::Done,
        Err(e) => GuestMsg::Error(e),
    };
    let reply_now = match msg {
        HostMsg::Exec(req) => {
            tokio::spawn(exec::run(ctx.clone(), id, req, out.clone()));
            None
        }
        HostMsg::Stdin { process, data } => {
            let (ctx, out) = (ctx.clone(), out.clone());
            tokio::spawn(async move {
                let r = exec::write_stdin(&ctx, process, &data).await;
                out.send(id, done(r)).await;
            });
            None
        }
        HostMsg::CloseStdin { process } => {
            // Waits for a `Stdin` write in progress, which waits for the
            // process to read: never on the loop.
            let (ctx, out) = (ctx.clone(), out.clone());
            tokio::spawn(async move {
                let r = exec::close_stdin(&ctx, process).await;
                out.send(id, done(r)).await;
            });
            None
        }
        HostMsg::OutputAck { process, bytes } => {
            exec::ack(ctx, process, bytes);
            None
        }
        HostMsg::Signal { process, signal } => Some(done(exec::signal(ctx, process, signal))),
        HostMsg::Wait { process } => {
            let (ctx, out) = (ctx.clone(), out.clone());
            tokio::spawn(async move {
                let msg = match exec::wait(&ctx, process).await {
                    Ok(status) => GuestMsg::Finished(status),
                    Err(e) => GuestMsg::Error(e),
                };
                out.send(id, msg).await;
            });
            None
        }
        msg @ (HostMsg::ReadFile { .. }
        | HostMsg::WriteFile(_)
        | HostMsg::Stat { .. }
        | HostMsg::MakeDir { .. }
        | HostMsg::ListDir { .. }) => {
            let (ctx, out) = (ctx.clone(), out.clone());
            tokio::spawn(async move {
                let job = tokio::task::spawn_blocking(move || file_rpc(&ctx.roots, msg));
                let reply_msg = job.await.unwrap_or_else(|e| {
                    GuestMsg::Error(reply(ErrorKind::Io, format!("file operation failed: {e}")))
                });
                out.send(id, reply_msg).await;
            });
            None
        }
        HostMsg::Ping => Some(GuestMsg::Pong),
        HostMsg::Hello(_) => Some(GuestMsg::Error(reply(
            ErrorKind::InvalidRequest,
            "session already established".into(),
        ))),
        HostMsg::Shutdown => None, // handled by the caller
        HostMsg::Listen { port } => {
            let (tunnels, out) = (ctx.tunnels.clone(), out.clone());
            tokio::spawn(async move { tunnels.listen(id, port, out).await });
            None
        }
        HostMsg::ConnSend { conn, data } => {
            ctx.tunnels.send(conn, data);
            None
        }
        HostMsg::ConnClose { conn } => {
            ctx.tunnels.close(conn);
            None
        }
    };
    if let Some(msg) = reply_now {
        out.send(id, msg).await;
    }
}

/// Runs one file RPC (on a blocking thread). File RPCs run concurrently
/// and may finish in any order; each chunk of a write is positional and
/// the last one sets the length, so order does not matter.
fn file_rpc(roots: &Roots, msg: HostMsg) -> GuestMsg {
    let done = |r: Result<(), husk_protocol::ErrorReply>| match r {
        Ok(()) => GuestMsg::Done,
        Err(e) => GuestMsg::Error(e),
    };
    match msg {
        HostMsg::ReadFile { path, offset, len } => match roots.read(&path, offset, len) {
            Ok((data, eof)) => GuestMsg::FileData { data, eof },
            Err(e) => GuestMsg::Error(e),
        },
        HostMsg::WriteFile(w) => done(roots.write(&w)),
        HostMsg::Stat {
            path,
            follow_symlinks,
        } => roots
            .stat(&path, follow_symlinks)
            .map_or_else(GuestMsg::Error, GuestMsg::Stat),
        HostMsg::MakeDir { path, mode } => done(roots.make_dir(&path, mode)),
        HostMsg::ListDir { path } => roots
            .list_dir(&path)
            .map_or_else(GuestMsg::Error, GuestMsg::Entries),
        _ => GuestMsg::Error(reply(
            ErrorKind::InvalidRequest,
            "not a file request".into(),
        )),
    }
}

/// Encodes replies, batching whatever is queued into one write.
async fn write_loop<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Envelope<GuestMsg>>) {
    let mut buf = Vec::with_capacity(128 * 1024);
    while let Some(env) = rx.recv().await {
        encode(&env, &mut buf);
        while buf.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(env) => encode(&env, &mut buf),
                Err(_) => break,
            }
        }
        if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
            return;
        }
        buf.clear();
    }
}

fn encode(env: &Envelope<GuestMsg>, buf: &mut Vec<u8>) {
    if let Err(e) = encode_frame(env, buf) {
        let msg = GuestMsg::Error(reply(
            ErrorKind::TooLarge,
            format!("reply not encodable: {e}"),
        ));
        let _ = encode_frame(&Envelope { id: env.id, msg }, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use husk_protocol::{ExitCause, ExitStatus, ExitStatusV1};

    #[test]
    fn replies_take_the_form_the_agreed_version_knows() {
        let status = ExitStatus {
            code: Some(137),
            cause: ExitCause::OutOfMemory { limit_mb: Some(64) },
            ..ExitStatus::default()
        };
        let v1 = ExitStatusV1 {
            code: Some(137),
            ..ExitStatusV1::default()
        };
        assert_eq!(
            for_version(GuestMsg::Finished(status.clone()), 1),
            GuestMsg::Exited(v1)
        );
        assert_eq!(
            for_version(GuestMsg::Finished(status.clone()), 2),
            GuestMsg::Finished(status)
        );
        let err = |kind| GuestMsg::Error(reply(kind, "x: is a FIFO, not a regular file".into()));
        assert_eq!(
            for_version(err(ErrorKind::NotRegularFile), 1),
            err(ErrorKind::Io)
        );
        assert_eq!(
            for_version(err(ErrorKind::NotRegularFile), 2),
            err(ErrorKind::NotRegularFile)
        );
    }
}
