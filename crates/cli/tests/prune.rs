//! `husk image prune` as a user runs it, on a cache laid out by hand
//! (`HUSK_CACHE_DIR`): a dry run that removes nothing, then the prune,
//! and bad input.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{husk, out};

fn aged_dir(path: &Path, days: u64) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::write(path.join("data"), vec![7u8; 64 * 1024]).unwrap();
    let t = SystemTime::now() - Duration::from_secs(days * 86400);
    std::fs::File::open(path).unwrap().set_modified(t).unwrap();
}

#[test]
fn prune_reports_removes_old_entries_and_keeps_recent_ones() {
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path();
    let old_snap = c.join("snapshots").join("b".repeat(32));
    let old_image = c.join("images").join("2".repeat(32));
    let fresh_image = c.join("images").join("3".repeat(32));
    aged_dir(&old_snap, 3);
    std::fs::write(old_snap.join("meta.json"), r#"{"image_key":"22"}"#).unwrap();
    let t = SystemTime::now() - Duration::from_secs(3 * 86400);
    std::fs::File::open(&old_snap)
        .unwrap()
        .set_modified(t)
        .unwrap();
    aged_dir(&old_image, 3);
    aged_dir(&fresh_image, 0);
    let prune = |extra: &[&str]| {
        let mut cmd = husk();
        cmd.env("HUSK_CACHE_DIR", c)
            .args(["image", "prune", "--json"]);
        out(cmd.args(extra))
    };

    let (code, stdout, stderr) = prune(&["--dry-run"]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["dry_run"], true);
    let decisions: Vec<(String, String)> = report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let path = e["path"].as_str().unwrap();
            let name = Path::new(path).file_name().unwrap().to_string_lossy();
            (
                name.into_owned(),
                e["decision"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = |name: &str, d: &str| (name[..32].to_string(), d.to_string());
    assert!(
        decisions.contains(&want(&"b".repeat(32), "would_remove")),
        "{decisions:?}"
    );
    assert!(
        decisions.contains(&want(&"2".repeat(32), "would_remove")),
        "{decisions:?}"
    );
    assert!(
        decisions.contains(&want(&"3".repeat(32), "kept_recent")),
        "{decisions:?}"
    );
    assert!(report["freed_bytes"].as_u64().unwrap() >= 2 * 64 * 1024);
    assert!(
        old_snap.exists() && old_image.exists(),
        "a dry run removed something"
    );

    let (code, stdout, stderr) = prune(&[]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["dry_run"], false);
    assert!(!old_snap.exists() && !old_image.exists());
    assert!(fresh_image.exists());

    // The same as a person reads it.
    aged_dir(&old_image, 3);
    let mut cmd = husk();
    cmd.env("HUSK_CACHE_DIR", c)
        .args(["image", "prune", "--unused-for", "2d"]);
    let (code, stdout, stderr) = out(&mut cmd);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("removed"), "{stdout}");
    assert!(stdout.contains("freed "), "{stdout}");
    assert!(!old_image.exists());
}

#[test]
fn a_bad_duration_is_refused_with_what_was_wrong() {
    let cache = tempfile::tempdir().unwrap();
    let (code, _, stderr) = out(husk().env("HUSK_CACHE_DIR", cache.path()).args([
        "image",
        "prune",
        "--unused-for",
        "soon",
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("\"soon\" is not a duration"), "{stderr}");
}
