//! `sandbox.network`: `true`/`false`, `none`/`open`, or `{allow: [...]}`.

use crate::ctx::Ctx;
use crate::model::{AllowEntry, MAX_ALLOW_ENTRIES, NetworkSpec};
use crate::node::{Node, Value};
use crate::text::{index, quote};

use super::MapReader;
use super::read::seq;

const EXPECTED: &str = "`false`/`none`, `true`/`open`, or a mapping `{allow: [host, …]}`";

/// Decodes the value of `sandbox.network`; `None` when it was rejected
/// (the problem is recorded).
pub(crate) fn network(ctx: &mut Ctx, node: &Node, path: &str) -> Option<NetworkSpec> {
    match node.value() {
        Value::Bool(false) => Some(NetworkSpec::None),
        Value::Bool(true) => Some(NetworkSpec::Open),
        Value::Str("none") => Some(NetworkSpec::None),
        Value::Str("open") => Some(NetworkSpec::Open),
        Value::Str(s @ ("yes" | "no" | "on" | "off" | "y" | "n" | "Yes" | "No" | "On" | "Off")) => {
            let message = format!(
                "expected {EXPECTED}, found the string {} (YAML 1.2 has no yes/no booleans)",
                quote(s)
            );
            ctx.error(Some(node.mark), path, message);
            None
        }
        Value::Str(s) => {
            let hint = crate::text::did_you_mean(s, &["none", "open"]);
            let message = if hint.is_empty() {
                format!("unknown network mode {}; expected {EXPECTED}", quote(s))
            } else {
                format!("unknown network mode {}{hint}", quote(s))
            };
            ctx.error(Some(node.mark), path, message);
            None
        }
        Value::Map(_) => allow(ctx, node, path),
        _ => {
            ctx.type_error(node, path, EXPECTED);
            None
        }
    }
}

fn allow(ctx: &mut Ctx, node: &Node, path: &str) -> Option<NetworkSpec> {
    let mut m = MapReader::open(ctx, node, path)?;
    let list = m.require(ctx, "allow", ": the host names the sandbox may reach");
    let p = m.child("allow");
    m.finish(ctx);
    let items = seq(ctx, list?, &p, "a list of host names")?;
    if items.is_empty() {
        let message = "an empty allowlist allows nothing; write `network: none` for that, \
                       or list the hosts"
            .to_string();
        ctx.error(Some(node.mark), &p, message);
        return None;
    }
    if items.len() > MAX_ALLOW_ENTRIES {
        let message = format!(
            "{} entries; an allowlist has at most {MAX_ALLOW_ENTRIES} (use `*.domain` entries)",
            items.len()
        );
        ctx.error(Some(node.mark), &p, message);
        return None;
    }
    let mut entries = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let ip = index(&p, i);
        ctx.visit(&ip, item);
        let parsed = match item.value() {
            Value::Str(s) => AllowEntry::parse(s),
            _ => {
                ctx.type_error(item, &ip, "a host name (a string)");
                ok = false;
                continue;
            }
        };
        match parsed {
            Ok(e) => entries.push(e),
            Err(message) => {
                ctx.error(Some(item.mark), &ip, message);
                ok = false;
            }
        }
    }
    ok.then_some(NetworkSpec::Allow(entries))
}
