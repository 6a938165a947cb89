//! The guest's file-path confinement (`crates/guest/src/files.rs`, compiled
//! in here because the guest is a binary): `Roots::confine` on arbitrary
//! paths, with arbitrary extra roots. Input: UTF-8 lines; the last line is
//! the path, the lines before it (at most 8) are extra roots as the host
//! would send them.
//!
//! An accepted path must be absolute, have no `..` component, lie under
//! one of the roots (the built-in ones or an extra root as normalized),
//! and come back as that root plus a relative rest of plain components
//! that spell the same path. And the converse: a well-formed path (absolute,
//! no NUL, no `..`, within the length limit) whose components start with a
//! root's components must be accepted.

#![no_main]

use std::path::{Component, PathBuf};

use husk_protocol::MAX_PATH_LEN;
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/guest/src/files.rs"]
mod files;

use files::{DEFAULT_ROOTS, Roots, normalize};

/// The components of a path as the text spells them (`.` and empty ones
/// dropped), computed without `std::path`, as an independent oracle.
fn words(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|w| !w.is_empty() && *w != ".")
        .collect()
}

fn well_formed(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= MAX_PATH_LEN
        && !path.contains('\0')
        && !words(path).contains(&"..")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines: Vec<&str> = text.split('\n').collect();
    let path = lines.pop().unwrap_or_default();
    lines.truncate(8);
    let extra: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let roots = Roots::new(&extra, None);
    let allowed: Vec<PathBuf> = DEFAULT_ROOTS
        .iter()
        .map(PathBuf::from)
        .chain(extra.iter().filter_map(|r| normalize(r).ok()))
        .collect();

    match roots.confine(path) {
        Ok((root, rest)) => {
            assert!(well_formed(path), "accepted a malformed path {path:?}");
            assert!(
                allowed.iter().any(|a| a == root),
                "{path:?} matched {root:?}, which is not a root"
            );
            assert!(root.is_absolute(), "root {root:?}");
            assert!(
                root.components().all(|c| c != Component::ParentDir),
                "root {root:?} has `..`"
            );
            assert!(
                rest.components().all(|c| matches!(c, Component::Normal(_))),
                "rest {rest:?} of {path:?} is not plain"
            );
            let full = root.join(&rest);
            assert!(full.is_absolute() && full.starts_with(root), "{full:?}");
            let full_text = full.to_str().expect("UTF-8 in, UTF-8 out");
            assert_eq!(words(full_text), words(path), "{path:?} became {full:?}");
            let root_text = root.to_str().expect("UTF-8 root");
            assert_eq!(
                words(full_text)[..words(root_text).len()],
                words(root_text)[..],
                "{full:?} is not under {root:?}"
            );
        }
        Err(_) => {
            if well_formed(path) {
                let inside = allowed.iter().any(|a| {
                    let root = words(a.to_str().unwrap_or_default());
                    words(path).starts_with(&root)
                });
                assert!(!inside, "refused {path:?}, which lies under a root");
            }
        }
    }
});
