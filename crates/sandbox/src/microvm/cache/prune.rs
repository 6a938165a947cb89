//! `husk image prune`: removes cache entries no process uses, that are
//! not the current build's, and that were not used recently.
//!
//! The rules, in order, for each kernel, guest image, snapshot and rootfs
//! image:
//! 1. the current kernel (`kernels/current`), the current guest image and
//!    every snapshot made from it are kept;
//! 2. an image a kept snapshot was made from is kept (a daemon restoring
//!    from that snapshot boots that image when it falls back to cold);
//! 3. an entry some process holds (see the parent module) is kept;
//! 4. a snapshot of an image some process holds is kept (a daemon that
//!    resolved that image restores from it, however long ago it did);
//! 5. an entry used within `unused_for`, and never less than [`MIN_AGE`],
//!    is kept: what another checkout is building right now is younger;
//! 6. the rest is removed. Leftovers of interrupted builds (dot names)
//!    are removed once an hour old.
//!
//! Only an entry the rules let go is locked (exclusively, without
//! waiting): what is kept is never touched, so a prune stamps nothing and
//! a dry run writes nothing.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::{LOCK_NAME, Shape, lock_path, open_lock, same_file, try_flock};

/// How old a leftover of an interrupted build must be before it goes.
const LEFTOVER_AGE: Duration = Duration::from_secs(3600);
/// The least time since its last use before an entry goes, whatever
/// `unused_for` says: an entry another process is building (written but
/// not yet held) is younger than this.
pub const MIN_AGE: Duration = Duration::from_secs(600);
/// What a prune renames an entry to before deleting it; never listed.
const DOOMED_PREFIX: &str = ".pruning-";

/// What a prune may remove.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// The cache root.
    pub cache: PathBuf,
    /// Entries used more recently than this are kept.
    pub unused_for: Duration,
    /// Keys (hex) of the guest images that are current: they and their
    /// snapshots are kept.
    pub current_images: Vec<String>,
    /// Only say what would be removed.
    pub dry_run: bool,
}

/// What kind of cache entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Kernel,
    Image,
    Snapshot,
    Rootfs,
    /// What an interrupted build left behind.
    Leftover,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Kernel => "kernel",
            EntryKind::Image => "image",
            EntryKind::Snapshot => "snapshot",
            EntryKind::Rootfs => "rootfs",
            EntryKind::Leftover => "leftover",
        }
    }
}

/// What became of one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "decision", content = "detail")]
pub enum Decision {
    Removed,
    /// `dry_run`: it would have been removed.
    WouldRemove,
    /// The current kernel or guest image, or a snapshot of it.
    KeptCurrent,
    /// The image a kept snapshot was made from.
    KeptForSnapshot,
    /// A snapshot of an image a process holds.
    KeptForImage,
    /// A process holds it.
    KeptInUse,
    /// Used within `unused_for`.
    KeptRecent,
    /// Removal failed; the reason.
    Failed(String),
}

impl Decision {
    pub fn removes(&self) -> bool {
        matches!(self, Decision::Removed | Decision::WouldRemove)
    }

    /// A short label, for a column (a failure's reason is not in it).
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Removed => "removed",
            Decision::WouldRemove => "would remove",
            Decision::KeptCurrent => "kept: current",
            Decision::KeptForSnapshot => "kept: snapshot",
            Decision::KeptForImage => "kept: image",
            Decision::KeptInUse => "kept: in use",
            Decision::KeptRecent => "kept: recent",
            Decision::Failed(_) => "not removed",
        }
    }
}

/// One entry and what the prune did with it.
#[derive(Debug, Clone, Serialize)]
pub struct PruneEntry {
    pub kind: EntryKind,
    pub path: PathBuf,
    /// Disk space it takes (allocated blocks: snapshot RAM files are sparse).
    pub bytes: u64,
    /// Last use (the lock's stamp, else when it was written), Unix seconds.
    pub last_used_unix: u64,
    #[serde(flatten)]
    pub decision: Decision,
}

/// What a prune did.
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub cache: PathBuf,
    pub dry_run: bool,
    pub unused_for_secs: u64,
    pub entries: Vec<PruneEntry>,
    /// Bytes removed (or, on a dry run, that would be).
    pub freed_bytes: u64,
    /// Bytes of the entries kept.
    pub kept_bytes: u64,
}

