//! The backend conformance suite (docs/testing.md, layer 2), written once
//! and run against every backend through the public `Backend` API.
//!
//! A backend's test file implements [`Harness`] and expands [`suite!`],
//! which makes one `#[test]` per case. Cases that do not need a fresh
//! sandbox share one per test binary (a VM boot is expensive), so they only
//! ever look at their own files and processes.

#![allow(dead_code)]

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use husk_sandbox::protocol::{ErrorKind, ExecRequest, FileKind, OutputMode};
use husk_sandbox::{Backend, ProcessEvent, Sandbox, SandboxConfig, SandboxError};
use tokio::sync::OnceCell;

/// What a backend's test file provides.
pub trait Harness: Sync + Send + 'static {
    fn backend(&self) -> Result<Arc<dyn Backend>, String>;
    fn config(&self) -> SandboxConfig {
        SandboxConfig::default()
    }
    /// Processes still alive on the host that belonged to the sandbox whose
    /// identity `probe_identity` reported.
    fn leftovers(&self, identity: &str) -> usize;
    /// A command run inside a sandbox whose output identifies it for
    /// [`Harness::leftovers`].
    fn identity_command(&self) -> Vec<String>;
}

/// Host processes living in the pid namespace `identity` (the link text
/// of `/proc/<pid>/ns/pid`): what is left of a namespace sandbox.
pub fn processes_in_pid_namespace(identity: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read_link(e.path().join("ns/pid"))
                .map(|l| l.to_string_lossy() == identity)
                .unwrap_or(false)
        })
        .count()
}

pub static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
});

static SHARED: OnceCell<Sandbox> = OnceCell::const_new();

/// Runs a case, skipping (with the reason printed) only when the backend
/// truly cannot exist on this host.
pub fn run_case<H, F, Fut>(h: &'static H, case: F)
where
    H: Harness,
    F: FnOnce(&'static H, Arc<dyn Backend>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let backend = match h.backend() {
        Ok(b) => b,
        Err(reason) => {
            eprintln!("SKIP: backend unavailable on this host: {reason}");
            return;
        }
    };
    RT.block_on(case(h, backend));
}

pub async fn shared<H: Harness>(h: &H, backend: &Arc<dyn Backend>) -> &'static Sandbox {
    SHARED
        .get_or_init(|| async {
            backend
                .start(&h.config())
                .await
                .expect("start shared sandbox")
        })
        .await
}

