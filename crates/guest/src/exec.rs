//! Processes: start, stream output under credit, stdin, signals, timeouts,
//! detached processes and waiting for them.
//!
//! Every process is started in its own process group so that a timeout or
//! a signal reaches everything it spawned. Exit statuses come from the
//! [`Reaper`], never from `waitpid` on a single child.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use husk_protocol::{
    ErrorKind, ErrorReply, ExecRequest, ExitStatus, GuestMsg, MAX_OUTPUT_CHUNK, OUTPUT_WINDOW,
    OutputMode, Stream,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{Semaphore, watch};

use crate::files::{Roots, reply};
use crate::oom::{Evidence, MemoryFacts, StderrScan};
use crate::reaper::{ChildExit, Reaper};
use crate::server::Outbox;

/// After a process exits, how long a silent output pipe (held open by a
/// background child) is waited on before the exec is reported finished.
const DRAIN_IDLE: Duration = Duration::from_millis(250);
/// After a process exits, the most time spent draining its output pipes.
const DRAIN_MAX: Duration = Duration::from_secs(5);
/// Finished detached processes remembered for `Wait`.
const MAX_FINISHED: usize = 4096;

/// Base environment of every process; the request's `env` overrides it.
const BASE_ENV: [(&str, &str); 7] = [
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/husk/bin",
    ),
    ("HOME", "/home/sandbox"),
    ("USER", "sandbox"),
    ("LOGNAME", "sandbox"),
    ("SHELL", "/bin/sh"),
    ("LANG", "C.UTF-8"),
    ("TMPDIR", "/tmp"),
];

/// One started process.
pub struct Proc {
    pid: u32,
    stdin: tokio::sync::Mutex<Option<pipe::Sender>>,
    credit: Arc<Semaphore>,
    exit: watch::Receiver<Option<ExitStatus>>,
    /// The host sent SIGKILL itself (so a kill is not the OOM killer's).
    killed_on_request: AtomicBool,
}

/// The table of processes, keyed by the id of the exec that started them.
#[derive(Default)]
pub struct Procs {
    table: Mutex<HashMap<u64, Arc<Proc>>>,
    finished: Mutex<std::collections::VecDeque<u64>>,
}

/// What exec needs from the guest.
pub struct ExecCtx {
    pub procs: Procs,
    pub reaper: Reaper,
    pub roots: Roots,
    /// The uid processes run as when a request names none (`None`: as the
    /// guest itself).
    pub default_user: Option<u32>,
    /// For telling why a process died.
    pub memory: MemoryFacts,
    /// Forwarded ports of this session (ended with it).
    pub tunnels: std::sync::Arc<crate::tunnel::Tunnels>,
}

impl Procs {
    fn get(&self, id: u64) -> Result<Arc<Proc>, ErrorReply> {
        self.table
            .lock()
            .expect("procs lock")
            .get(&id)
            .cloned()
            .ok_or_else(|| {
                reply(
                    ErrorKind::NoSuchProcess,
                    format!("no process started by request {id}"),
                )
            })
    }

    fn remove(&self, id: u64) {
        self.table.lock().expect("procs lock").remove(&id);
    }

    /// Keeps a finished detached process for `Wait`, forgetting the oldest
    /// beyond [`MAX_FINISHED`].
    fn retire(&self, id: u64) {
        let mut fin = self.finished.lock().expect("procs lock");
        fin.push_back(id);
        if fin.len() > MAX_FINISHED
            && let Some(old) = fin.pop_front()
        {
            self.remove(old);
        }
    }

    /// Closes every credit semaphore so output pumps blocked on a vanished
    /// host give up.
    pub fn close_all(&self) {
        for p in self.table.lock().expect("procs lock").values() {
            p.credit.close();
        }
    }
}

/// Runs one exec request to its end, sending every reply to `out`.
pub async fn run(ctx: Arc<ExecCtx>, id: u64, req: ExecRequest, out: Outbox) {
    if let Err(e) = run_inner(&ctx, id, req, &out).await {
        out.send(id, GuestMsg::Error(e)).await;
    }
}

