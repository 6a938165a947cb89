//! The decoder: node tree to typed model.
//!
//! It checks shape only (known keys, types, required keys, enum words) and
//! fills in defaults; meaning (ranges, names, references between parts) is
//! the validator's job. It never stops at the first problem: a bad value
//! is reported and replaced by its default so the rest of the spec is still
//! checked.

mod agent;
mod flow;
mod network;
mod read;

use crate::ctx::{Ctx, Section};
use crate::model::{
    API_VERSION, AgentSpec, Body, Kind, LlmSpec, Mount, MountMode, ObserveSpec, PipelineSpec,
    SandboxMode, SandboxSpec, Spec, WorkflowSpec,
};
use crate::node::Node;
use crate::text::index;

pub(crate) use read::MapReader;
use read::{seq, word};

const KINDS: [&str; 3] = ["agent", "workflow", "pipeline"];

/// Decodes a whole spec. `None` when the document is not a mapping; the
/// problems are in `ctx` either way.
pub(crate) fn spec(ctx: &mut Ctx, root: &Node) -> Option<Spec> {
    let mut top = MapReader::open(ctx, root, "")?;
    let api_version = top
        .string(ctx, "api_version")
        .unwrap_or_else(|| API_VERSION.to_string());
    let kind_node = top.require(ctx, "kind", ": set it to `agent`, `workflow` or `pipeline`");
    let kind = kind_node
        .and_then(|n| word(ctx, n, "kind", "kind", &KINDS))
        .map(|i| Kind::ALL[i]);
    let name = top.require_string(ctx, "name", ": give the spec a name");
    let sandbox = match top.take(ctx, "sandbox") {
        Some(n) => sandbox(ctx, n, "sandbox", &SandboxSpec::default()),
        None => SandboxSpec::default(),
    };
    let llm = top
        .take(ctx, "llm")
        .map(|n| llm(ctx, n, "llm"))
        .unwrap_or_default();
    let observe = top
        .take(ctx, "observe")
        .map(|n| observe(ctx, n, "observe"))
        .unwrap_or_default();
    let sections = [
        top.take_entry(ctx, "agent"),
        top.take_entry(ctx, "workflow"),
        top.take_entry(ctx, "pipeline"),
    ];
    top.finish(ctx);

    let mut body = None;
    for (section_kind, entry) in Kind::ALL.into_iter().zip(sections) {
        let Some(entry) = entry else { continue };
        let path = section_kind.as_str();
        match kind {
            Some(k) if k != section_kind => {
                let message = format!("section `{path}` does not apply to kind={k}; it is ignored");
                ctx.warning(entry.key_mark, path, message);
                // Checked for shape only, then dropped: see `Section`.
                ctx.section = Section::Ignored;
                section(ctx, section_kind, &entry.value, &sandbox);
                ctx.section = Section::Used;
            }
            _ => {
                body.get_or_insert(section(ctx, section_kind, &entry.value, &sandbox));
            }
        }
    }
    // Without a usable body the rest is still checked; the placeholder's
    // path is marked rejected so it adds no errors of its own.
    let (kind, body) = match (kind, body) {
        (Some(k), Some(b)) if b.kind() == k => (k, b),
        (Some(k), _) => {
            let k_str = k.as_str();
            let message =
                format!("kind={k_str} requires '{k_str}' section; add the `{k_str}:` section");
            ctx.error(kind_node.map(|n| n.mark), k_str, message);
            (k, placeholder(k))
        }
        (None, Some(b)) => (b.kind(), b),
        (None, None) => {
            ctx.reject(Kind::Agent.as_str());
            (Kind::Agent, placeholder(Kind::Agent))
        }
    };
    Some(Spec {
        api_version,
        kind,
        name: name.unwrap_or_default(),
        sandbox,
        llm,
        observe,
        body,
        warnings: ctx.take_warnings(),
    })
}

/// Decodes the `agent`, `workflow` or `pipeline` section.
fn section(ctx: &mut Ctx, kind: Kind, node: &Node, sandbox: &SandboxSpec) -> Body {
    let path = kind.as_str();
    match kind {
        Kind::Agent => Body::Agent(agent::agent(ctx, node, path)),
        Kind::Workflow => Body::Workflow(flow::workflow(ctx, node, path)),
        Kind::Pipeline => Body::Pipeline(flow::pipeline(ctx, node, path, sandbox)),
    }
}

fn placeholder(kind: Kind) -> Body {
    match kind {
        Kind::Agent => Body::Agent(AgentSpec::default()),
        Kind::Workflow => Body::Workflow(WorkflowSpec::default()),
        Kind::Pipeline => Body::Pipeline(PipelineSpec::default()),
    }
}

