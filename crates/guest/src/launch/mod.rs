//! `husk-guest launch --plan-fd N`: husk's own namespace launcher, in
//! place of bubblewrap (which stays the fallback).
//!
//! Why: bubblewrap is general; for husk's one fixed layout it spends most of
//! a namespace sandbox's start (two execs, a mountinfo walk per read-only
//! bind). This launcher builds the layout the host planned (see
//! `husk_protocol::launch`) with one `mount_setattr(2)` per bind and then
//! execs the guest agent as PID 1.
//!
//! The sequence, with the same guarantees bubblewrap gives husk:
//!
//! 1. the host's descriptors from stdin (the host spawns the launcher
//!    with `posix_spawn`, see [`handover`]); when husk is root, the host
//!    uid and gid it asked for; rlimits and CPU affinity (inherited by
//!    everything inside);
//! 2. a new user namespace in which the caller's uid and gid map to the
//!    sandbox user's (`setgroups` denied), then new mount, pid, ipc, uts,
//!    cgroup and, unless networking is asked for, network namespaces;
//! 3. a fork: the parent stays outside the pid namespace and exits with
//!    the child's status; the child is PID 1 inside;
//! 4. the child brings up loopback in a new network namespace, makes
//!    every mount private, builds the new root on a
//!    private tmpfs, `pivot_root`s into it and detaches the old root;
//! 5. host name, a new session (no TIOCSTI into the host's terminal),
//!    every other descriptor closed, `no_new_privs`, every capability
//!    dropped (bounding set and ambient included);
//! 6. both processes die with their parent (`PR_SET_PDEATHSIG`), set after
//!    the last credential change (which clears it) and checked against a
//!    parent that already left;
//! 7. the guest agent, in the same process: the launcher is the guest
//!    binary, so a second exec would only cost time (the host's plan may
//!    instead name a command to exec, with an empty environment).
//!
//! A host where unprivileged user namespaces are refused, whose kernel
//! lacks `mount_setattr` (before 5.12), or whose seccomp policy refuses
//! the new mount calls, gets exit status [`UNSUPPORTED_EXIT`] and a
//! message; the host then uses bubblewrap.

mod fdmount;
mod handover;
mod mounts;
mod sys;

use std::io::Read;
use std::os::fd::{FromRawFd, RawFd};

use husk_protocol::launch::{Exec, LaunchPlan, MAX_PLAN_BYTES};

use sys::{SysError, SysResult};

/// Exit status meaning "this host cannot use the native launcher".
pub const UNSUPPORTED_EXIT: i32 = 97;
/// Where the launcher's private tmpfs is mounted in its own mount
/// namespace; it then becomes the root, with the host's root at
/// [`OLD_ROOT`] and the sandbox's root being built at [`NEW_ROOT`].
const BASE: &str = "/tmp";
const OLD_ROOT: &str = "/oldroot";
const NEW_ROOT: &str = "/newroot";
const DATA: &str = "/data";

/// Runs the launcher; never returns.
pub fn main(args: &[String]) -> ! {
    let code = match run(args) {
        Ok(code) => code,
        Err(Failure::Unsupported(e)) => {
            eprintln!("husk-guest launch: native launcher unavailable: {e}");
            UNSUPPORTED_EXIT
        }
        Err(Failure::Other(e)) => {
            eprintln!("husk-guest launch: {e}");
            1
        }
    };
    std::process::exit(code)
}

enum Failure {
    Unsupported(String),
    Other(String),
}

impl From<SysError> for Failure {
    fn from(e: SysError) -> Self {
        Failure::Other(e.to_string())
    }
}

/// `[--fds-on-stdin] --plan-fd N`: the plan's descriptor, and whether the
/// descriptors come on stdin (see [`handover`]) rather than in place.
fn parse(args: &[String]) -> Result<(bool, RawFd), Failure> {
    let (on_stdin, rest) = match args {
        [first, rest @ ..] if first == "--fds-on-stdin" => (true, rest),
        rest => (false, rest),
    };
    match rest {
        [flag, n] if flag == "--plan-fd" => n
            .parse()
            .map(|fd| (on_stdin, fd))
            .map_err(|_| Failure::Other(format!("--plan-fd: not a descriptor: {n}"))),
        _ => Err(Failure::Other(
            "usage: husk-guest launch [--fds-on-stdin] --plan-fd N".into(),
        )),
    }
}

