//! Mutated specs never panic, and whatever comes back is coherent: errors
//! are non-empty and point inside the text; specs serialize and come back
//! equal. (The `fuzz/` target does the same, unbounded.)

use husk_spec::{Spec, parse_str};

const SEEDS: [&str; 4] = [
    "api_version: v1\nkind: agent\nname: a\nsandbox: {mode: mock, memory_mb: 512, env: {A: \"\"}, mounts: [{host: /h, guest: /g}]}\nagent:\n  prompt: |\n    do it\n  mode: service\n  output_file: /workspace/o.json\n  skills: [\"file:x\", {name: s, content: c}, {command: m, args: [a]}, {url: \"http://u\"}]\n",
    "kind: workflow\nname: w\nworkflow:\n  steps:\n    - name: a\n      run: {program: echo, args: [x]}\n    - name: b\n      depends_on: [a]\n      run: {program: cat, stdin_from: a}\n  output_step: b\n",
    "kind: pipeline\nname: p\nllm: {provider: claude}\npipeline:\n  boxes:\n    - {name: a, prompt: x, outputs: [o], sandbox: {vcpus: 2}}\n    - {name: b, prompt: y, inputs: [o]}\n  stages:\n    - {type: box, name: a}\n    - {type: fan_out, boxes: [b]}\n",
    "{\"kind\": \"agent\", \"name\": \"j\", \"agent\": {\"prompt\": \"p\", \"skills\": [\"cli:jq\"]}, \"x\": &a [1, *a]}",
];

const ALPHABET: &[char] = &[
    '[', ']', '{', '}', ':', '-', '?', ',', '&', '*', '!', '|', '>', '\'', '"', '#', '%', '@', ' ',
    '\n', '\t', '\\', 'a', 'k', '0', '9', '.', '~', '\u{feff}', 'é', '\r', '\0',
];

/// Lines of `text` as YAML counts them (LF, CR LF and a lone CR each end a
/// line), plus one for a position just past a final line break.
fn yaml_lines(text: &str) -> usize {
    text.replace("\r\n", "\n").matches(['\n', '\r']).count() + 1
}

/// xorshift64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }
}

fn mutate(rng: &mut Rng, seed: &str) -> String {
    let mut chars: Vec<char> = seed.chars().collect();
    for _ in 0..=rng.below(5) {
        let pos = rng.below(chars.len());
        let c = ALPHABET[rng.below(ALPHABET.len())];
        match rng.below(4) {
            0 => chars.insert(pos, c),
            1 if !chars.is_empty() => {
                chars.remove(pos);
            }
            2 if !chars.is_empty() => chars[pos] = c,
            _ => {
                // Duplicate a slice: repeats keys, items and structure.
                let end = (pos + rng.below(20)).min(chars.len());
                let piece: Vec<char> = chars[pos..end].to_vec();
                let at = rng.below(chars.len());
                chars.splice(at..at, piece);
            }
        }
    }
    chars.into_iter().collect()
}

fn check(text: &str, source: &str) {
    match parse_str(text, source) {
        Ok(spec) => {
            let json = serde_json::to_string(&spec).expect("a spec serializes");
            let back: Spec = serde_json::from_str(&json).expect("and deserializes");
            assert_eq!(back, spec, "round trip of {text:?}");
        }
        Err(errs) => {
            assert!(!errs.is_empty(), "empty error list for {text:?}");
            let lines = yaml_lines(text);
            for e in errs.iter() {
                assert!(!e.message.is_empty());
                if let Some(line) = e.line {
                    assert!(
                        line >= 1 && line <= lines,
                        "line {line} outside {text:?}: {e}"
                    );
                }
                assert!(e.column.is_none_or(|c| c >= 1), "{e}");
            }
        }
    }
}

#[test]
fn seeds_are_valid() {
    for (i, seed) in SEEDS.iter().enumerate() {
        let result = parse_str(seed, "seed.yaml");
        // The last seed carries an alias in an unknown key on purpose.
        if i == 3 {
            let errs = result.expect_err("unknown key x");
            assert_eq!(errs.len(), 1, "{errs}");
        } else {
            assert!(
                result.is_ok(),
                "seed {i}: {}",
                result.err().map(|e| e.to_string()).unwrap_or_default()
            );
        }
    }
}

#[test]
fn mutated_specs_never_panic() {
    // HUSK_SPEC_MUTATIONS=N runs more (e.g. in release mode, by hand).
    let rounds = std::env::var("HUSK_SPEC_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..rounds {
        let seed = SEEDS[i % SEEDS.len()];
        let text = mutate(&mut rng, seed);
        check(&text, "fuzz.yaml");
        if i % 10 == 0 {
            check(&text, "fuzz.json");
        }
    }
}
