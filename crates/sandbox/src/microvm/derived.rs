//! Values derived from a file's bytes — a SHA-256 of the guest agent or
//! busybox for the image key, QEMU's `--version` line for a snapshot check —
//! kept on disk, keyed by the file's identity (device, inode, size, and
//! modification and change times to the nanosecond).
//!
//! Why: every `husk exec` resolves the guest image and checks its snapshot
//! before it starts QEMU. Hashing 4 MiB of binaries and running
//! `qemu-system-x86_64 --version` cost 20–60 ms of a ~0.45 s restored
//! start; looking the answers up costs a few `stat`s.
//!
//! A file replaced or rewritten gets a new inode or new times, so its old
//! entry is never found again. The one way to fool a time-keyed cache is a
//! rewrite within the file system's timestamp granularity (a few ms) that
//! keeps the size; so, as git does with its index, a file changed less than
//! [`SETTLE`] ago is never cached: its value is computed each time until it
//! settles. A cache that cannot be read or written only costs the
//! computation.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::error::Result;

/// How long a file must have been left alone before values derived from
/// it are cached.
pub const SETTLE: Duration = Duration::from_secs(2);

/// The directory of cached values below the husk cache.
pub fn dir(cache: &Path) -> PathBuf {
    cache.join("derived")
}

/// `kind` of `path` (one line of text), from the cache when the file is
/// unchanged since it was stored, else from `compute` (stored for next
/// time when the file has settled).
pub fn cached(
    cache: &Path,
    kind: &str,
    path: &Path,
    compute: impl FnOnce() -> Result<String>,
) -> Result<String> {
    let Some(entry) = entry_path(cache, kind, path) else {
        return compute();
    };
    if let Ok(v) = std::fs::read_to_string(&entry)
        && let Some(v) = v.strip_suffix('\n')
        && !v.contains('\n')
    {
        return Ok(v.to_string());
    }
    let value = compute()?;
    if !value.contains('\n') {
        store(&entry, &value);
    }
    Ok(value)
}

/// Where `kind` of `path` is kept: named by a digest of the kind, the
/// path and the file's identity. `None` when the file cannot be examined
/// or has not settled.
fn entry_path(cache: &Path, kind: &str, path: &Path) -> Option<PathBuf> {
    let meta = std::fs::metadata(path).ok()?;
    let changed = |secs: i64, nanos: i64| {
        SystemTime::UNIX_EPOCH
            + Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32)
    };
    let newest =
        changed(meta.mtime(), meta.mtime_nsec()).max(changed(meta.ctime(), meta.ctime_nsec()));
    let age = SystemTime::now().duration_since(newest).ok()?;
    if age < SETTLE {
        return None;
    }
    let mut h = Sha256::new();
    for part in [
        kind.as_bytes(),
        path.as_os_str().as_encoded_bytes(),
        format!(
            "{}:{}:{}:{}.{}:{}.{}",
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec()
        )
        .as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let name = super::image::hex(&h.finalize()[..16]);
    Some(dir(cache).join(format!("{kind}-{name}")))
}

/// Writes an entry whole (temporary file, then rename); failures are
/// ignored: the value is recomputed next time.
fn store(entry: &Path, value: &str) {
    let Some(parent) = entry.parent() else {
        return;
    };
    if std::fs::create_dir_all(parent).is_err() {
        return;
    }
    let tmp = entry.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, format!("{value}\n")).is_ok() && std::fs::rename(&tmp, entry).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_settled_file_is_computed_once() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("bin");
        std::fs::write(&file, b"one").unwrap();
        let calls = Cell::new(0);
        let get = || {
            cached(tmp.path(), "sha256", &file, || {
                calls.set(calls.get() + 1);
                Ok(format!("value{}", calls.get()))
            })
            .unwrap()
        };
        // The change time is the write's own: wait until it has settled.
        let meta = std::fs::metadata(&file).unwrap();
        let ctime =
            SystemTime::UNIX_EPOCH + Duration::new(meta.ctime() as u64, meta.ctime_nsec() as u32);
        let wait = (ctime + SETTLE)
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        std::thread::sleep(wait + Duration::from_millis(50));
        assert_eq!(get(), "value1");
        assert_eq!(get(), "value1");
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn a_fresh_or_changed_file_is_computed_again() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("bin");
        std::fs::write(&file, b"one").unwrap();
        let calls = Cell::new(0);
        let get = || {
            cached(tmp.path(), "sha256", &file, || {
                calls.set(calls.get() + 1);
                Ok(format!("value{}", calls.get()))
            })
            .unwrap()
        };
        // Just written: not cached.
        assert_eq!(get(), "value1");
        assert_eq!(get(), "value2");
        assert!(
            !dir(tmp.path()).exists() || std::fs::read_dir(dir(tmp.path())).unwrap().count() == 0
        );
        // Replaced by another file (new inode): its own entry.
        let other = tmp.path().join("bin.new");
        std::fs::write(&other, b"two").unwrap();
        std::fs::rename(&other, &file).unwrap();
        assert_eq!(get(), "value3");
    }

    #[test]
    fn a_missing_file_is_the_computations_error() {
        let tmp = tempfile::tempdir().unwrap();
        let r = cached(tmp.path(), "sha256", &tmp.path().join("nope"), || {
            Err(crate::error::SandboxError::Config("no such file".into()))
        });
        assert!(r.unwrap_err().to_string().contains("no such file"));
    }
}