fn read_plan(fd: RawFd) -> Result<LaunchPlan, Failure> {
    if fd < 3 {
        return Err(Failure::Other(format!(
            "--plan-fd {fd} is a standard stream"
        )));
    }
    // SAFETY: the host handed this descriptor over for the plan alone;
    // nothing else in this process owns it. It is closed when read.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut bytes = Vec::new();
    file.take(MAX_PLAN_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::Other(format!("reading the plan: {e}")))?;
    LaunchPlan::decode(&bytes).map_err(|e| Failure::Other(e.to_string()))
}

fn run(args: &[String]) -> Result<i32, Failure> {
    let (on_stdin, plan_fd) = parse(args)?;
    if on_stdin {
        handover::receive()?;
    }
    let plan = read_plan(plan_fd)?;
    if let Some(id) = plan.host_id {
        become_host_id(id)?;
    }
    // husk's pid, as the host wrote it: had husk died before now, our
    // parent would already be some reaper, which getppid cannot tell.
    let host = plan.parent_pid as libc::pid_t;
    let l = &plan.limits;
    sys::set_limit(libc::RLIMIT_DATA, l.data_bytes, "the data limit")?;
    sys::set_limit(libc::RLIMIT_NPROC, l.nproc, "the process limit")?;
    // As with bubblewrap, a CPU set the host does not allow is not fatal.
    let _ = sys::set_affinity(&l.cpus);
    enter_user_namespace(plan.sandbox_uid)?;
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    if plan.unshare_net {
        flags |= libc::CLONE_NEWNET;
    }
    // A cgroup namespace too where the kernel has them (like bubblewrap's
    // --unshare-cgroup-try); one call, since each costs a namespace switch.
    let all = flags | libc::CLONE_NEWCGROUP;
    if let Err(e) = sys::unshare(all, "mount, pid, ipc, uts, cgroup and network namespaces") {
        if e.err.raw_os_error() != Some(libc::EINVAL) {
            return Err(unsupported_if_refused(e));
        }
        sys::unshare(flags, "mount, pid, ipc, uts and network namespaces")
            .map_err(unsupported_if_refused)?;
    }
    // Probed here, in a user and mount namespace of our own, where the
    // kernel's own permission checks for these calls pass: an EPERM can
    // only be a policy's, and bubblewrap (plain mount(2)) may still work.
    if let Some((call, err)) = sys::unusable_mount_call() {
        return Err(Failure::Unsupported(
            if err.raw_os_error() == Some(libc::ENOSYS) {
                format!("this kernel has no {call}(2) (Linux 5.12 or later)")
            } else {
                format!("{call}(2) is refused by this host's seccomp or security policy ({err})")
            },
        ));
    }
    let (alive_r, alive_w) = rustix::pipe::pipe().map_err(|e| SysError {
        what: "making a pipe".into(),
        err: e.into(),
    })?;
    // SAFETY: the launcher is single-threaded (no runtime has started), so
    // the child may do anything after fork.
    match unsafe { libc::fork() } {
        -1 => Err(Failure::Other(format!(
            "fork: {}",
            std::io::Error::last_os_error()
        ))),
        0 => {
            drop(alive_w);
            let e = child(&plan, alive_r);
            eprintln!("husk-guest launch: {e}");
            // SAFETY: _exit ends the child without running the parent's
            // exit handlers twice.
            unsafe { libc::_exit(1) }
        }
        pid => {
            drop(alive_r);
            let status = monitor(pid, host, alive_w);
            if status.is_err() {
                // SAFETY: kill takes no pointers; `pid` is our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            status
        }
    }
}

/// A namespace the kernel refused (user namespaces restricted or limited
/// to 0, an AppArmor policy that leaves an unlabelled binary's new user
/// namespace without capabilities) means the host cannot use this
/// launcher at all, not that this sandbox failed.
/// ENOSPC counts only when the host's limit of user namespaces is 0 (a
/// configured refusal); otherwise it is this uid's count running out, which
/// a sandbox could cause and which must not switch launchers for good.
fn unsupported_if_refused(e: SysError) -> Failure {
    let refused = match e.err.raw_os_error() {
        Some(libc::EPERM | libc::EACCES | libc::ENOSYS) => true,
        Some(libc::ENOSPC) => user_namespaces_disabled(),
        _ => false,
    };
    if refused {
        Failure::Unsupported(e.to_string())
    } else {
        e.into()
    }
}

fn user_namespaces_disabled() -> bool {
    std::fs::read_to_string("/proc/sys/user/max_user_namespaces").is_ok_and(|v| v.trim() == "0")
}

/// Drops root for host uid and gid `id`, with no supplementary groups
/// (husk runs as root; the sandbox's files must not look like root's).
fn become_host_id(id: u32) -> SysResult {
    let fail = |what: &str| SysError {
        what: what.into(),
        err: std::io::Error::last_os_error(),
    };
    // SAFETY: setgroups reads no memory with a count of 0; setgid and
    // setuid take integers. The launcher is single-threaded, so the ids
    // change for the whole process.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(fail("dropping supplementary groups"));
        }
        if libc::setgid(id) != 0 {
            return Err(fail(&format!("becoming gid {id}")));
        }
        if libc::setuid(id) != 0 {
            return Err(fail(&format!("becoming uid {id}")));
        }
    }
    // Changing ids made the process non-dumpable, which makes its /proc
    // files root's: it could not write its own uid map. An exec (as with
    // bubblewrap) would have reset this too.
    sys::prctl(
        libc::PR_SET_DUMPABLE,
        1,
        "making the launcher dumpable again",
    )
}

