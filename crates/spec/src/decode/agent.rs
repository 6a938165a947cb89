//! Decoding of the `agent` section and of skill lists (shared with
//! pipeline boxes).

use crate::ctx::Ctx;
use crate::model::{AgentMode, AgentSpec, DEFAULT_OUTPUT_FILE, Messaging, Skill};
use crate::node::{Node, Value};
use crate::text::{did_you_mean, index, list, quote};

use super::MapReader;
use super::read::seq;

pub(crate) fn agent(ctx: &mut Ctx, node: &Node, path: &str) -> AgentSpec {
    let mut a = AgentSpec::default();
    let Some(mut m) = MapReader::open(ctx, node, path) else {
        return a;
    };
    a.prompt = m.string(ctx, "prompt").unwrap_or_default();
    a.skills = m
        .take(ctx, "skills")
        .map(|n| skills(ctx, n, &m.child("skills")))
        .unwrap_or_default();
    if let Some(1) = m.word(ctx, "mode", "mode", &["task", "service"]) {
        a.mode = AgentMode::Service;
    }
    a.output_file = m
        .string(ctx, "output_file")
        .unwrap_or_else(|| DEFAULT_OUTPUT_FILE.into());
    a.timeout_secs = m.uint(ctx, "timeout_secs", u64::MAX);
    a.ready_timeout_secs = m.uint(ctx, "ready_timeout_secs", u64::MAX);
    if let Some(n) = m.take(ctx, "messaging") {
        a.messaging = messaging(ctx, n, &m.child("messaging"));
    }
    m.finish(ctx);
    a
}

fn messaging(ctx: &mut Ctx, node: &Node, path: &str) -> Messaging {
    let Some(mut m) = MapReader::open(ctx, node, path) else {
        return Messaging::default();
    };
    let out = Messaging {
        enabled: m.boolean(ctx, "enabled").unwrap_or(false),
        provider_bridge: m.string(ctx, "provider_bridge"),
    };
    m.finish(ctx);
    out
}

/// A `skills` list.
pub(crate) fn skills(ctx: &mut Ctx, node: &Node, path: &str) -> Vec<Skill> {
    let items = seq(ctx, node, path, "a list of skills").unwrap_or_default();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        ctx.visit(&p, item);
        let skill = match item.value() {
            Value::Str(s) => skill_string(ctx, item, &p, s),
            Value::Map(_) => skill_object(ctx, item, &p),
            _ => {
                ctx.type_error(item, &p, "a string like `file:PATH` or a mapping");
                None
            }
        };
        // A rejected entry keeps its place so later entries keep their index.
        out.push(skill.unwrap_or(Skill::File(String::new())));
    }
    out
}

/// `"<type>:<value>"`.
fn skill_string(ctx: &mut Ctx, node: &Node, path: &str, s: &str) -> Option<Skill> {
    let types = &Skill::STRING_TYPES;
    let Some((kind, value)) = s.split_once(':') else {
        let message = format!(
            "skill {} has no type; write `<type>:<value>` with a type from {}",
            quote(s),
            list(types)
        );
        ctx.error(Some(node.mark), path, message);
        return None;
    };
    let value = value.to_string();
    let skill = match kind {
        "file" => Skill::File(value),
        "agent" => Skill::Agent(value),
        "cli" => Skill::Cli(value),
        "remote" => Skill::Remote(value),
        "mcp" => Skill::Mcp(value),
        _ => {
            let hint = did_you_mean(kind, types);
            let message = format!(
                "unknown skill type {} in {}: valid types are {}{hint}",
                quote(kind),
                quote(s),
                list(types)
            );
            ctx.error(Some(node.mark), path, message);
            return None;
        }
    };
    Some(skill)
}

/// `{name, content}`, `{name?, command, args, env}` or `{name?, url}`.
fn skill_object(ctx: &mut Ctx, node: &Node, path: &str) -> Option<Skill> {
    let mut m = MapReader::open(ctx, node, path)?;
    let shapes = [m.has("content"), m.has("command"), m.has("url")];
    let skill = match shapes {
        [true, false, false] => {
            let name = m.require_string(
                ctx,
                "name",
                ": inline skills are written to .claude/skills/<name>/",
            );
            let content = m.require_string(ctx, "content", "");
            Some(Skill::Inline {
                name: name.unwrap_or_default(),
                content: content.unwrap_or_default(),
            })
        }
        [false, true, false] => {
            let name = m.string(ctx, "name");
            let command = m.require_string(ctx, "command", "");
            let args = m.string_list(ctx, "args");
            let env = m.env(ctx, "env");
            Some(Skill::McpCommand {
                name,
                command: command.unwrap_or_default(),
                args,
                env,
            })
        }
        [false, false, true] => {
            let name = m.string(ctx, "name");
            let url = m.require_string(ctx, "url", "");
            Some(Skill::McpUrl {
                name,
                url: url.unwrap_or_default(),
            })
        }
        [false, false, false] => {
            let message = if m.has("image") {
                "OCI image skills (`image`, `mount`) are not supported by husk; use \
                 `sandbox.image` for a userland, or `sandbox.mounts`"
            } else {
                "a skill mapping needs `content` (inline skill: {name, content}), `command` \
                 (MCP server: {command, args, env}) or `url` (MCP server: {url})"
            };
            ctx.error(Some(node.mark), path, message.to_string());
            return None;
        }
        _ => {
            let message = "a skill mapping is one of: an inline skill {name, content}, a \
                           command MCP server {command, args, env}, or a URL MCP server {url}; \
                           it cannot mix them";
            ctx.error(Some(node.mark), path, message.to_string());
            return None;
        }
    };
    m.finish(ctx);
    skill
}
