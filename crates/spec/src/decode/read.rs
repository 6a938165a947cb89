//! Typed reads of nodes: each helper either returns the value or records a
//! problem that says what was expected and what was found.

use std::collections::BTreeMap;

use crate::ctx::Ctx;
use crate::node::{Entry, Mark, Node, Value};
use crate::text::{did_you_mean, index, join, list, quote, suggest};

/// Reads a mapping key by key, then reports every key nobody asked for.
pub(crate) struct MapReader<'n> {
    path: String,
    mark: Mark,
    entries: &'n [Entry],
    used: Vec<bool>,
    known: Vec<&'static str>,
    /// Required keys found missing, with their hints; reported by
    /// `finish` unless an unknown key looks like a typo of one.
    missing: Vec<(&'static str, String)>,
}

impl<'n> MapReader<'n> {
    /// A reader over `node`, which must be a mapping. An empty value (`key:`
    /// with nothing after it) reads as an empty mapping.
    pub fn open(ctx: &mut Ctx, node: &'n Node, path: &str) -> Option<MapReader<'n>> {
        ctx.visit(path, node);
        let entries: &'n [Entry] = match node.value() {
            Value::Map(entries) => entries,
            Value::Null => &[],
            _ => {
                ctx.type_error(node, path, "a mapping of keys to values");
                return None;
            }
        };
        Some(MapReader {
            path: path.to_string(),
            mark: node.mark,
            entries,
            used: vec![false; entries.len()],
            known: Vec::new(),
            missing: Vec::new(),
        })
    }

    pub fn mark(&self) -> Mark {
        self.mark
    }

