//! The host end of the control channel.
//!
//! One [`Client`] owns one byte stream to a guest and multiplexes any number
//! of concurrent calls over it: each call gets a fresh request id and a
//! private queue that the reader task fills with the guest's replies for that
//! id. Cloning a client is cheap; all clones share the stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
    tx: mpsc::Sender<Envelope<HostMsg>>,
    calls: Mutex<Calls>,
    next_id: AtomicU64,
    welcome: Welcome,
}

#[derive(Default)]
struct Calls {
    open: HashMap<u64, mpsc::UnboundedSender<GuestMsg>>,
    /// Set once the stream has ended; new calls fail with it.
    closed: Option<String>,
}

/// A connected, authenticated control channel.
/// Chunks of one file write in flight at once.
pub const WRITE_WINDOW: usize = 8;

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
        let (tx, rx) = mpsc::channel(256);
        let inner = Arc::new(Inner {
            tx,
            calls: Mutex::new(Calls::default()),
            next_id: AtomicU64::new(1),
            welcome,
        });
        tokio::spawn(write_loop(wr, rx));
        tokio::spawn(read_loop(frames, inner.clone()));
        Ok(Client { inner })
    }

    /// What the guest said about itself in the handshake.
    pub fn welcome(&self) -> &Welcome {
        &self.inner.welcome
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

    async fn send(&self, id: u64, msg: HostMsg) -> Result<()> {
        self.inner
            .tx
            .send(Envelope { id, msg })
            .await
            .map_err(|_| self.closed_error())
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

    /// One request, one reply.
    async fn call(&self, msg: HostMsg) -> Result<GuestMsg> {
        let (id, mut rx, _guard) = self.open_call()?;
        self.send(id, msg).await?;
        self.recv(&mut rx).await
    }

    async fn call_done(&self, msg: HostMsg) -> Result<()> {
        match self.call(msg).await? {
            GuestMsg::Done => Ok(()),
            other => Err(unexpected("Done", &other)),
        }
    }

    /// Starts a process. Streamed processes yield their output through the
    /// returned [`Process`]; detached ones are collected with [`Client::wait`].
    pub async fn exec(&self, req: &ExecRequest) -> Result<Process> {
        let (id, mut rx, guard) = self.open_call()?;
        self.send(id, HostMsg::Exec(req.clone())).await?;
        match self.recv(&mut rx).await? {
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
            GuestMsg::Exited(s) => Ok(s),
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
        self.call_done(HostMsg::Signal { process, signal }).await
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
            match self.call(msg).await? {
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
            if offset == 0 && !last {
                // The first chunk creates the file: let it land alone.
                self.call_done(HostMsg::WriteFile(chunk)).await?;
            } else {
                let client = self.clone();
                in_flight.push_back(tokio::spawn(async move {
                    client.call_done(HostMsg::WriteFile(chunk)).await
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
        match self
            .call(HostMsg::Stat {
                path: path.into(),
                follow_symlinks,
            })
            .await?
        {
            GuestMsg::Stat(s) => Ok(s),
            other => Err(unexpected("Stat", &other)),
        }
    }

    /// `mkdir -p` with mode 0755.
    pub async fn mkdir_p(&self, path: &str) -> Result<()> {
        self.call_done(HostMsg::MakeDir {
            path: path.into(),
            mode: 0o755,
        })
        .await
    }

    pub async fn list_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        match self.call(HostMsg::ListDir { path: path.into() }).await? {
            GuestMsg::Entries(e) => Ok(e),
            other => Err(unexpected("Entries", &other)),
        }
    }

    /// One round trip.
    pub async fn ping(&self) -> Result<()> {
        match self.call(HostMsg::Ping).await? {
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
    pub async fn next(&mut self) -> Result<ProcessEvent> {
        match self.client.recv(&mut self.rx).await? {
            GuestMsg::Output { stream, data } => {
                let ack = HostMsg::OutputAck {
                    process: self.id,
                    bytes: data.len() as u32,
                };
                // Credit goes back as soon as the consumer has the bytes.
                let _ = self
                    .client
                    .inner
                    .tx
                    .send(Envelope { id: 0, msg: ack })
                    .await;
                Ok(match stream {
                    Stream::Stdout => ProcessEvent::Stdout(data),
                    Stream::Stderr => ProcessEvent::Stderr(data),
                })
            }
            GuestMsg::Exited(s) => Ok(ProcessEvent::Exit(s)),
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

async fn write_loop<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Envelope<HostMsg>>) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(env) = rx.recv().await {
        let _ = encode_frame(&env, &mut buf);
        while buf.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(env) => {
                    let _ = encode_frame(&env, &mut buf);
                }
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
