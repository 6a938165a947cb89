//! The YAML node layer: text to a tree of nodes that each know their line
//! and column.
//!
//! Why not deserialize straight into the model with serde? Because serde
//! stops at the first problem and forgets positions, and husk promises every
//! problem at once, each with a line and column. So the text becomes a small
//! tree first (built from yaml-rust2's marked event stream), and the decoder
//! walks it.
//!
//! This layer also enforces what a generic YAML loader does not:
//! - one document per file; duplicate keys in a mapping are errors (YAML
//!   forbids them, most loaders silently keep the last one);
//! - nesting depth is capped ([`MAX_DEPTH`]) and alias expansion is
//!   budgeted ([`MAX_WEIGHT`]), so a small hostile file ("billion laughs")
//!   cannot exhaust memory or stack;
//! - scalars resolve by the YAML 1.2 core schema (`yes`/`no`/`on` are
//!   strings, only `true`/`false` are booleans); a quoted scalar or one
//!   tagged `!!str` is always a string; other tags are not supported.

use std::collections::HashMap;
use std::num::IntErrorKind;

use yaml_rust2::Event;
use yaml_rust2::parser::{Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::text::{join, position};

/// Deepest nesting of lists and mappings accepted. A real spec needs about
/// eight levels.
pub const MAX_DEPTH: usize = 32;

/// Budget for the size of the loaded tree: one unit per node plus one per
/// byte of scalar text, counted after alias expansion. A spec within the
/// size limit and without aliases stays far below it.
pub const MAX_WEIGHT: usize = 4 * 1024 * 1024;

const CORE_TAG_PREFIX: &str = "tag:yaml.org,2002:";

/// A position in the text, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Mark {
    pub line: usize,
    pub column: usize,
}

impl Mark {
    /// The position of a parser marker. At the end of a text that does not
    /// end with a line break, the YAML scanner moves its marker to the start
    /// of a line that does not exist; such a marker is put back at the real
    /// end of the text (`end`), so every position lies inside the text as
    /// YAML counts its lines (LF, CR LF or a lone CR each end one).
    fn of(m: Marker, end: Mark) -> Mark {
        if m.line() > end.line {
            return end;
        }
        Mark {
            line: m.line().max(1),
            column: m.col() + 1,
        }
    }

    /// Just past the last character of `text`.
    fn end_of(text: &str) -> Mark {
        let (line, column) = position(text, text.len());
        Mark { line, column }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub mark: Mark,
    pub content: Content,
}

#[derive(Debug, Clone)]
pub(crate) enum Content {
    Scalar { text: String, plain: bool },
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub key: String,
    pub key_mark: Mark,
    pub value: Node,
}

/// A node's value with scalars resolved to their type.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Null,
    Bool(bool),
    /// Saturates at the `i128` range, which is enough to say "too large".
    Int(i128),
    Float,
    Str(&'a str),
    Seq(&'a [Node]),
    Map(&'a [Entry]),
}

impl Value<'_> {
    /// "a string", "a list"… for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "an empty value",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    pub fn value(&self) -> Value<'_> {
        match &self.content {
            Content::Scalar { text, plain: false } => Value::Str(text),
            Content::Scalar { text, plain: true } => resolve_plain(text),
            Content::Seq(items) => Value::Seq(items),
            Content::Map(entries) => Value::Map(entries),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value(), Value::Null)
    }

    /// The text of a scalar as written (without quotes), for messages.
    pub fn scalar_text(&self) -> Option<&str> {
        match &self.content {
            Content::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }
}

/// A plain scalar, resolved by the YAML 1.2 core schema.
fn resolve_plain(t: &str) -> Value<'_> {
    match t {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => return Value::Float,
        _ => {}
    }
    if let Some(i) = parse_int(t) {
        return Value::Int(i);
    }
    let float_chars = t
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E'));
    if float_chars && t.chars().any(|c| c.is_ascii_digit()) && t.parse::<f64>().is_ok() {
        return Value::Float;
    }
    Value::Str(t)
}

/// `[-+]?[0-9]+`, `0o[0-7]+`, `0x[0-9a-fA-F]+`.
fn parse_int(t: &str) -> Option<i128> {
    if let Some(hex) = t.strip_prefix("0x") {
        return parse_radix(hex, 16, false);
    }
    if let Some(oct) = t.strip_prefix("0o") {
        return parse_radix(oct, 8, false);
    }
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    parse_radix(digits, 10, negative)
}

fn parse_radix(digits: &str, radix: u32, negative: bool) -> Option<i128> {
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    match i128::from_str_radix(digits, radix) {
        Ok(v) => Some(if negative { -v } else { v }),
        Err(e) if *e.kind() == IntErrorKind::PosOverflow => {
            Some(if negative { i128::MIN } else { i128::MAX })
        }
        Err(_) => None,
    }
}

/// A problem found while loading. Syntax errors and broken limits end the
/// load; duplicate keys and unsupported tags do not.
#[derive(Debug)]
pub(crate) struct Problem {
    pub mark: Option<Mark>,
    pub path: String,
    pub message: String,
}

/// The result of loading: the tree (absent after a fatal problem) and
/// every problem found.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub root: Option<Node>,
    pub problems: Vec<Problem>,
}