pub async fn sh(sb: &Sandbox, script: &str) -> husk_sandbox::Output {
    let req = ExecRequest::new(["sh", "-c", script]);
    sb.client().run(&req, 64 << 20).await.expect("exec")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------- cases

/// A port forwarded from inside the sandbox to a service in this process
/// (protocol 3): a client in the sandbox reaches it with networking off;
/// another sandbox and the host's own loopback do not.
pub async fn forwarded_port_reaches_the_host_service<H: Harness>(h: &H, b: Arc<dyn Backend>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let port = 7701;
    let sb = b.start(&h.config()).await.expect("start");
    let fwd = husk_sandbox::tunnel::forward(sb.client(), port, |io| {
        tokio::spawn(async move {
            let (rd, mut wr) = tokio::io::split(io);
            let mut line = String::new();
            let _ = tokio::io::BufReader::new(rd).read_line(&mut line).await;
            let _ = wr
                .write_all(format!("served {}", line.trim().to_uppercase()).as_bytes())
                .await;
            let _ = wr.shutdown().await;
        });
    })
    .await
    .expect("forward");
    let script = format!(
        "for i in 1 2 3; do (echo hello$i | busybox nc 127.0.0.1 {port}; echo) & done; wait"
    );
    let out = within_20s("three forwarded connections", sh(&sb, &script)).await;
    let got = text(&out.stdout);
    for i in 1..=3 {
        assert!(
            got.contains(&format!("served HELLO{i}")),
            "{got:?} {}",
            text(&out.stderr)
        );
    }
    // Another sandbox has its own loopback: nothing listens there.
    let other = b.start(&h.config()).await.expect("start other");
    let out = within_20s(
        "a connection from another sandbox",
        sh(
            &other,
            &format!("echo x | busybox nc 127.0.0.1 {port}; echo rc=$?"),
        ),
    )
    .await;
    assert!(
        !text(&out.stdout).contains("served"),
        "{}",
        text(&out.stdout)
    );
    other.stop().await.unwrap();
    // No host port was opened.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    drop(fwd);
    sb.stop().await.unwrap();
}

pub async fn exit_codes_and_streams<H: Harness>(h: &H, b: Arc<dyn Backend>) {
    let sb = shared(h, &b).await;
    let out = sh(sb, "echo hello; echo oops >&2; exit 3").await;
    assert_eq!(text(&out.stdout), "hello\n");
    assert_eq!(text(&out.stderr), "oops\n");
    assert_eq!(out.status.code, Some(3));
    let out = sh(sb, "kill -TERM $$").await;
    assert_eq!((out.status.code, out.status.signal), (None, Some(15)));
    assert_eq!(out.status.shell_code(), 143);
}

pub async fn env_cwd_and_user<H: Harness>(h: &H, b: Arc<dyn Backend>) {
    let sb = shared(h, &b).await;
    let out = sh(sb, "echo $HOME; pwd; id -u").await;
    assert_eq!(text(&out.stdout), "/home/sandbox\n/workspace\n1000\n");
    let mut req = ExecRequest::new(["sh", "-c", "echo $FOO; pwd"]);
    req.env.push(("FOO".into(), "bar baz".into()));
    req.cwd = Some("/tmp".into());
    let out = sb.client().run(&req, 1 << 20).await.unwrap();
    assert_eq!(text(&out.stdout), "bar baz\n/tmp\n");
    req.cwd = Some("/does/not/exist".into());
    let err = sb.client().run(&req, 1 << 20).await.unwrap_err();
    assert_eq!(err.guest_kind(), Some(ErrorKind::NotFound), "{err}");
}

pub async fn stdin_round_trip<H: Harness>(h: &H, b: Arc<dyn Backend>) {
    let sb = shared(h, &b).await;
    let mut req = ExecRequest::new(["cat"]);
    req.stdin = true;
    let mut p = sb.client().exec(&req).await.unwrap();
    let data: Vec<u8> = (0..(600 * 1024)).map(|i| (i * 7 % 251) as u8).collect();
    // Write while reading, so neither side's pipe fills up.
    let (client, id, sent) = (sb.client().clone(), p.id(), data.clone());
    let writer = tokio::spawn(async move {
        client.write_stdin(id, &sent).await.unwrap();
        client.close_stdin(id).await.unwrap();
    });
    let mut got = Vec::new();
    let status = loop {
        match p.next().await.unwrap() {
            ProcessEvent::Stdout(d) => got.extend(d),
            ProcessEvent::Stderr(_) => {}
            ProcessEvent::Exit(s) => break s,
        }
    };
    writer.await.unwrap();
    assert_eq!(status.code, Some(0));
    assert_eq!(got.len(), data.len());
    assert!(got == data, "stdin bytes came back changed");
}

pub async fn large_streamed_output<H: Harness>(h: &H, b: Arc<dyn Backend>) {
    let sb = shared(h, &b).await;
    let out = sh(sb, "seq 1 1500000; seq 1 1500000 >&2").await;
    let want: String = (1..=1_500_000).map(|i| format!("{i}\n")).collect();
    assert_eq!(out.status.code, Some(0));
    assert!(!out.truncated);
    assert_eq!(out.stdout.len(), want.len());
    assert!(out.stdout == want.as_bytes() && out.stderr == want.as_bytes());
}

/// The runtime races `Process::next` against timers and cancellation in
/// `select!`; a `next()` dropped while waiting must lose nothing.
pub async fn next_survives_cancellation<H: Harness>(h: &H, b: Arc<dyn Backend>) {
    let sb = shared(h, &b).await;
    let mut p = sb
        .client()
        .exec(&ExecRequest::new(["seq", "1", "200000"]))
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut dropped = 0usize;
    let status = within_20s("seq under cancellation", async {
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
    assert_eq!(status.code, Some(0));
    assert!(
        dropped > 0,
        "next() was never dropped: the case proves nothing"
    );
    let want: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    assert_eq!(got.len(), want.len(), "bytes lost when next() was dropped");
    assert!(got == want.as_bytes(), "output changed");
}

pub async fn timeout_really_kills<H: Harness>(h: &H, b: Arc<dyn Backend>) {
    let sb = shared(h, &b).await;
    let mut req = ExecRequest::new(["sh", "-c", "sleep 61.4321 & sleep 61.4321; echo never"]);
    req.timeout_ms = Some(300);
    let out = sb.client().run(&req, 1 << 20).await.unwrap();
    assert!(out.status.timed_out);
    assert_eq!(out.status.signal, Some(9));
    assert!(out.stdout.is_empty());
    // Neither the shell nor its background child survives.
    let left = sh(
        sb,
        "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -c '61[.]4321' || true",
    )
    .await;
    assert_eq!(text(&left.stdout).trim(), "0");
}

pub async fn signal_a_running_exec<H: Harness>(h: &H, b: Arc<dyn Backend>) {
    let sb = shared(h, &b).await;
    let mut p = sb
        .client()
        .exec(&ExecRequest::new(["sleep", "30"]))
        .await
        .unwrap();
    p.signal(15).await.unwrap();
    loop {
        if let ProcessEvent::Exit(s) = p.next().await.unwrap() {
            assert_eq!(s.signal, Some(15));
            break;
        }
    }
}

pub async fn missing_program<H: Harness>(h: &H, b: Arc<dyn Backend>) {
    let sb = shared(h, &b).await;
    let err = sb
        .client()
        .exec(&ExecRequest::new(["no-such-program-x"]))
        .await
        .unwrap_err();
    assert_eq!(err.guest_kind(), Some(ErrorKind::NotFound));
    assert!(err.to_string().contains("no-such-program-x"), "{err}");
    let empty: Vec<String> = Vec::new();
    let err = sb
        .client()
        .exec(&ExecRequest::new(empty))
        .await
        .unwrap_err();
    assert_eq!(err.guest_kind(), Some(ErrorKind::InvalidRequest));
}

pub async fn binary_file_round_trip<H: Harness>(h: &H, b: Arc<dyn Backend>) {
    let sb = shared(h, &b).await;
    let c = sb.client();
    let data: Vec<u8> = (0..(3 * 1024 * 1024 + 17))
        .map(|i| (i % 256) as u8)
        .collect();
    c.mkdir_p("/workspace/bin-rt/deep/er").await.unwrap();
    c.write_file("/workspace/bin-rt/deep/er/blob", &data, 0o640)
        .await
        .unwrap();
    let back = c
        .read_file("/workspace/bin-rt/deep/er/blob", 64 << 20)
        .await
        .unwrap();
    assert!(back == data, "binary round trip changed the bytes");
    let st = c
        .stat("/workspace/bin-rt/deep/er/blob", true)
        .await
        .unwrap();
    assert_eq!(
        (st.kind, st.size, st.mode),
        (FileKind::File, data.len() as u64, 0o640)
    );
    // The sandbox user sees and owns what the host wrote.
    let out = sh(sb, "stat -c '%u %s' /workspace/bin-rt/deep/er/blob; sha256sum < /workspace/bin-rt/deep/er/blob").await;
    let lines: Vec<_> = text(&out.stdout).lines().map(String::from).collect();
    assert_eq!(lines[0], format!("1000 {}", data.len()));
    // Overwrite with something shorter truncates; empty files work.
    c.write_file("/workspace/bin-rt/deep/er/blob", b"xy", 0o640)
        .await
        .unwrap();
    assert_eq!(
        c.read_file("/workspace/bin-rt/deep/er/blob", 10)
            .await
            .unwrap(),
        b"xy"
    );
    c.write_file("/workspace/bin-rt/empty", b"", 0o600)
        .await
        .unwrap();
    assert_eq!(
        c.read_file("/workspace/bin-rt/empty", 10).await.unwrap(),
        b""
    );
    let names: Vec<_> = c
        .list_dir("/workspace/bin-rt")
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.kind))
        .collect();
    assert_eq!(
        names,
        vec![
            ("deep".into(), FileKind::Dir),
            ("empty".into(), FileKind::File)
        ]
    );
    let err = c
        .read_file("/workspace/bin-rt/deep/er/blob", 1)
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::TooLarge(_)), "{err}");
}