    /// The path of `key` inside this mapping.
    pub fn child(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Whether the mapping has `key` (with any value), without taking it.
    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|e| e.key == key)
    }

    /// The value of `key`, `None` when absent or empty. Declares `key` as
    /// valid here.
    pub fn take(&mut self, ctx: &mut Ctx, key: &'static str) -> Option<&'n Node> {
        self.take_entry(ctx, key)
            .map(|e| &e.value)
            .filter(|n| !n.is_null())
    }

    /// Like [`MapReader::take`] but returns the entry (with the key's
    /// position) even when its value is empty.
    pub fn take_entry(&mut self, ctx: &mut Ctx, key: &'static str) -> Option<&'n Entry> {
        self.known.push(key);
        let i = self.entries.iter().position(|e| e.key == key)?;
        self.used[i] = true;
        let entry = &self.entries[i];
        ctx.visit(&self.child(key), &entry.value);
        Some(entry)
    }

    /// A required key: reports it when absent or empty.
    pub fn require(&mut self, ctx: &mut Ctx, key: &'static str, hint: &str) -> Option<&'n Node> {
        let node = self.take(ctx, key);
        if node.is_none() {
            ctx.reject(&self.child(key));
            self.missing.push((key, hint.to_string()));
        }
        node
    }

    /// `key` as a string.
    pub fn string(&mut self, ctx: &mut Ctx, key: &'static str) -> Option<String> {
        let node = self.take(ctx, key)?;
        string(ctx, node, &self.child(key))
    }

    /// A required string.
    pub fn require_string(
        &mut self,
        ctx: &mut Ctx,
        key: &'static str,
        hint: &str,
    ) -> Option<String> {
        let node = self.require(ctx, key, hint)?;
        string(ctx, node, &self.child(key))
    }

    /// `key` as a boolean.
    pub fn boolean(&mut self, ctx: &mut Ctx, key: &'static str) -> Option<bool> {
        let node = self.take(ctx, key)?;
        boolean(ctx, node, &self.child(key))
    }

    /// `key` as a whole number in `0..=max`.
    pub fn uint(&mut self, ctx: &mut Ctx, key: &'static str, max: u64) -> Option<u64> {
        let node = self.take(ctx, key)?;
        uint(ctx, node, &self.child(key), max)
    }

    /// `key` as one of `choices` (its index).
    pub fn word(
        &mut self,
        ctx: &mut Ctx,
        key: &'static str,
        what: &str,
        choices: &[&str],
    ) -> Option<usize> {
        let node = self.take(ctx, key)?;
        word(ctx, node, &self.child(key), what, choices)
    }

    /// `key` as a list of strings (empty when absent).
    pub fn string_list(&mut self, ctx: &mut Ctx, key: &'static str) -> Vec<String> {
        let node = self.take(ctx, key);
        string_list(ctx, node, &self.child(key))
    }

    /// `key` as environment variables (empty when absent).
    pub fn env(&mut self, ctx: &mut Ctx, key: &'static str) -> BTreeMap<String, String> {
        let node = self.take(ctx, key);
        env_map(ctx, node, &self.child(key))
    }

    /// Reports keys that were never taken: unknown keys, with a suggestion
    /// when one is close, else the list of valid keys.
    pub fn finish(self, ctx: &mut Ctx) {
        self.finish_with(ctx, |_| None);
    }

    /// [`MapReader::finish`] with a custom message for some unknown keys.
    /// An unknown key that looks like a typo of a valid key stands in for
    /// it: the valid key's path is marked rejected and a "missing required
    /// key" error for it is not repeated.
    pub fn finish_with(self, ctx: &mut Ctx, special: impl Fn(&str) -> Option<String>) {
        let mut meant = Vec::new();
        // Only keys not set already are plausible typo targets.
        let unset: Vec<&str> = self
            .known
            .iter()
            .copied()
            .filter(|k| !self.has(k))
            .collect();
        for (entry, used) in self.entries.iter().zip(&self.used) {
            if *used {
                continue;
            }
            let key = &entry.key;
            let suggestion = suggest(key, &unset);
            let message = match (special(key), suggestion) {
                (Some(m), _) => m,
                (None, Some(s)) => {
                    meant.push(s);
                    ctx.reject(&self.child(s));
                    format!("unknown key {}; did you mean `{s}`?", quote(key))
                }
                (None, None) => {
                    format!(
                        "unknown key {}; valid keys here: {}",
                        quote(key),
                        list(&self.known)
                    )
                }
            };
            ctx.error(Some(entry.key_mark), &join(&self.path, key), message);
        }
        for (key, hint) in &self.missing {
            if !meant.contains(key) {
                let message = format!("missing required key `{key}`{hint}");
                ctx.missing(Some(self.mark), &self.child(key), message);
            }
        }
    }
}

pub(crate) fn string(ctx: &mut Ctx, node: &Node, path: &str) -> Option<String> {
    match node.value() {
        Value::Str(s) => Some(s.to_string()),
        _ => {
            ctx.type_error(node, path, "a string");
            None
        }
    }
}

pub(crate) fn boolean(ctx: &mut Ctx, node: &Node, path: &str) -> Option<bool> {
    match node.value() {
        Value::Bool(b) => Some(b),
        Value::Str(s @ ("yes" | "no" | "on" | "off" | "y" | "n" | "Yes" | "No" | "On" | "Off")) => {
            let message = format!(
                "expected `true` or `false`, found the string {} (YAML 1.2 has no yes/no \
                 booleans)",
                quote(s)
            );
            ctx.error(Some(node.mark), path, message);
            None
        }
        _ => {
            ctx.type_error(node, path, "`true` or `false`");
            None
        }
    }
}

/// A whole number in `0..=max`.
pub(crate) fn uint(ctx: &mut Ctx, node: &Node, path: &str, max: u64) -> Option<u64> {
    let text = node.scalar_text().unwrap_or_default();
    let message = match node.value() {
        Value::Int(v) if v < 0 => format!("must not be negative, found {}", quote(text)),
        Value::Int(v) => match u64::try_from(v) {
            Ok(v) if v <= max => return Some(v),
            _ => format!("{} is too large (at most {max})", quote(text)),
        },
        Value::Float => format!("expected a whole number, found {}", quote(text)),
        Value::Str(s) if s.trim().parse::<i128>().is_ok() => {
            format!(
                "expected a number, found the string {}; remove the quotes",
                quote(s)
            )
        }
        _ => {
            ctx.type_error(node, path, "a whole number");
            return None;
        }
    };
    ctx.error(Some(node.mark), path, message);
    None
}

/// One of `choices`; returns its index.
pub(crate) fn word(
    ctx: &mut Ctx,
    node: &Node,
    path: &str,
    what: &str,
    choices: &[&str],
) -> Option<usize> {
    let Value::Str(s) = node.value() else {
        ctx.type_error(node, path, &format!("{what} ({})", list(choices)));
        return None;
    };
    if let Some(i) = choices.iter().position(|c| *c == s) {
        return Some(i);
    }
    let hint = did_you_mean(s, choices);
    let message = if hint.is_empty() {
        format!(
            "unknown {what} {}; valid values: {}",
            quote(s),
            list(choices)
        )
    } else {
        format!("unknown {what} {}{hint}", quote(s))
    };
    ctx.error(Some(node.mark), path, message);
    None
}

/// A list of strings; an empty value is an empty list.
pub(crate) fn string_list(ctx: &mut Ctx, node: Option<&Node>, path: &str) -> Vec<String> {
    let Some(node) = node else { return Vec::new() };
    let Some(items) = seq(ctx, node, path, "a list of strings") else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        ctx.visit(&p, item);
        // A rejected item keeps its place so later items keep their index.
        out.push(string(ctx, item, &p).unwrap_or_default());
    }
    out
}

/// The items of a list; an empty value is an empty list. A single scalar
/// where a list belongs gets a hint to write it as a list.
pub(crate) fn seq<'n>(
    ctx: &mut Ctx,
    node: &'n Node,
    path: &str,
    expected: &str,
) -> Option<&'n [Node]> {
    match node.value() {
        Value::Seq(items) => Some(items),
        Value::Null => Some(&[]),
        Value::Str(s) => {
            let message = format!(
                "expected {expected}, found a string; write it as a list: [{}]",
                quote(s).trim_matches('`')
            );
            ctx.error(Some(node.mark), path, message);
            None
        }
        _ => {
            ctx.type_error(node, path, expected);
            None
        }
    }
}

/// A mapping of names to string values, for environment variables:
/// numbers and booleans are taken as written (`PORT: 8080`), an empty
/// value is the empty string (which means "take the host's variable").
pub(crate) fn env_map(ctx: &mut Ctx, node: Option<&Node>, path: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(node) = node else { return out };
    ctx.visit(path, node);
    let entries = match node.value() {
        Value::Map(entries) => entries,
        Value::Null => return out,
        _ => {
            ctx.type_error(node, path, "a mapping of variable names to values");
            return out;
        }
    };
    for e in entries {
        let p = join(path, &e.key);
        ctx.visit(&p, &e.value);
        let value = match e.value.value() {
            Value::Str(s) => s.to_string(),
            Value::Null => String::new(),
            Value::Bool(_) | Value::Int(_) | Value::Float => {
                e.value.scalar_text().unwrap_or_default().to_string()
            }
            Value::Seq(_) | Value::Map(_) => {
                ctx.type_error(&e.value, &p, "a string");
                continue;
            }
        };
        out.insert(e.key.clone(), value);
    }
    out
}
