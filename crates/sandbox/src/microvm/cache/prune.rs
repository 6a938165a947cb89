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
//! 4. an entry used within `unused_for` is kept;
//! 5. the rest is removed. Leftovers of interrupted builds (`.tmp`,
//!    `.fetch-` names) are removed once an hour old, whatever
//!    `unused_for` says: a build in progress is younger than that.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::{LOCK_NAME, lock_path, try_flock};

/// How old a leftover of an interrupted build must be before it goes.
const LEFTOVER_AGE: Duration = Duration::from_secs(3600);

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
/// Never fails as a whole: an entry that cannot be removed says why.
pub fn prune(opts: &PruneOptions) -> PruneReport {
    let now = SystemTime::now();
    let current: HashSet<&str> = opts.current_images.iter().map(String::as_str).collect();
    let mut entries = Vec::new();
    let mut snapshot_images = HashSet::new();
    for (path, is_leftover) in list(&opts.cache.join("snapshots")) {
        let image_key = snapshot_image(&path);
        let current_image = image_key.as_deref().is_some_and(|k| current.contains(k));
        let kind = leftover_or(is_leftover, EntryKind::Snapshot);
        let keep = current_image.then_some(Decision::KeptCurrent);
        let entry = decide(opts, now, kind, path, keep);
        if !entry.decision.removes()
            && let Some(key) = image_key
        {
            snapshot_images.insert(key);
        }
        entries.push(entry);
    }
    for (path, is_leftover) in list(&opts.cache.join("images")) {
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
        entries.push(decide(opts, now, kind, path, keep));
    }
    let current_kernel = std::fs::read_to_string(opts.cache.join("kernels").join("current"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    for (path, is_leftover) in list(&opts.cache.join("kernels")) {
        if path.is_file() {
            continue; // `current` itself
        }
        let keep = (file_name(&path) == current_kernel).then_some(Decision::KeptCurrent);
        let kind = leftover_or(is_leftover, EntryKind::Kernel);
        entries.push(decide(opts, now, kind, path, keep));
    }
    for (path, is_leftover) in list(&opts.cache.join("rootfs")) {
        if file_name(&path).ends_with(LOCK_NAME) {
            continue;
        }
        let kind = leftover_or(is_leftover, EntryKind::Rootfs);
        entries.push(decide(opts, now, kind, path, None));
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
fn list(dir: &Path) -> Vec<(PathBuf, bool)> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, bool)> = read
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (e.path(), name.starts_with('.'))
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

/// Applies the rules to one entry, removing it when they allow.
fn decide(
    opts: &PruneOptions,
    now: SystemTime,
    kind: EntryKind,
    path: PathBuf,
    keep: Option<Decision>,
) -> PruneEntry {
    let last_used = last_used(&path);
    let mut entry = PruneEntry {
        kind,
        bytes: disk_usage(&path),
        last_used_unix: last_used
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        decision: Decision::KeptCurrent,
        path,
    };
    if let Some(keep) = keep
        && kind != EntryKind::Leftover
    {
        entry.decision = keep;
        return entry;
    }
    let age = now.duration_since(last_used).unwrap_or_default();
    let min_age = match kind {
        EntryKind::Leftover => LEFTOVER_AGE,
        _ => opts.unused_for,
    };
    entry.decision = if kind == EntryKind::Leftover {
        if age < min_age {
            Decision::KeptRecent
        } else {
            remove_unlocked(opts, &entry.path)
        }
    } else {
        match lock_exclusive(&entry.path, opts.dry_run) {
            Locked::InUse => Decision::KeptInUse,
            Locked::Failed(why) => Decision::Failed(why),
            Locked::Held(_) if age < min_age => Decision::KeptRecent,
            Locked::Held(lock) => {
                let d = remove_unlocked(opts, &entry.path);
                drop(lock);
                d
            }
        }
    };
    entry
}

enum Locked {
    /// Locked exclusively (or, on a dry run, nobody holds it).
    Held(Option<File>),
    InUse,
    Failed(String),
}

/// Takes an entry's lock exclusively without waiting. A real prune
/// creates the lock file when there is none, so a starter racing it locks
/// the same file; a dry run only looks.
fn lock_exclusive(entry: &Path, dry_run: bool) -> Locked {
    let path = lock_path(entry);
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .create(!dry_run)
        .truncate(false)
        .open(&path);
    let file = match opened {
        Ok(f) => f,
        Err(e) if dry_run && e.kind() == std::io::ErrorKind::NotFound => {
            return Locked::Held(None);
        }
        Err(e) => return Locked::Failed(format!("opening {}: {e}", path.display())),
    };
    match try_flock(&file, true) {
        Ok(true) => Locked::Held(Some(file)),
        Ok(false) => Locked::InUse,
        Err(e) => Locked::Failed(format!("locking {}: {e}", path.display())),
    }
}

/// Renames the entry out of the way (one step: a starter sees all of it
/// or none), then deletes it, and a file entry's lock file with it.
fn remove_unlocked(opts: &PruneOptions, entry: &Path) -> Decision {
    if opts.dry_run {
        return Decision::WouldRemove;
    }
    let parent = entry.parent().unwrap_or(Path::new("."));
    let doomed = parent.join(format!(
        ".pruning-{}-{}",
        std::process::id(),
        file_name(entry)
    ));
    if let Err(e) = std::fs::rename(entry, &doomed) {
        return Decision::Failed(format!("moving it aside: {e}"));
    }
    let removed = if doomed.is_dir() {
        std::fs::remove_dir_all(&doomed)
    } else {
        // A file's lock is beside it; a starter that locks it after this
        // finds the file gone (see `hold`).
        let mut lock = entry.as_os_str().to_os_string();
        lock.push(LOCK_NAME);
        let _ = std::fs::remove_file(lock);
        std::fs::remove_file(&doomed)
    };
    match removed {
        Ok(()) => Decision::Removed,
        Err(e) => Decision::Failed(format!("deleting {}: {e}", doomed.display())),
    }
}

/// When an entry was last used: its lock's stamp, else the newest mtime
/// of the entry itself (a directory's changes with what is put in it).
fn last_used(entry: &Path) -> SystemTime {
    let mtime = |p: &Path| std::fs::symlink_metadata(p).and_then(|m| m.modified()).ok();
    [mtime(entry), mtime(&lock_path(entry))]
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
