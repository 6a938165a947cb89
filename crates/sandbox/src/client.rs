//! The host end of the control channel.
//!
//! One [`Client`] owns one byte stream to a guest and multiplexes any number
//! of concurrent calls over it: each call gets a fresh request id and a
//! private queue that the reader task fills with the guest's replies for that
//! id. Cloning a client is cheap; all clones share the stream.
//!
//! Every wait on the guest ends: a request that cannot be encoded fails at
//! once (it is encoded before it is queued), calls the guest answers at once
//! (file RPCs, stat, ping, signal, the start of an exec) fail with
//! [`SandboxError::Timeout`] after [`Client::rpc_timeout`], and a closed
//! channel fails every call. What may legitimately take long (a process's
//! output, `wait`, stdin a process is slow to read) is bounded by the
//! process (its `timeout_ms`) and cancellable: every future here may be
//! dropped, and [`Process::next`] loses nothing when it is.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use husk_protocol::{
    DirEntry, Envelope, ExecRequest, ExitStatus, FileStat, FrameReader, GuestMsg, Hello, HostMsg,
    MAX_DATA_CHUNK, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN, Secret, Stream, Welcome, WriteFile,
    encode_frame,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::error::{Result, SandboxError};

type Replies = mpsc::UnboundedReceiver<GuestMsg>;

struct Inner {
    /// Encoded frames for the writer task. Unbounded so that queueing never
    /// waits (which keeps [`Process::next`] cancel-safe); every caller but
    /// output acks waits for its reply, which bounds what can pile up.
    tx: mpsc::UnboundedSender<Vec<u8>>,
    calls: Mutex<Calls>,
    next_id: AtomicU64,
    welcome: Welcome,
    /// [`Client::rpc_timeout`] in milliseconds.
    rpc_timeout_ms: AtomicU64,
}

/// How long the guest gets to answer a call it answers at once (file RPCs,
/// stat, ping, signal, starting an exec) unless
/// [`Client::set_rpc_timeout`] says otherwise.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Calls {
    open: HashMap<u64, mpsc::UnboundedSender<GuestMsg>>,
    /// Set once the stream has ended; new calls fail with it.
    closed: Option<String>,
}

/// Chunks of one file write in flight at once.
pub const WRITE_WINDOW: usize = 8;

/// A connected, authenticated control channel.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("welcome", &self.inner.welcome)
            .finish()
    }
}

/// Removes a call's queue when the call is done (or abandoned).
struct CallGuard {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if let Ok(mut calls) = self.inner.calls.lock() {
            calls.open.remove(&self.id);
        }
    }
}

