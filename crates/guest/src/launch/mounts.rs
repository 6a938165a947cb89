//! Carrying out a plan's filesystem steps under the new root, before the
//! final `pivot_root`. Every source is a host path joined onto where the
//! host's root now is (the launcher has already pivoted into its private
//! tmpfs, so host paths such as `/tmp/x` stay reachable while the new root
//! is built). Every destination is resolved *inside the new root* and
//! mounted onto by descriptor (see [`fdmount`](super::fdmount)): a symlink
//! in a bound host directory means there what it would mean inside the
//! sandbox and never leads to the host.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

use husk_protocol::launch::Step;
use rustix::fs::{Mode, OFlags};

use super::fdmount::{self, Opt};
use super::sys::{self, ATTR_NODEV, ATTR_NOSUID, ATTR_RDONLY, SysError, SysResult};

/// `MOUNT_ATTR_NOEXEC`.
const ATTR_NOEXEC: u64 = 0x8;

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
    let root = rustix::fs::open(
        places.root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| SysError {
        what: format!("opening the new root {}", places.root),
        err: e.into(),
    })?;
    for (i, step) in steps.iter().enumerate() {
        let dst = step.dst();
        match step {
            Step::Bind { src, writable, .. } => {
                let src = format!("{}{src}", places.host);
                let meta = std::fs::metadata(&src).map_err(io_err(format!("bind source {src}")))?;
                let at = if meta.is_dir() {
                    dest_dir(&root, dst)?
                } else {
                    dest_file(&root, dst)?
                };
                bind(&src, &at, *writable, dst)?
            }
            Step::Symlink { target, .. } => {
                let (parent, name) = split(dst);
                let dir = dest_dir(&root, parent)?;
                rustix::fs::symlinkat(target.as_str(), &dir, name).map_err(|e| SysError {
                    what: format!("making the symlink {dst}"),
                    err: e.into(),
                })?;
            }
            Step::Dir { .. } => drop(dest_dir(&root, dst)?),
            Step::Tmpfs { size_bytes, .. } => {
                let at = dest_dir(&root, dst)?;
                let size = size_bytes.to_string();
                let opts = [Opt::Str("mode", "0755"), Opt::Str("size", &size)];
                let fs = fdmount::new_fs("tmpfs", &opts, ATTR_NOSUID | ATTR_NODEV, dst)?;
                fdmount::attach(&fs, &at, dst)?;
            }
            Step::Dev { .. } => dev(places.host, &root, dst)?,
            Step::Proc { .. } => proc(&root, dst)?,
            Step::Data { fd, mode, .. } => {
                let file = format!("{}/{i}", places.data);
                data(*fd, &file, *mode)?;
                bind(&file, &dest_file(&root, dst)?, false, dst)?;
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

/// A read-only (unless `writable`), nosuid, nodev recursive bind of host
/// path `src` onto `at`; the attributes are set before it is attached.
fn bind(src: &str, at: &OwnedFd, writable: bool, dst: &str) -> SysResult {
    let tree = fdmount::clone_tree(src, true)?;
    let ro = if writable { 0 } else { ATTR_RDONLY };
    fdmount::add_attrs(&tree, ro | ATTR_NOSUID | ATTR_NODEV, true, dst)?;
    fdmount::attach(&tree, at, dst)
}

/// `dst`'s parent and last name (`/` and `dst` for a top-level path).
fn split(dst: &str) -> (&str, &str) {
    match dst.rsplit_once('/') {
        Some((parent, name)) => (parent, name),
        None => ("", dst),
    }
}

/// Destination `dst` (a path inside the sandbox) as a directory under the
/// new root, made where missing, every component resolved inside the root.
fn dest_dir(root: &OwnedFd, dst: &str) -> SysResult<OwnedFd> {
    let named = |err: std::io::Error| SysError {
        what: format!("mount destination {dst}"),
        err,
    };
    let mut dir = fdmount::open_in_root(root, ".", libc::O_DIRECTORY).map_err(named)?;
    let names: Vec<&str> = dst.split('/').filter(|c| !c.is_empty()).collect();
    for i in 0..names.len() {
        let prefix = names[..=i].join("/");
        match fdmount::open_in_root(root, &prefix, libc::O_DIRECTORY) {
            Ok(fd) => dir = fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                // Made in the directory resolved so far. A name that is
                // taken (a dangling symlink) fails the open below.
                match rustix::fs::mkdirat(&dir, names[i], Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => {
                        return Err(SysError {
                            what: format!("making /{prefix} for the mount destination {dst}"),
                            err: e.into(),
                        });
                    }
                }
                dir = fdmount::open_in_root(root, &prefix, libc::O_DIRECTORY).map_err(|err| {
                    let why = if err.raw_os_error() == Some(libc::ENOENT) {
                        ": it exists but leads to no directory inside the sandbox (a dangling symlink?)"
                    } else {
                        ""
                    };
                    SysError {
                        what: format!("mount destination /{prefix}{why}"),
                        err,
                    }
                })?;
            }
            Err(err) => {
                return Err(SysError {
                    what: format!("mount destination /{prefix}"),
                    err,
                });
            }
        }
    }
    Ok(dir)
}

/// Destination `dst` as a file to mount a file on: an empty one is made
/// (mode 0444) unless something is there already.
fn dest_file(root: &OwnedFd, dst: &str) -> SysResult<OwnedFd> {
    let rel = dst.trim_start_matches('/');
    match fdmount::open_in_root(root, rel, 0) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(err) => {
            return Err(SysError {
                what: format!("mount destination {dst}"),
                err,
            });
        }
    }
    let (parent, name) = split(dst);
    let dir = dest_dir(root, parent)?;
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let what = || format!("making the mount point {dst}");
    rustix::fs::openat(&dir, name, flags, Mode::from_raw_mode(0o444)).map_err(|e| SysError {
        what: what(),
        err: e.into(),
    })?;
    fdmount::open_in_root(root, rel, 0).map_err(|err| SysError { what: what(), err })
}

fn mkdirs(at: &str) -> SysResult {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(at)
        .map_err(io_err(format!("making the directory {at}")))
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

/// A minimal /dev (see [`Step::Dev`]), built inside its own fresh tmpfs
/// through that tmpfs's descriptor.
fn dev(host: &str, root: &OwnedFd, dst: &str) -> SysResult {
    let at = dest_dir(root, dst)?;
    let opts = [Opt::Str("mode", "0755")];
    let dev = fdmount::new_fs("tmpfs", &opts, ATTR_NOSUID | ATTR_NODEV, dst)?;
    fdmount::attach(&dev, &at, dst)?;
    let fail = |what: String| {
        move |e: rustix::io::Errno| SysError {
            what,
            err: e.into(),
        }
    };
    for node in DEV_NODES {
        let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC;
        rustix::fs::openat(&dev, node, flags, Mode::from_raw_mode(0o444))
            .map_err(fail(format!("making {dst}/{node}")))?;
        let target = rustix::fs::openat(&dev, node, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
            .map_err(fail(format!("opening {dst}/{node}")))?;
        let tree = fdmount::clone_tree(&format!("{host}/dev/{node}"), false)?;
        // As bubblewrap does: whatever the host's /dev mount allows.
        let shown = format!("{dst}/{node}");
        fdmount::add_attrs(&tree, ATTR_NOSUID, false, &shown)?;
        fdmount::attach(&tree, &target, &shown)?;
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
        rustix::fs::symlinkat(target, &dev, name).map_err(fail(format!("making {dst}/{name}")))?;
    }
    for name in ["shm", "pts"] {
        rustix::fs::mkdirat(&dev, name, Mode::from_raw_mode(0o755))
            .map_err(fail(format!("making {dst}/{name}")))?;
    }
    let pts = rustix::fs::openat(
        &dev,
        "pts",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(fail(format!("opening {dst}/pts")))?;
    let opts = [
        Opt::Flag("newinstance"),
        Opt::Str("ptmxmode", "0666"),
        Opt::Str("mode", "620"),
    ];
    let shown = format!("{dst}/pts");
    let devpts = fdmount::new_fs("devpts", &opts, ATTR_NOSUID | ATTR_NOEXEC, &shown)?;
    fdmount::attach(&devpts, &pts, &shown)
}

/// The sandbox's procfs (its own pid namespace's view), with `sys`,
/// `sysrq-trigger`, `irq` and `bus` covered read-only, as bubblewrap does.
/// Their files belong to the host's root and the sandbox user has no
/// capabilities, but writing them checks only ownership: a sandbox whose
/// user is host root (`HUSK_SANDBOX_HOST_UID=0`) could otherwise set
/// `kernel.core_pattern` or trigger sysrq.
fn proc(root: &OwnedFd, dst: &str) -> SysResult {
    let at = dest_dir(root, dst)?;
    let proc = fdmount::new_fs("proc", &[], ATTR_NOSUID | ATTR_NOEXEC | ATTR_NODEV, dst)?;
    fdmount::attach(&proc, &at, dst)?;
    for sub in PROC_READ_ONLY {
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let target = match rustix::fs::openat(&proc, sub, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => {
                return Err(SysError {
                    what: format!("opening {dst}/{sub}"),
                    err: e.into(),
                });
            }
        };
        let shown = format!("{dst}/{sub}");
        let tree = fdmount::clone_tree_at(&proc, sub, &shown)?;
        fdmount::add_attrs(&tree, ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV, true, &shown)?;
        fdmount::attach(&tree, &target, &shown)?;
    }
    Ok(())
}
