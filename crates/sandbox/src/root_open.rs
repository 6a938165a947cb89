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

/// Opens `path` for reading, refusing any symlink owned by `untrusted_uid`
/// or lying in a directory it owns. The error names the symlink.
pub fn open_untrusting(path: &Path, untrusted_uid: u32) -> std::io::Result<File> {
    let refuse = |what: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, what);
    let start = if path.is_absolute() { "/" } else { "." };
    let mut dir = open_path(CWD, Path::new(start), OFlags::DIRECTORY)?;
    let mut dir_owner = owner(&dir)?;
    let mut todo: VecDeque<OsString> = components(path);
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        let entry = open_path(&dir, Path::new(&name), OFlags::empty())?;
        let st = rustix::fs::fstat(&entry)?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind == FileType::Symlink {
            links += 1;
            if links > MAX_LINKS {
                return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
            }
            if st.st_uid == untrusted_uid || dir_owner == untrusted_uid {
                return Err(refuse(format!(
                    "refusing to follow the symlink {} on the way to {}: it {} the sandbox user (uid {untrusted_uid}), which an earlier sandbox could have planted",
                    Path::new(&name).display(),
                    path.display(),
                    if st.st_uid == untrusted_uid {
                        "is owned by"
                    } else {
                        "lies in a directory owned by"
                    },
                )));
            }
            let target = rustix::fs::readlinkat(&entry, "", Vec::new())?;
            let target = Path::new(std::ffi::OsStr::from_bytes(target.as_bytes()));
            if target.is_absolute() {
                dir = open_path(CWD, Path::new("/"), OFlags::DIRECTORY)?;
                dir_owner = owner(&dir)?;
            }
            for (i, c) in components(target).into_iter().enumerate() {
                todo.insert(i, c);
            }
            continue;
        }
        if todo.is_empty() {
            if kind != FileType::RegularFile {
                return Err(std::io::Error::other(format!(
                    "{} is not a regular file",
                    path.display()
                )));
            }
            // The same entry, opened for reading; O_NOFOLLOW makes a swap
            // to a symlink since the check fail instead of being followed.
            let fd = rustix::fs::openat(
                &dir,
                Path::new(&name),
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
                Mode::empty(),
            )?;
            return Ok(File::from(fd));
        }
        dir_owner = st.st_uid;
        dir = entry;
    }
    Err(std::io::Error::other(format!(
        "{} names no file",
        path.display()
    )))
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

fn owner(fd: &OwnedFd) -> std::io::Result<u32> {
    Ok(rustix::fs::fstat(fd)?.st_uid)
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
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
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
            e.to_string().contains("lies in a directory owned by"),
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
}