/// Step 2's user namespace: the caller's ids become the sandbox user's.
fn enter_user_namespace(sandbox_uid: u32) -> Result<(), Failure> {
    let (uid, gid) = (rustix::process::geteuid(), rustix::process::getegid());
    sys::unshare(libc::CLONE_NEWUSER, "user namespace").map_err(|e| {
        // EINVAL here: a kernel built without user namespaces.
        if e.err.raw_os_error() == Some(libc::EINVAL) {
            Failure::Unsupported(e.to_string())
        } else {
            unsupported_if_refused(e)
        }
    })?;
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/self/{file}"), &text).map_err(|err| SysError {
            what: format!("writing {text:?} to /proc/self/{file}"),
            err,
        })
    };
    write("setgroups", "deny".into()).map_err(unsupported_if_refused)?;
    write("uid_map", format!("{sandbox_uid} {} 1", uid.as_raw()))
        .map_err(unsupported_if_refused)?;
    write("gid_map", format!("{sandbox_uid} {} 1", gid.as_raw()))
        .map_err(unsupported_if_refused)?;
    // Not dumpable from here on: other processes of this host uid must not
    // read the descriptors it holds (control channel, secret) through /proc.
    sys::prctl(libc::PR_SET_DUMPABLE, 0, "making the launcher non-dumpable")?;
    Ok(())
}