impl Client {
    /// Performs the handshake on `stream` and starts the reader and writer
    /// tasks. `extra_roots` widens where file RPCs may go.
    pub async fn connect<S>(stream: S, secret: &Secret, extra_roots: Vec<String>) -> Result<Client>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, mut wr) = tokio::io::split(stream);
        let hello = Hello {
            min_version: PROTOCOL_VERSION_MIN,
            max_version: PROTOCOL_VERSION_MAX,
            secret: secret.clone(),
            extra_roots,
        };
        let mut buf = Vec::new();
        encode_frame(
            &Envelope {
                id: 0,
                msg: HostMsg::Hello(hello),
            },
            &mut buf,
        )
        .map_err(|e| SandboxError::Protocol(e.to_string()))?;
        wr.write_all(&buf)
            .await
            .map_err(|e| SandboxError::Closed(format!("sending hello: {e}")))?;
        let mut frames = FrameReader::new(rd);
        let welcome = match frames.read::<GuestMsg>().await {
            Ok(Some(Envelope {
                msg: GuestMsg::Welcome(w),
                ..
            })) => w,
            Ok(Some(Envelope {
                msg: GuestMsg::Rejected { reason },
                ..
            })) => {
                return Err(SandboxError::Rejected(reason));
            }
            Ok(Some(other)) => {
                return Err(SandboxError::Protocol(format!(
                    "expected Welcome, got {:?}",
                    other.msg
                )));
            }
            Ok(None) => {
                return Err(SandboxError::Closed(
                    "guest closed the channel during the handshake".into(),
                ));
            }
            Err(e) => return Err(SandboxError::Closed(format!("handshake: {e}"))),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            tx,
            calls: Mutex::new(Calls::default()),
            next_id: AtomicU64::new(1),
            welcome,
            rpc_timeout_ms: AtomicU64::new(DEFAULT_RPC_TIMEOUT.as_millis() as u64),
        });
        tokio::spawn(write_loop(wr, rx));
        tokio::spawn(read_loop(frames, inner.clone()));
        Ok(Client { inner })
    }

    /// What the guest said about itself in the handshake.
    pub fn welcome(&self) -> &Welcome {
        &self.inner.welcome
    }

    /// How long the guest gets to answer a call it answers at once.
    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.rpc_timeout_ms.load(Ordering::Relaxed))
    }

    /// Sets [`Client::rpc_timeout`] for this client and all its clones.
    pub fn set_rpc_timeout(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.inner.rpc_timeout_ms.store(ms, Ordering::Relaxed);
    }

    /// Whether the control channel has ended.
    pub fn is_closed(&self) -> bool {
        self.inner
            .calls
            .lock()
            .map(|c| c.closed.is_some())
            .unwrap_or(true)
    }

    fn open_call(&self) -> Result<(u64, Replies, CallGuard)> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut calls = self.inner.calls.lock().expect("calls lock");
        if let Some(reason) = &calls.closed {
            return Err(SandboxError::Closed(reason.clone()));
        }
        calls.open.insert(id, tx);
        Ok((
            id,
            rx,
            CallGuard {
                inner: self.inner.clone(),
                id,
            },
        ))
    }

    /// Encodes and queues one frame. A frame that cannot be encoded (over
    /// the size limit) is refused here, to its caller, instead of being
    /// dropped by the writer with its caller left waiting for a reply.
    fn send(&self, id: u64, msg: HostMsg) -> Result<()> {
        let mut frame = Vec::new();
        encode_frame(&Envelope { id, msg }, &mut frame).map_err(SandboxError::Encode)?;
        self.inner.tx.send(frame).map_err(|_| self.closed_error())
    }

    fn closed_error(&self) -> SandboxError {
        let calls = self.inner.calls.lock().expect("calls lock");
        SandboxError::Closed(
            calls
                .closed
                .clone()
                .unwrap_or_else(|| "control channel closed".into()),
        )
    }

    async fn recv(&self, rx: &mut Replies) -> Result<GuestMsg> {
        match rx.recv().await {
            Some(GuestMsg::Error(e)) => Err(SandboxError::Guest(e)),
            Some(msg) => Ok(msg),
            None => Err(self.closed_error()),
        }
    }

    /// One request, one reply, however long the reply takes.
    async fn call(&self, msg: HostMsg) -> Result<GuestMsg> {
        let (id, mut rx, _guard) = self.open_call()?;
        self.send(id, msg)?;
        self.recv(&mut rx).await
    }

    /// `fut` (a wait for a reply the guest gives at once), bounded by
    /// [`Client::rpc_timeout`].
    async fn bounded<T>(
        &self,
        what: impl FnOnce() -> String,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let after = self.rpc_timeout();
        match tokio::time::timeout(after, fut).await {
            Ok(r) => r,
            Err(_) => Err(SandboxError::Timeout {
                what: what(),
                after,
            }),
        }
    }

    /// One request answered at once, bounded by [`Client::rpc_timeout`].
    async fn call_bounded(&self, what: impl FnOnce() -> String, msg: HostMsg) -> Result<GuestMsg> {
        self.bounded(what, self.call(msg)).await
    }

    async fn call_done(&self, msg: HostMsg) -> Result<()> {
        match self.call(msg).await? {
            GuestMsg::Done => Ok(()),
            other => Err(unexpected("Done", &other)),
        }
    }

    async fn call_done_bounded(&self, what: impl FnOnce() -> String, msg: HostMsg) -> Result<()> {
        match self.call_bounded(what, msg).await? {
            GuestMsg::Done => Ok(()),
            other => Err(unexpected("Done", &other)),
        }
    }

    /// Starts a process. Streamed processes yield their output through the
    /// returned [`Process`]; detached ones are collected with [`Client::wait`].
    pub async fn exec(&self, req: &ExecRequest) -> Result<Process> {
        let (id, mut rx, guard) = self.open_call()?;
        self.send(id, HostMsg::Exec(req.clone()))?;
        let program = || {
            let name = req.argv.first().map(String::as_str).unwrap_or("");
            format!("the start of {name:?}")
        };
        match self.bounded(program, self.recv(&mut rx)).await? {
            GuestMsg::Started { pid } => Ok(Process {
                client: self.clone(),
                id,
                pid,
                rx,
                _guard: guard,
            }),
            other => Err(unexpected("Started", &other)),
        }
    }

    /// Listens on `127.0.0.1:port` inside the sandbox; connections to it
    /// arrive as [`ListenEvent`]s (protocol 3). See [`crate::tunnel`].
    pub async fn listen(&self, port: u16) -> Result<Listener> {
        if self.inner.welcome.version < 3 {
            return Err(SandboxError::Protocol(format!(
                "port forwarding needs protocol 3; the guest speaks {}",
                self.inner.welcome.version
            )));
        }
        let (id, mut rx, guard) = self.open_call()?;
        self.send(id, HostMsg::Listen { port })?;
        let what = || format!("listening on port {port}");
        match self.bounded(what, self.recv(&mut rx)).await? {
            GuestMsg::Listening { .. } => Ok(Listener {
                client: self.clone(),
                rx,
                _guard: guard,
            }),
            other => Err(unexpected("Listening", &other)),
        }
    }

    /// Runs a streamed process to its end and collects its output, keeping at
    /// most `limit` bytes of each stream (the rest is counted, not kept).
    pub async fn run(&self, req: &ExecRequest, limit: usize) -> Result<Output> {
        let mut p = self.exec(req).await?;
        let mut out = Output::default();
        loop {
            match p.next().await? {
                ProcessEvent::Stdout(d) => keep(&mut out.stdout, &mut out.truncated, d, limit),
                ProcessEvent::Stderr(d) => keep(&mut out.stderr, &mut out.truncated, d, limit),
                ProcessEvent::Exit(status) => {
                    out.status = status;
                    return Ok(out);
                }
            }
        }
    }

    /// Waits for a process (detached or not) to end.
    pub async fn wait(&self, process: u64) -> Result<ExitStatus> {
        match self.call(HostMsg::Wait { process }).await? {
            GuestMsg::Finished(s) => Ok(s),
            GuestMsg::Exited(s) => Ok(s.into()),
            other => Err(unexpected("Exited", &other)),
        }
    }

    /// Writes to a running process's stdin (it must have been started with
    /// `stdin: true`).
    pub async fn write_stdin(&self, process: u64, data: &[u8]) -> Result<()> {
        for chunk in data.chunks(MAX_DATA_CHUNK) {
            self.call_done(HostMsg::Stdin {
                process,
                data: chunk.to_vec(),
            })
            .await?;
        }
        Ok(())
    }

    /// Closes a running process's stdin.
    pub async fn close_stdin(&self, process: u64) -> Result<()> {
        self.call_done(HostMsg::CloseStdin { process }).await
    }

    /// Signals a running process's process group.
    pub async fn signal(&self, process: u64, signal: i32) -> Result<()> {
        let what = || format!("signal {signal} to process {process}");
        self.call_done_bounded(what, HostMsg::Signal { process, signal })
            .await
    }

    /// Reads a whole file, refusing files over `limit` bytes.
    pub async fn read_file(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        loop {
            let msg = HostMsg::ReadFile {
                path: path.into(),
                offset: data.len() as u64,
                len: MAX_DATA_CHUNK as u32,
            };
            let what = || format!("a read of {path}");
            match self.call_bounded(what, msg).await? {
                GuestMsg::FileData { data: chunk, eof } => {
                    data.extend_from_slice(&chunk);
                    if data.len() as u64 > limit {
                        return Err(SandboxError::TooLarge(format!(
                            "{path}: larger than {limit} bytes"
                        )));
                    }
                    if eof || chunk.is_empty() {
                        return Ok(data);
                    }
                }
                other => return Err(unexpected("FileData", &other)),
            }
        }
    }

    /// Writes a whole file (created with `mode`, truncated to `data`).
    /// Up to [`WRITE_WINDOW`] chunks are in flight at once, so a large file
    /// streams instead of paying one round trip per chunk; the guest
    /// applies them in order, and the last one sets the final length.
    pub async fn write_file(&self, path: &str, data: &[u8], mode: u32) -> Result<()> {
        let mut in_flight = std::collections::VecDeque::new();
        let mut offset = 0usize;
        loop {
            let end = (offset + MAX_DATA_CHUNK).min(data.len());
            let last = end == data.len();
            let chunk = WriteFile {
                path: path.into(),
                offset: offset as u64,
                data: data[offset..end].to_vec(),
                mode,
                truncate: last,
            };
            let what = {
                let path = path.to_string();
                move || format!("a write to {path}")
            };
            if offset == 0 && !last {
                // The first chunk creates the file: let it land alone.
                self.call_done_bounded(what, HostMsg::WriteFile(chunk))
                    .await?;
            } else {
                let client = self.clone();
                in_flight.push_back(tokio::spawn(async move {
                    client
                        .call_done_bounded(what, HostMsg::WriteFile(chunk))
                        .await
                }));
            }
            if in_flight.len() >= WRITE_WINDOW || last {
                while let Some(h) = in_flight.pop_front() {
                    h.await
                        .map_err(|e| SandboxError::Protocol(format!("write task: {e}")))??;
                    if in_flight.len() < WRITE_WINDOW && !last {
                        break;
                    }
                }
            }
            if last {
                return Ok(());
            }
            offset = end;
        }
    }

    pub async fn stat(&self, path: &str, follow_symlinks: bool) -> Result<FileStat> {
        let msg = HostMsg::Stat {
            path: path.into(),
            follow_symlinks,
        };
        match self
            .call_bounded(|| format!("a stat of {path}"), msg)
            .await?
        {
            GuestMsg::Stat(s) => Ok(s),
            other => Err(unexpected("Stat", &other)),
        }
    }

    /// `mkdir -p` with mode 0755.
    pub async fn mkdir_p(&self, path: &str) -> Result<()> {
        let msg = HostMsg::MakeDir {
            path: path.into(),
            mode: 0o755,
        };
        self.call_done_bounded(|| format!("mkdir -p {path}"), msg)
            .await
    }

    pub async fn list_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let msg = HostMsg::ListDir { path: path.into() };
        match self
            .call_bounded(|| format!("a listing of {path}"), msg)
            .await?
        {
            GuestMsg::Entries(e) => Ok(e),
            other => Err(unexpected("Entries", &other)),
        }
    }

    /// One round trip.
    pub async fn ping(&self) -> Result<()> {
        match self.call_bounded(|| "ping".into(), HostMsg::Ping).await? {
            GuestMsg::Pong => Ok(()),
            other => Err(unexpected("Pong", &other)),
        }
    }

    /// Asks the guest to kill everything and end.
    pub async fn shutdown(&self) -> Result<()> {
        self.call_done(HostMsg::Shutdown).await
    }
}

