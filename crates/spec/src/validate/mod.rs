//! The validator: rules on the typed spec (ranges, names, references
//! between parts), each reported by path with what to change.
//!
//! It runs after decoding even when decoding found problems, so one pass
//! reports everything; the context drops rule errors about values the
//! decoder already rejected.

mod agent;
mod flow;

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use crate::ctx::Ctx;
use crate::model::{API_VERSION, Body, LlmSpec, ObserveSpec, SandboxSpec, Spec};
use crate::text::{index, is_env_lookup_name, join, quote};

/// Smallest `sandbox.memory_mb`: below this no guest kernel boots.
pub const MIN_MEMORY_MB: u32 = 128;
/// Largest `sandbox.memory_mb` (1 TiB).
pub const MAX_MEMORY_MB: u32 = 1024 * 1024;
/// Smallest `sandbox.disk_mb`: room for a checkout and a result file.
pub const MIN_DISK_MB: u32 = 16;
/// Largest `sandbox.disk_mb` (1 TiB). The space is tmpfs, so it counts
/// against host RAM.
pub const MAX_DISK_MB: u32 = 1024 * 1024;
/// Largest `sandbox.vcpus`.
pub const MAX_VCPUS: u32 = 64;
/// Largest timeout in seconds (30 days). Long-lived work belongs in
/// service mode, which has no timeout.
pub const MAX_TIMEOUT_SECS: u64 = 30 * 24 * 3600;
/// Longest top-level `name`.
pub const MAX_SPEC_NAME_LEN: usize = 128;
/// Largest `observe.telemetry_buffer_size`.
pub const MAX_TELEMETRY_BUFFER: u64 = 1_000_000;

pub(crate) fn spec(ctx: &mut Ctx, spec: &Spec) {
    if spec.api_version != API_VERSION {
        let message = format!(
            "unsupported api_version {}: husk supports only `{API_VERSION}`",
            quote(&spec.api_version)
        );
        ctx.rule("api_version", message);
    }
    spec_name(ctx, &spec.name);
    sandbox(ctx, &spec.sandbox, "sandbox", None);
    llm(ctx, &spec.llm, "llm");
    observe(ctx, &spec.observe, "observe");
    match &spec.body {
        Body::Agent(a) => agent::agent(ctx, a, "agent"),
        Body::Workflow(w) => flow::workflow(ctx, w, "workflow"),
        Body::Pipeline(p) => flow::pipeline(ctx, p, "pipeline", &spec.sandbox),
    }
}

fn spec_name(ctx: &mut Ctx, name: &str) {
    if name.trim().is_empty() {
        ctx.rule("name", "name cannot be empty".into());
    } else if name.chars().count() > MAX_SPEC_NAME_LEN {
        ctx.rule(
            "name",
            format!("name is longer than {MAX_SPEC_NAME_LEN} characters"),
        );
    } else if name.chars().any(char::is_control) {
        ctx.rule(
            "name",
            "name cannot contain control characters (newlines, tabs…)".into(),
        );
    }
}

/// Checks a sandbox. For a pipeline box, `inherited` is the top-level
/// sandbox the box's section was laid over: only what the box itself sets
/// is checked here (the rest was checked at the top).
pub(crate) fn sandbox(ctx: &mut Ctx, s: &SandboxSpec, path: &str, inherited: Option<&SandboxSpec>) {
    let own = |ctx: &Ctx, key: &str| inherited.is_none() || ctx.present(&join(path, key));
    if own(ctx, "memory_mb") {
        let p = join(path, "memory_mb");
        if s.memory_mb < MIN_MEMORY_MB {
            ctx.rule(
                &p,
                format!(
                    "memory_mb must be at least {MIN_MEMORY_MB} (MiB), found {}",
                    s.memory_mb
                ),
            );
        } else if s.memory_mb > MAX_MEMORY_MB {
            ctx.rule(
                &p,
                format!(
                    "memory_mb must be at most {MAX_MEMORY_MB} (1 TiB), found {}",
                    s.memory_mb
                ),
            );
        }
    }
    if let Some(disk) = s.disk_mb
        && own(ctx, "disk_mb")
        && !(MIN_DISK_MB..=MAX_DISK_MB).contains(&disk)
    {
        let message = format!(
            "disk_mb must be between {MIN_DISK_MB} and {MAX_DISK_MB} (MiB; at most 1 TiB), found \
             {disk}"
        );
        ctx.rule(&join(path, "disk_mb"), message);
    }
    if own(ctx, "vcpus") && !(1..=MAX_VCPUS).contains(&s.vcpus) {
        let message = format!("vcpus must be between 1 and {MAX_VCPUS}, found {}", s.vcpus);
        ctx.rule(&join(path, "vcpus"), message);
    }
    let env_path = join(path, "env");
    for (name, value) in &s.env {
        let inherited_var = inherited.is_some_and(|i| i.env.contains_key(name));
        if inherited_var && !ctx.present(&join(&env_path, name)) {
            continue;
        }
        env_var(ctx, &env_path, name, value);
    }
    mounts(ctx, s, path, inherited);
    for (key, value) in [
        ("image", &s.image),
        ("guest_image", &s.guest_image),
        ("kernel", &s.kernel),
        ("initramfs", &s.initramfs),
    ] {
        if own(ctx, key) && value.as_ref().is_some_and(|v| v.trim().is_empty()) {
            ctx.rule(
                &join(path, key),
                format!("{key} cannot be empty; remove the key to use the default"),
            );
        }
    }
}

