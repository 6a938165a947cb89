//! Skills into the sandbox, where the agents look for them.
//!
//! A stage's skills become a [`Provision`]: files to write through the
//! guest's file RPCs (`.claude/skills/<name>/SKILL.md`, `/workspace/.mcp.json`
//! for Claude Code, `$CODEX_HOME/config.toml` for Codex, `input.json`), host
//! binaries to install on the agent's PATH, and which agent to launch.
//! Computing it is pure (no sandbox), so every rule is unit-tested.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use husk_spec::Skill;
use serde_json::{Value, json};

use crate::agents::AgentKind;
use crate::error::RunError;

/// Home of the sandbox user.
pub const HOME: &str = "/home/sandbox";
pub const WORKSPACE: &str = "/workspace";
/// Where installed tools go (on the agent's PATH).
pub const TOOL_DIR: &str = "/home/sandbox/.local/bin";
pub const MCP_JSON: &str = "/workspace/.mcp.json";
pub const CODEX_CONFIG: &str = "/home/sandbox/.codex/config.toml";
/// Largest skill directory copied into a sandbox.
const MAX_SKILL_DIR_BYTES: u64 = 16 * 1024 * 1024;

/// A file to write into the sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct FileToWrite {
    pub path: String,
    pub bytes: Vec<u8>,
    pub mode: u32,
}

/// A host binary to install as `TOOL_DIR/<name>`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolToInstall {
    pub host_path: PathBuf,
    pub name: String,
}

/// The agent a stage launches.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentChoice {
    pub kind: AgentKind,
    /// The program's name (installed into TOOL_DIR when it comes from the host).
    pub program: String,
    /// The host binary, when it has to be installed.
    pub host_path: Option<PathBuf>,
    /// Binaries that must sit beside it in TOOL_DIR, as (host path, name)
    /// (e.g. Codex's code-mode host).
    pub companions: Vec<(PathBuf, String)>,
}

impl AgentChoice {
    /// An agent installed from the host binary `host_path`, with the
    /// companions its launcher says it needs.
    pub fn from_host(kind: AgentKind, program: String, host_path: PathBuf) -> AgentChoice {
        let companions = match kind {
            AgentKind::Codex => crate::agents::codex::companions(&host_path),
            AgentKind::ClaudeCode | AgentKind::Command => Vec::new(),
        };
        AgentChoice {
            kind,
            program,
            host_path: Some(host_path),
            companions,
        }
    }
}

/// Everything a stage puts into its sandbox before the agent starts.
#[derive(Debug, Clone, Default)]
pub struct Provision {
    pub files: Vec<FileToWrite>,
    pub tools: Vec<ToolToInstall>,
    /// MCP servers by name, as Claude Code's `mcpServers` entries.
    pub mcp_servers: BTreeMap<String, Value>,
    pub agent: Option<AgentChoice>,
    /// One line per skill, for `skill.mounted` events.
    pub mounted: Vec<String>,
}

/// Finds host binaries (PATH, then next to husk): injectable for tests.
pub trait ToolLocator {
    fn locate(&self, name: &str) -> Option<PathBuf>;
}

/// The real locator: `$HUSK_<NAME>_BIN`, then husk's own directory (for
/// husk's helper binaries), then `PATH`.
pub struct HostTools;

impl ToolLocator for HostTools {
    fn locate(&self, name: &str) -> Option<PathBuf> {
        let var = format!("HUSK_{}_BIN", name.to_ascii_uppercase().replace('-', "_"));
        if let Some(p) = std::env::var_os(var) {
            return Some(PathBuf::from(p));
        }
        if name.starts_with("husk-")
            && let Some(p) = husk_sandbox::guest_bin::helper_binary(name)
        {
            return Some(p);
        }
        husk_sandbox::host::which(name)
    }
}

