//! The fake guest: the guest's half of the husk protocol over an
//! in-process stream, answering from a map of files and running
//! [`Script`]s instead of programs. It checks the session secret and
//! speaks protocol version 3 like the real guest; what it cannot do
//! (detached processes, forwarded connections) it refuses with the
//! protocol's own errors.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use husk_sandbox::protocol::{
    DirEntry, Envelope, ErrorKind, ErrorReply, ExecRequest, ExitStatus, FileKind, FileStat,
    FrameReader, GuestMsg, HostMsg, MAX_DATA_CHUNK, OutputMode, PROTOCOL_VERSION_MAX, Secret,
    Stream, Welcome, WriteFile, encode_frame,
};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ExecRecord, Exit, FakeFile, FakeSandbox, Script, Step, lock};

const SIGKILL: i32 = 9;

type Out = mpsc::UnboundedSender<Envelope<GuestMsg>>;

pub(super) struct Guest {
    pub sandbox: Arc<FakeSandbox>,
    pub index: usize,
    pub secret: Secret,
    pub script: Arc<dyn Fn(&ExecRequest) -> Script + Send + Sync>,
    pub execs: Arc<dyn Fn(ExecRecord) + Send + Sync>,
}

impl Guest {
    /// Serves one session until the host goes away, shuts the sandbox
    /// down, or a script crashes it.
    pub async fn serve(self, stream: DuplexStream) {
        let (rd, mut wr) = tokio::io::split(stream);
        let mut frames = FrameReader::new(rd);
        let hello = match frames.read::<HostMsg>().await {
            Ok(Some(Envelope {
                msg: HostMsg::Hello(h),
                ..
            })) => h,
            _ => return,
        };
        let first = if hello.secret.matches(&self.secret) {
            GuestMsg::Welcome(Welcome {
                version: PROTOCOL_VERSION_MAX,
                agent_version: "fake".into(),
                kernel: "fake".into(),
                uid: 1000,
            })
        } else {
            GuestMsg::Rejected {
                reason: "wrong secret".into(),
            }
        };
        let rejected = matches!(first, GuestMsg::Rejected { .. });
        let mut buf = Vec::new();
        if encode_frame(&Envelope { id: 0, msg: first }, &mut buf).is_err()
            || wr.write_all(&buf).await.is_err()
            || rejected
        {
            return;
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<Envelope<GuestMsg>>();
        let end = CancellationToken::new();
        let writer_end = end.clone();
        let writer = tokio::spawn(async move {
            loop {
                let env = tokio::select! {
                    env = rx.recv() => env,
                    _ = writer_end.cancelled() => None,
                };
                let Some(env) = env else { break };
                let mut buf = Vec::new();
                if encode_frame(&env, &mut buf).is_err() || wr.write_all(&buf).await.is_err() {
                    break;
                }
            }
            // Dropping the write half (with the read half) closes the
            // stream: the host sees the sandbox gone.
        });
        let session = Session {
            guest: Arc::new(self),
            out: tx,
            end: end.clone(),
            procs: Arc::new(Mutex::new(HashMap::new())),
        };
        loop {
            let next = tokio::select! {
                n = frames.read::<HostMsg>() => n,
                _ = end.cancelled() => break,
            };
            let Ok(Some(Envelope { id, msg })) = next else {
                break;
            };
            if session.handle(id, msg) == Flow::Stop {
                break;
            }
        }
        end.cancel();
        let _ = writer.await;
        session.guest.sandbox.stopped.store(true, Ordering::SeqCst);
    }
}

#[derive(PartialEq)]
enum Flow {
    Go,
    Stop,
}

struct Session {
    guest: Arc<Guest>,
    out: Out,
    /// Cancelled when the sandbox ends (shutdown or crash).
    end: CancellationToken,
    /// Running processes by exec id: where their signals go.
    procs: Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<i32>>>>,
}

fn error(kind: ErrorKind, message: impl Into<String>) -> GuestMsg {
    GuestMsg::Error(ErrorReply {
        kind,
        message: message.into(),
    })
}

impl Session {
    fn reply(&self, id: u64, msg: GuestMsg) {
        let _ = self.out.send(Envelope { id, msg });
    }

