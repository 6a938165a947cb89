//! Values derived from a file's bytes — a SHA-256 of the guest agent or
//! busybox for the image key, QEMU's `--version` line for a snapshot check —
//! kept on disk, keyed by the file's identity (device, inode, size, and
//! modification and change times to the nanosecond).
//!
//! Why: every `husk exec` resolves the guest image and checks its snapshot
//! before it starts QEMU. Hashing 4 MiB of binaries and running
//! `qemu-system-x86_64 --version` cost 20–60 ms of a ~0.45 s restored
//! start; looking the answers up costs a few system calls.
//!
//! When an entry may be trusted: the change time is part of the key, and
//! nothing a user runs can set it (every write, `utimensat`, link or rename
//! moves it), so a rewritten, replaced or `cp -p`-ed file is never found
//! under its old entry. What is left:
//! - a rewrite within the file system's timestamp tick (a few ms) that
//!   keeps the size: so, as git does with its index, a file changed less
//!   than [`SETTLE`] ago is never cached;
//! - the path meaning another file between the lookup of the key and the
//!   reading of the bytes (a symlink flipped meanwhile): so a digest is
//!   read from the very descriptor the key came from, and a value got by
//!   running the file (`--version`) is stored only if the file's identity
//!   is the same before and after;
//! - file systems whose attributes may be stale or whose change time is
//!   not the kernel's (NFS, FUSE): nothing from them is cached;
//! - a script (`#!`) that runs another binary, which can change under it:
//!   not cached.
//!
//! A cache that cannot be read or written only costs the computation.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::error::{Result, SandboxError};

/// How long a file must have been left alone before values derived from
/// it are cached.
pub const SETTLE: Duration = Duration::from_secs(2);

/// The directory of cached values below the husk cache.
pub fn dir(cache: &Path) -> PathBuf {
    cache.join("derived")
}

/// The SHA-256 (hex) of the file at `path`, read from the same open file
/// whose identity keys the cache.
pub fn sha256(cache: &Path, path: &Path) -> Result<String> {
    sha256_settled(cache, path, SETTLE)
}

fn sha256_settled(cache: &Path, path: &Path, settle: Duration) -> Result<String> {
    let open_err = |e| SandboxError::io(format!("opening {}", path.display()), e);
    let mut file = File::open(path).map_err(open_err)?;
    let meta = file.metadata().map_err(open_err)?;
    let entry = entry_path(cache, "sha256", path, &meta, settle).filter(|_| cacheable(&file));
    if let Some(v) = entry.as_deref().and_then(read_entry)
        && v.len() == 64
        && v.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Ok(v);
    }
    let mut h = Sha256::new();
    std::io::copy(&mut file, &mut h)
        .map_err(|e| SandboxError::io(format!("reading {}", path.display()), e))?;
    let value = super::image::hex(&h.finalize());
    if let Some(entry) = entry {
        store(&entry, &value);
    }
    Ok(value)
}

/// `kind` of the executable at `path` (one line of text) from running it:
/// from the cache when the file is unchanged since it was stored, else
/// from `run` (stored when the file had settled and did not change while
/// it ran).
pub fn from_running(
    cache: &Path,
    kind: &str,
    path: &Path,
    run: impl FnOnce() -> Option<String>,
) -> Option<String> {
    from_running_settled(cache, kind, path, SETTLE, run)
}

fn from_running_settled(
    cache: &Path,
    kind: &str,
    path: &Path,
    settle: Duration,
    run: impl FnOnce() -> Option<String>,
) -> Option<String> {
    let identity = || {
        let file = File::open(path).ok()?;
        let meta = file.metadata().ok()?;
        entry_path(cache, kind, path, &meta, settle)
            .filter(|_| cacheable(&file) && !is_script(&file))
    };
    let before = identity();
    if let Some(v) = before.as_deref().and_then(read_entry) {
        return Some(v);
    }
    let value = run()?;
    if let Some(entry) = before
        && identity().as_ref() == Some(&entry)
        && !value.contains('\n')
    {
        store(&entry, &value);
    }
    Some(value)
}

fn read_entry(entry: &Path) -> Option<String> {
    let text = std::fs::read_to_string(entry).ok()?;
    let v = text.strip_suffix('\n')?;
    (!v.is_empty() && !v.contains('\n')).then(|| v.to_string())
}