fn unexpected(want: &str, got: &GuestMsg) -> SandboxError {
    let name = format!("{got:?}");
    let name: String = name.chars().take(80).collect();
    SandboxError::Protocol(format!("expected {want}, got {name}"))
}

fn keep(buf: &mut Vec<u8>, truncated: &mut bool, data: Vec<u8>, limit: usize) {
    let room = limit.saturating_sub(buf.len());
    if data.len() > room {
        *truncated = true;
    }
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

/// Collected output of a finished process.
#[derive(Debug, Default, Clone)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: ExitStatus,
    /// Some output went past the collector's limit and was dropped.
    pub truncated: bool,
}

/// What happened on a forwarded port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenEvent {
    Accepted(u64),
    Data(u64, Vec<u8>),
    /// The client closed its side (or the connection broke).
    Closed(u64),
}

/// A port the guest forwards to this client ([`Client::listen`]).
pub struct Listener {
    client: Client,
    rx: Replies,
    _guard: CallGuard,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").finish()
    }
}

impl Listener {
    /// The next event; an error when the channel closes. Cancel-safe.
    pub async fn next(&mut self) -> Result<ListenEvent> {
        match self.client.recv(&mut self.rx).await? {
            GuestMsg::Accepted { conn } => Ok(ListenEvent::Accepted(conn)),
            GuestMsg::ConnData { conn, data } => Ok(ListenEvent::Data(conn, data)),
            GuestMsg::ConnClosed { conn } => Ok(ListenEvent::Closed(conn)),
            other => Err(unexpected("a forwarded-port event", &other)),
        }
    }

