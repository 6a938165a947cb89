//! Feeds arbitrary text to the spec parser, as a YAML and as a JSON file
//! name: it must return a spec or a non-empty list of errors, never panic,
//! and stay within its size, depth and alias budgets. A spec that parses
//! must survive a JSON round trip (runs record specs as JSON), and every
//! error must point inside the text, with lines counted as YAML counts them
//! (LF, CR LF and a lone CR each end a line; `str::lines` knows only LF).

#![no_main]

use husk_spec::{Spec, parse_str};
use libfuzzer_sys::fuzz_target;

/// Lines of `text` as YAML counts them, plus one for a position just past
/// a final line break.
fn yaml_lines(text: &str) -> usize {
    text.replace("\r\n", "\n").matches(['\n', '\r']).count() + 1
}

fn check(text: &str, source: &str) {
    match parse_str(text, source) {
        Ok(spec) => {
            let json = serde_json::to_string(&spec).expect("a spec serializes");
            let back: Spec = serde_json::from_str(&json).expect("a recorded spec deserializes");
            assert_eq!(back, spec);
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            let lines = yaml_lines(text);
            for e in &errors {
                assert!(!e.message.is_empty());
                if let Some(line) = e.line {
                    assert!((1..=lines).contains(&line), "line {line} of {lines}: {e}");
                }
                assert!(e.column.is_none_or(|c| c >= 1), "{e}");
            }
            let _ = errors.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check(text, "fuzz.yaml");
        check(text, "fuzz.json");
    }
});
