//! What the parser accepts as spec text and as a spec file: NUL bytes are
//! refused, positions count line breaks the way YAML does, and only
//! regular files are read.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use husk_spec::{SpecErrors, load_file, parse_str};

#[test]
fn nul_bytes_are_refused_with_their_position() {
    // Without the check, YAML parsing stops at the NUL and `agent` (after
    // it) is silently ignored.
    let text = "kind: agent\nname: x\n# \0\nagent: {prompt: p}\n";
    for source in ["nul.yaml", "nul.json"] {
        let errs = parse_str(text, source).expect_err("NUL refused");
        assert_eq!(errs.len(), 1, "{errs}");
        let e = &errs.0[0];
        assert_eq!((e.line, e.column), (Some(3), Some(3)), "{e}");
        assert_eq!(
            e.message,
            "NUL byte (\\0) at line 3, column 3; specs are text"
        );
    }
    // Even in an otherwise valid spec, and in a quoted string.
    let errs = parse_str(
        "kind: agent\nname: \"a\0b\"\nagent: {prompt: p}\n",
        "x.yaml",
    )
    .expect_err("NUL refused");
    assert_eq!(errs.0[0].line, Some(2));
}

/// The input the `spec_parse` fuzz target crashed on: an error reported on
/// line 3 of a text that `str::lines()` counts as one line. A lone CR is a
/// YAML line break, so line 3 (`n`) is right; the JSON check, which counted
/// only LF, has to agree.
#[test]
fn lone_cr_is_a_line_break_in_every_position() {
    let text = "\r#\rn";
    let errs = parse_str(text, "cr.yaml").expect_err("not a mapping");
    assert_eq!(
        (errs.0[0].line, errs.0[0].column),
        (Some(3), Some(1)),
        "{errs}"
    );
    // `#` starts line 2; serde_json alone says line 1, column 2.
    let errs = parse_str(text, "cr.json").expect_err("not JSON");
    let e = &errs.0[0];
    assert!(e.message.starts_with("invalid JSON"), "{e}");
    assert_eq!((e.line, e.column), (Some(2), Some(1)), "{e}");
}

#[test]
fn json_positions_count_characters_and_crlf() {
    // CR LF is one break and a lone CR another (serde_json alone: 2:15);
    // `é` is one column although two bytes (serde_json alone: column 8).
    let errs = parse_str("{\"a\": 1,\r\n\"c\": 2,\r \"b\": x}", "a.json").expect_err("bad JSON");
    let e = &errs.0[0];
    assert_eq!((e.line, e.column), (Some(3), Some(7)), "{e}");
    let errs = parse_str("{\"é\": x}", "a.json").expect_err("bad JSON");
    assert_eq!(errs.0[0].column, Some(7), "{}", errs.0[0]);
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("husk-spec-input-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `load_file` on another thread, with a hang guard: a regression fails
/// after `HANG_GUARD` instead of blocking the suite forever. This bounds a
/// hang, not speed.
fn load_guarded(path: &Path) -> Option<Result<husk_spec::Spec, SpecErrors>> {
    const HANG_GUARD: Duration = Duration::from_secs(20);
    let (tx, rx) = mpsc::channel();
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(load_file(&p));
    });
    rx.recv_timeout(HANG_GUARD).ok()
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = TempDir::new("fifo");
    let fifo = dir.0.join("spec.yaml");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo failed");
    let result = load_guarded(&fifo);
    if result.is_none() {
        // Unblock the stuck reader (a writer end makes its open return)
        // before failing.
        let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
        panic!("load_file blocked on a FIFO");
    }
    let errs = result.and_then(Result::err).expect("a FIFO is refused");
    assert_eq!(errs.len(), 1, "{errs}");
    assert_eq!(errs.0[0].message, "is a FIFO, not a spec file", "{errs}");
    assert_eq!(errs.0[0].source, fifo.display().to_string());
}

#[test]
fn devices_and_directories_are_refused() {
    // Before the type check, /dev/null read as an empty spec.
    let errs = load_guarded(Path::new("/dev/null"))
        .expect("no hang")
        .expect_err("a device is refused");
    assert_eq!(errs.0[0].message, "is a character device, not a spec file");
    let dir = TempDir::new("dir");
    let errs = load_guarded(&dir.0)
        .expect("no hang")
        .expect_err("a directory is refused");
    assert_eq!(errs.0[0].message, "is a directory, not a spec file");
}

#[test]
fn a_symlink_to_a_regular_file_is_read() {
    let dir = TempDir::new("link");
    let target = dir.0.join("real.yaml");
    std::fs::write(&target, "kind: agent\nname: x\nagent: {prompt: p}\n").expect("write");
    let link = dir.0.join("link.yaml");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let spec = load_guarded(&link).expect("no hang").expect("reads");
    assert_eq!(spec.name, "x");
}
