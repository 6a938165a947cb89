//! Opening a host file as root on behalf of a sandbox, without letting an
//! earlier sandbox redirect the open.
//!
//! When husk is root, a read-only file mount that the sandbox's host uid
//! cannot reach is opened by husk itself and shared or copied into the
//! sandbox (see `shared_tools` and `namespace::copied_mounts`). A plain
//! `open` follows every symlink on the way. A sandbox that once had a
//! directory on that path writable could have left a symlink there (say
//! `tool -> /etc/shadow`), and a later sandbox mounting `…/tool` would get
//! root's file, readable.
//!
//! [`open_untrusting`] resolves the path one component at a time
//! (`O_PATH|O_NOFOLLOW`, each step relative to the directory before it, so
//! nothing can be swapped between a check and its use) and follows a
//! symlink only when neither it nor the directory holding it belongs to the
//! sandbox's uid. Everything else resolves as usual: the user's own
//! symlinks (an npm-installed `claude` is one) keep working.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use rustix::fs::{CWD, FileType, Mode, OFlags};

/// Symlinks followed in one resolution before it is called a loop (the
/// kernel's own limit).
const MAX_LINKS: u32 = 40;

/// Opens `path` for reading on behalf of a sandbox whose host uid and gid
/// are `sandbox`. Refused, with the reason and the name:
///
/// - a symlink the sandbox owns;
/// - once the path has passed a directory the sandbox could change (it
///   owns and may write it, or may write it through group or other bits
///   without the sticky bit), any symlink at all, and a final file the
///   sandbox could not read by its own mode bits: the sandbox may have
///   renamed a root-only file it can see into place.
pub fn open_untrusting(path: &Path, sandbox: u32) -> std::io::Result<File> {
    let refuse = |why: String| {
        std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("refusing to open {} as root: {why}", path.display()),
        )
    };
    let start = if path.is_absolute() { "/" } else { "." };
    let mut dir = open_path(CWD, Path::new(start), OFlags::DIRECTORY)?;
    let mut tainted = sandbox_can_change(&rustix::fs::fstat(&dir)?, sandbox);
    let mut todo: VecDeque<OsString> = components(path);
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        let shown = Path::new(&name).display().to_string();
        let entry =
            open_path(&dir, Path::new(&name), OFlags::empty()).map_err(|e| with_name(e, &shown))?;
        let st = rustix::fs::fstat(&entry)?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind == FileType::Symlink {
            links += 1;
            if links > MAX_LINKS {
                return Err(with_name(
                    std::io::Error::from_raw_os_error(libc::ELOOP),
                    &shown,
                ));
            }
            if st.st_uid == sandbox {
                return Err(refuse(format!(
                    "the symlink {shown} on the way is owned by the sandbox user (uid {sandbox}), which an earlier sandbox could have planted"
                )));
            }
            if tainted {
                return Err(refuse(format!(
                    "the symlink {shown} lies below a directory the sandbox user (uid {sandbox}) can change, where an earlier sandbox could have put it"
                )));
            }
            let target = rustix::fs::readlinkat(&entry, "", Vec::new())?;
            let target = Path::new(std::ffi::OsStr::from_bytes(target.as_bytes()));
            if target.is_absolute() {
                dir = open_path(CWD, Path::new("/"), OFlags::DIRECTORY)?;
            }
            for (i, c) in components(target).into_iter().enumerate() {
                todo.insert(i, c);
            }
            continue;
        }
        if !todo.is_empty() {
            tainted |= sandbox_can_change(&st, sandbox);
            dir = entry;
            continue;
        }
        if kind != FileType::RegularFile {
            return Err(std::io::Error::other(format!(
                "{} is not a regular file (it is a {kind:?})",
                path.display()
            )));
        }
        if tainted && !sandbox_can_read(&st, sandbox) {
            return Err(refuse(format!(
                "it lies below a directory the sandbox user (uid {sandbox}) can change, and that user could not read it itself"
            )));
        }
        return open_checked(&dir, &name, &st, path);
    }
    Err(std::io::Error::other(format!(
        "{} names no file",
        path.display()
    )))
}

/// Opens `name` in `dir` for reading and makes sure it is still the
/// regular file `seen` (not swapped since, not a FIFO that would block).
fn open_checked(
    dir: &OwnedFd,
    name: &OsString,
    seen: &rustix::fs::Stat,
    path: &Path,
) -> std::io::Result<File> {
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, Path::new(name), flags, Mode::empty())?;
    let now = rustix::fs::fstat(&fd)?;
    let same = (now.st_dev, now.st_ino) == (seen.st_dev, seen.st_ino);
    if !same || FileType::from_raw_mode(now.st_mode) != FileType::RegularFile {
        return Err(std::io::Error::other(format!(
            "{} changed while it was being opened",
            path.display()
        )));
    }
    rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
    Ok(File::from(fd))
}

/// Whether uid/gid `sandbox` could add, rename or remove entries that are
/// not its own in a directory with this status (ACLs are not read).
fn sandbox_can_change(st: &rustix::fs::Stat, sandbox: u32) -> bool {
    let m = st.st_mode;
    let sticky = m & 0o1000 != 0;
    (st.st_uid == sandbox && m & 0o200 != 0)
        || (!sticky && st.st_gid == sandbox && m & 0o020 != 0)
        || (!sticky && m & 0o002 != 0)
}

/// Whether uid/gid `sandbox` may read a file with this status.
fn sandbox_can_read(st: &rustix::fs::Stat, sandbox: u32) -> bool {
    let m = st.st_mode;
    if st.st_uid == sandbox {
        m & 0o400 != 0
    } else if st.st_gid == sandbox {
        m & 0o040 != 0
    } else {
        m & 0o004 != 0
    }
}