/// Mount rules. A box's mounts come after the inherited ones and are
/// numbered from 0 in the box's own list.
fn mounts(ctx: &mut Ctx, s: &SandboxSpec, path: &str, inherited: Option<&SandboxSpec>) {
    let first_own = inherited.map_or(0, |i| i.mounts.len());
    let mounts_path = join(path, "mounts");
    let mut guests: HashMap<&str, usize> = HashMap::new();
    for (i, mount) in s.mounts.iter().enumerate() {
        let guest = mount.guest.trim_end_matches('/');
        let first = match guests.entry(guest) {
            Entry::Occupied(e) => Some(*e.get()),
            Entry::Vacant(e) => {
                e.insert(i);
                None
            }
        };
        if i < first_own {
            continue;
        }
        let p = index(&mounts_path, i - first_own);
        if mount.host.trim().is_empty() {
            ctx.rule(&join(&p, "host"), "host cannot be empty".into());
        } else if mount.host.contains('\0') {
            ctx.rule(
                &join(&p, "host"),
                "host cannot contain a NUL character".into(),
            );
        }
        if let Some(problem) = guest_path_problem(&mount.guest) {
            ctx.rule(&join(&p, "guest"), format!("guest {problem}"));
        } else if let Some(first) = first {
            let other = if first < first_own {
                format!("the top-level sandbox.mounts[{first}]")
            } else {
                index("mounts", first - first_own)
            };
            let message = format!(
                "guest path {} is already mounted by {other}",
                quote(&mount.guest)
            );
            ctx.rule(&join(&p, "guest"), message);
        }
    }
}

/// Why `p` is not a usable mount point in the sandbox, if it is not.
fn guest_path_problem(p: &str) -> Option<String> {
    if !p.starts_with('/') {
        return Some(format!(
            "path {} must be absolute (start with `/`)",
            quote(p)
        ));
    }
    if p.trim_end_matches('/').is_empty() {
        return Some("path cannot be `/` itself; mount under a directory such as /data".into());
    }
    if p.split('/').any(|c| c == "..") {
        return Some(format!("path {} cannot contain `..`", quote(p)));
    }
    if p.contains('\0') {
        return Some("path cannot contain a NUL character".into());
    }
    None
}

/// An environment variable: a name with no `=` or NUL, a value with no
/// NUL (the empty value is valid: it takes the host's variable).
pub(crate) fn env_var(ctx: &mut Ctx, env_path: &str, name: &str, value: &str) {
    let p = join(env_path, name);
    if name.is_empty() {
        ctx.rule(
            env_path,
            "an environment variable name cannot be empty".into(),
        );
    } else if name.contains('=') || name.contains('\0') {
        let message = format!(
            "environment variable name {} cannot contain `=` or NUL",
            quote(name)
        );
        ctx.rule(&p, message);
    }
    if value.contains('\0') {
        ctx.rule(
            &p,
            "an environment value cannot contain a NUL character".into(),
        );
    }
}

pub(crate) fn llm(ctx: &mut Ctx, l: &LlmSpec, path: &str) {
    if let Some(provider) = &l.provider
        && (provider.trim().is_empty() || provider.chars().any(char::is_whitespace))
    {
        let message = format!(
            "provider {} must be one word such as `claude`, `codex`, `ollama` or `none`",
            quote(provider)
        );
        ctx.rule(&join(path, "provider"), message);
    }
    if l.model.as_ref().is_some_and(|m| m.trim().is_empty()) {
        ctx.rule(
            &join(path, "model"),
            "model cannot be empty; remove the key for the default".into(),
        );
    }
    if let Some(url) = &l.base_url
        && !is_http_url(url)
    {
        ctx.rule(
            &join(path, "base_url"),
            format!(
                "base_url {} must start with http:// or https://",
                quote(url)
            ),
        );
    }
    if let Some(var) = &l.api_key_env
        && !is_env_lookup_name(var)
    {
        let message = format!(
            "api_key_env {} must be the name of an environment variable (letters, digits, `_`), \
                 not its value",
            quote(var)
        );
        ctx.rule(&join(path, "api_key_env"), message);
    }
}

fn observe(ctx: &mut Ctx, o: &ObserveSpec, path: &str) {
    if let Some(url) = &o.otlp_endpoint
        && !is_http_url(url)
    {
        let message = format!(
            "otlp_endpoint {} must start with http:// or https://",
            quote(url)
        );
        ctx.rule(&join(path, "otlp_endpoint"), message);
    }
    if o.service_name.as_ref().is_some_and(|s| s.trim().is_empty()) {
        ctx.rule(
            &join(path, "service_name"),
            "service_name cannot be empty".into(),
        );
    }
    if let Some(size) = o.telemetry_buffer_size
        && !(1..=MAX_TELEMETRY_BUFFER).contains(&size)
    {
        let message = format!("telemetry_buffer_size must be between 1 and {MAX_TELEMETRY_BUFFER}");
        ctx.rule(&join(path, "telemetry_buffer_size"), message);
    }
}

pub(crate) fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty() && !r.chars().any(|c| c.is_whitespace() || c.is_control()))
}

/// A timeout, when set: more than zero, at most [`MAX_TIMEOUT_SECS`].
pub(crate) fn timeout(ctx: &mut Ctx, value: Option<u64>, path: &str, key: &str) {
    match value {
        Some(0) => ctx.rule(&join(path, key), format!("{key} must be more than 0")),
        Some(v) if v > MAX_TIMEOUT_SECS => {
            let message = format!("{key} must be at most {MAX_TIMEOUT_SECS} (30 days), found {v}");
            ctx.rule(&join(path, key), message);
        }
        _ => {}
    }
}