pub async fn escapes_are_refused<H: Harness>(h: &H, b: Arc<dyn Backend>) {
    let sb = shared(h, &b).await;
    let c = sb.client();
    let out = sh(sb, "mkdir -p /workspace/esc && ln -sfn /etc /workspace/esc/abs && ln -sfn ../../etc /workspace/esc/rel && ln -sfn ../esc /workspace/esc/ok").await;
    assert_eq!(out.status.code, Some(0), "{}", text(&out.stderr));
    for path in [
        "/workspace/esc/abs/passwd",
        "/workspace/esc/rel/passwd",
        "/etc/passwd",
        "/proc/1/environ",
    ] {
        let err = c.read_file(path, 1 << 20).await.unwrap_err();
        assert_eq!(
            err.guest_kind(),
            Some(ErrorKind::OutsideRoots),
            "{path}: {err}"
        );
    }
    let err = c
        .write_file("/workspace/esc/abs/evil", b"x", 0o644)
        .await
        .unwrap_err();
    assert_eq!(err.guest_kind(), Some(ErrorKind::OutsideRoots));
    let err = c
        .read_file("/workspace/../etc/passwd", 1 << 20)
        .await
        .unwrap_err();
    assert_eq!(err.guest_kind(), Some(ErrorKind::InvalidPath));
    let err = c.read_file("workspace/x", 1 << 20).await.unwrap_err();
    assert_eq!(err.guest_kind(), Some(ErrorKind::InvalidPath));
    // A link that stays inside the root is followed.
    c.write_file("/workspace/esc/inside.txt", b"fine", 0o644)
        .await
        .unwrap();
    assert_eq!(
        c.read_file("/workspace/esc/ok/inside.txt", 10)
            .await
            .unwrap(),
        b"fine"
    );
}

