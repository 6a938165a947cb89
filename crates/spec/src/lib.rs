//! husk specs: the YAML (or JSON) files that say what a run does.
//!
//! A spec is user input that decides what runs, with which resources and
//! which credentials, so this crate is strict where void-box was lenient:
//! unknown keys, wrong types, duplicate keys and broken references are all
//! errors, and every one of them is reported in a single pass with its file,
//! line, column and path (`agent.skills[2]`), plus what to change. A typo
//! gets a "did you mean" suggestion.
//!
//! The steps, one module each:
//! - `node`: text → tree of positioned nodes (one document, no duplicate
//!   keys, bounded size, depth and alias expansion);
//! - `decode`: tree → typed [`Spec`] (shape: keys, types, required keys,
//!   defaults);
//! - `validate`: rules on the typed spec (ranges, names, references,
//!   cycles);
//! - `ctx` and `error`: problems collected with their positions, returned
//!   as [`SpecErrors`] sorted by position.
//!
//! ```
//! let spec = husk_spec::parse_str(
//!     "api_version: v1\nkind: agent\nname: hello\nagent:\n  prompt: Say hello.\n",
//!     "hello.yaml",
//! )
//! .unwrap();
//! assert_eq!(spec.agent().unwrap().effective_timeout_secs(), Some(1200));
//!
//! let errors = husk_spec::parse_str("api_version: v1\nkind: agent\nname: x\nagent:\n  promt: hi\n", "x.yaml")
//!     .unwrap_err();
//! assert_eq!(
//!     errors.to_string(),
//!     "x.yaml:5:3: agent.promt: unknown key `promt`; did you mean `prompt`?"
//! );
//! ```
//!
//! JSON needs no parser of its own (JSON is YAML), but a file named
//! `*.json` is first checked as strict JSON so JSON syntax errors read as
//! JSON errors. The full reference is `docs/spec.md`.

mod ctx;
mod decode;
mod error;
mod model;
mod network;
mod node;
mod text;
mod validate;

use std::io::Read;
use std::path::Path;

pub use ctx::MAX_REPORTED_ERRORS;
pub use error::{SpecError, SpecErrors};
pub use model::*;
pub use node::{MAX_DEPTH, MAX_WEIGHT};
pub use validate::{
    MAX_DISK_MB, MAX_MEMORY_MB, MAX_SPEC_NAME_LEN, MAX_TELEMETRY_BUFFER, MAX_TIMEOUT_SECS,
    MAX_VCPUS, MIN_DISK_MB, MIN_MEMORY_MB,
};

/// Largest spec accepted, in bytes.
pub const MAX_SPEC_BYTES: usize = 1024 * 1024;

/// Reads and parses a spec file. Errors name the file as `path` displays.
pub fn load_file(path: &Path) -> Result<Spec, SpecErrors> {
    let source = path.display().to_string();
    let text = read_limited(path).map_err(|message| SpecErrors::single(&source, message))?;
    parse_str(&text, &source)
}

fn read_limited(path: &Path) -> Result<String, String> {
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    let limit = u64::try_from(MAX_SPEC_BYTES)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the spec: {e}"))?;
    if bytes.len() > MAX_SPEC_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "the spec is not valid UTF-8 (byte {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Opens `path` for reading if it is a regular file (after following
/// symlinks). The open is non-blocking, so a FIFO with no writer (or a
/// device) cannot hang the caller, and the type is checked on the open
/// file itself, so nothing can be swapped in between the check and the
/// read. Non-blocking mode changes nothing for reads of a regular file.
fn open_regular(path: &Path) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot read the spec: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read the spec: {e}"))?;
    match not_regular(meta.file_type()) {
        Some(what) => Err(format!("is {what}, not a spec file")),
        None => Ok(file),
    }
}

/// What a file is, when it is not a regular file.
fn not_regular(t: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else {
        Some("not a regular file")
    }
}

fn too_large() -> String {
    format!(
        "the spec is larger than {} KiB; specs are limited to that size",
        MAX_SPEC_BYTES >> 10
    )
}

/// Parses and validates spec text. `source` names it in errors (usually
/// the file name); a `source` ending in `.json` gets strict JSON syntax
/// checking first.
pub fn parse_str(text: &str, source: &str) -> Result<Spec, SpecErrors> {
    if text.len() > MAX_SPEC_BYTES {
        return Err(SpecErrors::single(source, too_large()));
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    no_nul(text, source)?;
    if is_json(source) {
        json_syntax(text, source)?;
    }
    let mut ctx = ctx::Ctx::new(source);
    let loaded = node::load(text);
    for p in loaded.problems {
        ctx.problem(p);
    }
    let spec = loaded.root.and_then(|root| decode::spec(&mut ctx, &root));
    if let Some(spec) = &spec {
        validate::spec(&mut ctx, spec);
    }
    ctx.finish(spec)
}

/// Refuses NUL bytes: the YAML parser stops at the first one, so whatever
/// follows it would be silently ignored.
fn no_nul(text: &str, source: &str) -> Result<(), SpecErrors> {
    let Some(at) = text.find('\0') else {
        return Ok(());
    };
    let (line, column) = text::position(text, at);
    Err(SpecErrors(vec![SpecError {
        source: source.to_string(),
        line: Some(line),
        column: Some(column),
        path: String::new(),
        message: format!("NUL byte (\\0) at line {line}, column {column}; specs are text"),
    }]))
}

fn is_json(source: &str) -> bool {
    Path::new(source)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// Strict JSON syntax, so a JSON file is held to JSON's rules (no
/// comments, no trailing commas) and its errors are worded for JSON.
fn json_syntax(text: &str, source: &str) -> Result<(), SpecErrors> {
    let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) else {
        return Ok(());
    };
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    let place =
        (e.line() > 0).then(|| text::position(text, json_offset(text, e.line(), e.column())));
    Err(SpecErrors(vec![SpecError {
        source: source.to_string(),
        line: place.map(|(line, _)| line),
        column: place.map(|(_, column)| column),
        path: String::new(),
        message: format!("invalid JSON: {message}"),
    }]))
}

/// The byte offset of serde_json's position. serde_json counts only LF as
/// a line break and its column in bytes (the last byte it read), while
/// every other position husk reports counts lines as YAML does and columns
/// in characters; going through the offset makes them agree.
fn json_offset(text: &str, line: usize, column: usize) -> usize {
    let line_start = match line {
        0 | 1 => 0,
        n => text
            .match_indices('\n')
            .nth(n - 2)
            .map_or(text.len(), |(i, _)| i + 1),
    };
    line_start.saturating_add(column.saturating_sub(1))
}
