//! Spec errors: every problem of a spec file, each with where it is and
//! what to change.
//!
//! A spec is checked in one pass and all problems are reported together,
//! sorted by position, so a user fixes a file in one round instead of one
//! error per run. One error prints as `FILE:LINE:COL: PATH: MESSAGE`, the
//! shape editors and terminals turn into links.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One problem in a spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecError {
    /// The file name (or other label) the spec came from.
    pub source: String,
    /// 1-based line, when the problem has a place in the text.
    pub line: Option<usize>,
    /// 1-based column (in characters), when known.
    pub column: Option<usize>,
    /// Where in the spec's structure, e.g. `agent.skills[2]`; empty for the
    /// document as a whole.
    pub path: String,
    /// What is wrong and, where possible, what to change.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut place = self.source.clone();
        if let Some(line) = self.line {
            if !place.is_empty() {
                place.push(':');
            }
            place.push_str(&line.to_string());
            if let Some(column) = self.column {
                place.push(':');
                place.push_str(&column.to_string());
            }
        }
        if !place.is_empty() {
            write!(f, "{place}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for SpecError {}

/// All problems of a spec (never empty when returned by the parser),
/// sorted by position. Displays one problem per line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecErrors(pub Vec<SpecError>);

impl SpecErrors {
    /// A single problem without a position (unreadable file, too large…).
    pub fn single(source: &str, message: impl Into<String>) -> SpecErrors {
        SpecErrors(vec![SpecError {
            source: source.to_string(),
            line: None,
            column: None,
            path: String::new(),
            message: message.into(),
        }])
    }

    pub fn iter(&self) -> std::slice::Iter<'_, SpecError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_slice(&self) -> &[SpecError] {
        &self.0
    }
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

impl IntoIterator for SpecErrors {
    type Item = SpecError;
    type IntoIter = std::vec::IntoIter<SpecError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a SpecErrors {
    type Item = &'a SpecError;
    type IntoIter = std::slice::Iter<'a, SpecError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: Option<usize>, column: Option<usize>, path: &str) -> SpecError {
        SpecError {
            source: "a.yaml".into(),
            line,
            column,
            path: path.into(),
            message: "bad".into(),
        }
    }

    #[test]
    fn display_omits_missing_parts() {
        assert_eq!(
            err(Some(3), Some(7), "agent.mode").to_string(),
            "a.yaml:3:7: agent.mode: bad"
        );
        assert_eq!(
            err(Some(3), None, "agent").to_string(),
            "a.yaml:3: agent: bad"
        );
        assert_eq!(err(None, None, "").to_string(), "a.yaml: bad");
        let mut e = err(Some(1), Some(2), "");
        e.source.clear();
        assert_eq!(e.to_string(), "1:2: bad");
    }

    #[test]
    fn errors_display_one_per_line() {
        let all = SpecErrors(vec![err(Some(1), Some(1), "a"), err(Some(2), Some(1), "b")]);
        assert_eq!(all.to_string(), "a.yaml:1:1: a: bad\na.yaml:2:1: b: bad");
    }
}
