//! `husk-guest`: the agent that runs as PID 1 inside every husk sandbox.
//!
//! It serves the husk protocol on a control channel handed to it by the
//! host, runs processes as the sandbox user, confines file RPCs to allowed
//! roots, reaps every orphan, and takes everything down with it when the
//! host goes away. The same binary serves namespace sandboxes (where
//! its own launcher, `husk-guest launch`, or bubblewrap hands it a socket
//! on a file descriptor) and micro-VMs.

mod balloon;
mod exec;
mod files;
mod fwcfg;
mod launch;
mod net;
mod oom;
mod port;
mod reaper;
mod restore;
mod server;
mod tunnel;
mod vm;

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::OnceLock;

use husk_protocol::Secret;

use crate::server::{GuestConfig, SessionEnd};

static REAPER: OnceLock<reaper::Reaper> = OnceLock::new();

/// The process-wide reaper (started in `main`).
pub(crate) fn reaper() -> reaper::Reaper {
    REAPER.get().expect("reaper started in main").clone()
}

/// How the guest was told where its control channel and secret are.
struct Args {
    control_fd: i32,
    secret_fd: i32,
}

fn parse_args() -> Result<Args, String> {
    let mut control_fd = None;
    let mut secret_fd = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<i32, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            v.parse()
                .map_err(|_| format!("{name}: not a file descriptor number: {v}"))
        };
        match arg.as_str() {
            "--control-fd" => control_fd = Some(value("--control-fd")?),
            "--secret-fd" => secret_fd = Some(value("--secret-fd")?),
            "--version" => {
                println!("husk-guest {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        control_fd: control_fd.ok_or("missing --control-fd")?,
        secret_fd: secret_fd.ok_or("missing --secret-fd")?,
    })
}

/// Takes ownership of an inherited descriptor and marks it close-on-exec so
/// no process the guest starts can inherit it.
fn adopt_fd(fd: i32, what: &str) -> Result<OwnedFd, String> {
    // SAFETY: fcntl(F_GETFD) only inspects the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(format!("{what} descriptor {fd} is not open"));
    }
    // SAFETY: the descriptor is open (checked above), was handed to us by the
    // host for exclusive use, and nothing else in this process owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| format!("{what} descriptor {fd}: {e}"))?;
    Ok(owned)
}

fn read_secret(fd: OwnedFd) -> Result<Secret, String> {
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(256)
        .read_to_string(&mut text)
        .map_err(|e| format!("reading the session secret: {e}"))?;
    Secret::from_hex(&text).map_err(|e| e.to_string())
}

/// Kills every other process in the sandbox. As PID 1 of a pid namespace
/// (or of a VM), `kill(-1)` reaches all of them and never the caller.
pub(crate) fn kill_everything() {
    if std::process::id() == 1 {
        // SAFETY: kill(2) takes no pointers; -1 means "every process we may
        // signal except ourselves".
        unsafe { libc::kill(-1, libc::SIGKILL) };
    }
}

fn main() {
    if std::process::id() == 1 && std::env::args().len() == 1 {
        vm_main();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "launch") {
        launch::main(&args[1..]);
    }
    let code = match real_main() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("husk-guest: {e}");
            1
        }
    };
    kill_everything();
    std::process::exit(code);
}

fn real_main() -> Result<(), String> {
    let args = parse_args()?;
    serve_namespace(args.control_fd, args.secret_fd)
}

/// Serves a namespace sandbox from inside it, for the launcher's child
/// (PID 1 of the sandbox once it is built); never returns.
pub(crate) fn namespace_guest(control_fd: i32, secret_fd: i32) -> ! {
    let code = match serve_namespace(control_fd, secret_fd) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("husk-guest: {e}");
            1
        }
    };
    kill_everything();
    std::process::exit(code);
}