/// Builds the provision of one stage. `spec_dir` resolves relative `file:`
/// paths; `input` is the run input (written to `/workspace/input.json`).
pub fn plan(
    skills: &[Skill],
    spec_dir: &Path,
    input: Option<&Value>,
    tools: &dyn ToolLocator,
) -> Result<Provision, RunError> {
    plan_with(skills, spec_dir, input, tools, false)
}

/// [`plan`], plus what a messaging-enabled agent gets when `messaging`:
/// the messaging skill, `husk-message` on PATH, and `husk-mcp` registered
/// as the MCP server `husk` (Claude Code and Codex).
pub fn plan_with(
    skills: &[Skill],
    spec_dir: &Path,
    input: Option<&Value>,
    tools: &dyn ToolLocator,
    messaging: bool,
) -> Result<Provision, RunError> {
    let mut p = Provision::default();
    for (i, skill) in skills.iter().enumerate() {
        add_skill(&mut p, i, skill, spec_dir, tools)?;
    }
    if messaging {
        add_messaging(&mut p, tools)?;
    }
    if !p.mcp_servers.is_empty() {
        let doc = json!({ "mcpServers": p.mcp_servers });
        let bytes =
            serde_json::to_vec_pretty(&doc).map_err(|e| RunError::Internal(e.to_string()))?;
        p.files.push(FileToWrite {
            path: MCP_JSON.into(),
            bytes,
            mode: 0o644,
        });
    }
    if let Some(input) = input {
        let bytes =
            serde_json::to_vec_pretty(input).map_err(|e| RunError::Internal(e.to_string()))?;
        p.files.push(FileToWrite {
            path: format!("{WORKSPACE}/input.json"),
            bytes,
            mode: 0o644,
        });
    }
    Ok(p)
}

fn add_skill(
    p: &mut Provision,
    i: usize,
    skill: &Skill,
    spec_dir: &Path,
    tools: &dyn ToolLocator,
) -> Result<(), RunError> {
    let missing = |what: &str, name: &str| {
        RunError::Provision(format!(
            "skills[{i}]: {what} `{name}` not found on the host (PATH, or HUSK_{}_BIN)",
            name.to_ascii_uppercase().replace('-', "_")
        ))
    };
    match skill {
        Skill::Agent(name) => {
            let (kind, program) = agent_for(name);
            let host_path = tools
                .locate(&program)
                .ok_or_else(|| missing("agent binary", &program))?;
            p.agent = Some(AgentChoice::from_host(kind, program.clone(), host_path));
            p.mounted.push(format!("agent {name} ({program})"));
        }
        Skill::Cli(name) => {
            let host_path = tools
                .locate(name)
                .ok_or_else(|| missing("CLI tool", name))?;
            p.tools.push(ToolToInstall {
                host_path,
                name: name.clone(),
            });
            p.mounted.push(format!("cli tool {name} on PATH"));
        }
        Skill::Mcp(name) => {
            let host_path = tools
                .locate(name)
                .ok_or_else(|| missing("MCP server", name))?;
            p.tools.push(ToolToInstall {
                host_path,
                name: name.clone(),
            });
            let entry = json!({"type": "stdio", "command": format!("{TOOL_DIR}/{name}"), "args": [], "env": {}});
            insert_server(p, i, name, entry)?;
        }
        Skill::McpCommand {
            name,
            command,
            args,
            env,
        } => {
            let name = name.clone().unwrap_or_else(|| server_name_from(command));
            let entry = json!({"type": "stdio", "command": command, "args": args, "env": env});
            insert_server(p, i, &name, entry)?;
        }
        Skill::McpUrl { name, url } => {
            let name = name.clone().unwrap_or_else(|| server_name_from(url));
            insert_server(p, i, &name, json!({"type": "http", "url": url}))?;
        }
        Skill::Inline { name, content } => {
            p.files.push(skill_md(name, content));
            p.mounted.push(format!("skill {name} (inline)"));
        }
        Skill::File(path) => add_file_skill(p, i, &resolve(spec_dir, path))?,
        Skill::Remote(what) => {
            return Err(RunError::Provision(format!(
                "skills[{i}]: remote skill `{what}`: fetching skills from remote sources is not supported; \
                 download it and use `file:<path>` instead"
            )));
        }
    }
    Ok(())
}