    fn handle(&self, id: u64, msg: HostMsg) -> Flow {
        let sb = &self.guest.sandbox;
        let reply = match msg {
            HostMsg::Exec(req) => {
                self.exec(id, req);
                return Flow::Go;
            }
            HostMsg::Signal { process, signal } => match lock(&self.procs).get(&process) {
                Some(tx) => {
                    let _ = tx.send(signal);
                    GuestMsg::Done
                }
                None => error(ErrorKind::NoSuchProcess, format!("no process {process}")),
            },
            HostMsg::Stdin { .. } | HostMsg::CloseStdin { .. } => GuestMsg::Done,
            HostMsg::OutputAck { .. } | HostMsg::ConnSend { .. } | HostMsg::ConnClose { .. } => {
                return Flow::Go;
            }
            HostMsg::Wait { process } => error(
                ErrorKind::NoSuchProcess,
                format!("no detached process {process} (the fake runs none)"),
            ),
            HostMsg::ReadFile { path, offset, len } => read(sb, &path, offset, len),
            HostMsg::WriteFile(w) => write(sb, w),
            HostMsg::Stat { path, .. } => stat(sb, &path),
            HostMsg::MakeDir { path, .. } => {
                make_dirs(sb, &path);
                GuestMsg::Done
            }
            HostMsg::ListDir { path } => list(sb, &path),
            HostMsg::Ping => GuestMsg::Pong,
            HostMsg::Shutdown => {
                self.reply(id, GuestMsg::Done);
                return Flow::Stop;
            }
            // Listening is accepted; no connection ever arrives.
            HostMsg::Listen { port } => GuestMsg::Listening { port },
            HostMsg::Hello(_) => error(ErrorKind::Unsupported, "already greeted"),
        };
        self.reply(id, reply);
        Flow::Go
    }

    fn exec(&self, id: u64, req: ExecRequest) {
        if req.argv.is_empty() {
            return self.reply(id, error(ErrorKind::InvalidRequest, "empty argv"));
        }
        if !matches!(req.output, OutputMode::Stream) {
            return self.reply(
                id,
                error(
                    ErrorKind::Unsupported,
                    "the fake runs no detached processes",
                ),
            );
        }
        (self.guest.execs)(ExecRecord {
            sandbox: self.guest.index,
            argv: req.argv.clone(),
            env: req.env.clone(),
            timeout_ms: req.timeout_ms,
        });
        let script = (self.guest.script)(&req);
        let (sig_tx, sig_rx) = mpsc::unbounded_channel();
        lock(&self.procs).insert(id, sig_tx);
        self.reply(id, GuestMsg::Started { pid: id as u32 });
        let proc = Proc {
            id,
            out: self.out.clone(),
            sandbox: self.guest.sandbox.clone(),
            end: self.end.clone(),
            signals: sig_rx,
            deadline: req
                .timeout_ms
                .map(|ms| tokio::time::Instant::now() + std::time::Duration::from_millis(ms)),
        };
        let procs = self.procs.clone();
        tokio::spawn(async move {
            proc.run(script).await;
            lock(&procs).remove(&id);
        });
    }
}

/// One scripted process.
struct Proc {
    id: u64,
    out: Out,
    sandbox: Arc<FakeSandbox>,
    end: CancellationToken,
    signals: mpsc::UnboundedReceiver<i32>,
    deadline: Option<tokio::time::Instant>,
}

/// Why a process stopped before its script's end.
enum Stopped {
    Signal(i32),
    TimedOut,
    SandboxGone,
}

impl Proc {
    async fn run(mut self, script: Script) {
        let t0 = Instant::now();
        for step in script.steps {
            if let Err(stopped) = self.step(step).await {
                return self.finish(stopped, t0);
            }
        }
        match script.exit {
            Exit::Code(code) => self.exited(
                ExitStatus {
                    code: Some(code),
                    ..ExitStatus::default()
                },
                t0,
            ),
            Exit::Hang => {
                let stopped = self.interrupted(std::future::pending()).await;
                if let Err(stopped) = stopped {
                    self.finish(stopped, t0);
                }
            }
            Exit::Crash => self.end.cancel(),
        }
    }

    /// Runs `fut` unless a signal, the timeout or the sandbox's end comes
    /// first.
    async fn interrupted(
        &mut self,
        fut: impl std::future::Future<Output = ()>,
    ) -> Result<(), Stopped> {
        let deadline = self.deadline;
        let timeout = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = fut => Ok(()),
            Some(sig) = self.signals.recv() => Err(Stopped::Signal(sig)),
            () = timeout => Err(Stopped::TimedOut),
            () = self.end.cancelled() => Err(Stopped::SandboxGone),
        }
    }

    async fn step(&mut self, step: Step) -> Result<(), Stopped> {
        match step {
            Step::Stdout(data) => self.output(Stream::Stdout, data),
            Step::Stderr(data) => self.output(Stream::Stderr, data),
            Step::Write { path, bytes } => {
                if let Some((dir, _)) = path.rsplit_once('/') {
                    make_dirs(&self.sandbox, dir);
                }
                put(&self.sandbox, &path, bytes, 0o644);
            }
            Step::Sleep(d) => self.interrupted(tokio::time::sleep(d)).await?,
            Step::Meet(b) => {
                self.interrupted(async move {
                    b.wait().await;
                })
                .await?
            }
            Step::AwaitPickedUp(path) => {
                let sb = self.sandbox.clone();
                self.interrupted(async move {
                    loop {
                        let notified = sb.read_notify.notified();
                        tokio::pin!(notified);
                        notified.as_mut().enable();
                        if sb.picked_up(&path) {
                            break;
                        }
                        notified.await;
                    }
                })
                .await?
            }
        }
        // A pending signal ends the process at its next step.
        match self.signals.try_recv() {
            Ok(sig) => Err(Stopped::Signal(sig)),
            Err(_) => Ok(()),
        }
    }