/// A `sandbox` mapping laid over `base`: keys it sets replace the base's,
/// `env` is merged and `mounts` are appended.
pub(crate) fn sandbox(ctx: &mut Ctx, node: &Node, path: &str, base: &SandboxSpec) -> SandboxSpec {
    let mut s = base.clone();
    let Some(mut m) = MapReader::open(ctx, node, path) else {
        return s;
    };
    if let Some(i) = m.word(ctx, "mode", "sandbox mode", &SandboxMode::WORDS) {
        s.mode = SandboxMode::from_word(SandboxMode::WORDS[i]).unwrap_or_default();
    }
    let u32_max = u64::from(u32::MAX);
    if let Some(v) = m
        .uint(ctx, "memory_mb", u32_max)
        .and_then(|v| u32::try_from(v).ok())
    {
        s.memory_mb = v;
    }
    if let Some(v) = m
        .uint(ctx, "disk_mb", u32_max)
        .and_then(|v| u32::try_from(v).ok())
    {
        s.disk_mb = Some(v);
    }
    if let Some(v) = m
        .uint(ctx, "vcpus", u32_max)
        .and_then(|v| u32::try_from(v).ok())
    {
        s.vcpus = v;
    }
    if let Some(n) = m.take(ctx, "network") {
        let p = m.child("network");
        if let Some(v) = network::network(ctx, n, &p) {
            s.network = v;
        }
    }
    s.env.extend(m.env(ctx, "env"));
    if let Some(n) = m.take(ctx, "mounts") {
        let p = m.child("mounts");
        for (i, item) in seq(ctx, n, &p, "a list of mounts")
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            s.mounts.push(mount(ctx, item, &index(&p, i)));
        }
    }
    for (key, slot) in [
        ("image", &mut s.image),
        ("guest_image", &mut s.guest_image),
        ("kernel", &mut s.kernel),
        ("initramfs", &mut s.initramfs),
    ] {
        if let Some(v) = m.string(ctx, key) {
            *slot = Some(v);
        }
    }
    m.finish_with(ctx, |key| {
        (key == "snapshot").then(|| {
            "`snapshot` (void-box's VM snapshots) is not supported by husk; remove it".to_string()
        })
    });
    s
}

/// A mount; a rejected one is a placeholder (the errors are recorded) so
/// later mounts keep their index.
fn mount(ctx: &mut Ctx, node: &Node, path: &str) -> Mount {
    let placeholder = Mount {
        host: String::new(),
        guest: String::new(),
        mode: MountMode::Ro,
    };
    let Some(mut m) = MapReader::open(ctx, node, path) else {
        return placeholder;
    };
    let host = m.require_string(ctx, "host", ": the host directory to mount");
    let guest = m.require_string(ctx, "guest", ": the absolute path in the sandbox");
    let mode = match m.word(ctx, "mode", "mount mode", &["ro", "rw"]) {
        Some(1) => MountMode::Rw,
        _ => MountMode::Ro,
    };
    m.finish(ctx);
    Mount {
        host: host.unwrap_or_default(),
        guest: guest.unwrap_or_default(),
        mode,
    }
}

pub(crate) fn llm(ctx: &mut Ctx, node: &Node, path: &str) -> LlmSpec {
    let Some(mut m) = MapReader::open(ctx, node, path) else {
        return LlmSpec::default();
    };
    let llm = LlmSpec {
        provider: m.string(ctx, "provider"),
        model: m.string(ctx, "model"),
        base_url: m.string(ctx, "base_url"),
        api_key_env: m.string(ctx, "api_key_env"),
        key_in_sandbox: m.boolean(ctx, "key_in_sandbox").unwrap_or(false),
    };
    m.finish(ctx);
    llm
}

fn observe(ctx: &mut Ctx, node: &Node, path: &str) -> ObserveSpec {
    let Some(mut m) = MapReader::open(ctx, node, path) else {
        return ObserveSpec::default();
    };
    let o = ObserveSpec {
        traces: m.boolean(ctx, "traces").unwrap_or(false),
        metrics: m.boolean(ctx, "metrics").unwrap_or(false),
        logs: m.boolean(ctx, "logs").unwrap_or(false),
        otlp_endpoint: m.string(ctx, "otlp_endpoint"),
        service_name: m.string(ctx, "service_name"),
        telemetry_buffer_size: m.uint(ctx, "telemetry_buffer_size", u64::MAX),
    };
    m.finish(ctx);
    o
}