/// `agent:<value>` → which launcher and which program.
pub fn agent_for(value: &str) -> (AgentKind, String) {
    match value {
        "claude-code" | "claude" => (AgentKind::ClaudeCode, "claude".into()),
        "codex" => (AgentKind::Codex, "codex".into()),
        // The scripted test agent speaks Claude Code's CLI.
        "husk-test-agent" => (AgentKind::ClaudeCode, "husk-test-agent".into()),
        other => (AgentKind::Command, other.into()),
    }
}

fn insert_server(p: &mut Provision, i: usize, name: &str, entry: Value) -> Result<(), RunError> {
    if p.mcp_servers.insert(name.to_string(), entry).is_some() {
        return Err(RunError::Provision(format!(
            "skills[{i}]: a second MCP server named `{name}`; give one of them another `name`"
        )));
    }
    p.mounted.push(format!("mcp server {name}"));
    Ok(())
}

/// A server name from a command or URL: its last path segment or host,
/// reduced to letters, digits, `-` and `_`.
fn server_name_from(s: &str) -> String {
    let s = s
        .split("://")
        .nth(1)
        .map_or(s, |rest| rest.split('/').next().unwrap_or(rest));
    let base = s.rsplit('/').next().unwrap_or(s);
    let name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "server".into()
    } else {
        name
    }
}

/// `.claude/skills/<name>/SKILL.md`, with front matter added when missing.
fn skill_md(name: &str, content: &str) -> FileToWrite {
    let body = if content.trim_start().starts_with("---") {
        content.to_string()
    } else {
        let first = content
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or(name)
            .trim()
            .trim_start_matches('#')
            .trim();
        let description = crate::agents::preview(first, 1000).replace('\n', " ");
        format!(
            "---\nname: {name}\ndescription: {}\n---\n\n{content}",
            yaml_quote(&description)
        )
    };
    FileToWrite {
        path: format!("{WORKSPACE}/.claude/skills/{name}/SKILL.md"),
        bytes: body.into_bytes(),
        mode: 0o644,
    }
}

fn yaml_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn resolve(spec_dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        spec_dir.join(p)
    }
}