/// Looks at every entry of the cache and removes what the rules allow.
/// Never fails as a whole: an entry that cannot be removed says why, and
/// one that vanished meanwhile (another prune, a rebuild) is left out.
pub fn prune(opts: &PruneOptions) -> PruneReport {
    let now = SystemTime::now();
    let current: HashSet<&str> = opts.current_images.iter().map(String::as_str).collect();
    let images = list(&opts.cache.join("images"));
    let held_images: HashSet<String> = images
        .iter()
        .filter(|(path, leftover)| !leftover && in_use(path, Shape::Dir))
        .map(|(path, _)| file_name(path))
        .collect();
    let mut entries = Vec::new();
    let mut snapshot_images = HashSet::new();
    for (path, is_leftover) in list(&opts.cache.join("snapshots")) {
        let image_key = snapshot_image(&path);
        let keep = match image_key.as_deref() {
            Some(k) if current.contains(k) => Some(Decision::KeptCurrent),
            Some(k) if k.get(..32).is_some_and(|p| held_images.contains(p)) => {
                Some(Decision::KeptForImage)
            }
            _ => None,
        };
        let kind = leftover_or(is_leftover, EntryKind::Snapshot);
        let Some(entry) = decide(opts, now, kind, Shape::Dir, path, keep) else {
            continue;
        };
        if !entry.decision.removes()
            && let Some(key) = image_key
        {
            snapshot_images.insert(key);
        }
        entries.push(entry);
    }
    for (path, is_leftover) in images {
        let name = file_name(&path);
        let key_of = |k: &String| k.get(..32) == Some(name.as_str());
        let keep = if opts.current_images.iter().any(key_of) {
            Some(Decision::KeptCurrent)
        } else if snapshot_images.iter().any(key_of) {
            Some(Decision::KeptForSnapshot)
        } else {
            None
        };
        let kind = leftover_or(is_leftover, EntryKind::Image);
        entries.extend(decide(opts, now, kind, Shape::Dir, path, keep));
    }
    let current_kernel = std::fs::read_to_string(opts.cache.join("kernels").join("current"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    for (path, is_leftover) in list(&opts.cache.join("kernels")) {
        let name = file_name(&path);
        if name == "current" || name.starts_with("current.") {
            continue; // the pointer itself, or its atomic write's temp file
        }
        let keep = (name == current_kernel).then_some(Decision::KeptCurrent);
        let kind = leftover_or(is_leftover, EntryKind::Kernel);
        entries.extend(decide(opts, now, kind, Shape::Dir, path, keep));
    }
    for (path, is_leftover) in list(&opts.cache.join("rootfs")) {
        let name = file_name(&path);
        let kind = match name.strip_suffix(LOCK_NAME) {
            // The lock of a rootfs image that is gone: a leftover.
            Some(base) if !path.with_file_name(base).exists() => EntryKind::Leftover,
            Some(_) => continue,
            None => leftover_or(is_leftover, EntryKind::Rootfs),
        };
        entries.extend(decide(opts, now, kind, Shape::File, path, None));
    }
    let sum = |removed: bool| {
        entries
            .iter()
            .filter(|e| e.decision.removes() == removed)
            .map(|e| e.bytes)
            .sum()
    };
    PruneReport {
        cache: opts.cache.clone(),
        dry_run: opts.dry_run,
        unused_for_secs: opts.unused_for.as_secs(),
        freed_bytes: sum(true),
        kept_bytes: sum(false),
        entries,
    }
}

fn leftover_or(is_leftover: bool, kind: EntryKind) -> EntryKind {
    if is_leftover {
        EntryKind::Leftover
    } else {
        kind
    }
}

/// The entries of one cache directory, each with whether it is a leftover
/// of an interrupted build (a dot name), sorted for a stable report.
/// Entries another prune is deleting right now are not listed.
fn list(dir: &Path) -> Vec<(PathBuf, bool)> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, bool)> = read
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (!name.starts_with(DOOMED_PREFIX)).then(|| (e.path(), name.starts_with('.')))
        })
        .collect();
    out.sort();
    out
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// The guest image key a snapshot's `meta.json` names.
fn snapshot_image(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("meta.json")).ok()?;
    let meta: serde_json::Value = serde_json::from_str(&text).ok()?;
    meta.get("image_key")?.as_str().map(str::to_string)
}

/// Whether some process holds `entry` (its lock cannot be had
/// exclusively). Creates nothing; the lock is let go at once.
fn in_use(entry: &Path, shape: Shape) -> bool {
    open_lock(&lock_path(entry, shape), false)
        .ok()
        .is_some_and(|f| matches!(try_flock(&f, true), Ok(false)))
}

