//! One shared, readable copy of a host file that a namespace sandbox's
//! host uid cannot reach.
//!
//! When husk runs as root, bubblewrap runs as an unprivileged uid (65534),
//! which cannot look into `/root`, where `npm install` puts Claude Code's
//! ~380 MB binary for root. Copying such a file into every sandbox's tmpfs
//! costs its size in host RAM per sandbox. Instead, husk (root) puts it
//! once into a shared directory that only root and the sandbox's group can
//! enter, and every sandbox bind-mounts that read-only:
//!
//! - a hard link when the file is on the same filesystem and its mode
//!   already lets others read and execute it (no bytes copied at all);
//! - else one copy (mode `r-xr-xr-x`, like a bind mount of the original
//!   with its write bits dropped).
//!
//! Entries are keyed by the source's identity (device, inode, size, mtime,
//! path), so a changed binary gets a new entry and a sandbox never sees a
//! half-written one (entries are built in a temporary directory and
//! renamed into place). The directory is `$HUSK_SHARED_TOOLS_DIR`, else
//! `/var/cache/husk/shared-tools`; if it cannot be made reachable the
//! caller falls back to a per-sandbox copy.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Where shared copies live unless `HUSK_SHARED_TOOLS_DIR` says otherwise.
const DEFAULT_DIR: &str = "/var/cache/husk/shared-tools";

/// The shared directory.
pub fn dir() -> PathBuf {
    std::env::var_os("HUSK_SHARED_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
}

/// A path to the contents of `src` that host uid/gid `owner` can read:
/// the shared entry (made if needed). `Err` says why there is none.
///
/// `src` is opened as root without following any symlink that host uid
/// `gid` (the sandbox's) owns or could have placed (see `root_open`); the
/// entry is made from that open file, never from the path again.
pub fn shared_path(src: &Path, base: &Path, gid: u32) -> std::io::Result<PathBuf> {
    let file = crate::root_open::open_untrusting(src, gid)?;
    let meta = file.metadata()?;
    ensure_base(base, gid)?;
    let name = src
        .file_name()
        .ok_or_else(|| std::io::Error::other("no file name"))?;
    let entry = base.join(key(src, &meta));
    let target = entry.join(name);
    if std::fs::metadata(&target).is_ok_and(|m| m.is_file() && m.len() == meta.len()) {
        return Ok(target);
    }
    let tmp = base.join(format!(".tmp-{}-{}", std::process::id(), unique()));
    std::fs::create_dir(&tmp)?;
    let built = build(&file, &meta, &tmp.join(name), gid).and_then(|()| {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o750))?;
        std::os::unix::fs::chown(&tmp, Some(0), Some(gid))
    });
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // Another husk may have made the same entry meanwhile: theirs wins.
    if std::fs::rename(&tmp, &entry).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if std::fs::metadata(&target).is_ok_and(|m| m.len() == meta.len()) {
        Ok(target)
    } else {
        Err(std::io::Error::other("the shared entry did not appear"))
    }
}

/// The base directory, root-owned, group `gid`, mode 0750 (only root and
/// the sandbox group enter).
fn ensure_base(base: &Path, gid: u32) -> std::io::Result<()> {
    if let Some(parent) = base.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::create_dir(base) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let m = std::fs::symlink_metadata(base)?;
    if !m.is_dir() || m.uid() != 0 {
        return Err(std::io::Error::other(format!(
            "{} is not a directory owned by root",
            base.display()
        )));
    }
    std::os::unix::fs::chown(base, Some(0), Some(gid))?;
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o750))
}

/// A hard link if that already gives everyone read and execute, else a
/// copy with mode 0555. Both come from the open file `src`.
fn build(
    src: &std::fs::File,
    meta: &std::fs::Metadata,
    dst: &Path,
    gid: u32,
) -> std::io::Result<()> {
    let world_rx = meta.mode() & 0o005 == 0o005;
    let linked = || {
        rustix::fs::linkat(
            src,
            "",
            rustix::fs::CWD,
            dst,
            rustix::fs::AtFlags::EMPTY_PATH,
        )
    };
    if world_rx && linked().is_ok() {
        return Ok(());
    }
    let mut from = src;
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)?;
    std::io::copy(&mut from, &mut to)?;
    drop(to);
    std::os::unix::fs::chown(dst, Some(0), Some(gid))?;
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o555))
}

