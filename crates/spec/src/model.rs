//! The typed spec: what a valid spec file means, with every default filled
//! in.
//!
//! These types are plain data. They are produced only by the parser (which
//! has checked every rule), serialize to JSON so a run can record exactly
//! what it was asked to do, and deserialize back from that record. A value
//! built or deserialized by hand has not been validated.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::SpecError;
pub use crate::network::{AllowEntry, MAX_ALLOW_ENTRIES, MAX_HOST_LEN, NetworkSpec};

/// The only `api_version` husk understands.
pub const API_VERSION: &str = "v1";
/// `sandbox.memory_mb` when the spec does not say.
pub const DEFAULT_MEMORY_MB: u32 = 1024;
/// `sandbox.vcpus` when the spec does not say.
pub const DEFAULT_VCPUS: u32 = 1;
/// `agent.output_file` when the spec does not say (task mode only).
pub const DEFAULT_OUTPUT_FILE: &str = "/workspace/output.json";
/// Timeout of an agent or pipeline box in task mode when the spec does not
/// set `timeout_secs`.
pub const DEFAULT_TASK_TIMEOUT_SECS: u64 = 1200;

/// A parsed and validated spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// Always [`API_VERSION`] once validated.
    pub api_version: String,
    pub kind: Kind,
    pub name: String,
    pub sandbox: SandboxSpec,
    pub llm: LlmSpec,
    pub observe: ObserveSpec,
    /// The section named by `kind`.
    pub body: Body,
    /// Problems that do not stop the spec from running, sorted by
    /// position, in the same form as errors: today, a section that does
    /// not apply to `kind` (it is ignored). Empty when there are none
    /// (and then left out of the JSON record).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<SpecError>,
}

impl Spec {
    /// The `agent` section, when `kind: agent`.
    pub fn agent(&self) -> Option<&AgentSpec> {
        match &self.body {
            Body::Agent(a) => Some(a),
            _ => None,
        }
    }

    /// The `workflow` section, when `kind: workflow`.
    pub fn workflow(&self) -> Option<&WorkflowSpec> {
        match &self.body {
            Body::Workflow(w) => Some(w),
            _ => None,
        }
    }

    /// The `pipeline` section, when `kind: pipeline`.
    pub fn pipeline(&self) -> Option<&PipelineSpec> {
        match &self.body {
            Body::Pipeline(p) => Some(p),
            _ => None,
        }
    }
}

/// What a spec runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Agent,
    Workflow,
    Pipeline,
}

impl Kind {
    /// All kinds, in the order the docs list them.
    pub const ALL: [Kind; 3] = [Kind::Agent, Kind::Workflow, Kind::Pipeline];

    /// The word used in specs (`agent`, `workflow`, `pipeline`), which is
    /// also the name of the kind's section.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Agent => "agent",
            Kind::Workflow => "workflow",
            Kind::Pipeline => "pipeline",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind-specific section of a spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    Agent(AgentSpec),
    Workflow(WorkflowSpec),
    Pipeline(PipelineSpec),
}

impl Body {
    pub fn kind(&self) -> Kind {
        match self {
            Body::Agent(_) => Kind::Agent,
            Body::Workflow(_) => Kind::Workflow,
            Body::Pipeline(_) => Kind::Pipeline,
        }
    }
}

/// Where and with what resources a stage runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SandboxSpec {
    pub mode: SandboxMode,
    pub memory_mb: u32,
    /// Size in MiB of the sandbox's writable tmpfs space (`/workspace`,
    /// `/tmp`, `/home/sandbox`); it counts against host RAM. `None`: the
    /// backend's default.
    pub disk_mb: Option<u32>,
    pub vcpus: u32,
    /// What the sandbox may reach; see [`NetworkSpec`].
    pub network: NetworkSpec,
    /// Variables set in the sandbox. An empty value means "take the host's
    /// variable of that name"; resolving it is the runtime's job.
    pub env: BTreeMap<String, String>,
    pub mounts: Vec<Mount>,
    /// Root filesystem image (name or path).
    pub image: Option<String>,
    pub guest_image: Option<String>,
    pub kernel: Option<String>,
    pub initramfs: Option<String>,
}

impl Default for SandboxSpec {
    fn default() -> Self {
        SandboxSpec {
            mode: SandboxMode::Auto,
            memory_mb: DEFAULT_MEMORY_MB,
            disk_mb: None,
            vcpus: DEFAULT_VCPUS,
            network: NetworkSpec::None,
            env: BTreeMap::new(),
            mounts: Vec::new(),
            image: None,
            guest_image: None,
            kernel: None,
            initramfs: None,
        }
    }
}

/// The isolation a spec asks for.
///
/// Serializes as the word the spec used, so `mock` stays `mock` in records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum SandboxMode {
    /// A micro-VM when KVM is usable, else a namespace sandbox.
    #[default]
    Auto,
    Microvm,
    /// A namespace sandbox. `alias` is `Some("mock")` or `Some("local")`
    /// when the spec used void-box's word for it (the commands really run).
    Namespace {
        alias: Option<String>,
    },
}