/// Loads one YAML (or JSON) document.
pub(crate) fn load(text: &str) -> Loaded {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    let end = Mark::end_of(text);
    loop {
        let step = match parser.next_token() {
            Ok((event, marker)) => builder.event(event, Mark::of(marker, end)),
            Err(e) => Err(Problem {
                mark: Some(Mark::of(*e.marker(), end)),
                path: String::new(),
                message: format!("invalid YAML: {}", e.info()),
            }),
        };
        match step {
            Ok(false) => {}
            Ok(true) => break,
            Err(fatal) => {
                builder.problems.push(fatal);
                return Loaded {
                    root: None,
                    problems: builder.problems,
                };
            }
        }
    }
    if builder.root.is_none() {
        builder.problems.push(Problem {
            mark: None,
            path: String::new(),
            message: "the spec is empty; it needs at least `api_version`, `kind`, `name` and the \
                      kind's section"
                .into(),
        });
    }
    Loaded {
        root: builder.root,
        problems: builder.problems,
    }
}

enum KeyState {
    /// The next node is a key.
    Awaiting,
    /// The next node is the value of this key.
    Key(String, Mark),
    /// The key was not a scalar: drop the value.
    Skip,
}

enum Frame {
    Seq {
        mark: Mark,
        path: String,
        anchor: usize,
        weight: usize,
        items: Vec<Node>,
    },
    Map {
        mark: Mark,
        path: String,
        anchor: usize,
        weight: usize,
        entries: Vec<Entry>,
        seen: HashMap<String, Mark>,
        key: KeyState,
    },
}

#[derive(Default)]
struct Builder {
    frames: Vec<Frame>,
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    documents: usize,
    weight: usize,
    problems: Vec<Problem>,
}