/// Applies the rules to one entry, removing it when they allow. `None`
/// when the entry vanished meanwhile.
fn decide(
    opts: &PruneOptions,
    now: SystemTime,
    kind: EntryKind,
    shape: Shape,
    path: PathBuf,
    keep: Option<Decision>,
) -> Option<PruneEntry> {
    std::fs::symlink_metadata(&path).ok()?;
    let mut entry = PruneEntry {
        kind,
        bytes: disk_usage(&path),
        last_used_unix: unix_secs(last_used(&path, shape)),
        decision: Decision::KeptCurrent,
        path,
    };
    let age = |e: &PruneEntry| {
        let last = SystemTime::UNIX_EPOCH + Duration::from_secs(e.last_used_unix);
        now.duration_since(last).unwrap_or_default()
    };
    entry.decision = match (kind, keep) {
        (EntryKind::Leftover, _) if age(&entry) < LEFTOVER_AGE => Decision::KeptRecent,
        (EntryKind::Leftover, _) => remove(opts, &entry.path, shape)?,
        (_, Some(keep)) => keep,
        _ if age(&entry) < opts.unused_for.max(MIN_AGE) => Decision::KeptRecent,
        _ if opts.dry_run => match in_use(&entry.path, shape) {
            true => Decision::KeptInUse,
            false => Decision::WouldRemove,
        },
        _ => {
            let stamp_before = lock_stamp(&entry.path, shape);
            match lock_exclusive(&entry.path, shape) {
                Locked::Vanished => return None,
                Locked::InUse => Decision::KeptInUse,
                Locked::Failed(why) => Decision::Failed(why),
                // Held and let go between the look above and the lock
                // (its stamp moved): used just now, so kept.
                Locked::Held(_)
                    if stamp_before.is_some_and(|b| lock_stamp(&entry.path, shape) > Some(b)) =>
                {
                    Decision::KeptRecent
                }
                Locked::Held(lock) => {
                    let d = remove(opts, &entry.path, shape)?;
                    drop(lock);
                    d
                }
            }
        }
    };
    Some(entry)
}

/// The mtime of an entry's lock file (its last use), if it has one.
fn lock_stamp(entry: &Path, shape: Shape) -> Option<SystemTime> {
    std::fs::metadata(lock_path(entry, shape))
        .and_then(|m| m.modified())
        .ok()
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

enum Locked {
    Held(File),
    InUse,
    /// The entry (or its lock) is no longer where it was listed.
    Vanished,
    Failed(String),
}

/// Takes an entry's lock exclusively without waiting, creating the lock
/// file when there is none, so a starter racing the prune locks the same
/// file. The lock must still be the entry's once taken: an entry replaced
/// meanwhile is another entry, not this one.
fn lock_exclusive(entry: &Path, shape: Shape) -> Locked {
    let path = lock_path(entry, shape);
    if !entry.exists() {
        return Locked::Vanished;
    }
    let file = match open_lock(&path, true) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Locked::Vanished,
        Err(e) => return Locked::Failed(format!("opening {}: {e}", path.display())),
    };
    match try_flock(&file, true) {
        Ok(true) if same_file(&file, &path) && entry.exists() => Locked::Held(file),
        Ok(true) => Locked::Vanished,
        Ok(false) => Locked::InUse,
        Err(e) => Locked::Failed(format!("locking {}: {e}", path.display())),
    }
}

/// Renames the entry out of the way (one step: a starter sees all of it
/// or none), then deletes it, and a file entry's lock file with it.
/// `None` when it vanished before the rename.
fn remove(opts: &PruneOptions, entry: &Path, shape: Shape) -> Option<Decision> {
    if opts.dry_run {
        return Some(Decision::WouldRemove);
    }
    let parent = entry.parent().unwrap_or(Path::new("."));
    let doomed = parent.join(format!(
        "{DOOMED_PREFIX}{}-{}",
        std::process::id(),
        file_name(entry)
    ));
    match std::fs::rename(entry, &doomed) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Decision::Failed(format!("moving it aside: {e}"))),
    }
    let removed = if std::fs::symlink_metadata(&doomed).is_ok_and(|m| m.is_dir()) {
        std::fs::remove_dir_all(&doomed)
    } else {
        if shape == Shape::File {
            // A starter that locks this after finds the file gone (`hold`).
            let _ = std::fs::remove_file(lock_path(entry, shape));
        }
        std::fs::remove_file(&doomed)
    };
    Some(match removed {
        Ok(()) => Decision::Removed,
        Err(e) => Decision::Failed(format!("deleting {}: {e}", doomed.display())),
    })
}

/// When an entry was last used: its lock's stamp, else the newest mtime
/// of the entry itself (a directory's changes with what is put in it).
fn last_used(entry: &Path, shape: Shape) -> SystemTime {
    let mtime = |p: &Path| std::fs::symlink_metadata(p).and_then(|m| m.modified()).ok();
    [mtime(entry), mtime(&lock_path(entry, shape))]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Allocated bytes under `path` (not following symlinks).
fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let own = meta.blocks() * 512;
    if !meta.is_dir() {
        return own;
    }
    let children = std::fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| disk_usage(&e.path())).sum())
        .unwrap_or(0);
    own + children
}

#[cfg(test)]
#[path = "prune_tests.rs"]
mod tests;