impl SandboxMode {
    /// Every word accepted in `sandbox.mode`.
    pub const WORDS: [&'static str; 5] = ["auto", "microvm", "namespace", "mock", "local"];

    /// Parses a `sandbox.mode` word.
    pub fn from_word(word: &str) -> Option<SandboxMode> {
        match word {
            "auto" => Some(SandboxMode::Auto),
            "microvm" => Some(SandboxMode::Microvm),
            "namespace" => Some(SandboxMode::Namespace { alias: None }),
            "mock" | "local" => Some(SandboxMode::Namespace {
                alias: Some(word.to_string()),
            }),
            _ => None,
        }
    }

    /// The canonical name: `auto`, `microvm` or `namespace`.
    pub fn as_str(&self) -> &'static str {
        match self {
            SandboxMode::Auto => "auto",
            SandboxMode::Microvm => "microvm",
            SandboxMode::Namespace { .. } => "namespace",
        }
    }

    /// The word as the spec wrote it (`mock` for `Namespace { alias:
    /// Some("mock") }`).
    pub fn word(&self) -> &str {
        match self {
            SandboxMode::Namespace { alias: Some(a) } => a,
            other => other.as_str(),
        }
    }
}

impl fmt::Display for SandboxMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

impl Serialize for SandboxMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.word())
    }
}

impl<'de> Deserialize<'de> for SandboxMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let word = String::deserialize(d)?;
        SandboxMode::from_word(&word).ok_or_else(|| {
            serde::de::Error::invalid_value(serde::de::Unexpected::Str(&word), &"a sandbox mode")
        })
    }
}

/// A host directory made visible in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Host path as written (a relative path is resolved by the runtime).
    pub host: String,
    /// Absolute path in the sandbox.
    pub guest: String,
    #[serde(default)]
    pub mode: MountMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountMode {
    #[default]
    Ro,
    Rw,
}

/// Which model runs the agent. Every field is optional; the runtime picks
/// defaults from the agent binary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LlmSpec {
    /// `claude`, `codex`, `ollama`, …, or `none`.
    pub provider: Option<String>,
    pub model: Option<String>,
    pub base_url: Option<String>,
    /// Name of the host variable that holds the API key.
    pub api_key_env: Option<String>,
    /// **(husk)** `true`: the agent gets the real key in its environment
    /// and talks to the model API itself. `false` (default): the key stays
    /// on the host and the run's proxy adds it (docs/network.md).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub key_in_sandbox: bool,
}

/// Telemetry export settings (accepted with void-box's key names). husk's
/// own event log is always on and is not governed by these.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ObserveSpec {
    pub traces: bool,
    pub metrics: bool,
    pub logs: bool,
    /// `http://` or `https://` OTLP endpoint the enabled signals go to.
    pub otlp_endpoint: Option<String>,
    pub service_name: Option<String>,
    pub telemetry_buffer_size: Option<u64>,
}

/// `kind: agent`: one agent in one sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSpec {
    pub prompt: String,
    #[serde(default)]
    pub skills: Vec<Skill>,
    #[serde(default)]
    pub mode: AgentMode,
    /// Path in the sandbox where the agent writes its structured output.
    pub output_file: String,
    /// Task mode only; see [`AgentSpec::effective_timeout_secs`].
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Service mode only: fail the service if `output_file` has not
    /// appeared after this long (contract §4). `None`: wait forever.
    #[serde(default)]
    pub ready_timeout_secs: Option<u64>,
    #[serde(default)]
    pub messaging: Messaging,
}

impl Default for AgentSpec {
    /// An agent with an empty prompt (not valid as is) and every default.
    fn default() -> Self {
        AgentSpec {
            prompt: String::new(),
            skills: Vec::new(),
            mode: AgentMode::Task,
            output_file: DEFAULT_OUTPUT_FILE.to_string(),
            timeout_secs: None,
            ready_timeout_secs: None,
            messaging: Messaging::default(),
        }
    }
}