/// Where `kind` of the file `meta` describes is kept: named by a digest of
/// the kind, the path and the file's identity. `None` when it has not
/// settled.
fn entry_path(
    cache: &Path,
    kind: &str,
    path: &Path,
    meta: &std::fs::Metadata,
    settle: Duration,
) -> Option<PathBuf> {
    let at = |secs: i64, nanos: i64| {
        SystemTime::UNIX_EPOCH
            + Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32)
    };
    let newest = at(meta.mtime(), meta.mtime_nsec()).max(at(meta.ctime(), meta.ctime_nsec()));
    let age = SystemTime::now().duration_since(newest).ok()?;
    if age < settle {
        return None;
    }
    let identity = format!(
        "{}:{}:{}:{}.{}:{}.{}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    );
    let mut h = Sha256::new();
    for part in [
        kind.as_bytes(),
        path.as_os_str().as_encoded_bytes(),
        identity.as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let name = super::image::hex(&h.finalize()[..16]);
    Some(dir(cache).join(format!("{kind}-{name}")))
}

/// NFS may answer `stat` from a stale attribute cache, and FUSE file
/// systems (sshfs) may report any change time: values from them are not
/// cached.
fn cacheable(file: &File) -> bool {
    const NFS_SUPER_MAGIC: i64 = 0x6969;
    const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
    match rustix::fs::fstatfs(file) {
        // `f_type`'s width differs between architectures.
        #[allow(clippy::unnecessary_cast)]
        Ok(fs) => !matches!(fs.f_type as i64, NFS_SUPER_MAGIC | FUSE_SUPER_MAGIC),
        Err(_) => false,
    }
}

/// Whether the file starts with `#!` (it runs another binary).
fn is_script(file: &File) -> bool {
    let mut head = [0u8; 2];
    let mut f = file;
    f.read_exact(&mut head).is_ok() && &head == b"#!"
}

/// Writes an entry whole: the directory private to this user, a new
/// temporary file (never through a symlink), then a rename. Failures are
/// ignored: the value is computed again next time.
fn store(entry: &Path, value: &str) {
    use std::io::Write;
    use std::os::unix::fs::DirBuilderExt;
    let Some(parent) = entry.parent() else {
        return;
    };
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent);
    let owned = std::fs::symlink_metadata(parent)
        .is_ok_and(|m| m.is_dir() && m.uid() == rustix::process::geteuid().as_raw());
    if !owned {
        return;
    }
    let tmp = entry.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(format!("{value}\n").as_bytes()));
    if written.is_err() || std::fs::rename(&tmp, entry).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn hex_sha(bytes: &[u8]) -> String {
        super::super::image::hex(&Sha256::digest(bytes))
    }

    fn entries(cache: &Path) -> usize {
        std::fs::read_dir(dir(cache)).map_or(0, |d| d.count())
    }

    #[test]
    fn a_digest_is_stored_and_found_while_the_file_is_unchanged() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("bin");
        std::fs::write(&file, b"one").unwrap();
        let get = || sha256_settled(tmp.path(), &file, Duration::ZERO).unwrap();
        assert_eq!(get(), hex_sha(b"one"));
        assert_eq!(entries(tmp.path()), 1);
        // A forged entry for this identity is what comes back: proof that
        // the second call read the cache, not the file.
        let entry = std::fs::read_dir(dir(tmp.path()))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::write(&entry, format!("{}\n", "ab".repeat(32))).unwrap();
        assert_eq!(get(), "ab".repeat(32));
        // A malformed entry is not believed.
        std::fs::write(&entry, "not a digest\n").unwrap();
        assert_eq!(get(), hex_sha(b"one"));
    }

    #[test]
    fn a_rewrite_that_keeps_size_and_mtime_is_seen() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("bin");
        std::fs::write(&file, b"one").unwrap();
        let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
        let get = || sha256_settled(tmp.path(), &file, Duration::ZERO).unwrap();
        assert_eq!(get(), hex_sha(b"one"));
        // In place, same size, mtime put back (as `cp -p` would): the
        // change time still moves.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&file, b"two").unwrap();
        File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(get(), hex_sha(b"two"));
        // Replaced by another file (a new inode).
        let other = tmp.path().join("bin.new");
        std::fs::write(&other, b"six").unwrap();
        std::fs::rename(&other, &file).unwrap();
        assert_eq!(get(), hex_sha(b"six"));
    }

    #[test]
    fn a_fresh_file_is_never_cached() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("bin");
        std::fs::write(&file, b"one").unwrap();
        let hour = Duration::from_secs(3600);
        assert_eq!(
            sha256_settled(tmp.path(), &file, hour).unwrap(),
            hex_sha(b"one")
        );
        assert_eq!(entries(tmp.path()), 0);
    }

    #[test]
    fn a_binary_is_run_once_and_a_script_every_time() {
        let tmp = tempfile::tempdir().unwrap();
        let calls = Cell::new(0);
        let run = |file: &Path| {
            from_running_settled(tmp.path(), "qemu-version", file, Duration::ZERO, || {
                calls.set(calls.get() + 1);
                Some(format!("version {}", calls.get()))
            })
        };
        let binary = tmp.path().join("qemu");
        std::fs::write(&binary, b"\x7fELF...").unwrap();
        assert_eq!(run(&binary).as_deref(), Some("version 1"));
        assert_eq!(run(&binary).as_deref(), Some("version 1"));
        // A wrapper that execs the real QEMU can change under it.
        let script = tmp.path().join("qemu-wrapper");
        std::fs::write(&script, b"#!/bin/sh\nexec real-qemu \"$@\"\n").unwrap();
        assert_eq!(run(&script).as_deref(), Some("version 2"));
        assert_eq!(run(&script).as_deref(), Some("version 3"));
        assert_eq!(entries(tmp.path()), 1);
    }

    #[test]
    fn a_missing_file_is_an_error_that_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let err = sha256(tmp.path(), &tmp.path().join("nope")).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