async fn run_inner(
    ctx: &ExecCtx,
    id: u64,
    req: ExecRequest,
    out: &Outbox,
) -> Result<(), ErrorReply> {
    if ctx
        .procs
        .table
        .lock()
        .expect("procs lock")
        .contains_key(&id)
    {
        return Err(reply(
            ErrorKind::InvalidRequest,
            format!("request id {id} already names a process"),
        ));
    }
    let detached = matches!(req.output, OutputMode::Detached { .. });
    let kills_before = ctx.memory.oom_kills();
    let (mut child, stdout, stderr) = spawn(ctx, &req)?;
    // No await between spawn and register: the reaper cannot miss the child.
    let pid = child.id();
    let exit_rx = ctx.reaper.register(pid);
    let stdin = child
        .stdin
        .take()
        .map(|s| pipe::Sender::from_owned_fd(OwnedFd::from(s)));
    let stdin = stdin.transpose().map_err(|e| spawn_err(&req, e))?;
    let (exit_tx, exit_watch) = watch::channel(None);
    let credit = Arc::new(Semaphore::new(OUTPUT_WINDOW as usize));
    let proc = Arc::new(Proc {
        pid,
        stdin: tokio::sync::Mutex::new(stdin),
        credit: credit.clone(),
        exit: exit_watch,
        killed_on_request: AtomicBool::new(false),
    });
    ctx.procs
        .table
        .lock()
        .expect("procs lock")
        .insert(id, proc.clone());
    out.send(id, GuestMsg::Started { pid }).await;

    let (done_tx, done_rx) = watch::channel(None::<Instant>);
    let alloc_failure_said = Arc::new(AtomicBool::new(false));
    let pumps: Vec<_> = [(stdout, Stream::Stdout), (stderr, Stream::Stderr)]
        .into_iter()
        .filter_map(|(fd, stream)| fd.map(|fd| (fd, stream)))
        .map(|(fd, stream)| {
            let pump = Pump {
                id,
                stream,
                credit: credit.clone(),
                out: out.clone(),
                done: done_rx.clone(),
                said: (stream == Stream::Stderr).then(|| alloc_failure_said.clone()),
            };
            tokio::spawn(pump.run(fd))
        })
        .collect();

    let started = Instant::now();
    let (exit, timed_out) = wait_exit(pid, exit_rx, req.timeout_ms).await;
    let _ = done_tx.send(Some(Instant::now()));
    for p in pumps {
        let _ = p.await;
    }
    let evidence = Evidence {
        exit,
        timed_out,
        killed_on_request: proc.killed_on_request.load(Ordering::Relaxed),
        kills_before,
        kills_after: ctx.memory.oom_kills(),
        alloc_failure_said: alloc_failure_said.load(Ordering::Relaxed),
    };
    let status = ExitStatus {
        code: match exit {
            ChildExit::Code(c) => Some(c),
            ChildExit::Signal(_) => None,
        },
        signal: match exit {
            ChildExit::Signal(s) => Some(s),
            ChildExit::Code(_) => None,
        },
        timed_out,
        duration_ms: started.elapsed().as_millis() as u64,
        cause: ctx.memory.cause(&evidence),
    };
    let _ = exit_tx.send(Some(status.clone()));
    if detached {
        ctx.procs.retire(id);
    } else {
        out.send(id, GuestMsg::Finished(status)).await;
        ctx.procs.remove(id);
    }
    Ok(())
}

async fn wait_exit(
    pid: u32,
    exit_rx: tokio::sync::oneshot::Receiver<ChildExit>,
    timeout_ms: Option<u64>,
) -> (ChildExit, bool) {
    let mut exit_rx = exit_rx;
    if let Some(ms) = timeout_ms {
        tokio::select! {
            r = &mut exit_rx => return (r.unwrap_or(ChildExit::Signal(libc::SIGKILL)), false),
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {
                kill_group(pid, libc::SIGKILL);
            }
        }
        return (
            exit_rx.await.unwrap_or(ChildExit::Signal(libc::SIGKILL)),
            true,
        );
    }
    (
        exit_rx.await.unwrap_or(ChildExit::Signal(libc::SIGKILL)),
        false,
    )
}