    /// The control client, for sending to connections.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Client {
    /// Bytes for forwarded connection `conn` (no reply; queued at once).
    pub fn conn_send(&self, conn: u64, data: Vec<u8>) -> Result<()> {
        self.send(0, HostMsg::ConnSend { conn, data })
    }

    /// Closes forwarded connection `conn`.
    pub fn conn_close(&self, conn: u64) -> Result<()> {
        self.send(0, HostMsg::ConnClose { conn })
    }
}

/// What a running process produced next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(ExitStatus),
}

/// A process started by [`Client::exec`].
pub struct Process {
    client: Client,
    id: u64,
    pid: u32,
    rx: Replies,
    _guard: CallGuard,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("id", &self.id)
            .field("pid", &self.pid)
            .finish()
    }
}

impl Process {
    /// The handle other calls use to name this process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its pid inside the sandbox.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The next piece of output, or the exit status (always last).
    ///
    /// Cancel-safe: its only wait is for the next reply, which stays queued
    /// if the future is dropped (as `tokio::select!` does with the branches
    /// that lose), so no output and no exit status is ever lost.
    pub async fn next(&mut self) -> Result<ProcessEvent> {
        match self.client.recv(&mut self.rx).await? {
            GuestMsg::Output { stream, data } => {
                let ack = HostMsg::OutputAck {
                    process: self.id,
                    bytes: data.len() as u32,
                };
                // Credit goes back as soon as the consumer has the bytes;
                // queueing it never waits, so nothing here can be cut
                // short between taking the bytes and returning them.
                let _ = self.client.send(0, ack);
                Ok(match stream {
                    Stream::Stdout => ProcessEvent::Stdout(data),
                    Stream::Stderr => ProcessEvent::Stderr(data),
                })
            }
            GuestMsg::Finished(s) => Ok(ProcessEvent::Exit(s)),
            GuestMsg::Exited(s) => Ok(ProcessEvent::Exit(s.into())),
            other => Err(unexpected("Output or Exited", &other)),
        }
    }