/// Fails the test (instead of hanging it) when `fut` takes over 20 s.
pub async fn within_20s<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 20 s (the guest hangs)"))
}

/// An agent that leaves a FIFO where the host reads or writes a file must
/// not wedge the guest: file RPCs on it fail at once, and the guest keeps
/// answering everything else meanwhile.
pub async fn fifos_do_not_hang_the_guest<H: Harness>(h: &H, b: Arc<dyn Backend>) {
    let sb = shared(h, &b).await;
    let c = sb.client();
    let out = sh(sb, "mkdir -p /workspace/fifo && mkfifo /workspace/fifo/out").await;
    assert_eq!(out.status.code, Some(0), "{}", text(&out.stderr));
    let is_fifo_error = |e: SandboxError| {
        assert_eq!(e.guest_kind(), Some(ErrorKind::NotRegularFile), "{e}");
        assert!(
            e.to_string()
                .contains("/workspace/fifo/out: is a FIFO, not a regular file"),
            "{e}"
        );
    };
    // A read (no writer: a blocking open would wait forever) and a ping
    // at the same time: both answer.
    let (read, ping) = within_20s("read_file of a FIFO and a ping", async {
        tokio::join!(c.read_file("/workspace/fifo/out", 1 << 20), c.ping())
    })
    .await;
    is_fifo_error(read.unwrap_err());
    ping.unwrap();
    // A write with no reader, then with one waiting: refused both times,
    // and nothing reaches the reader.
    let err = within_20s(
        "write_file to a FIFO",
        c.write_file("/workspace/fifo/out", b"x", 0o644),
    )
    .await
    .unwrap_err();
    is_fifo_error(err);
    let mut req = ExecRequest::new(["sh", "-c", "cat /workspace/fifo/out > /workspace/fifo/got"]);
    req.output = OutputMode::Detached {
        stdout: None,
        stderr: None,
    };
    let reader = c.exec(&req).await.unwrap();
    let err = within_20s(
        "write_file to a FIFO",
        c.write_file("/workspace/fifo/out", b"x", 0o644),
    )
    .await
    .unwrap_err();
    is_fifo_error(err);
    // A detached process's output file must not be a FIFO either.
    let mut req = ExecRequest::new(["true"]);
    req.output = OutputMode::Detached {
        stdout: Some("/workspace/fifo/out".into()),
        stderr: None,
    };
    let err = within_20s("exec with a FIFO as output", c.exec(&req))
        .await
        .unwrap_err();
    is_fifo_error(err);
    // The reader may have ended already (it saw the refused writer close).
    let _ = c.signal(reader.id(), 9).await;
    c.wait(reader.id()).await.unwrap();
    let got = c.read_file("/workspace/fifo/got", 100).await;
    assert!(matches!(got.as_deref(), Ok(b"") | Err(_)), "{got:?}");
    let out = within_20s("exec after the FIFO calls", async {
        sh(sb, "echo alive").await
    })
    .await;
    assert_eq!(text(&out.stdout), "alive\n");
}

