//! The checking context: collects problems, remembers where every path of
//! the spec is in the text, and keeps follow-on errors quiet.
//!
//! The decoder reports shape problems (unknown keys, wrong types, missing
//! keys) with the node at hand. The validator works on the typed model and
//! names problems by path; the context turns a path back into a line and
//! column (the nearest enclosing node that exists in the text). When the
//! decoder already rejected a value, the validator's view of it is only a
//! placeholder default, so rule errors at or below that path are dropped:
//! one mistake gives one message.

use std::collections::{HashMap, HashSet};

use crate::error::{SpecError, SpecErrors};
use crate::node::{Mark, Node, Problem, Value};
use crate::text::{parent, quote};

/// At most this many problems are listed; the rest are counted.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// Whether the section being decoded is used or ignored. A section that
/// does not apply to the spec's `kind` is decoded for shape only (unknown
/// keys, types, enum words) so typos still surface, but its required keys
/// are optional: it may be a partial override such as `agent: {prompt: …}`
/// in a copy of a workflow template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Used,
    Ignored,
}

pub(crate) struct Ctx {
    source: String,
    /// The section being decoded; see [`Section`].
    pub section: Section,
    problems: Vec<(Option<Mark>, String, String)>,
    /// Things that do not stop the spec from running, e.g. an ignored
    /// section.
    warnings: Vec<(Mark, String, String)>,
    /// Position of every visited path, and whether its value is non-null.
    locations: HashMap<String, (Mark, bool)>,
    /// Paths the decoder rejected.
    rejected: HashSet<String>,
}

impl Ctx {
    pub fn new(source: &str) -> Ctx {
        Ctx {
            source: source.to_string(),
            section: Section::Used,
            problems: Vec::new(),
            warnings: Vec::new(),
            locations: HashMap::new(),
            rejected: HashSet::new(),
        }
    }

    /// Records where `path` is.
    pub fn visit(&mut self, path: &str, node: &Node) {
        if !self.locations.contains_key(path) {
            self.locations
                .insert(path.to_string(), (node.mark, !node.is_null()));
        }
    }

    /// Whether the spec text sets `path` to a non-empty value.
    pub fn present(&self, path: &str) -> bool {
        self.locations.get(path).is_some_and(|(_, set)| *set)
    }

    /// A shape problem found by the decoder (or the node layer).
    pub fn error(&mut self, mark: Option<Mark>, path: &str, message: String) {
        self.rejected.insert(path.to_string());
        self.problems.push((mark, path.to_string(), message));
    }

    /// A required key is missing at `path`: an error, except in an
    /// ignored section (see [`Section`]).
    pub fn missing(&mut self, mark: Option<Mark>, path: &str, message: String) {
        match self.section {
            Section::Used => self.error(mark, path, message),
            Section::Ignored => self.reject(path),
        }
    }

    /// Something worth saying that does not make the spec invalid.
    pub fn warning(&mut self, mark: Mark, path: &str, message: String) {
        self.warnings.push((mark, path.to_string(), message));
    }

    /// The warnings so far, as [`SpecError`]s sorted by position.
    pub fn take_warnings(&mut self) -> Vec<SpecError> {
        let mut out: Vec<SpecError> = std::mem::take(&mut self.warnings)
            .into_iter()
            .map(|(mark, path, message)| SpecError {
                source: self.source.clone(),
                line: Some(mark.line),
                column: Some(mark.column),
                path,
                message,
            })
            .collect();
        out.sort_by(|a, b| (a.line, a.column, &a.path).cmp(&(b.line, b.column, &b.path)));
        out
    }

    /// Marks `path` as rejected without a message of its own.
    pub fn reject(&mut self, path: &str) {
        self.rejected.insert(path.to_string());
    }

    pub fn problem(&mut self, p: Problem) {
        self.error(p.mark, &p.path, p.message);
    }

    /// "expected X, found Y" for `node`.
    pub fn type_error(&mut self, node: &Node, path: &str, expected: &str) {
        let value = node.value();
        let mut message = format!("expected {expected}, found {}", value.type_name());
        if let (Some(text), Value::Bool(_) | Value::Int(_) | Value::Float) =
            (node.scalar_text(), value)
        {
            message.push_str(&format!(" {}", quote(text)));
            if expected.contains("string") {
                message.push_str("; put it in quotes to use it as text");
            }
        }
        self.error(Some(node.mark), path, message);
    }

    /// A rule violation found by the validator, placed by path.
    pub fn rule(&mut self, path: &str, message: String) {
        if self.is_rejected(path) {
            return;
        }
        let mark = self.mark_of(path);
        self.problems.push((mark, path.to_string(), message));
    }

    /// Whether the decoder rejected `path` or something enclosing it.
    fn is_rejected(&self, path: &str) -> bool {
        let mut p = Some(path);
        while let Some(at) = p {
            if self.rejected.contains(at) {
                return true;
            }
            p = parent(at);
        }
        false
    }

    /// The position of `path`, or of the nearest enclosing path in the text.
    fn mark_of(&self, path: &str) -> Option<Mark> {
        let mut p = Some(path);
        while let Some(at) = p {
            if let Some((mark, _)) = self.locations.get(at) {
                return Some(*mark);
            }
            p = parent(at);
        }
        None
    }

    /// `value` when nothing was wrong, else every problem, sorted by
    /// position (problems without one first; then by path), duplicates removed.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, SpecErrors> {
        match value {
            Some(v) if self.problems.is_empty() => return Ok(v),
            _ => {}
        }
        let source = self.source;
        let mut errors: Vec<SpecError> = self
            .problems
            .into_iter()
            .map(|(mark, path, message)| SpecError {
                source: source.clone(),
                line: mark.map(|m| m.line),
                column: mark.map(|m| m.column),
                path,
                message,
            })
            .collect();
        errors.sort_by(|a, b| {
            (a.line, a.column, &a.path, &a.message).cmp(&(b.line, b.column, &b.path, &b.message))
        });
        errors.dedup();
        if errors.is_empty() {
            return Err(SpecErrors::single(&source, "the spec could not be read"));
        }
        if errors.len() > MAX_REPORTED_ERRORS {
            let more = errors.len() - MAX_REPORTED_ERRORS;
            errors.truncate(MAX_REPORTED_ERRORS);
            errors.push(SpecError {
                source: source.clone(),
                line: None,
                column: None,
                path: String::new(),
                message: format!("… and {more} more problems"),
            });
        }
        Err(SpecErrors(errors))
    }
}
