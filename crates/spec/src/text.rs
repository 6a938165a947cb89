//! Small text helpers shared by the decoder and the validator: paths,
//! "did you mean" suggestions, name rules, and positions in the text.

/// The 1-based line and column (in characters) of byte `at` of `text`,
/// with lines counted the way YAML counts them: LF, CR LF and a lone CR
/// each end a line (a lone CR is a line break to the YAML parser, so every
/// position husk reports must count it too). An `at` inside a character
/// points at that character; past the end, at the end.
pub(crate) fn position(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let bytes = text.as_bytes();
    let (mut line, mut column) = (1, 1);
    for (i, c) in text[..at].char_indices() {
        let crlf = c == '\r' && bytes.get(i + 1) == Some(&b'\n');
        if (c == '\n' || c == '\r') && !crlf {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

/// `parent.key`, or `key` at the top.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[i]`.
pub(crate) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// The enclosing path: `a.b[2]` → `a.b` → `a` → `` → none.
pub(crate) fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

/// The candidate closest to `word` when it is close enough to be a typo:
/// same letters in another case, or an edit distance of at most 2 (1 for
/// short words), transpositions counting as one edit; failing that, a
/// candidate that is `word` plus a `_suffix` (`timeout` → `timeout_secs`).
pub(crate) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = if word.chars().count() <= 3 { 1 } else { 2 };
    let mut best: Option<(usize, &'a str)> = None;
    for &c in candidates {
        if c == word {
            continue;
        }
        let d = if c.eq_ignore_ascii_case(word) {
            0
        } else {
            distance(word, c)
        };
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    // `timeout` for `timeout_secs`, `memory` for `memory_mb`.
    best.map(|(_, c)| c).or_else(|| {
        candidates.iter().copied().find(|c| {
            c.strip_prefix(word)
                .is_some_and(|rest| rest.starts_with('_'))
                && !word.is_empty()
        })
    })
}

/// "; did you mean `x`?" or "".
pub(crate) fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    match suggest(word, candidates) {
        Some(s) => format!("; did you mean `{s}`?"),
        None => String::new(),
    }
}

/// Optimal string alignment distance (Levenshtein plus adjacent
/// transpositions), on characters. Inputs longer than 64 characters are
/// never typos of a spec word; they get a large distance without work.
pub(crate) fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len() > 64 || b.len() > 64 {
        return usize::MAX;
    }
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = v;
        }
    }
    d[a.len() * width + b.len()]
}

/// "`a`, `b`, `c`".
pub(crate) fn list(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("`{w}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Longest name of a step, box, output or MCP server.
pub(crate) const MAX_NAME_LEN: usize = 64;

/// Names that become stage names, URL segments, file names or config keys:
/// 1 to 64 ASCII letters, digits, `-` or `_`, starting with a letter or
/// digit.
pub(crate) fn is_identifier(s: &str) -> bool {
    s.len() <= MAX_NAME_LEN
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Claude Code's rule for skill names: 1 to 64 lowercase letters, digits
/// and hyphens.
pub(crate) fn is_skill_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// An environment variable name a program can look up:
/// `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_env_lookup_name(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A short quote of user text for messages: at most 40 characters, with
/// control characters escaped.
pub(crate) fn quote(s: &str) -> String {
    let mut out: String = s.chars().take(40).flat_map(char::escape_debug).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    format!("`{out}`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("a", "b"), "a.b");
        assert_eq!(index("a.b", 2), "a.b[2]");
        assert_eq!(parent("a.b[2]"), Some("a.b"));
        assert_eq!(parent("a.b"), Some("a"));
        assert_eq!(parent("a"), Some(""));
        assert_eq!(parent(""), None);
    }

    #[test]
    fn positions_count_lf_crlf_and_lone_cr_as_line_breaks() {
        assert_eq!(position("ab", 0), (1, 1));
        assert_eq!(position("ab", 1), (1, 2));
        assert_eq!(position("a\nb", 2), (2, 1));
        assert_eq!(position("a\r\nb", 3), (2, 1));
        // The LF of a CR LF still belongs to the first line.
        assert_eq!(position("a\r\nb", 2), (1, 3));
        assert_eq!(position("\r#\rn", 3), (3, 1));
        // Columns count characters; a byte inside one points at it.
        assert_eq!(position("é\0", 2), (1, 2));
        assert_eq!(position("é", 1), (1, 1));
        assert_eq!(position("a\n", 99), (2, 1));
    }

    #[test]
    fn distances() {
        assert_eq!(distance("prompt", "prompt"), 0);
        assert_eq!(distance("promt", "prompt"), 1);
        assert_eq!(distance("pormpt", "prompt"), 1);
        assert_eq!(distance("memroy_mb", "memory_mb"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
    }

    #[test]
    fn suggestions() {
        let keys = ["prompt", "skills", "mode", "output_file", "timeout_secs"];
        assert_eq!(suggest("promt", &keys), Some("prompt"));
        assert_eq!(suggest("timeout_sec", &keys), Some("timeout_secs"));
        assert_eq!(suggest("Mode", &keys), Some("mode"));
        assert_eq!(suggest("banana", &keys), None);
        assert_eq!(suggest("md", &["mode"]), None);
        assert_eq!(suggest("timeout", &keys), Some("timeout_secs"));
        assert_eq!(suggest("output", &keys), Some("output_file"));
        assert_eq!(suggest("time", &keys), None);
    }

    #[test]
    fn names() {
        assert!(is_identifier("fetch_data-2"));
        assert!(!is_identifier("-x"));
        assert!(!is_identifier("a b"));
        assert!(!is_identifier(""));
        assert!(!is_identifier(&"a".repeat(65)));
        assert!(is_skill_name("web-search2"));
        assert!(!is_skill_name("Web"));
        assert!(!is_skill_name("a_b"));
        assert!(is_env_lookup_name("ANTHROPIC_API_KEY"));
        assert!(!is_env_lookup_name("1X"));
        assert_eq!(quote("a\nb"), "`a\\nb`");
    }
}
