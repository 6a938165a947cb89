//! Helpers shared by the spec tests.

#![allow(dead_code)]

use husk_spec::{Spec, SpecError, parse_str};

/// Spec text written in a raw string that starts with a newline: the
/// newline is dropped so line 1 is the first line of the literal.
pub fn text(s: &str) -> &str {
    s.strip_prefix('\n').unwrap_or(s)
}

pub fn parse(s: &str) -> Spec {
    match parse_str(text(s), "spec.yaml") {
        Ok(spec) => spec,
        Err(e) => panic!("expected a valid spec, got:\n{e}"),
    }
}

pub fn errors(s: &str) -> Vec<SpecError> {
    match parse_str(text(s), "spec.yaml") {
        Ok(spec) => panic!("expected errors, got a spec: {spec:#?}"),
        Err(e) => e.0,
    }
}

/// Asserts that `s` fails with exactly one error, at `path` and `line`,
/// whose message contains `needle`; returns the message.
pub fn only_error(s: &str, path: &str, line: usize, needle: &str) -> String {
    let errs = errors(s);
    let all = render(&errs);
    assert_eq!(errs.len(), 1, "expected one error, got:\n{all}");
    let e = &errs[0];
    assert_eq!(e.path, path, "path of:\n{all}");
    assert_eq!(e.line, Some(line), "line of:\n{all}");
    assert!(e.message.contains(needle), "expected {needle:?} in:\n{all}");
    e.message.clone()
}

/// Asserts that some error of `s` is at `path` and `line` with `needle`.
pub fn has_error(s: &str, path: &str, line: usize, needle: &str) {
    let errs = errors(s);
    let found = errs
        .iter()
        .any(|e| e.path == path && e.line == Some(line) && e.message.contains(needle));
    assert!(
        found,
        "expected {path} at line {line} with {needle:?}, got:\n{}",
        render(&errs)
    );
}

pub fn render(errs: &[SpecError]) -> String {
    errs.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}
