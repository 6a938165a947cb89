//! Mounting onto descriptors, not paths: the new root's destinations are
//! resolved once with `openat2(RESOLVE_IN_ROOT)`, and mounts are made
//! with `open_tree`/`fsmount` and attached with `move_mount` to those
//! descriptors.
//!
//! Why: a bind-mounted host directory (a writable `/workspace`) can hold a
//! symlink an earlier sandbox left there. Resolved by path while the layout
//! is built, `/workspace/cache -> /oldroot/tmp/x` would reach the host's
//! root (kept under `/oldroot` until the final pivot) and make directories
//! and mount-point files on the host. Resolved in the new root, every
//! symlink means what it would mean inside the sandbox, and nothing can
//! lead out of it. All of this is Linux ≥ 5.6; the launcher already needs
//! 5.12 (`mount_setattr`).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use super::sys::{self, SysError, SysResult, check, check_fd, cstr};

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `rel` (a path inside the new root, without the leading `/`) opened
/// `O_PATH` as the sandbox would see it: every symlink resolves inside
/// `root`, `..` stops at it, `/proc` magic links are refused.
pub fn open_in_root(root: &OwnedFd, rel: &str, extra: libc::c_int) -> io::Result<OwnedFd> {
    let path = CString::new(rel).map_err(|_| io::Error::other("contains a NUL byte"))?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC | extra) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // With RESOLVE_IN_ROOT the kernel answers EAGAIN when a rename or a
    // mount raced a `..` step; a few tries, then the error.
    let mut tries = 0;
    loop {
        // SAFETY: a NUL-terminated path and an open_how of the size
        // passed, both read during the call only.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        match check_fd(rc, String::new) {
            Err(e) if e.err.raw_os_error() == Some(libc::EAGAIN) && tries < 8 => tries += 1,
            r => return r.map_err(|e| e.err),
        }
    }
}

/// A detached copy of the mount tree at host path `src` (recursively if
/// `recursive`), to be given attributes and attached with [`attach`].
pub fn clone_tree(src: &str, recursive: bool) -> SysResult<OwnedFd> {
    let p = cstr(src)?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: a NUL-terminated path, read during the call only.
    let rc = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, p.as_ptr(), flags) };
    check_fd(rc, || format!("bind source {src}"))
}

/// The same as [`clone_tree`] for `name` below the mount `dir`.
pub fn clone_tree_at(dir: &OwnedFd, name: &str, what: &str) -> SysResult<OwnedFd> {
    let p = cstr(name)?;
    let flags = OPEN_TREE_CLONE | (libc::O_CLOEXEC | libc::AT_RECURSIVE) as libc::c_uint;
    // SAFETY: a descriptor we own and a NUL-terminated name, read during
    // the call only.
    let rc = unsafe { libc::syscall(libc::SYS_open_tree, dir.as_raw_fd(), p.as_ptr(), flags) };
    check_fd(rc, || format!("cloning {what}"))
}

/// Adds `attrs` (`MOUNT_ATTR_*`) to the mount `tree` (and every mount
/// below it if `recursive`), before it is attached.
pub fn add_attrs(tree: &OwnedFd, attrs: u64, recursive: bool, what: &str) -> SysResult {
    sys::setattr(tree.as_raw_fd(), c"", libc::AT_EMPTY_PATH, attrs, recursive).map_err(|err| {
        SysError {
            what: format!("setting the mount attributes of {what}"),
            err,
        }
    })
}

/// Attaches the detached mount `tree` on `at`.
pub fn attach(tree: &OwnedFd, at: impl AsFd, what: &str) -> SysResult {
    // SAFETY: a descriptor we own, one we borrow for the call, and empty
    // NUL-terminated paths, read during the call only.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            at.as_fd().as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    check(rc, || format!("mounting {what}")).map(drop)
}

/// One option of a new filesystem: a flag, or a key with a value.
pub enum Opt<'a> {
    Flag(&'a str),
    Str(&'a str, &'a str),
}

/// A new, detached instance of filesystem `fstype` with `opts`, its mount
/// carrying `attrs` (`MOUNT_ATTR_*`).
pub fn new_fs(fstype: &str, opts: &[Opt<'_>], attrs: u64, dst: &str) -> SysResult<OwnedFd> {
    let what = || format!("making a {fstype} for {dst}");
    let t = cstr(fstype)?;
    // SAFETY: a NUL-terminated name, read during the call only.
    let rc = unsafe { libc::syscall(libc::SYS_fsopen, t.as_ptr(), FSOPEN_CLOEXEC) };
    let fs = check_fd(rc, what)?;
    for opt in opts {
        let (cmd, key, value) = match opt {
            Opt::Flag(k) => (FSCONFIG_SET_FLAG, cstr(k)?, None),
            Opt::Str(k, v) => (FSCONFIG_SET_STRING, cstr(k)?, Some(cstr(v)?)),
        };
        let vptr = value.as_ref().map_or(std::ptr::null(), |v| v.as_ptr());
        // SAFETY: a descriptor we own, NUL-terminated key and value (or
        // null for a flag), read during the call only.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                cmd,
                key.as_ptr(),
                vptr,
                0,
            )
        };
        check(rc, || {
            format!(
                "making a {fstype} for {dst}: option {}",
                key.to_string_lossy()
            )
        })?;
    }
    // SAFETY: a descriptor we own; no pointers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    };
    check(rc, what)?;
    // SAFETY: a descriptor we own; no pointers.
    let rc = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) };
    check_fd(rc, what)
}