/// `file:` a SKILL.md (named by its front matter or its directory) or a
/// skill directory (copied whole, bounded).
fn add_file_skill(p: &mut Provision, i: usize, path: &Path) -> Result<(), RunError> {
    let err = |why: String| {
        RunError::Provision(format!("skills[{i}]: file skill {}: {why}", path.display()))
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if !meta.is_dir() {
        let text = read_skill_file(path).map_err(err)?;
        let name = front_matter_name(&text)
            .or_else(|| {
                path.parent()
                    .and_then(|d| d.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .filter(|n| valid_skill_name(n))
            .ok_or_else(|| {
                err(
                    "no valid `name:` in its front matter (lowercase letters, digits, hyphens)"
                        .into(),
                )
            })?;
        p.files.push(skill_md(&name, &text));
        p.mounted.push(format!("skill {name} (file)"));
        return Ok(());
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !path.join("SKILL.md").is_file() {
        return Err(err("a skill directory needs a SKILL.md".into()));
    }
    if !valid_skill_name(&name) {
        return Err(err(format!(
            "directory name `{name}` is not a valid skill name (lowercase letters, digits, hyphens)"
        )));
    }
    let mut total = 0u64;
    for (rel, bytes, mode) in read_tree(path).map_err(|e| err(e.to_string()))? {
        total += bytes.len() as u64;
        if total > MAX_SKILL_DIR_BYTES {
            return Err(err(format!(
                "larger than {} MiB",
                MAX_SKILL_DIR_BYTES >> 20
            )));
        }
        p.files.push(FileToWrite {
            path: format!("{WORKSPACE}/.claude/skills/{name}/{rel}"),
            bytes,
            mode,
        });
    }
    p.mounted.push(format!("skill {name} (directory)"));
    Ok(())
}

/// The messaging skill, `husk-message`, and `husk-mcp` as MCP server `husk`.
fn add_messaging(p: &mut Provision, tools: &dyn ToolLocator) -> Result<(), RunError> {
    let url = crate::messaging::sidecar_url();
    p.files
        .push(skill_md(husk_sidecar::SKILL_NAME, husk_sidecar::SKILL));
    p.mounted
        .push(format!("skill {} (messaging)", husk_sidecar::SKILL_NAME));
    let host_path = tools.locate("husk-message").ok_or_else(|| {
        RunError::Provision(
            "messaging needs `husk-message` (build it with scripts/build-guest, or set HUSK_HUSK_MESSAGE_BIN)"
                .into(),
        )
    })?;
    p.tools.push(ToolToInstall {
        host_path,
        name: "husk-message".into(),
    });
    p.mounted.push("cli tool husk-message on PATH".into());
    let Some(mcp) = tools.locate("husk-mcp") else {
        p.mounted
            .push("husk-mcp is not built here: the agent gets no MCP messaging tools".into());
        return Ok(());
    };
    p.tools.push(ToolToInstall {
        host_path: mcp,
        name: "husk-mcp".into(),
    });
    let entry = json!({
        "type": "stdio",
        "command": format!("{TOOL_DIR}/husk-mcp"),
        "args": [],
        "env": {"VOID_SIDECAR_URL": url, "HUSK_SIDECAR_URL": url},
    });
    if p.mcp_servers.contains_key("husk") {
        return Err(RunError::Provision(
            "messaging registers the MCP server `husk`; another skill already uses that name"
                .into(),
        ));
    }
    p.mcp_servers.insert("husk".into(), entry);
    p.mounted
        .push("mcp server husk (husk-mcp: messaging tools)".into());
    Ok(())
}

/// Largest single-file skill.
pub const MAX_SKILL_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a single-file skill: a regular file (opened non-blocking, so a
/// FIFO cannot hang the run), at most [`MAX_SKILL_FILE_BYTES`]. A symlink
/// is followed only when it stays inside the skill's own directory: a spec
/// cannot make husk copy, say, `/etc/shadow` into a sandbox and its log.
fn read_skill_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let link = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if link.file_type().is_symlink() {
        let dir = path
            .parent()
            .and_then(|d| d.canonicalize().ok())
            .ok_or("its directory cannot be resolved")?;
        let target = path.canonicalize().map_err(|e| e.to_string())?;
        if !target.starts_with(&dir) {
            return Err(format!(
                "is a symlink to {}, outside the skill's directory {}; copy the file instead",
                target.display(),
                dir.display()
            ));
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_nonblock())
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    if meta.len() > MAX_SKILL_FILE_BYTES {
        return Err(format!(
            "is {} bytes, over the {} MiB limit for a skill file",
            meta.len(),
            MAX_SKILL_FILE_BYTES >> 20
        ));
    }
    let mut text = String::new();
    f.by_ref()
        .take(MAX_SKILL_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    Ok(text)
}

fn libc_nonblock() -> i32 {
    rustix::fs::OFlags::NONBLOCK.bits() as i32
}

/// Claude Code's rule for skill names.
pub fn valid_skill_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn front_matter_name(text: &str) -> Option<String> {
    let rest = text.trim_start().strip_prefix("---")?;
    let end = rest.find("\n---")?;
    rest[..end].lines().find_map(|l| {
        l.trim()
            .strip_prefix("name:")
            .map(|v| v.trim().trim_matches(['"', '\'']).to_string())
    })
}

/// Regular files under `dir` (relative path, bytes, executable bit kept).
fn read_tree(dir: &Path) -> std::io::Result<Vec<(String, Vec<u8>, u32)>> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                let mode = if meta.permissions().mode() & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                };
                out.push((rel, std::fs::read(&path)?, mode));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(test)]
mod tests;
