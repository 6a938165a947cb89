//! The prune rules on a cache laid out by hand: every kind of entry, each
//! rule once, a dry run that must leave everything in place, and kept
//! entries that must not be touched.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::*;
use crate::microvm::cache::{Hold, HoldError, hold};

const DAY: Duration = Duration::from_secs(86400);

fn key(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

/// Makes `path` look last written `ago` back.
fn age(path: &Path, ago: Duration) {
    let t = SystemTime::now() - ago;
    std::fs::File::open(path).unwrap().set_modified(t).unwrap();
}

/// Holds a directory entry the way a long-lived process does: its stamp
/// is as old as the hold.
fn hold_long(dir: &Path) -> Hold {
    let h = hold(dir, Shape::Dir).unwrap();
    age(&dir.join(LOCK_NAME), 3 * DAY);
    age(dir, 3 * DAY);
    h
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

fn snapshot(cache: &Path, name: char, image: &str, ago: Duration) -> PathBuf {
    let dir = cache.join("snapshots").join(&key(name)[..32]);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("meta.json"),
        format!(r#"{{"image_key":"{image}"}}"#),
    )
    .unwrap();
    std::fs::write(dir.join("ram"), vec![1u8; 8192]).unwrap();
    age(&dir, ago);
    dir
}

fn dir_entry(cache: &Path, sub: &str, name: &str, ago: Duration) -> PathBuf {
    let dir = cache.join(sub).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("data"), b"x").unwrap();
    age(&dir, ago);
    dir
}

fn file_entry(cache: &Path, name: &str, ago: Duration) -> PathBuf {
    let dir = cache.join("rootfs");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, b"ext4").unwrap();
    age(&file, ago);
    file
}

struct Layout {
    cache: tempfile::TempDir,
    current_snap: PathBuf,
    old_snap: PathBuf,
    held_snap: PathBuf,
    snap_of_held_image: PathBuf,
    current_image: PathBuf,
    old_image: PathBuf,
    held_snaps_image: PathBuf,
    held_image: PathBuf,
    recent_image: PathBuf,
    just_built_image: PathBuf,
    current_kernel: PathBuf,
    old_kernel: PathBuf,
    old_rootfs: PathBuf,
    orphan_lock: PathBuf,
    young_leftover: PathBuf,
    old_leftover: PathBuf,
}

fn layout() -> Layout {
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path();
    let old = 3 * DAY;
    std::fs::create_dir_all(c.join("kernels")).unwrap();
    std::fs::write(c.join("kernels/current"), "linux-a_1\n").unwrap();
    Layout {
        current_snap: snapshot(c, 'a', &key('1'), old),
        old_snap: snapshot(c, 'b', &key('2'), old),
        held_snap: snapshot(c, 'c', &key('3'), old),
        snap_of_held_image: snapshot(c, 'd', &key('5'), old),
        current_image: dir_entry(c, "images", &key('1')[..32], old),
        old_image: dir_entry(c, "images", &key('2')[..32], old),
        held_snaps_image: dir_entry(c, "images", &key('3')[..32], old),
        held_image: dir_entry(c, "images", &key('5')[..32], old),
        recent_image: dir_entry(c, "images", &key('4')[..32], 2 * MIN_AGE),
        just_built_image: dir_entry(c, "images", &key('6')[..32], MIN_AGE / 2),
        current_kernel: dir_entry(c, "kernels", "linux-a_1", old),
        old_kernel: dir_entry(c, "kernels", "linux-b_1", old),
        old_rootfs: file_entry(c, "00000000000000aa.ext4", old),
        orphan_lock: file_entry(c, "00000000000000bb.ext4.in-use", 2 * LEFTOVER_AGE),
        young_leftover: dir_entry(c, "snapshots", ".tmp-1-young", Duration::from_secs(60)),
        old_leftover: dir_entry(c, "images", ".tmp-old", 2 * LEFTOVER_AGE),
        cache,
    }
}

fn options(l: &Layout, dry_run: bool) -> PruneOptions {
    PruneOptions {
        cache: l.cache.path().to_path_buf(),
        unused_for: DAY,
        current_images: vec![key('1')],
        dry_run,
    }
}

fn decision_of<'a>(report: &'a PruneReport, path: &Path) -> &'a Decision {
    &report
        .entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("{} not in the report: {report:#?}", path.display()))
        .decision
}

