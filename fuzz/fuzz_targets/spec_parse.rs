//! Feeds arbitrary text to the spec parser, as a YAML and as a JSON file
//! name: it must return a spec or a non-empty list of errors, never panic,
//! and stay within its size, depth and alias budgets. A spec that parses
//! must survive a JSON round trip (runs record specs as JSON), and every
//! error must point inside the text.

#![no_main]

use husk_spec::{Spec, parse_str};
use libfuzzer_sys::fuzz_target;

fn check(text: &str, source: &str) {
    match parse_str(text, source) {
        Ok(spec) => {
            let json = serde_json::to_string(&spec).expect("a spec serializes");
            let back: Spec = serde_json::from_str(&json).expect("a recorded spec deserializes");
            assert_eq!(back, spec);
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            let lines = text.lines().count() + 1;
            for e in &errors {
                assert!(!e.message.is_empty());
                if let Some(line) = e.line {
                    assert!((1..=lines).contains(&line), "line {line} of {lines}: {e}");
                }
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