/// The parent: stays outside the pid namespace, holds nothing, and exits
/// with the sandbox's status (128 + signal when it was killed).
fn monitor(
    pid: libc::pid_t,
    host: libc::pid_t,
    alive: std::os::fd::OwnedFd,
) -> Result<i32, Failure> {
    // Only the pipe that tells the child we are alive stays open.
    close_others(&[], &alive)?;
    sys::drop_capabilities()?;
    die_with_parent("husk")?;
    // SAFETY: getppid takes no arguments and cannot fail.
    if unsafe { libc::getppid() } != host {
        // husk left before the death signal was armed.
        // SAFETY: kill takes no pointers; `pid` is our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status into our local.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break;
        }
        if rc < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(Failure::Other(format!(
                "waiting for the sandbox: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    drop(alive);
    Ok(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    })
}

/// The child, PID 1 of the new pid namespace; returns only on failure.
fn child(plan: &LaunchPlan, alive: std::os::fd::OwnedFd) -> SysError {
    if let Err(e) = setup(plan, alive) {
        return e;
    }
    match &plan.exec {
        Exec::Command(argv) => sys::exec(argv),
        Exec::Guest {
            control_fd,
            secret_fd,
        } => crate::namespace_guest(*control_fd, *secret_fd),
    }
}

fn setup(plan: &LaunchPlan, alive: std::os::fd::OwnedFd) -> SysResult {
    if plan.unshare_net {
        crate::net::loopback_up().map_err(|err| SysError {
            what: "configuring the network namespace".into(),
            err,
        })?;
    }
    sys::mount(None, "/", None, libc::MS_REC | libc::MS_PRIVATE, None)?;
    // Into the private tmpfs first (as bubblewrap does), so that every
    // host path, even under /tmp, stays reachable below OLD_ROOT.
    mounts::tmpfs(BASE, None)?;
    mounts::tmpfs(&format!("{BASE}{NEW_ROOT}"), None)?;
    std::fs::create_dir(format!("{BASE}{OLD_ROOT}")).map_err(|err| SysError {
        what: format!("making {BASE}{OLD_ROOT}"),
        err,
    })?;
    chdir(BASE)?;
    sys::pivot(".", &format!(".{OLD_ROOT}"))?;
    chdir("/")?;
    let places = mounts::Places {
        host: OLD_ROOT,
        root: NEW_ROOT,
        data: DATA,
    };
    mounts::build(&places, &plan.steps)?;
    // Then into the new root, leaving the tmpfs and the host's root behind.
    chdir(NEW_ROOT)?;
    sys::pivot(".", ".")?;
    sys::umount_detach(".")?;
    chdir("/")?;
    mounts::finish(&plan.steps)?;
    rustix::system::sethostname(plan.hostname.as_bytes()).map_err(|e| SysError {
        what: "setting the host name".into(),
        err: e.into(),
    })?;
    rustix::process::setsid().map_err(|e| SysError {
        what: "starting a new session".into(),
        err: e.into(),
    })?;
    close_others(&plan.keep_fds, &alive)?;
    sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, "setting no_new_privs")?;
    sys::drop_capabilities()?;
    die_with_parent("the launcher")?;
    // The monitor holds the pipe's other end until it exits: a hang-up now
    // means it left before the death signal was armed.
    let mut pfd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&alive),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes the one pollfd we pass, and returns at
    // once (timeout 0).
    let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
    if ready != 0 {
        return Err(SysError {
            what: "starting".into(),
            err: std::io::Error::other("the launcher exited before the sandbox started"),
        });
    }
    drop(alive);
    Ok(())
}

fn chdir(dir: &str) -> SysResult {
    std::env::set_current_dir(dir).map_err(|err| SysError {
        what: format!("entering {dir}"),
        err,
    })
}

/// Arms `PR_SET_PDEATHSIG`; after the last credential change, which would
/// clear it.
fn die_with_parent(parent: &str) -> SysResult {
    let what = format!("dying with {parent}");
    sys::prctl(
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as libc::c_ulong,
        &what,
    )
}

/// Closes every descriptor above 2 except `keep` and `alive`.
fn close_others(keep: &[RawFd], alive: &std::os::fd::OwnedFd) -> SysResult {
    use std::os::fd::AsRawFd;
    let alive = alive.as_raw_fd();
    let top = keep.iter().copied().chain([alive]).max().unwrap_or(2);
    for fd in 3..top {
        if !keep.contains(&fd) && fd != alive {
            // SAFETY: descriptors other than the kept ones are owned by no
            // Rust object at this point (see `monitor`).
            unsafe { libc::close(fd) };
        }
    }
    sys::close_from(top + 1)
}
