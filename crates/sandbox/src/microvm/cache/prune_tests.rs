//! The prune rules on a cache laid out by hand: every kind of entry, each
//! rule once, and a dry run that must leave everything in place.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::*;
use crate::microvm::cache::hold;

const DAY: Duration = Duration::from_secs(86400);

fn key(c: char) -> String {
    std::iter::repeat_n(c, 64).collect()
}

/// Makes `path` look last written `ago` back.
fn age(path: &Path, ago: Duration) {
    let t = SystemTime::now() - ago;
    std::fs::File::open(path).unwrap().set_modified(t).unwrap();
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

struct Layout {
    cache: tempfile::TempDir,
    current_snap: PathBuf,
    old_snap: PathBuf,
    held_snap: PathBuf,
    current_image: PathBuf,
    old_image: PathBuf,
    held_snaps_image: PathBuf,
    recent_image: PathBuf,
    current_kernel: PathBuf,
    old_kernel: PathBuf,
    old_rootfs: PathBuf,
    young_leftover: PathBuf,
    old_leftover: PathBuf,
}

fn layout() -> Layout {
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path();
    let old = 3 * DAY;
    let rootfs = c.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let old_rootfs = rootfs.join("00000000000000aa.ext4");
    std::fs::write(&old_rootfs, b"ext4").unwrap();
    std::fs::write(rootfs.join("00000000000000aa.ext4.in-use"), b"").unwrap();
    age(&old_rootfs, old);
    age(&rootfs.join("00000000000000aa.ext4.in-use"), old);
    std::fs::create_dir_all(c.join("kernels")).unwrap();
    std::fs::write(c.join("kernels/current"), "linux-a_1\n").unwrap();
    Layout {
        current_snap: snapshot(c, 'a', &key('1'), old),
        old_snap: snapshot(c, 'b', &key('2'), old),
        held_snap: snapshot(c, 'c', &key('3'), old),
        current_image: dir_entry(c, "images", &key('1')[..32], old),
        old_image: dir_entry(c, "images", &key('2')[..32], old),
        held_snaps_image: dir_entry(c, "images", &key('3')[..32], old),
        recent_image: dir_entry(c, "images", &key('4')[..32], Duration::from_secs(60)),
        current_kernel: dir_entry(c, "kernels", "linux-a_1", old),
        old_kernel: dir_entry(c, "kernels", "linux-b_1", old),
        old_rootfs,
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
    let held = hold(&l.held_snap).unwrap();
    let report = prune(&options(&l, false));
    let expect = [
        (&l.current_snap, Decision::KeptCurrent),
        (&l.old_snap, Decision::Removed),
        (&l.held_snap, Decision::KeptInUse),
        (&l.current_image, Decision::KeptCurrent),
        (&l.old_image, Decision::Removed),
        (&l.held_snaps_image, Decision::KeptForSnapshot),
        (&l.recent_image, Decision::KeptRecent),
        (&l.current_kernel, Decision::KeptCurrent),
        (&l.old_kernel, Decision::Removed),
        (&l.old_rootfs, Decision::Removed),
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
    let leftovers: Vec<_> = std::fs::read_dir(l.cache.path().join("snapshots"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".pruning"))
        .collect();
    assert!(leftovers.is_empty(), "nothing half-removed is left");
    drop(held);
    // Holding it stamped it as used just now.
    let again = prune(&options(&l, false));
    assert_eq!(decision_of(&again, &l.held_snap), &Decision::KeptRecent);
    let again = prune(&PruneOptions {
        unused_for: Duration::ZERO,
        ..options(&l, false)
    });
    assert_eq!(decision_of(&again, &l.held_snap), &Decision::Removed);
    assert_eq!(decision_of(&again, &l.held_snaps_image), &Decision::Removed);
}

#[test]
fn a_dry_run_removes_nothing_and_creates_no_lock_files() {
    let l = layout();
    let report = prune(&options(&l, true));
    assert_eq!(decision_of(&report, &l.old_snap), &Decision::WouldRemove);
    assert_eq!(decision_of(&report, &l.old_kernel), &Decision::WouldRemove);
    assert!(l.old_snap.exists() && l.old_kernel.exists() && l.old_rootfs.exists());
    assert!(!l.old_snap.join(".in-use").exists());
    assert!(report.freed_bytes > 0);
}

#[test]
fn unused_for_zero_still_keeps_the_current_build_and_young_leftovers() {
    let l = layout();
    let mut opts = options(&l, false);
    opts.unused_for = Duration::ZERO;
    let report = prune(&opts);
    assert_eq!(decision_of(&report, &l.recent_image), &Decision::Removed);
    assert_eq!(
        decision_of(&report, &l.current_image),
        &Decision::KeptCurrent
    );
    assert_eq!(
        decision_of(&report, &l.young_leftover),
        &Decision::KeptRecent
    );
}

#[test]
fn a_hold_taken_after_a_prune_is_refused_and_the_entry_is_gone() {
    let l = layout();
    prune(&options(&l, false));
    assert!(matches!(
        hold(&l.old_snap),
        Err(super::super::HoldError::Gone(_))
    ));
}
