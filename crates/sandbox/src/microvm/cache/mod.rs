//! What the micro-VM cache holds in use, and what may be pruned.
//!
//! The cache (`~/.cache/husk`) keeps kernels, guest images, snapshots and
//! rootfs images by content, so every change of an input leaves the old
//! entry behind: nothing else ever removes one. Several processes share
//! the cache at once — CLI calls, daemons with warm pools, other
//! checkouts with other guest agents — so a prune must never take what a
//! live process still uses, and must be able to tell which entries those
//! are without asking them.
//!
//! Each entry has a lock file (`.in-use` inside a directory entry,
//! `<file>.in-use` beside a file entry). A process that uses an entry
//! holds a shared `flock` on it for as long as it may read the entry: a
//! micro-VM backend for its kernel and image (for the life of the process
//! that resolved them), a restored sandbox for its snapshot, a cold one
//! for its rootfs. Taking the lock also stamps the lock file's mtime: the
//! entry's last use. A prune takes the exclusive lock without waiting, so
//! an entry in use is skipped, never waited for; an entry it does lock is
//! renamed out of the way first and then deleted, so a starter never sees
//! half of it.

mod prune;

pub use prune::{Decision, EntryKind, MIN_AGE, PruneEntry, PruneOptions, PruneReport, prune};

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Suffix (or name, inside a directory entry) of an entry's lock file.
const LOCK_NAME: &str = ".in-use";

/// A shared lock on one cache entry: while it lives, no prune removes the
/// entry. Dropping it releases the lock.
#[derive(Debug)]
pub struct Hold {
    _lock: File,
    entry: PathBuf,
}

impl Hold {
    pub fn entry(&self) -> &Path {
        &self.entry
    }
}

/// Why an entry could not be held.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    /// The entry does not exist (any more): it was never built, or a
    /// prune removed it.
    #[error("{0} is not in the cache (removed by `husk image prune`?)")]
    Gone(PathBuf),
    /// A prune holds it right now and is about to remove it.
    #[error("{0} is being removed by `husk image prune`")]
    Pruning(PathBuf),
    /// The lock file cannot be opened or locked (a read-only cache, say):
    /// the entry is usable, but not protected.
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Whether an entry is a directory (kernels, images, snapshots) or a
/// file (rootfs images). Said by the caller, never read off the disk: an
/// entry that is missing for a moment (being replaced) must still get its
/// lock in the same place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Dir,
    File,
}

/// The lock file of an entry: inside a directory, beside a file.
pub fn lock_path(entry: &Path, shape: Shape) -> PathBuf {
    match shape {
        Shape::Dir => entry.join(LOCK_NAME),
        Shape::File => {
            let mut name = entry.file_name().unwrap_or_default().to_os_string();
            name.push(LOCK_NAME);
            entry.with_file_name(name)
        }
    }
}

/// Opens a lock file to take a lock on: created if need be, read-only
/// when it is another user's (`flock` needs no write access).
fn open_lock(path: &Path, create: bool) -> std::io::Result<File> {
    let rw = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path);
    match rw {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => File::open(path),
        other => other,
    }
}

/// Takes a shared lock on `entry` and stamps it as used now.
pub fn hold(entry: &Path, shape: Shape) -> Result<Hold, HoldError> {
    let lock_path = lock_path(entry, shape);
    let io = |source| HoldError::Io {
        path: lock_path.clone(),
        source,
    };
    let gone = || HoldError::Gone(entry.to_path_buf());
    if !entry.exists() {
        return Err(gone());
    }
    let lock = match open_lock(&lock_path, true) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(gone()),
        Err(e) => return Err(io(e)),
    };
    // A prune holds an entry's lock only while it removes it, or for a
    // moment while it looks whether anyone holds it: a few short tries
    // tell the two apart.
    let mut tries = 0;
    loop {
        match try_flock(&lock, false) {
            Ok(true) => break,
            Ok(false) if tries < 3 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Ok(false) => return Err(HoldError::Pruning(entry.to_path_buf())),
            Err(e) => return Err(io(e)),
        }
    }
    // A prune that locked the entry first has renamed it away by the time
    // it lets go: the lock taken is then on a file no longer at its path.
    // (A file entry's lock is beside it: the file itself may have gone.)
    if !same_file(&lock, &lock_path) || !entry.exists() {
        return Err(gone());
    }
    // The stamp is best effort: a read-only lock file (another user's)
    // cannot be stamped, and the lock alone already protects the entry.
    let _ = lock.set_modified(SystemTime::now());
    Ok(Hold {
        _lock: lock,
        entry: entry.to_path_buf(),
    })
}

/// Holds `entry` when it is in the cache `root` and can be held, logging
/// why not: callers use the entry either way (an unprotected entry is
/// still usable), so this never fails. Files outside the cache (a kernel
/// or rootfs the user named) get no lock file put beside them.
pub fn hold_in(root: &Path, entry: &Path, shape: Shape) -> Option<Hold> {
    if !entry.starts_with(root) {
        return None;
    }
    match hold(entry, shape) {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::debug!("cache entry not held: {e}");
            None
        }
    }
}

/// `flock` without waiting: `Ok(false)` when another holds a conflicting
/// lock. (std's `File::try_lock` is newer than husk's minimum Rust.)
fn try_flock(file: &File, exclusive: bool) -> std::io::Result<bool> {
    use rustix::fs::{FlockOperation, flock};
    let op = if exclusive {
        FlockOperation::NonBlockingLockExclusive
    } else {
        FlockOperation::NonBlockingLockShared
    };
    match flock(file, op) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_stamps_the_entry_and_blocks_an_exclusive_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let entry = tmp.path().join("images").join("abc");
        std::fs::create_dir_all(&entry).unwrap();
        let h = hold(&entry, Shape::Dir).unwrap();
        assert_eq!(h.entry(), entry);
        let lock = entry.join(LOCK_NAME);
        let age = std::fs::metadata(&lock).unwrap().modified().unwrap();
        assert!(age.elapsed().unwrap().as_secs() < 60);
        let other = File::open(&lock).unwrap();
        assert!(!try_flock(&other, true).unwrap());
        drop(h);
        assert!(try_flock(&other, true).unwrap());
    }

    #[test]
    fn a_file_entry_is_locked_beside_it_and_a_missing_one_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("0123.ext4");
        assert!(matches!(hold(&file, Shape::File), Err(HoldError::Gone(_))));
        std::fs::write(&file, b"x").unwrap();
        let _h = hold(&file, Shape::File).unwrap();
        assert!(tmp.path().join("0123.ext4.in-use").exists());
    }

    #[test]
    fn an_entry_a_prune_has_locked_cannot_be_held() {
        let tmp = tempfile::tempdir().unwrap();
        let entry = tmp.path().join("snap");
        std::fs::create_dir_all(&entry).unwrap();
        let lock = File::create(entry.join(LOCK_NAME)).unwrap();
        assert!(try_flock(&lock, true).unwrap());
        assert!(matches!(
            hold(&entry, Shape::Dir),
            Err(HoldError::Pruning(_))
        ));
    }
}