type Spawned = (std::process::Child, Option<OwnedFd>, Option<OwnedFd>);

fn spawn(ctx: &ExecCtx, req: &ExecRequest) -> Result<Spawned, ErrorReply> {
    let Some(program) = req.argv.first() else {
        return Err(reply(
            ErrorKind::InvalidRequest,
            "exec: empty command".into(),
        ));
    };
    if program.is_empty() {
        return Err(reply(
            ErrorKind::InvalidRequest,
            "exec: empty program name".into(),
        ));
    }
    let cwd = req.cwd.as_deref().unwrap_or("/workspace");
    if !std::path::Path::new(cwd).is_dir() {
        return Err(reply(
            ErrorKind::NotFound,
            format!("working directory {cwd}: not a directory"),
        ));
    }
    let mut cmd = Command::new(program);
    cmd.args(&req.argv[1..])
        .env_clear()
        .current_dir(cwd)
        .process_group(0);
    cmd.envs(BASE_ENV.iter().copied());
    for (k, v) in &req.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(reply(
                ErrorKind::InvalidRequest,
                format!("exec: invalid environment variable name {k:?}"),
            ));
        }
        cmd.env(k, v);
    }
    let user = req.user.or(ctx.default_user);
    if let Some(uid) = user.filter(|u| *u != rustix::process::geteuid().as_raw()) {
        cmd.uid(uid).gid(uid);
        if uid == 0 {
            cmd.env("HOME", "/root")
                .env("USER", "root")
                .env("LOGNAME", "root");
        }
    }
    cmd.stdin(if req.stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    match &req.output {
        OutputMode::Stream => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        OutputMode::Detached { stdout, stderr } => {
            cmd.stdout(sink(ctx, stdout.as_deref())?)
                .stderr(sink(ctx, stderr.as_deref())?);
        }
    }
    let mut child = cmd.spawn().map_err(|e| spawn_err(req, e))?;
    let stdout = child.stdout.take().map(OwnedFd::from);
    let stderr = child.stderr.take().map(OwnedFd::from);
    Ok((child, stdout, stderr))
}

fn sink(ctx: &ExecCtx, path: Option<&str>) -> Result<Stdio, ErrorReply> {
    let Some(path) = path else {
        return Ok(Stdio::null());
    };
    // Confined like a file RPC, never blocking, regular files only: a FIFO
    // left at the path would otherwise hang the guest in open().
    Ok(Stdio::from(ctx.roots.open_output(path)?))
}

fn spawn_err(req: &ExecRequest, e: std::io::Error) -> ErrorReply {
    let program = req.argv.first().map(String::as_str).unwrap_or("");
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            reply(ErrorKind::NotFound, format!("{program}: command not found"))
        }
        std::io::ErrorKind::PermissionDenied => reply(
            ErrorKind::PermissionDenied,
            format!("{program}: permission denied"),
        ),
        _ => reply(
            ErrorKind::SpawnFailed,
            format!("{program}: cannot start: {e}"),
        ),
    }
}

/// Sends `sig` to the process group led by `pid`.
pub fn kill_group(pid: u32, sig: i32) -> bool {
    // SAFETY: kill(2) with a negative pid signals a process group; it takes
    // no pointers and has no memory-safety preconditions.
    unsafe { libc::kill(-(pid as i32), sig) == 0 }
}

/// Streams one output pipe under credit.
struct Pump {
    id: u64,
    stream: Stream,
    credit: Arc<Semaphore>,
    out: Outbox,
    done: watch::Receiver<Option<Instant>>,
    /// Stderr only: set when the output says an allocation failed.
    said: Option<Arc<AtomicBool>>,
}