fn serve_namespace(control_fd: i32, secret_fd: i32) -> Result<(), String> {
    // Not dumpable: processes running as the same uid cannot ptrace us or
    // read our memory or environment through /proc.
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    let control = adopt_fd(control_fd, "control")?;
    let secret = read_secret(adopt_fd(secret_fd, "secret")?)?;
    session(async move {
        forward_termination();
        let stream = std::os::unix::net::UnixStream::from(control);
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        let stream = tokio::net::UnixStream::from_std(stream).map_err(|e| e.to_string())?;
        let (rd, wr) = stream.into_split();
        let cfg = GuestConfig {
            secret,
            default_user: None,
            file_owner: None,
            memory: oom::MemoryFacts::namespace(),
        };
        ended(server::serve(rd, wr, &cfg).await)
    })
}

/// Runs a session on a current-thread runtime with the zombie reaper
/// installed (both modes).
fn session(body: impl std::future::Future<Output = Result<(), String>>) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    rt.block_on(async move {
        let r = reaper::Reaper::start().map_err(|e| format!("installing SIGCHLD handler: {e}"))?;
        let _ = REAPER.set(r);
        body.await
    })
}

fn ended(end: SessionEnd) -> Result<(), String> {
    match end {
        SessionEnd::Shutdown | SessionEnd::Disconnected => Ok(()),
        SessionEnd::Rejected(reason) => Err(format!("handshake refused: {reason}")),
    }
}

/// Micro-VM mode: `/init` of the guest kernel. Never returns; the VM
/// powers off when the session ends or setup fails (the reason goes to the
/// serial console, which the host quotes).
fn vm_main() -> ! {
    if let Err(e) = vm_serve() {
        eprintln!("husk-guest: {e}");
    }
    vm::power_off()
}

fn vm_serve() -> Result<(), String> {
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    vm::init_system()?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    // A template reads no secret: its restored copies get theirs from the
    // host (see restore.rs).
    let template = restore::is_template(&cmdline);
    let secret = if template {
        None
    } else {
        let s = vm::take_secret()?;
        vm::boot_mark("secret read");
        Some(s)
    };
    let dev = vm::find_port(std::time::Duration::from_secs(30))?;
    vm::boot_mark("control port found");
    let fd = vm::open_port(&dev, std::time::Duration::from_secs(60))?;
    vm::boot_mark("control port open");
    vm::load_late_modules();
    session(async move {
        let mut stream = port::PortStream::new(fd).map_err(|e| format!("control port: {e}"))?;
        let secret = match secret {
            Some(s) => s,
            None => {
                let view = restore::CmdlineView::prepare(&cmdline)?;
                vm::late_modules_loaded()?;
                balloon::stop_reporting_for_snapshot()?;
                vm::boot_mark("parked");
                let identity = restore::park(&mut stream).await?;
                // No boot mark here: printk's paths would be translated
                // afresh on every restore, before the first command.
                restore::adopt(&identity, &view)?;
                identity.secret
            }
        };
        let (rd, wr) = tokio::io::split(stream);
        let cfg = GuestConfig {
            secret,
            default_user: Some(vm::SANDBOX_UID),
            file_owner: Some((vm::SANDBOX_UID, vm::SANDBOX_UID)),
            memory: oom::MemoryFacts::micro_vm(&cmdline),
        };
        ended(server::serve(rd, wr, &cfg).await)
    })
}

/// SIGTERM/SIGINT/SIGHUP to PID 1: pass SIGTERM on to everything, give it a
/// moment, then end (which kills what is left).
fn forward_termination() {
    use tokio::signal::unix::{SignalKind, signal};
    for kind in [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::hangup(),
    ] {
        let Ok(mut s) = signal(kind) else { continue };
        tokio::spawn(async move {
            if s.recv().await.is_some() {
                if std::process::id() == 1 {
                    // SAFETY: kill(2) takes no pointers.
                    unsafe { libc::kill(-1, libc::SIGTERM) };
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                kill_everything();
                std::process::exit(143);
            }
        });
    }
}