impl AgentSpec {
    /// The timeout the run enforces: `timeout_secs` or
    /// [`DEFAULT_TASK_TIMEOUT_SECS`] in task mode; none in service mode.
    pub fn effective_timeout_secs(&self) -> Option<u64> {
        match self.mode {
            AgentMode::Task => Some(self.timeout_secs.unwrap_or(DEFAULT_TASK_TIMEOUT_SECS)),
            AgentMode::Service => None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentMode {
    /// Run to completion, then read `output_file`.
    #[default]
    Task,
    /// Long-lived; `output_file` is published whenever it appears.
    Service,
}

/// The per-run messaging sidecar.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Messaging {
    pub enabled: bool,
    pub provider_bridge: Option<String>,
}

/// One entry of `skills`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Skill {
    /// `file:PATH`: a SKILL.md file or a skill directory on the host.
    File(String),
    /// `agent:NAME`: the agent binary, e.g. `claude-code`.
    Agent(String),
    /// `cli:NAME`: a host tool put on the sandbox's PATH.
    Cli(String),
    /// `remote:WHAT`: a skill fetched from elsewhere.
    Remote(String),
    /// `mcp:NAME`: an MCP server binary found on the host, by name.
    Mcp(String),
    /// `{name, content}`: a SKILL.md written from the spec.
    Inline { name: String, content: String },
    /// `{command, args, env}`: a stdio MCP server. Without `name`, the
    /// runtime derives one.
    McpCommand {
        name: Option<String>,
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
    },
    /// `{url}`: a Streamable HTTP MCP server.
    McpUrl { name: Option<String>, url: String },
}

impl Skill {
    /// The prefixes accepted in `"<type>:<value>"` skill strings.
    pub const STRING_TYPES: [&'static str; 5] = ["file", "agent", "cli", "remote", "mcp"];

    /// A short word for messages and events: `file`, `agent`, `cli`,
    /// `remote`, `mcp`, `inline`, `mcp_command`, `mcp_url`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Skill::File(_) => "file",
            Skill::Agent(_) => "agent",
            Skill::Cli(_) => "cli",
            Skill::Remote(_) => "remote",
            Skill::Mcp(_) => "mcp",
            Skill::Inline { .. } => "inline",
            Skill::McpCommand { .. } => "mcp_command",
            Skill::McpUrl { .. } => "mcp_url",
        }
    }
}

/// `kind: workflow`: commands with dependencies, all in one sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowSpec {
    pub steps: Vec<Step>,
    /// The step whose `/workspace/result.json` is the workflow's output.
    #[serde(default)]
    pub output_step: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub run: RunCmd,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub mode: StepMode,
    /// Task steps only. `None`: the run policy's stage timeout applies.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Service steps only (required there): the file in the sandbox the
    /// service writes when its result is ready (contract §4). A task
    /// step's output is always `/workspace/result.json`.
    #[serde(default)]
    pub output_file: Option<String>,
    /// Service steps only: fail the step if `output_file` has not appeared
    /// after this long. `None`: wait until the service exits.
    #[serde(default)]
    pub ready_timeout_secs: Option<u64>,
}

/// A command of a workflow step (no shell: `program` gets `args` as argv).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCmd {
    pub program: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// A step (one this step depends on) whose stdout becomes this step's
    /// stdin.
    #[serde(default)]
    pub stdin_from: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepMode {
    #[default]
    Task,
    Service,
}

/// `kind: pipeline`: agents in separate sandboxes, in stages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PipelineSpec {
    pub boxes: Vec<BoxSpec>,
    /// Empty when the spec has no `stages`; see
    /// [`PipelineSpec::effective_stages`].
    #[serde(default)]
    pub stages: Vec<Stage>,
}

impl PipelineSpec {
    /// The stages to run: `stages` as written, or, when the spec has none,
    /// one box stage per box in the order listed.
    pub fn effective_stages(&self) -> Vec<Stage> {
        if self.stages.is_empty() {
            self.boxes
                .iter()
                .map(|b| Stage::Box {
                    name: b.name.clone(),
                })
                .collect()
        } else {
            self.stages.clone()
        }
    }
}

/// One agent of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoxSpec {
    pub name: String,
    pub prompt: String,
    #[serde(default)]
    pub skills: Vec<Skill>,
    /// Replaces the top-level `llm` for this box when set.
    #[serde(default)]
    pub llm: Option<LlmSpec>,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// The box's effective sandbox when the box has a `sandbox` section:
    /// the top-level sandbox with the box's fields laid over it (`env`
    /// merged, `mounts` appended). `None`: the top-level sandbox as is.
    #[serde(default)]
    pub sandbox: Option<SandboxSpec>,
    /// Names of outputs of earlier boxes that this box reads.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Names of the outputs this box produces.
    #[serde(default)]
    pub outputs: Vec<String>,
}

impl BoxSpec {
    /// `timeout_secs`, or [`DEFAULT_TASK_TIMEOUT_SECS`].
    pub fn effective_timeout_secs(&self) -> u64 {
        self.timeout_secs.unwrap_or(DEFAULT_TASK_TIMEOUT_SECS)
    }
}

/// One stage of a pipeline; stages run one after another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Stage {
    /// One box.
    Box { name: String },
    /// Several boxes side by side.
    FanOut { boxes: Vec<String> },
}

impl Stage {
    /// The boxes this stage runs.
    pub fn box_names(&self) -> Vec<&str> {
        match self {
            Stage::Box { name } => vec![name.as_str()],
            Stage::FanOut { boxes } => boxes.iter().map(String::as_str).collect(),
        }
    }
}