impl Pump {
    async fn run(mut self, fd: OwnedFd) {
        let Ok(mut rx) = pipe::Receiver::from_owned_fd(fd) else {
            return;
        };
        let mut buf = vec![0u8; MAX_OUTPUT_CHUNK];
        let mut scan = StderrScan::default();
        loop {
            let n = match self.read(&mut rx, &mut buf).await {
                Some(n) if n > 0 => n,
                _ => return,
            };
            if let Some(said) = &self.said {
                scan.feed(&buf[..n]);
                if scan.found() {
                    said.store(true, Ordering::Relaxed);
                }
            }
            match self.credit.acquire_many(n as u32).await {
                Ok(permit) => permit.forget(),
                Err(_) => return,
            }
            let data = buf[..n].to_vec();
            self.out
                .send(
                    self.id,
                    GuestMsg::Output {
                        stream: self.stream,
                        data,
                    },
                )
                .await;
        }
    }

    /// One read; once the process has exited, reads are bounded so a pipe
    /// held open by a background child cannot hold the exec forever.
    async fn read(&mut self, rx: &mut pipe::Receiver, buf: &mut [u8]) -> Option<usize> {
        loop {
            let exited_at = *self.done.borrow();
            if let Some(at) = exited_at {
                let left = DRAIN_MAX.saturating_sub(at.elapsed());
                let wait = left.min(DRAIN_IDLE);
                return tokio::time::timeout(wait, rx.read(buf)).await.ok()?.ok();
            }
            tokio::select! {
                r = rx.read(buf) => return r.ok(),
                _ = self.done.changed() => {}
            }
        }
    }
}

/// `Stdin`: writes all of `data` to the process's stdin.
pub async fn write_stdin(ctx: &ExecCtx, process: u64, data: &[u8]) -> Result<(), ErrorReply> {
    let proc = ctx.procs.get(process)?;
    let mut guard = proc.stdin.lock().await;
    let Some(tx) = guard.as_mut() else {
        return Err(reply(
            ErrorKind::InvalidRequest,
            format!("process {process} has no open stdin"),
        ));
    };
    tx.write_all(data)
        .await
        .map_err(|e| reply(ErrorKind::Io, format!("stdin of process {process}: {e}")))
}

/// `CloseStdin`.
pub async fn close_stdin(ctx: &ExecCtx, process: u64) -> Result<(), ErrorReply> {
    let proc = ctx.procs.get(process)?;
    proc.stdin.lock().await.take();
    Ok(())
}

/// `OutputAck`: returns credit. Unknown processes are ignored (the ack may
/// race with the process's end).
pub fn ack(ctx: &ExecCtx, process: u64, bytes: u32) {
    if let Ok(proc) = ctx.procs.get(process) {
        let room = (OUTPUT_WINDOW as usize).saturating_sub(proc.credit.available_permits());
        proc.credit.add_permits((bytes as usize).min(room));
    }
}

/// `Signal`: to the process group of a running process.
pub fn signal(ctx: &ExecCtx, process: u64, sig: i32) -> Result<(), ErrorReply> {
    let proc = ctx.procs.get(process)?;
    if proc.exit.borrow().is_some() {
        return Err(reply(
            ErrorKind::NoSuchProcess,
            format!("process {process} has already exited"),
        ));
    }
    if !(1..=64).contains(&sig) {
        return Err(reply(
            ErrorKind::InvalidRequest,
            format!("invalid signal number {sig}"),
        ));
    }
    if sig == libc::SIGKILL {
        proc.killed_on_request.store(true, Ordering::Relaxed);
    }
    kill_group(proc.pid, sig);
    Ok(())
}

/// `Wait`: the exit status once the process ends.
pub async fn wait(ctx: &ExecCtx, process: u64) -> Result<ExitStatus, ErrorReply> {
    let proc = ctx.procs.get(process)?;
    let mut rx = proc.exit.clone();
    loop {
        if let Some(status) = rx.borrow_and_update().clone() {
            return Ok(status);
        }
        if rx.changed().await.is_err() {
            return Err(reply(
                ErrorKind::NoSuchProcess,
                format!("process {process} vanished"),
            ));
        }
    }
}