fn key(src: &Path, m: &std::fs::Metadata) -> String {
    let mut h = Sha256::new();
    h.update(src.as_os_str().as_encoded_bytes());
    for n in [
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime() as u64,
        m.mtime_nsec() as u64,
    ] {
        h.update(n.to_le_bytes());
    }
    h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[test]
    fn a_world_readable_file_is_linked_once_and_reused() {
        if !root() {
            eprintln!("SKIP: needs root (chown)");
            return;
        }
        let t = tempfile_dir("link");
        let src = t.join("private/tool");
        std::fs::create_dir_all(src.parent().unwrap()).unwrap();
        std::fs::write(&src, b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755)).unwrap();
        let base = t.join("shared");
        let a = shared_path(&src, &base, 65534).unwrap();
        let b = shared_path(&src, &base, 65534).unwrap();
        assert_eq!(a, b);
        let (ma, ms) = (
            std::fs::metadata(&a).unwrap(),
            std::fs::metadata(&src).unwrap(),
        );
        assert_eq!(ma.ino(), ms.ino(), "a hard link, not a copy");
        let mb = std::fs::metadata(&base).unwrap();
        assert_eq!((mb.mode() & 0o777, mb.uid(), mb.gid()), (0o750, 0, 65534));
        let me = std::fs::metadata(a.parent().unwrap()).unwrap();
        assert_eq!((me.mode() & 0o777, me.gid()), (0o750, 65534));
        // A changed binary is a new entry.
        std::fs::write(&src, b"#!/bin/sh\necho changed\n").unwrap();
        let c = shared_path(&src, &base, 65534).unwrap();
        assert_ne!(c, a);
        assert_eq!(std::fs::read(&c).unwrap(), b"#!/bin/sh\necho changed\n");
        let _ = std::fs::remove_dir_all(&t);
    }

    #[test]
    fn a_private_file_is_copied_readable() {
        if !root() {
            eprintln!("SKIP: needs root (chown)");
            return;
        }
        let t = tempfile_dir("copy");
        let src = t.join("tool");
        std::fs::write(&src, b"bytes").unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o700)).unwrap();
        let p = shared_path(&src, &t.join("shared"), 65534).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_ne!(m.ino(), std::fs::metadata(&src).unwrap().ino());
        assert_eq!(m.mode() & 0o777, 0o555);
        // The source keeps its mode.
        let ms = std::fs::metadata(&src).unwrap();
        assert_eq!(ms.mode() & 0o777, 0o700);
        let _ = std::fs::remove_dir_all(&t);
    }

    #[test]
    fn a_symlink_left_by_a_sandbox_is_not_followed() {
        if !root() {
            eprintln!("SKIP: needs root (lchown)");
            return;
        }
        let t = tempfile_dir("planted");
        std::fs::write(t.join("secret"), b"root only").unwrap();
        std::fs::set_permissions(t.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(t.join("secret"), t.join("tool")).unwrap();
        std::os::unix::fs::lchown(t.join("tool"), Some(65534), None).unwrap();
        let base = t.join("shared");
        let e = shared_path(&t.join("tool"), &base, 65534).unwrap_err();
        assert!(
            e.to_string()
                .contains("the symlink tool on the way is owned by"),
            "{e}"
        );
        // Nothing of the secret reached the shared directory.
        let copies = std::fs::read_dir(&base).map_or(0, |d| d.count());
        assert_eq!(copies, 0);
        let _ = std::fs::remove_dir_all(&t);
    }

    #[test]
    fn a_base_not_owned_by_root_is_refused() {
        if !root() {
            eprintln!("SKIP: needs root (chown)");
            return;
        }
        let t = tempfile_dir("owner");
        let base = t.join("shared");
        std::fs::create_dir_all(&base).unwrap();
        std::os::unix::fs::chown(&base, Some(65534), None).unwrap();
        std::fs::write(t.join("tool"), b"x").unwrap();
        let e = shared_path(&t.join("tool"), &base, 65534).unwrap_err();
        assert!(
            e.to_string().contains("not a directory owned by root"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&t);
    }

    fn tempfile_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("husk-shared-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
