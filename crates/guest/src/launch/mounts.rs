//! Carrying out a plan's filesystem steps under the new root, before the
//! final `pivot_root`. Every destination is the plan's path inside the
//! sandbox joined onto the new root; every source is a host path joined
//! onto where the host's root now is (the launcher has already pivoted
//! into its private tmpfs, so host paths such as `/tmp/x` stay reachable
//! while the new root is built).

use std::io::Read;
use std::os::fd::FromRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

use husk_protocol::launch::Step;

use super::sys::{self, ATTR_NODEV, ATTR_NOSUID, ATTR_RDONLY, SysError, SysResult};

/// Largest data file (passwd, group, a copied tool).
const MAX_DATA_BYTES: u64 = 4 << 30;
const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
const PROC_READ_ONLY: [&str; 4] = ["sys", "sysrq-trigger", "irq", "bus"];

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> SysError {
    move |err| SysError { what, err }
}

/// Where the pieces are while the layout is built.
pub struct Places<'a> {
    /// Where the host's root is.
    pub host: &'a str,
    /// The new root.
    pub root: &'a str,
    /// A private directory for data files (never visible inside).
    pub data: &'a str,
}

/// Builds the layout. Read-only remounts wait for [`finish`].
pub fn build(places: &Places<'_>, steps: &[Step]) -> SysResult {
    mkdirs(places.data)?;
    for (i, step) in steps.iter().enumerate() {
        let at = format!("{}{}", places.root, step.dst());
        match step {
            Step::Bind { src, writable, .. } => {
                bind(&format!("{}{src}", places.host), &at, *writable)?
            }
            Step::Symlink { target, .. } => {
                parent_dirs(&at)?;
                std::os::unix::fs::symlink(target, &at)
                    .map_err(io_err(format!("making the symlink {}", step.dst())))?;
            }
            Step::Dir { .. } => mkdirs(&at)?,
            Step::Tmpfs { size_bytes, .. } => tmpfs(&at, Some(*size_bytes))?,
            Step::Dev { .. } => dev(places.host, &at)?,
            Step::Proc { .. } => proc(&at)?,
            Step::Data { fd, mode, .. } => {
                let file = format!("{}/{i}", places.data);
                data(*fd, &file, *mode)?;
                bind(&file, &at, false)?;
            }
            Step::RemountRo { .. } => {}
        }
    }
    Ok(())
}

/// The read-only remounts, by their paths inside, after `pivot_root`.
pub fn finish(steps: &[Step]) -> SysResult {
    for step in steps {
        if let Step::RemountRo { dst } = step {
            sys::add_attrs(dst, ATTR_RDONLY, false)?;
        }
    }
    Ok(())
}

/// A tmpfs, mode 0755, nosuid and nodev.
pub fn tmpfs(at: &str, size_bytes: Option<u64>) -> SysResult {
    mkdirs(at)?;
    let opts = match size_bytes {
        Some(n) => format!("mode=0755,size={n}"),
        None => "mode=0755".to_string(),
    };
    let flags = libc::MS_NOSUID | libc::MS_NODEV;
    sys::mount(Some("tmpfs"), at, Some("tmpfs"), flags, Some(&opts))
}

fn bind(src: &str, at: &str, writable: bool) -> SysResult {
    let meta = std::fs::metadata(src).map_err(io_err(format!("bind source {src}")))?;
    if meta.is_dir() {
        mkdirs(at)?;
    } else {
        mount_point_file(at)?;
    }
    sys::mount(Some(src), at, None, libc::MS_BIND | libc::MS_REC, None)?;
    let ro = if writable { 0 } else { ATTR_RDONLY };
    sys::add_attrs(at, ro | ATTR_NOSUID | ATTR_NODEV, true)
}

/// An empty file to mount a file on (kept if it exists).
fn mount_point_file(at: &str) -> SysResult {
    parent_dirs(at)?;
    if std::fs::symlink_metadata(at).is_ok() {
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o444)
        .open(at)
        .map(drop)
        .map_err(io_err(format!("making the mount point {at}")))
}

fn mkdirs(at: &str) -> SysResult {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(at)
        .map_err(io_err(format!("making the directory {at}")))
}

fn parent_dirs(at: &str) -> SysResult {
    match std::path::Path::new(at).parent() {
        Some(p) => mkdirs(&p.to_string_lossy()),
        None => Ok(()),
    }
}

/// Copies descriptor `fd` (then closed) into `file` with `mode`.
fn data(fd: i32, file: &str, mode: u32) -> SysResult {
    // SAFETY: the plan names descriptors the host handed over for this
    // step alone; nothing else in the launcher owns `fd`.
    let src = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(io_err(format!("making {file}")))?;
    let copied = std::io::copy(&mut src.take(MAX_DATA_BYTES + 1), &mut out)
        .map_err(io_err(format!("copying descriptor {fd}")))?;
    if copied > MAX_DATA_BYTES {
        return Err(SysError {
            what: format!("descriptor {fd}"),
            err: std::io::Error::other(format!("larger than {MAX_DATA_BYTES} bytes")),
        });
    }
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(io_err(format!("setting the mode of {file}")))
}

/// A minimal /dev (see [`Step::Dev`]).
fn dev(host: &str, at: &str) -> SysResult {
    tmpfs(at, None)?;
    for node in DEV_NODES {
        let target = format!("{at}/{node}");
        mount_point_file(&target)?;
        let src = format!("{host}/dev/{node}");
        sys::mount(Some(&src), &target, None, libc::MS_BIND, None)?;
        // As bubblewrap does: whatever the host's /dev mount allows.
        sys::add_attrs(&target, ATTR_NOSUID, false)?;
    }
    let links = [
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("/proc/self/fd", "fd"),
        ("/proc/kcore", "core"),
        ("pts/ptmx", "ptmx"),
    ];
    for (target, name) in links {
        std::os::unix::fs::symlink(target, format!("{at}/{name}"))
            .map_err(io_err(format!("making {at}/{name}")))?;
    }
    mkdirs(&format!("{at}/shm"))?;
    let pts = format!("{at}/pts");
    mkdirs(&pts)?;
    sys::mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=620"),
    )
}

/// The sandbox's procfs (its own pid namespace's view), with `sys`,
/// `sysrq-trigger`, `irq` and `bus` covered read-only, as bubblewrap does.
/// Their files belong to the host's root and the sandbox user has no
/// capabilities, but writing them checks only ownership: a sandbox whose
/// user is host root (`HUSK_SANDBOX_HOST_UID=0`) could otherwise set
/// `kernel.core_pattern` or trigger sysrq.
fn proc(at: &str) -> SysResult {
    mkdirs(at)?;
    let flags = libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV;
    sys::mount(Some("proc"), at, Some("proc"), flags, None)?;
    for sub in PROC_READ_ONLY {
        let p = format!("{at}/{sub}");
        if std::fs::symlink_metadata(&p).is_err() {
            continue;
        }
        sys::mount(Some(&p), &p, None, libc::MS_BIND | libc::MS_REC, None)?;
        sys::add_attrs(&p, ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV, true)?;
    }
    Ok(())
}