pub async fn concurrent_execs_and_files<H: Harness>(h: &H, b: Arc<dyn Backend>) {
    let sb = shared(h, &b).await;
    let c = sb.client().clone();
    let mut tasks = Vec::new();
    for i in 0..8u32 {
        let c1 = c.clone();
        tasks.push(tokio::spawn(async move {
            let c = c1;
            let script = format!("sleep 0.2; seq 1 {}", 20_000 + i);
            let out = c
                .run(&ExecRequest::new(["sh", "-c", &script]), 1 << 20)
                .await
                .unwrap();
            let want: String = (1..=20_000 + i).map(|n| format!("{n}\n")).collect();
            assert!(out.stdout == want.as_bytes(), "exec {i} output mixed up");
        }));
        let c2 = c.clone();
        tasks.push(tokio::spawn(async move {
            let c = c2;
            let path = format!("/tmp/conc-{i}");
            let data: Vec<u8> = (0..(512 * 1024 + i as usize))
                .map(|k| (k as u32 ^ i) as u8)
                .collect();
            c.write_file(&path, &data, 0o600).await.unwrap();
            assert!(
                c.read_file(&path, 1 << 20).await.unwrap() == data,
                "file {i} mixed up"
            );
            c.ping().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

pub async fn detached_and_wait<H: Harness>(h: &H, b: Arc<dyn Backend>) {
    let sb = shared(h, &b).await;
    let c = sb.client();
    c.mkdir_p("/workspace/det").await.unwrap();
    let mut req = ExecRequest::new(["sh", "-c", "echo started; echo warn >&2; sleep 0.3; exit 7"]);
    req.output = OutputMode::Detached {
        stdout: Some("/workspace/det/out.log".into()),
        stderr: Some("/workspace/det/err.log".into()),
    };
    let p = c.exec(&req).await.unwrap();
    let status = c.wait(p.id()).await.unwrap();
    assert_eq!(status.code, Some(7));
    // Waiting again returns the same status.
    assert_eq!(c.wait(p.id()).await.unwrap(), status);
    assert_eq!(
        c.read_file("/workspace/det/out.log", 100).await.unwrap(),
        b"started\n"
    );
    assert_eq!(
        c.read_file("/workspace/det/err.log", 100).await.unwrap(),
        b"warn\n"
    );
    let mut req = ExecRequest::new(["sleep", "60"]);
    req.output = OutputMode::Detached {
        stdout: None,
        stderr: None,
    };
    let p = c.exec(&req).await.unwrap();
    c.signal(p.id(), 15).await.unwrap();
    assert_eq!(c.wait(p.id()).await.unwrap().signal, Some(15));
    let err = c.wait(987_654_321).await.unwrap_err();
    assert_eq!(err.guest_kind(), Some(ErrorKind::NoSuchProcess));
}

pub async fn wrong_secret_is_refused<H: Harness>(h: &H, b: Arc<dyn Backend>) {
    let mut cfg = h.config();
    cfg.present_secret = Some(husk_sandbox::protocol::Secret([0x42; 32]));
    let err = b.start(&cfg).await.unwrap_err();
    assert!(matches!(err, SandboxError::Rejected(_)), "{err}");
    assert!(err.to_string().contains("secret"), "{err}");
}

pub async fn stop_leaves_nothing_behind<H: Harness>(h: &H, b: Arc<dyn Backend>) {
    let sb = b.start(&h.config()).await.unwrap();
    let argv = h.identity_command();
    let id = sb
        .client()
        .run(&ExecRequest::new(argv), 4096)
        .await
        .unwrap();
    let identity = text(&id.stdout).trim().to_string();
    assert!(!identity.is_empty());
    // Background processes, a new session, and a detached one.
    sh(
        &sb,
        "sleep 1000 & setsid sleep 1000 & (sleep 1000 &) ; true",
    )
    .await;
    let mut req = ExecRequest::new(["sleep", "1000"]);
    req.output = OutputMode::Detached {
        stdout: None,
        stderr: None,
    };
    sb.client().exec(&req).await.unwrap();
    let inside = sh(&sb, "ls -d /proc/[0-9]* | wc -l").await;
    let inside: usize = text(&inside.stdout).trim().parse().unwrap();
    assert!(
        inside >= 5,
        "guest, 4 sleeps (and ls) should be running, saw {inside}"
    );
    assert!(
        h.leftovers(&identity) > 0,
        "the sandbox should be visible on the host before stop"
    );
    let client = sb.client().clone();
    sb.stop().await.unwrap();
    assert_eq!(h.leftovers(&identity), 0, "processes left after stop");
    // A stopped sandbox answers every call with a clear error.
    let err = client.ping().await.unwrap_err();
    assert!(matches!(err, SandboxError::Closed(_)), "{err}");
}

/// Writable storage is bounded by `disk_mb` (tmpfs pages are RAM): past
/// its share, a write fails with ENOSPC; the root and `/dev` take nothing.
pub async fn disk_mb_bounds_writable_storage<H: Harness>(h: &H, b: Arc<dyn Backend>) {
    let mut cfg = h.config();
    cfg.disk_mb = 16;
    let sb = b.start(&cfg).await.unwrap();
    // /workspace gets all 16 MiB, /tmp and /home/sandbox 8 each, /dev/shm 8.
    let script = "head -c 17000000 /dev/zero > /workspace/big; echo ws=$?; \
                  head -c 9000000 /dev/zero > /tmp/big; echo tmp=$?; \
                  head -c 9000000 /dev/zero > /home/sandbox/big; echo home=$?; \
                  head -c 9000000 /dev/zero > /dev/shm/big; echo shm=$?; \
                  rm -f /workspace/big /tmp/big /home/sandbox/big /dev/shm/big; \
                  head -c 15000000 /dev/zero > /workspace/fits; echo fits=$?; \
                  touch /x 2>/dev/null; echo root=$?; touch /dev/x 2>/dev/null; echo dev=$?; \
                  head -c 9000000 /dev/zero > /var/tmp/big 2>/dev/null; echo var_tmp=$?; \
                  rm -f /var/tmp/big; ls -ld / /dev";
    let out = sh(&sb, script).await;
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    for line in ["ws=1", "tmp=1", "home=1", "shm=1", "fits=0"] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line}: {stdout}{stderr}"
        );
    }
    assert!(!stdout.contains("root=0"), "the root is writable: {stdout}");
    assert!(!stdout.contains("dev=0"), "/dev is writable: {stdout}");
    // Read-only (namespace: the host's /var) or sharing /tmp's 8 MiB.
    assert!(
        !stdout.contains("var_tmp=0"),
        "/var/tmp is unbounded: {stdout}"
    );
    // (busybox's head says "I/O error" where coreutils names ENOSPC; the
    // file RPC below names the errno on both.)
    // A file RPC past the limit fails with ENOSPC.
    let err = sb
        .client()
        .write_file("/workspace/rpc", &vec![7u8; 2 << 20], 0o644)
        .await
        .unwrap_err();
    assert_eq!(err.guest_kind(), Some(ErrorKind::TooLarge), "{err}");
    assert!(err.to_string().contains("No space left on device"), "{err}");
    sb.stop().await.unwrap();
}

pub async fn many_sandboxes_at_once<H: Harness>(h: &H, b: Arc<dyn Backend>) {
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let (b, cfg) = (b.clone(), h.config());
            tokio::spawn(async move { b.start(&cfg).await })
        })
        .collect();
    for (i, start) in starts.into_iter().enumerate() {
        let sb = start.await.unwrap().unwrap();
        let out = sh(&sb, &format!("echo {i}")).await;
        assert_eq!(text(&out.stdout), format!("{i}\n"));
        sb.stop().await.unwrap();
    }
}