#[test]
fn each_rule_keeps_or_removes_what_it_says() {
    let l = layout();
    let held = hold_long(&l.held_snap);
    let held_image = hold_long(&l.held_image);
    let report = prune(&options(&l, false));
    let expect = [
        (&l.current_snap, Decision::KeptCurrent),
        (&l.old_snap, Decision::Removed),
        (&l.held_snap, Decision::KeptInUse),
        (&l.snap_of_held_image, Decision::KeptForImage),
        (&l.current_image, Decision::KeptCurrent),
        (&l.old_image, Decision::Removed),
        (&l.held_snaps_image, Decision::KeptForSnapshot),
        (&l.held_image, Decision::KeptForSnapshot),
        (&l.recent_image, Decision::KeptRecent),
        (&l.just_built_image, Decision::KeptRecent),
        (&l.current_kernel, Decision::KeptCurrent),
        (&l.old_kernel, Decision::Removed),
        (&l.old_rootfs, Decision::Removed),
        (&l.orphan_lock, Decision::Removed),
        (&l.young_leftover, Decision::KeptRecent),
        (&l.old_leftover, Decision::Removed),
    ];
    for (path, decision) in &expect {
        assert_eq!(decision_of(&report, path), decision, "{}", path.display());
        assert_eq!(path.exists(), !decision.removes(), "{}", path.display());
    }
    assert_eq!(report.entries.len(), expect.len(), "{report:#?}");
    assert!(
        !l.cache
            .path()
            .join("rootfs/00000000000000aa.ext4.in-use")
            .exists()
    );
    let freed: u64 = report
        .entries
        .iter()
        .filter(|e| e.decision.removes())
        .map(|e| e.bytes)
        .sum();
    assert_eq!(report.freed_bytes, freed);
    assert!(report.freed_bytes >= 8192, "the old snapshot's RAM counts");
    for sub in ["snapshots", "images", "kernels", "rootfs"] {
        let doomed: Vec<_> = std::fs::read_dir(l.cache.path().join(sub))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(DOOMED_PREFIX))
            .collect();
        assert!(doomed.is_empty(), "{sub}: something half-removed is left");
    }
    drop((held, held_image));
    let again = prune(&PruneOptions {
        unused_for: Duration::ZERO,
        ..options(&l, false)
    });
    for path in [&l.held_snap, &l.held_snaps_image, &l.snap_of_held_image] {
        assert_eq!(
            decision_of(&again, path),
            &Decision::Removed,
            "{}",
            path.display()
        );
    }
    assert_eq!(decision_of(&again, &l.recent_image), &Decision::Removed);
    assert_eq!(
        decision_of(&again, &l.just_built_image),
        &Decision::KeptRecent
    );
    assert_eq!(
        decision_of(&again, &l.current_image),
        &Decision::KeptCurrent
    );
}

#[test]
fn what_a_prune_keeps_it_does_not_touch() {
    let l = layout();
    let before: Vec<SystemTime> = [&l.recent_image, &l.current_image, &l.current_snap]
        .iter()
        .map(|p| mtime(p))
        .collect();
    prune(&options(&l, false));
    for (path, was) in [&l.recent_image, &l.current_image, &l.current_snap]
        .iter()
        .zip(before)
    {
        assert!(!path.join(LOCK_NAME).exists(), "{}", path.display());
        assert_eq!(mtime(path), was, "{} was stamped", path.display());
    }
}

#[test]
fn a_dry_run_removes_nothing_and_creates_no_lock_files() {
    let l = layout();
    let report = prune(&options(&l, true));
    assert_eq!(decision_of(&report, &l.old_snap), &Decision::WouldRemove);
    assert_eq!(decision_of(&report, &l.old_kernel), &Decision::WouldRemove);
    assert!(l.old_snap.exists() && l.old_kernel.exists() && l.old_rootfs.exists());
    for dir in [&l.old_snap, &l.old_kernel, &l.old_image] {
        assert!(!dir.join(LOCK_NAME).exists(), "{}", dir.display());
    }
    assert!(report.freed_bytes > 0);
}

#[test]
fn a_dry_run_sees_an_entry_in_use() {
    let l = layout();
    let _held = hold_long(&l.held_snap);
    let report = prune(&options(&l, true));
    assert_eq!(decision_of(&report, &l.held_snap), &Decision::KeptInUse);
}

#[test]
fn a_hold_after_a_prune_is_refused_and_one_before_wins() {
    let l = layout();
    let _won = hold_long(&l.old_kernel);
    prune(&options(&l, false));
    assert!(l.old_kernel.exists(), "a held entry was removed");
    assert!(matches!(
        hold(&l.old_snap, Shape::Dir),
        Err(HoldError::Gone(_))
    ));
    assert!(
        !l.cache
            .path()
            .join("snapshots")
            .join(format!("{}{LOCK_NAME}", &key('b')[..32]))
            .exists(),
        "a hold on a missing directory left a lock file beside it"
    );
}
