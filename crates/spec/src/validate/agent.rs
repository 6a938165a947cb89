//! Rules of the `agent` section and of skill lists.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use crate::ctx::Ctx;
use crate::model::{AgentMode, AgentSpec, Skill};
use crate::text::{MAX_NAME_LEN, index, is_identifier, is_skill_name, join, quote};

use super::{env_var, is_http_url, timeout};

pub(crate) fn agent(ctx: &mut Ctx, a: &AgentSpec, path: &str) {
    prompt(ctx, &a.prompt, path);
    match a.mode {
        AgentMode::Service => {
            if a.timeout_secs.is_some() {
                let message = "mode: service and timeout_secs are mutually exclusive: a service \
                               runs until it exits or is cancelled; remove `timeout_secs` \
                               (`ready_timeout_secs` bounds the wait for output_file)";
                ctx.rule(&join(path, "timeout_secs"), message.into());
            }
            if !ctx.present(&join(path, "output_file")) {
                let message = "mode: service requires output_file: set `output_file` to the \
                               file the service writes when its result is ready";
                ctx.rule(&join(path, "mode"), message.into());
            }
        }
        AgentMode::Task => {
            if a.ready_timeout_secs.is_some() {
                let message = "ready_timeout_secs applies only to mode: service; in task mode \
                               use timeout_secs";
                ctx.rule(&join(path, "ready_timeout_secs"), message.into());
            }
        }
    }
    timeout(ctx, a.timeout_secs, path, "timeout_secs");
    timeout(ctx, a.ready_timeout_secs, path, "ready_timeout_secs");
    if let Some(problem) = sandbox_file_problem(&a.output_file) {
        ctx.rule(&join(path, "output_file"), format!("output_file {problem}"));
    }
    skills(ctx, &a.skills, &join(path, "skills"));
    if a.messaging
        .provider_bridge
        .as_ref()
        .is_some_and(|b| b.trim().is_empty())
    {
        let message = "provider_bridge cannot be empty; remove the key instead".to_string();
        ctx.rule(&join(path, "messaging.provider_bridge"), message);
    }
}

/// `<path>.prompt cannot be empty` (the contract's wording).
pub(crate) fn prompt(ctx: &mut Ctx, prompt: &str, path: &str) {
    if prompt.trim().is_empty() {
        let p = join(path, "prompt");
        ctx.rule(
            &p,
            format!("{p} cannot be empty: write the agent's task in `prompt`"),
        );
    }
}

/// Why `p` is not a file path in the sandbox, if it is not.
pub(crate) fn sandbox_file_problem(p: &str) -> Option<String> {
    if !p.starts_with('/') {
        Some(format!(
            "{} must be an absolute path in the sandbox, like /workspace/output.json",
            quote(p)
        ))
    } else if p.ends_with('/') {
        Some(format!("{} names a directory; name a file", quote(p)))
    } else if p.split('/').any(|c| c == "..") {
        Some(format!("{} cannot contain `..`", quote(p)))
    } else if p.contains('\0') {
        Some("cannot contain a NUL character".into())
    } else {
        None
    }
}

/// A program or tool name: `jq`, `python3.12`, `claude-code`; no path.
fn is_program_name(s: &str) -> bool {
    s.len() <= 128
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'))
}

/// Remembers the first use of a name; returns the earlier index on reuse.
fn first_use<'a>(seen: &mut HashMap<&'a str, usize>, name: &'a str, i: usize) -> Option<usize> {
    match seen.entry(name) {
        Entry::Occupied(e) => Some(*e.get()),
        Entry::Vacant(e) => {
            e.insert(i);
            None
        }
    }
}

pub(crate) fn skills(ctx: &mut Ctx, skills: &[Skill], path: &str) {
    let mut inline_names = HashMap::new();
    let mut servers = HashMap::new();
    let mut agent_skill: Option<usize> = None;
    for (i, skill) in skills.iter().enumerate() {
        let p = index(path, i);
        match skill {
            Skill::File(v) | Skill::Remote(v) => {
                if v.trim().is_empty() {
                    let t = skill.type_name();
                    ctx.rule(&p, format!("skill `{t}:` has no value; write `{t}:<what>`"));
                }
            }
            Skill::Agent(v) | Skill::Cli(v) | Skill::Mcp(v) => {
                let t = skill.type_name();
                if !is_program_name(v) {
                    let message = format!(
                        "`{t}:` needs a program name (letters, digits, `.`, `_`, `+`, `-`; no \
                         path or spaces), found {}",
                        quote(v)
                    );
                    ctx.rule(&p, message);
                } else if let Skill::Mcp(name) = skill {
                    server_name(ctx, &mut servers, name, i, &p);
                }
                if matches!(skill, Skill::Agent(_)) {
                    if let Some(first) = agent_skill {
                        ctx.rule(&p, format!("only one `agent:` skill is allowed; skills[{first}] already names the agent"));
                    }
                    agent_skill.get_or_insert(i);
                }
            }
            Skill::Inline { name, content } => {
                if !is_skill_name(name) {
                    let message = format!(
                        "inline skill name {} must be 1 to {MAX_NAME_LEN} lowercase letters, \
                         digits and hyphens (Claude Code's rule for skill names)",
                        quote(name)
                    );
                    ctx.rule(&join(&p, "name"), message);
                } else if let Some(first) = first_use(&mut inline_names, name, i) {
                    let message = format!(
                        "inline skill name {} is already used by skills[{first}]",
                        quote(name)
                    );
                    ctx.rule(&join(&p, "name"), message);
                }
                if content.trim().is_empty() {
                    ctx.rule(
                        &join(&p, "content"),
                        "inline skill content cannot be empty".into(),
                    );
                }
            }
            Skill::McpCommand {
                name,
                command,
                args,
                env,
            } => {
                if let Some(name) = name {
                    server_name(ctx, &mut servers, name, i, &join(&p, "name"));
                }
                if command.trim().is_empty() {
                    ctx.rule(&join(&p, "command"), "command cannot be empty".into());
                } else if command.contains('\0') {
                    ctx.rule(
                        &join(&p, "command"),
                        "command cannot contain a NUL character".into(),
                    );
                }
                for (j, arg) in args.iter().enumerate() {
                    if arg.contains('\0') {
                        ctx.rule(
                            &index(&join(&p, "args"), j),
                            "an argument cannot contain a NUL character".into(),
                        );
                    }
                }
                let env_path = join(&p, "env");
                for (k, v) in env {
                    env_var(ctx, &env_path, k, v);
                }
            }
            Skill::McpUrl { name, url } => {
                if let Some(name) = name {
                    server_name(ctx, &mut servers, name, i, &join(&p, "name"));
                }
                if !is_http_url(url) {
                    ctx.rule(
                        &join(&p, "url"),
                        format!("url {} must start with http:// or https://", quote(url)),
                    );
                }
            }
        }
    }
}

/// MCP server names become JSON and TOML keys: identifiers, unique.
fn server_name<'a>(
    ctx: &mut Ctx,
    seen: &mut HashMap<&'a str, usize>,
    name: &'a str,
    i: usize,
    path: &str,
) {
    if !is_identifier(name) {
        let message = format!(
            "MCP server name {} must be 1 to {MAX_NAME_LEN} letters, digits, `-` or `_`",
            quote(name)
        );
        ctx.rule(path, message);
    } else if let Some(first) = first_use(seen, name, i) {
        let message = format!(
            "MCP server name {} is already used by skills[{first}]",
            quote(name)
        );
        ctx.rule(path, message);
    }
}