pub const TICK: Duration = Duration::from_millis(50);

/// Expands to one `#[test]` per conformance case for the harness static
/// `$h` (a `static` of a type implementing [`Harness`]).
#[macro_export]
macro_rules! suite {
    ($h:path) => {
        $crate::suite!(@cases $h;
            exit_codes_and_streams, env_cwd_and_user, stdin_round_trip, large_streamed_output,
            next_survives_cancellation,
            timeout_really_kills, signal_a_running_exec, missing_program, binary_file_round_trip,
            escapes_are_refused, fifos_do_not_hang_the_guest, concurrent_execs_and_files, detached_and_wait,
            wrong_secret_is_refused, stop_leaves_nothing_behind, many_sandboxes_at_once,
            disk_mb_bounds_writable_storage, forwarded_port_reaches_the_host_service);
    };
    (@cases $h:path; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                conformance::run_case(&$h, |h, b| async move { conformance::$case(h, b).await });
            }
        )*
    };
}

/// Micro-VMs only (run as root): one `device <driver> <reporting feature
/// bit>` line per virtio balloon (`unbound` when no driver has it), then
/// `reporting` if the guest kernel enabled free page reporting at boot.
/// The balloon driver loads beside the first commands, so the probe first
/// waits (at most 10 s) for its registration to finish (its `module` link
/// is made after the devices are probed).
pub const BALLOON_PROBE: &str = "i=0; while [ ! -e /sys/bus/virtio/drivers/virtio_balloon/module ] \
       && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; \
     for d in /sys/bus/virtio/devices/*; do \
       [ \"$(cat $d/device)\" = 0x0005 ] || continue; \
       drv=$(readlink $d/driver); drv=${drv##*/}; \
       echo \"device ${drv:-unbound} $(cut -c6 $d/features)\"; \
     done; dmesg | grep -q 'Free page reporting enabled' && echo reporting; true";
