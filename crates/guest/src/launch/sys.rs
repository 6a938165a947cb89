//! Thin, checked wrappers over the system calls the launcher makes. Each
//! returns the call's own error with the path or operation it failed on.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// An error with what was being done.
#[derive(Debug)]
pub struct SysError {
    pub what: String,
    pub err: io::Error,
}

impl std::fmt::Display for SysError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.err)
    }
}

pub type SysResult<T = ()> = Result<T, SysError>;

pub(super) fn check(rc: libc::c_long, what: impl FnOnce() -> String) -> SysResult<libc::c_long> {
    if rc < 0 {
        Err(SysError {
            what: what(),
            err: io::Error::last_os_error(),
        })
    } else {
        Ok(rc)
    }
}

/// [`check`] for a call that returns a new descriptor.
pub(super) fn check_fd(rc: libc::c_long, what: impl FnOnce() -> String) -> SysResult<OwnedFd> {
    let fd = check(rc, what)?;
    // SAFETY: the system call succeeded and returned a new descriptor that
    // nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

pub fn cstr(s: &str) -> SysResult<CString> {
    CString::new(s).map_err(|_| SysError {
        what: format!("{s:?}"),
        err: io::Error::other("contains a NUL byte"),
    })
}

/// `MOUNT_ATTR_*` bits of mount_setattr(2).
pub const ATTR_RDONLY: u64 = 0x1;
pub const ATTR_NOSUID: u64 = 0x2;
pub const ATTR_NODEV: u64 = 0x4;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
pub struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

impl MountAttr {
    /// Sets `attrs`, changes nothing else.
    pub fn adding(attrs: u64) -> MountAttr {
        MountAttr {
            attr_set: attrs,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        }
    }
}

/// mount(2).
pub fn mount(
    src: Option<&str>,
    dst: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> SysResult {
    let what = || {
        format!(
            "mounting {} on {dst}",
            src.or(fstype).unwrap_or("(remount)")
        )
    };
    let src_c = src.map(cstr).transpose()?;
    let dst_c = cstr(dst)?;
    let type_c = fstype.map(cstr).transpose()?;
    let data_c = data.map(cstr).transpose()?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is null or a NUL-terminated string that lives
    // until the call returns.
    let rc = unsafe {
        libc::mount(
            ptr(&src_c),
            dst_c.as_ptr(),
            ptr(&type_c),
            flags,
            ptr(&data_c).cast(),
        )
    };
    check(rc.into(), what).map(drop)
}

/// Adds mount attributes to the mount at `path` (and, if `recursive`,
/// every mount below it). Needs Linux 5.12.
pub fn add_attrs(path: &str, attrs: u64, recursive: bool) -> SysResult {
    let p = cstr(path)?;
    setattr(libc::AT_FDCWD, &p, 0, attrs, recursive).map_err(|err| SysError {
        what: format!("making {path} read-only/nosuid/nodev"),
        err,
    })
}

/// mount_setattr(2) adding `attrs` to the mount `path` names relative to
/// `dirfd` (`flags` as `AT_*`; `AT_RECURSIVE` added if `recursive`).
pub(super) fn setattr(
    dirfd: RawFd,
    path: &std::ffi::CStr,
    flags: libc::c_int,
    attrs: u64,
    recursive: bool,
) -> io::Result<()> {
    let attr = MountAttr::adding(attrs);
    let flags = flags | if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: the path is NUL-terminated and `attr` is a mount_attr of the
    // size passed; the kernel only reads both during the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(rc, String::new).map(drop).map_err(|e| e.err)
}

/// The first mount system call the launcher needs that this kernel lacks
/// (`ENOSYS`; `mount_setattr`, Linux 5.12, is the newest) or that a
/// seccomp policy, or an LSM hook on the call itself, refuses (`EPERM`,
/// `EACCES`), with that error. Each is called with arguments the kernel
/// rejects (`EINVAL`, `EBADF`, `EFAULT`) before it reads anything. Call it
/// in the sandbox's own user and mount namespaces: `open_tree` with
/// `OPEN_TREE_CLONE`, `move_mount`, `fsopen` and `fsmount` check the
/// caller's mount capability first, and only there is an `EPERM` never the
/// kernel's own. (An LSM rule that looks at the paths, like AppArmor's
/// mount rules, is not seen here: it fails the start when it applies.)
pub fn unusable_mount_call() -> Option<(&'static str, io::Error)> {
    const OPEN_TREE_CLONE: libc::c_long = 1;
    let calls: [(&str, libc::c_long, [libc::c_long; 5]); 7] = [
        ("mount_setattr", libc::SYS_mount_setattr, [-1, 0, 0, 0, 0]),
        ("openat2", libc::SYS_openat2, [-1, 0, 0, 0, 0]),
        (
            "open_tree",
            libc::SYS_open_tree,
            [-1, 0, OPEN_TREE_CLONE, 0, 0],
        ),
        ("move_mount", libc::SYS_move_mount, [-1, 0, -1, 0, 0]),
        ("fsopen", libc::SYS_fsopen, [0, 0, 0, 0, 0]),
        ("fsconfig", libc::SYS_fsconfig, [-1, 0, 0, 0, 0]),
        ("fsmount", libc::SYS_fsmount, [-1, 0, 0, 0, 0]),
    ];
    calls.into_iter().find_map(|(name, nr, a)| {
        // SAFETY: null pointers, bad descriptors and zero sizes: each call
        // fails, at worst with EFAULT from the kernel's checked copy of a
        // null path; nothing of ours is read or written.
        let rc = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4]) };
        let err = io::Error::last_os_error();
        let unusable = rc < 0
            && matches!(
                err.raw_os_error(),
                Some(libc::ENOSYS | libc::EPERM | libc::EACCES)
            );
        unusable.then_some((name, err))
    })
}