    pub async fn write_stdin(&self, data: &[u8]) -> Result<()> {
        self.client.write_stdin(self.id, data).await
    }

    pub async fn close_stdin(&self) -> Result<()> {
        self.client.close_stdin(self.id).await
    }

    pub async fn signal(&self, signal: i32) -> Result<()> {
        self.client.signal(self.id, signal).await
    }
}

/// Writes queued frames, batching whatever is queued into one write.
async fn write_loop<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(frame) = rx.recv().await {
        buf.extend_from_slice(&frame);
        while buf.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(frame) => buf.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
            return;
        }
        buf.clear();
    }
}

async fn read_loop<R: AsyncRead + Unpin>(mut frames: FrameReader<R>, inner: Arc<Inner>) {
    let reason = loop {
        match frames.read::<GuestMsg>().await {
            Ok(Some(env)) => {
                let calls = inner.calls.lock().expect("calls lock");
                if let Some(tx) = calls.open.get(&env.id) {
                    let _ = tx.send(env.msg);
                }
            }
            Ok(None) => break "the guest closed the control channel".to_string(),
            Err(e) => break format!("control channel failed: {e}"),
        }
    };
    let mut calls = inner.calls.lock().expect("calls lock");
    calls.closed = Some(reason);
    calls.open.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use husk_protocol::{FrameError, MAX_FRAME_LEN, write_frame};
    use tokio::io::{DuplexStream, ReadHalf, WriteHalf};

    /// The guest end of an in-memory channel, after the handshake.
    struct FakeGuest {
        frames: FrameReader<ReadHalf<DuplexStream>>,
        wr: WriteHalf<DuplexStream>,
    }

    impl FakeGuest {
        async fn read(&mut self) -> Envelope<HostMsg> {
            self.frames.read().await.unwrap().unwrap()
        }

        async fn send(&mut self, id: u64, msg: GuestMsg) {
            write_frame(&mut self.wr, &Envelope { id, msg })
                .await
                .unwrap();
        }
    }

    /// A client connected to a fake guest over a pipe of `buf` bytes.
    async fn connected(buf: usize) -> (Client, FakeGuest) {
        let (host, guest) = tokio::io::duplex(buf);
        let guest = tokio::spawn(async move {
            let (rd, wr) = tokio::io::split(guest);
            let mut g = FakeGuest {
                frames: FrameReader::new(rd),
                wr,
            };
            let hello = g.read().await;
            assert!(matches!(hello.msg, HostMsg::Hello(_)), "{hello:?}");
            let welcome = Welcome {
                version: PROTOCOL_VERSION_MAX,
                agent_version: "fake".into(),
                kernel: "fake".into(),
                uid: 1000,
            };
            g.send(hello.id, GuestMsg::Welcome(welcome)).await;
            g
        });
        let client = Client::connect(host, &Secret([7; 32]), Vec::new())
            .await
            .unwrap();
        (client, guest.await.unwrap())
    }

    /// Fails the test instead of hanging it.
    async fn within_20s<T>(fut: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(20), fut)
            .await
            .expect("the call never returned")
    }

    #[tokio::test]
    async fn requests_too_large_to_encode_fail_instead_of_waiting_forever() {
        let (client, mut guest) = connected(64 * 1024).await;
        let huge = "x".repeat(MAX_FRAME_LEN + 1);
        let err = within_20s(client.exec(&ExecRequest::new(["echo", huge.as_str()])))
            .await
            .unwrap_err();
        assert!(
            matches!(err, SandboxError::Encode(FrameError::TooLarge { .. })),
            "{err}"
        );
        assert!(
            err.to_string().starts_with("request not sent: frame of"),
            "{err}"
        );
        let long_path = format!("/workspace/{huge}");
        let err = within_20s(client.write_file(&long_path, b"x", 0o644))
            .await
            .unwrap_err();
        assert!(matches!(err, SandboxError::Encode(_)), "{err}");
        // Nothing was sent: the next frame the guest sees is the ping.
        let answer = tokio::spawn(async move {
            let env = guest.read().await;
            assert_eq!(env.msg, HostMsg::Ping);
            guest.send(env.id, GuestMsg::Pong).await;
            guest
        });
        within_20s(client.ping()).await.unwrap();
        answer.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn calls_a_silent_guest_never_answers_time_out() {
        let (client, guest) = connected(1 << 20).await;
        client.set_rpc_timeout(Duration::from_secs(5));
        let timed_out = |r: Result<()>, what: &str| match r {
            Err(SandboxError::Timeout { what: w, after }) => {
                assert!(w.contains(what), "{w}");
                assert_eq!(after, Duration::from_secs(5));
            }
            other => panic!("{what}: expected a timeout, got {other:?}"),
        };
        let c = &client;
        timed_out(
            within_20s(c.stat("/workspace/a", true)).await.map(drop),
            "/workspace/a",
        );
        timed_out(
            within_20s(c.read_file("/workspace/b", 10)).await.map(drop),
            "/workspace/b",
        );
        timed_out(
            within_20s(c.write_file("/workspace/c", b"x", 0o644)).await,
            "/workspace/c",
        );
        let big = vec![0u8; 3 * MAX_DATA_CHUNK];
        timed_out(
            within_20s(c.write_file("/workspace/d", &big, 0o644)).await,
            "/workspace/d",
        );
        timed_out(
            within_20s(c.list_dir("/workspace")).await.map(drop),
            "/workspace",
        );
        timed_out(within_20s(c.mkdir_p("/workspace/e")).await, "/workspace/e");
        timed_out(within_20s(c.ping()).await, "ping");
        timed_out(within_20s(c.signal(3, 15)).await, "signal 15");
        let req = ExecRequest::new(["true"]);
        timed_out(within_20s(c.exec(&req)).await.map(drop), "\"true\"");
        drop(guest);
    }

    /// `Process::next` raced in `select!` against a branch that is always
    /// ready: every time `next()` waits, it is dropped. The fake
    /// guest never reads, so the host's writes back up (as with a guest
    /// that is busy); whatever `next()` had taken when dropped would be
    /// lost if it were not cancel-safe.
    #[tokio::test]
    async fn dropping_next_loses_no_output() {
        const LINES: usize = 3000;
        let (client, mut guest) = connected(4096).await;
        let flood = tokio::spawn(async move {
            let exec = guest.read().await;
            assert!(matches!(exec.msg, HostMsg::Exec(_)), "{exec:?}");
            guest.send(exec.id, GuestMsg::Started { pid: 2 }).await;
            for i in 0..LINES {
                let data = format!("line {i}\n").into_bytes();
                let msg = GuestMsg::Output {
                    stream: Stream::Stdout,
                    data,
                };
                guest.send(exec.id, msg).await;
                // Let the host catch up now and then, so `next()` also
                // finds nothing queued and waits (and is dropped).
                if i % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            let status = ExitStatus {
                code: Some(0),
                ..ExitStatus::default()
            };
            guest.send(exec.id, GuestMsg::Finished(status)).await;
            // Keep the guest's end open (and unread) until the test ends.
            guest
        });
        let mut p = within_20s(client.exec(&ExecRequest::new(["flood"])))
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut dropped = 0usize;
        let status = within_20s(async {
            loop {
                tokio::select! {
                    biased;
                    ev = p.next() => match ev.unwrap() {
                        ProcessEvent::Stdout(d) => got.extend(d),
                        ProcessEvent::Stderr(_) => {}
                        ProcessEvent::Exit(s) => break s,
                    },
                    // Ready at once: a `next()` that waits is dropped.
                    _ = std::future::ready(()) => {
                        dropped += 1;
                        tokio::task::yield_now().await;
                    }
                }
            }
        })
        .await;
        let want: String = (0..LINES).map(|i| format!("line {i}\n")).collect();
        assert_eq!(status.code, Some(0));
        assert!(
            dropped > 0,
            "next() was never dropped: the test proves nothing"
        );
        assert_eq!(String::from_utf8_lossy(&got), want);
        drop(flood.await.unwrap());
    }
}