fn with_name(e: std::io::Error, name: &str) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{name}: {e}"))
}

/// The path's components as names to resolve (`..` stays, `.` and the
/// root go).
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn open_path<Fd: std::os::fd::AsFd>(
    dir: Fd,
    name: &Path,
    extra: OFlags,
) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC | extra,
        Mode::empty(),
    )?)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::fs::symlink;

    use super::*;

    const SANDBOX: u32 = 65534;

    fn scratch(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("husk-rootopen-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn read(path: &Path) -> std::io::Result<String> {
        let mut s = String::new();
        open_untrusting(path, SANDBOX)?.read_to_string(&mut s)?;
        Ok(s)
    }

    fn lchown(path: &Path, uid: u32) {
        std::os::unix::fs::lchown(path, Some(uid), None).unwrap();
    }

    #[test]
    fn the_users_own_symlinks_resolve() {
        let t = scratch("own");
        std::fs::create_dir_all(t.join("lib/pkg")).unwrap();
        std::fs::write(t.join("lib/pkg/cli.js"), "tool").unwrap();
        std::fs::create_dir_all(t.join("bin")).unwrap();
        // Relative with `..`, then absolute, then a directory symlink.
        symlink("../lib/pkg/cli.js", t.join("bin/tool")).unwrap();
        symlink(t.join("bin/tool"), t.join("abs")).unwrap();
        symlink("lib", t.join("libdir")).unwrap();
        assert_eq!(read(&t.join("bin/tool")).unwrap(), "tool");
        assert_eq!(read(&t.join("abs")).unwrap(), "tool");
        assert_eq!(read(&t.join("libdir/pkg/cli.js")).unwrap(), "tool");
        assert_eq!(read(&t.join("bin/../lib/pkg/cli.js")).unwrap(), "tool");
        let _ = std::fs::remove_dir_all(&t);
    }

    #[test]
    fn loops_and_non_files_are_errors() {
        let t = scratch("loop");
        symlink("b", t.join("a")).unwrap();
        symlink("a", t.join("b")).unwrap();
        let e = read(&t.join("a")).unwrap_err();
        assert!(e.to_string().contains("symbolic links"), "{e}");
        let e = read(&t).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert!(read(&t.join("missing")).is_err());
        let _ = std::fs::remove_dir_all(&t);
    }

    #[test]
    fn a_symlink_the_sandbox_planted_is_refused() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIP: needs root (lchown to the sandbox uid)");
            return;
        }
        let t = scratch("planted");
        std::fs::write(t.join("secret"), "root only").unwrap();
        std::fs::create_dir_all(t.join("work")).unwrap();
        // Owned by the sandbox uid, in a root-owned directory.
        symlink(t.join("secret"), t.join("work/tool")).unwrap();
        lchown(&t.join("work/tool"), SANDBOX);
        let e = read(&t.join("work/tool")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("symlink tool"), "{e}");
        assert!(
            e.to_string().contains("is owned by the sandbox user"),
            "{e}"
        );
        // Root's own symlink, but in a directory the sandbox owns (it could
        // have renamed it there).
        lchown(&t.join("work/tool"), 0);
        lchown(&t.join("work"), SANDBOX);
        let e = read(&t.join("work/tool")).unwrap_err();
        assert!(
            e.to_string()
                .contains("lies below a directory the sandbox user"),
            "{e}"
        );
        // A directory symlink on the way counts the same.
        lchown(&t.join("work"), 0);
        symlink(&t, t.join("work/up")).unwrap();
        lchown(&t.join("work/up"), SANDBOX);
        let e = read(&t.join("work/up/secret")).unwrap_err();
        assert!(e.to_string().contains("symlink up"), "{e}");
        // The same file by its own path is fine.
        assert_eq!(read(&t.join("secret")).unwrap(), "root only");
        let _ = std::fs::remove_dir_all(&t);
    }

    #[test]
    fn below_a_directory_the_sandbox_can_change_only_what_it_could_read() {
        use std::os::unix::fs::PermissionsExt;
        if !rustix::process::geteuid().is_root() {
            eprintln!("SKIP: needs root (chown to the sandbox uid)");
            return;
        }
        let t = scratch("tainted");
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        // A directory the sandbox owns, two levels up: a root-only file
        // it could have renamed into place is refused, a file it could
        // read anyway is not.
        std::fs::create_dir_all(t.join("box/bin")).unwrap();
        lchown(&t.join("box"), SANDBOX);
        std::fs::write(t.join("box/bin/tool"), "root only").unwrap();
        mode(&t.join("box/bin/tool"), 0o600);
        let e = read(&t.join("box/bin/tool")).unwrap_err();
        assert!(e.to_string().contains("could not read it itself"), "{e}");
        mode(&t.join("box/bin/tool"), 0o644);
        assert_eq!(read(&t.join("box/bin/tool")).unwrap(), "root only");
        // World-writable without the sticky bit: root's own symlink there
        // is refused; with the sticky bit (as /tmp) it is followed.
        std::fs::create_dir_all(t.join("shared")).unwrap();
        std::fs::write(t.join("real"), "tool").unwrap();
        symlink(t.join("real"), t.join("shared/link")).unwrap();
        mode(&t.join("shared"), 0o777);
        let e = read(&t.join("shared/link")).unwrap_err();
        assert!(e.to_string().contains("symlink link lies below"), "{e}");
        mode(&t.join("shared"), 0o1777);
        assert_eq!(read(&t.join("shared/link")).unwrap(), "tool");
        // A FIFO is not a regular file (and is never opened).
        rustix::fs::mknodat(
            rustix::fs::CWD,
            t.join("fifo").as_path(),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let e = read(&t.join("fifo")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let _ = std::fs::remove_dir_all(&t);
    }
}