pub fn umount_detach(path: &str) -> SysResult {
    let p = cstr(path)?;
    // SAFETY: a NUL-terminated path, read during the call only.
    let rc = unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
    check(rc.into(), || format!("unmounting {path}")).map(drop)
}

/// pivot_root(2). With `(".", ".")` the new root stacks on the old one,
/// which is then unmounted from ".".
pub fn pivot(new_root: &str, put_old: &str) -> SysResult {
    let (new_c, old_c) = (cstr(new_root)?, cstr(put_old)?);
    // SAFETY: both arguments are NUL-terminated strings read during the call.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, new_c.as_ptr(), old_c.as_ptr()) };
    check(rc, || format!("pivot_root into {new_root}")).map(drop)
}

pub fn unshare(flags: libc::c_int, what: &str) -> SysResult {
    // SAFETY: unshare takes no pointers.
    let rc = unsafe { libc::unshare(flags) };
    check(rc.into(), || format!("unshare ({what})")).map(drop)
}

pub fn prctl(op: libc::c_int, arg: libc::c_ulong, what: &str) -> SysResult {
    // SAFETY: the prctl operations used here take integer arguments only.
    let rc = unsafe { libc::prctl(op, arg, 0 as libc::c_ulong, 0 as libc::c_ulong, 0) };
    check(rc.into(), || what.to_string()).map(drop)
}

/// Closes every descriptor from `from` up.
pub fn close_from(from: RawFd) -> SysResult {
    // SAFETY: close_range takes integers; no descriptor at or above `from`
    // is owned by any Rust object once the launcher calls this.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, from as u32, u32::MAX, 0u32) };
    check(rc, || format!("closing descriptors from {from}")).map(drop)
}

/// Drops every capability: the bounding set, ambient, and the thread's own
/// (permitted, effective, inheritable).
pub fn drop_capabilities() -> SysResult {
    for cap in 0..64 {
        // SAFETY: integer arguments only. Capabilities the kernel does not
        // know fail with EINVAL, which ends the loop.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINVAL) && cap > 0 {
                break;
            }
            return Err(SysError {
                what: format!("dropping capability {cap} from the bounding set"),
                err,
            });
        }
    }
    prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        "clearing ambient capabilities",
    )?;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let data = [
        Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
        Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    // SAFETY: capset reads a version-3 header and two data words, both
    // valid for the duration of the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    check(rc, || "dropping capabilities".into()).map(drop)
}

pub fn set_limit(resource: libc::__rlimit_resource_t, value: u64, what: &str) -> SysResult {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit reads the struct we pass by reference and nothing else.
    let rc = unsafe { libc::setrlimit(resource, &lim) };
    check(rc.into(), || format!("setting {what}")).map(drop)
}

pub fn set_affinity(cpus: &[u32]) -> SysResult {
    if cpus.is_empty() {
        return Ok(());
    }
    let mut set = rustix::thread::CpuSet::new();
    for &c in cpus {
        set.set(c as usize);
    }
    rustix::thread::sched_setaffinity(None, &set).map_err(|e| SysError {
        what: format!("binding to CPUs {cpus:?}"),
        err: e.into(),
    })
}

/// execve(2) with an empty environment; returns only on failure.
pub fn exec(argv: &[String]) -> SysError {
    let args: Result<Vec<CString>, SysError> = argv.iter().map(|a| cstr(a)).collect();
    let args = match args {
        Ok(a) => a,
        Err(e) => return e,
    };
    let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let env: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: argv and envp are null-terminated arrays of NUL-terminated
    // strings that outlive the call.
    unsafe { libc::execve(ptrs[0], ptrs.as_ptr(), env.as_ptr()) };
    SysError {
        what: format!("starting {}", argv[0]),
        err: io::Error::last_os_error(),
    }
}