    fn output(&self, stream: Stream, data: Vec<u8>) {
        let _ = self.out.send(Envelope {
            id: self.id,
            msg: GuestMsg::Output { stream, data },
        });
    }

    fn finish(&self, stopped: Stopped, t0: Instant) {
        let status = match stopped {
            Stopped::Signal(sig) => ExitStatus {
                signal: Some(sig),
                ..ExitStatus::default()
            },
            Stopped::TimedOut => ExitStatus {
                signal: Some(SIGKILL),
                timed_out: true,
                ..ExitStatus::default()
            },
            Stopped::SandboxGone => return,
        };
        self.exited(status, t0);
    }

    fn exited(&self, mut status: ExitStatus, t0: Instant) {
        status.duration_ms = t0.elapsed().as_millis() as u64;
        let _ = self.out.send(Envelope {
            id: self.id,
            msg: GuestMsg::Finished(status),
        });
    }
}

fn put(sb: &FakeSandbox, path: &str, bytes: Vec<u8>, mode: u32) {
    let mut files = lock(&sb.files);
    let version = files.get(path).map_or(1, |f| f.version + 1);
    files.insert(
        path.to_string(),
        FakeFile {
            bytes,
            mode,
            version,
        },
    );
}

fn make_dirs(sb: &FakeSandbox, path: &str) {
    let mut dirs = lock(&sb.dirs);
    let mut at = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        at.push('/');
        at.push_str(part);
        dirs.insert(at.clone());
    }
}

fn read(sb: &FakeSandbox, path: &str, offset: u64, len: u32) -> GuestMsg {
    let files = lock(&sb.files);
    let Some(f) = files.get(path) else {
        return not_found(sb, path);
    };
    lock(&sb.reads).insert(path.to_string(), (f.version, false));
    let start = (offset as usize).min(f.bytes.len());
    let end = start
        .saturating_add((len as usize).min(MAX_DATA_CHUNK))
        .min(f.bytes.len());
    GuestMsg::FileData {
        data: f.bytes[start..end].to_vec(),
        eof: end == f.bytes.len(),
    }
}

fn write(sb: &FakeSandbox, w: WriteFile) -> GuestMsg {
    let mut bytes = lock(&sb.files)
        .get(&w.path)
        .map(|f| f.bytes.clone())
        .unwrap_or_default();
    let at = w.offset as usize;
    if bytes.len() < at + w.data.len() {
        bytes.resize(at + w.data.len(), 0);
    }
    bytes[at..at + w.data.len()].copy_from_slice(&w.data);
    if w.truncate {
        bytes.truncate(at + w.data.len());
    }
    put(sb, &w.path, bytes, w.mode);
    GuestMsg::Done
}

fn not_found(sb: &FakeSandbox, path: &str) -> GuestMsg {
    let kind = if lock(&sb.dirs).contains(path) {
        ErrorKind::IsADirectory
    } else {
        ErrorKind::NotFound
    };
    error(kind, format!("{path}: not found in the fake sandbox"))
}

fn stat(sb: &FakeSandbox, path: &str) -> GuestMsg {
    if let Some((_, since)) = lock(&sb.reads).get_mut(path) {
        *since = true;
        sb.read_notify.notify_waiters();
    }
    if let Some(f) = lock(&sb.files).get(path) {
        return GuestMsg::Stat(FileStat {
            kind: FileKind::File,
            size: f.bytes.len() as u64,
            mode: f.mode,
            uid: 1000,
            gid: 1000,
            mtime_ns: i128::from(f.version),
        });
    }
    if lock(&sb.dirs).contains(path) {
        return GuestMsg::Stat(FileStat {
            kind: FileKind::Dir,
            size: 0,
            mode: 0o755,
            uid: 1000,
            gid: 1000,
            mtime_ns: 0,
        });
    }
    error(ErrorKind::NotFound, format!("{path}: not found"))
}

fn list(sb: &FakeSandbox, path: &str) -> GuestMsg {
    let prefix = format!("{}/", path.trim_end_matches('/'));
    fn direct<'a>(prefix: &str, p: &'a str) -> Option<&'a str> {
        p.strip_prefix(prefix).filter(|rest| !rest.contains('/'))
    }
    let mut entries: Vec<DirEntry> = lock(&sb.files)
        .iter()
        .filter_map(|(p, f)| {
            direct(&prefix, p).map(|name| DirEntry {
                name: name.to_string(),
                kind: FileKind::File,
                size: f.bytes.len() as u64,
            })
        })
        .collect();
    entries.extend(lock(&sb.dirs).iter().filter_map(|p| {
        direct(&prefix, p).map(|name| DirEntry {
            name: name.to_string(),
            kind: FileKind::Dir,
            size: 0,
        })
    }));
    if entries.is_empty() && !lock(&sb.dirs).contains(path) {
        return error(ErrorKind::NotFound, format!("{path}: not found"));
    }
    GuestMsg::Entries(entries)
}