impl Builder {
    /// Handles one event; `Ok(true)` at the end of the stream.
    fn event(&mut self, event: Event, mark: Mark) -> Result<bool, Problem> {
        match event {
            Event::StreamEnd => return Ok(true),
            Event::Nothing | Event::StreamStart | Event::DocumentEnd => {}
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(self.fatal(
                        mark,
                        "a spec file holds one YAML document; remove everything from this \
                         second document on",
                    ));
                }
            }
            Event::Alias(id) => {
                let Some(weight) = self.anchors.get(&id).map(|(_, w)| *w) else {
                    return Err(self.fatal(mark, "this alias names no anchor defined before it"));
                };
                self.spend(weight, mark)?;
                if let Some((node, _)) = self.anchors.get(&id) {
                    let node = Node {
                        mark: node.mark,
                        content: node.content.clone(),
                    };
                    self.complete(node, weight, 0);
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let forced_string = self.check_tag(tag.as_ref(), mark);
                let plain = style == TScalarStyle::Plain && !forced_string;
                let weight = 1 + text.len();
                self.spend(weight, mark)?;
                self.complete(
                    Node {
                        mark,
                        content: Content::Scalar { text, plain },
                    },
                    weight,
                    anchor,
                );
            }
            Event::SequenceStart(anchor, tag) => {
                self.check_tag(tag.as_ref(), mark);
                self.open(mark)?;
                let path = self.child_path();
                self.frames.push(Frame::Seq {
                    mark,
                    path,
                    anchor,
                    weight: 1,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(anchor, tag) => {
                self.check_tag(tag.as_ref(), mark);
                self.open(mark)?;
                let path = self.child_path();
                self.frames.push(Frame::Map {
                    mark,
                    path,
                    anchor,
                    weight: 1,
                    entries: Vec::new(),
                    seen: HashMap::new(),
                    key: KeyState::Awaiting,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.frames.pop() else {
                    return Err(self.fatal(mark, "unbalanced YAML structure"));
                };
                let (node, weight, anchor) = match frame {
                    Frame::Seq {
                        mark,
                        anchor,
                        weight,
                        items,
                        ..
                    } => (
                        Node {
                            mark,
                            content: Content::Seq(items),
                        },
                        weight,
                        anchor,
                    ),
                    Frame::Map {
                        mark,
                        anchor,
                        weight,
                        entries,
                        ..
                    } => {
                        // A block mapping's start event sits after its first
                        // key; point at the first key instead.
                        let first = entries.first().map(|e| e.key_mark).unwrap_or(mark);
                        let node = Node {
                            mark: mark.min(first),
                            content: Content::Map(entries),
                        };
                        (node, weight, anchor)
                    }
                };
                self.complete(node, weight, anchor);
            }
        }
        Ok(false)
    }

    /// Checks the depth before a new list or mapping and charges for it.
    fn open(&mut self, mark: Mark) -> Result<(), Problem> {
        if self.frames.len() >= MAX_DEPTH {
            return Err(self.fatal(
                mark,
                &format!("lists and mappings are nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        self.spend(1, mark)
    }

    fn spend(&mut self, weight: usize, mark: Mark) -> Result<(), Problem> {
        self.weight = self.weight.saturating_add(weight);
        if self.weight > MAX_WEIGHT {
            return Err(self.fatal(
                mark,
                &format!(
                    "the spec expands to more than {} MiB of data (through YAML aliases?); \
                     write it out plainly",
                    MAX_WEIGHT >> 20
                ),
            ));
        }
        Ok(())
    }

    /// Tags: core-schema tags are accepted (`!!str` forces a string), any
    /// other tag is reported. Returns whether the node is forced to be a
    /// string.
    fn check_tag(&mut self, tag: Option<&Tag>, mark: Mark) -> bool {
        let Some(tag) = tag else { return false };
        if tag.handle == CORE_TAG_PREFIX {
            return tag.suffix == "str";
        }
        let path = self.child_path();
        self.problems.push(Problem {
            mark: Some(mark),
            path,
            message: format!(
                "YAML tag `{}{}` is not supported in specs; remove it",
                tag.handle, tag.suffix
            ),
        });
        false
    }

    fn fatal(&self, mark: Mark, message: &str) -> Problem {
        Problem {
            mark: Some(mark),
            path: String::new(),
            message: message.to_string(),
        }
    }

    /// The path of the node that comes next.
    fn child_path(&self) -> String {
        match self.frames.last() {
            None => String::new(),
            Some(Frame::Seq { path, items, .. }) => format!("{path}[{}]", items.len()),
            Some(Frame::Map {
                path,
                key: KeyState::Key(k, _),
                ..
            }) => join(path, k),
            Some(Frame::Map { path, .. }) => path.clone(),
        }
    }

    /// Attaches a finished node to its parent (or makes it the root).
    fn complete(&mut self, node: Node, weight: usize, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), weight));
        }
        let Builder {
            frames,
            problems,
            root,
            ..
        } = self;
        match frames.last_mut() {
            None => {
                if root.is_none() {
                    *root = Some(node);
                }
            }
            Some(Frame::Seq {
                items, weight: w, ..
            }) => {
                items.push(node);
                *w = w.saturating_add(weight);
            }
            Some(Frame::Map {
                path,
                entries,
                seen,
                key,
                weight: w,
                ..
            }) => {
                *w = w.saturating_add(weight);
                match std::mem::replace(key, KeyState::Awaiting) {
                    KeyState::Awaiting => match node.content {
                        Content::Scalar { text, .. } => *key = KeyState::Key(text, node.mark),
                        _ => {
                            problems.push(Problem {
                                mark: Some(node.mark),
                                path: path.clone(),
                                message: "mapping keys must be plain words, not lists or \
                                          mappings"
                                    .into(),
                            });
                            *key = KeyState::Skip;
                        }
                    },
                    KeyState::Key(k, key_mark) => {
                        if let Some(first) = seen.get(&k) {
                            problems.push(Problem {
                                mark: Some(key_mark),
                                path: join(path, &k),
                                message: format!(
                                    "duplicate key `{k}` (first set on line {}); keep only one",
                                    first.line
                                ),
                            });
                        } else {
                            seen.insert(k.clone(), key_mark);
                            entries.push(Entry {
                                key: k,
                                key_mark,
                                value: node,
                            });
                        }
                    }
                    KeyState::Skip => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(text: &str) -> Node {
        let loaded = load(text);
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        loaded.root.expect("a root")
    }

    fn map_value<'a>(node: &'a Node, key: &str) -> &'a Node {
        match &node.content {
            Content::Map(entries) => &entries.iter().find(|e| e.key == key).expect("key").value,
            _ => panic!("not a map"),
        }
    }

    #[test]
    fn scalars_resolve_by_the_core_schema() {
        let n = root("a: 12\nb: '12'\nc: yes\nd: true\ne: ~\nf: 1.5\ng: 0x1f\nh: !!str 7\ni: -3\n");
        assert!(matches!(map_value(&n, "a").value(), Value::Int(12)));
        assert!(matches!(map_value(&n, "b").value(), Value::Str("12")));
        assert!(matches!(map_value(&n, "c").value(), Value::Str("yes")));
        assert!(matches!(map_value(&n, "d").value(), Value::Bool(true)));
        assert!(matches!(map_value(&n, "e").value(), Value::Null));
        assert!(matches!(map_value(&n, "f").value(), Value::Float));
        assert!(matches!(map_value(&n, "g").value(), Value::Int(31)));
        assert!(matches!(map_value(&n, "h").value(), Value::Str("7")));
        assert!(matches!(map_value(&n, "i").value(), Value::Int(-3)));
    }

    #[test]
    fn huge_integers_saturate() {
        let n = root("a: 99999999999999999999999999999999999999999999\n");
        assert!(matches!(map_value(&n, "a").value(), Value::Int(i128::MAX)));
    }

    #[test]
    fn marks_are_one_based_and_maps_point_at_their_first_key() {
        let n = root("top:\n  inner: x\n");
        assert_eq!(n.mark, Mark { line: 1, column: 1 });
        let inner = map_value(&n, "top");
        assert_eq!(inner.mark, Mark { line: 2, column: 3 });
        assert_eq!(
            map_value(inner, "inner").mark,
            Mark {
                line: 2,
                column: 10
            }
        );
    }

    #[test]
    fn duplicate_keys_are_reported_with_both_lines() {
        let loaded = load("a:\n  b: 1\n  b: 2\n");
        assert_eq!(loaded.problems.len(), 1);
        let p = &loaded.problems[0];
        assert_eq!(p.path, "a.b");
        assert_eq!(p.mark, Some(Mark { line: 3, column: 3 }));
        assert!(p.message.contains("first set on line 2"), "{}", p.message);
    }

    #[test]
    fn second_document_is_fatal() {
        let loaded = load("a: 1\n---\nb: 2\n");
        assert!(loaded.root.is_none());
        assert!(loaded.problems[0].message.contains("one YAML document"));
    }

    #[test]
    fn depth_is_capped() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let loaded = load(&deep);
        assert!(loaded.root.is_none());
        assert!(
            loaded.problems[0].message.contains("nested deeper"),
            "{:?}",
            loaded.problems
        );
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(load(&ok).root.is_some());
    }

    #[test]
    fn alias_bombs_hit_the_budget() {
        let mut text = String::from("a0: &a0 [\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"]\n");
        for i in 1..30 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let loaded = load(&text);
        assert!(loaded.root.is_none());
        assert!(
            loaded
                .problems
                .iter()
                .any(|p| p.message.contains("expands to more than"))
        );
    }

    #[test]
    fn aliases_within_budget_expand() {
        let n = root("base: &b {x: 1}\ncopy: *b\n");
        assert!(matches!(
            map_value(map_value(&n, "copy"), "x").value(),
            Value::Int(1)
        ));
    }

    #[test]
    fn custom_tags_are_reported() {
        let loaded = load("a: !secret x\n");
        assert_eq!(loaded.problems.len(), 1);
        assert_eq!(loaded.problems[0].path, "a");
        assert!(loaded.problems[0].message.contains("`!secret`"));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let loaded = load("a: [1, 2\n");
        assert!(loaded.root.is_none());
        let p = &loaded.problems[0];
        assert!(p.message.starts_with("invalid YAML"), "{}", p.message);
        assert_eq!(p.mark.map(|m| m.line), Some(2));
    }

    #[test]
    fn an_error_at_the_end_is_placed_on_the_last_line() {
        // The scanner's marker is on line 2 here, a line the text does not
        // have.
        let loaded = load("a: [1");
        assert_eq!(loaded.problems[0].mark, Some(Mark { line: 1, column: 6 }));
        let loaded = load("a: [1\r");
        assert_eq!(loaded.problems[0].mark, Some(Mark { line: 2, column: 1 }));
    }

    #[test]
    fn empty_text_is_reported() {
        let loaded = load("# only a comment\n");
        assert!(loaded.root.is_none());
        assert!(loaded.problems[0].message.contains("empty"));
    }
}
