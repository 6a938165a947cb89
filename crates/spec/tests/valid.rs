//! Valid specs of every kind parse to exactly the expected model.

mod common;

use std::collections::BTreeMap;

use common::{parse, text};
use husk_spec::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

const FULL_AGENT: &str = r#"
api_version: v1
kind: agent
name: hn-researcher
sandbox:
  mode: microvm
  memory_mb: 2048
  disk_mb: 512
  vcpus: 2
  network: true
  env:
    ANTHROPIC_API_KEY: ""
    PORT: 8080
    EMPTY:
  mounts:
    - {host: ./data, guest: /data}
    - host: /tmp/out
      guest: /out
      mode: rw
  image: debian-slim
  guest_image: husk-guest
  kernel: /boot/vmlinuz
  initramfs: /boot/initrd.img
llm:
  provider: claude
  model: claude-sonnet-4-5
  base_url: https://api.example.com
  api_key_env: ANTHROPIC_API_KEY
observe:
  traces: true
  logs: true
  otlp_endpoint: http://127.0.0.1:4318
  service_name: husk
  telemetry_buffer_size: 512
agent:
  prompt: >
    Fetch the top stories
    and summarise them.
  skills:
    - "agent:claude-code"
    - "file:skills/hn.md"
    - "cli:jq"
    - "remote:https://example.com/skill"
    - "mcp:husk-mcp"
    - name: house-style
      content: |
        ---
        name: house-style
        description: Write tersely.
        ---
        Be brief.
    - name: git
      command: mcp-server-git
      args: [--repo, /workspace]
      env: {GIT_DIR: /workspace/.git}
    - url: https://mcp.example.com/mcp
  mode: task
  output_file: /workspace/report.json
  timeout_secs: 600
  messaging:
    enabled: true
    provider_bridge: claude_channels
"#;

#[test]
fn full_agent_spec() {
    let spec = parse(FULL_AGENT);
    let expected = Spec {
        api_version: "v1".into(),
        kind: Kind::Agent,
        name: "hn-researcher".into(),
        sandbox: SandboxSpec {
            mode: SandboxMode::Microvm,
            memory_mb: 2048,
            disk_mb: Some(512),
            vcpus: 2,
            network: NetworkSpec::Open,
            env: env(&[("ANTHROPIC_API_KEY", ""), ("PORT", "8080"), ("EMPTY", "")]),
            mounts: vec![
                Mount {
                    host: "./data".into(),
                    guest: "/data".into(),
                    mode: MountMode::Ro,
                },
                Mount {
                    host: "/tmp/out".into(),
                    guest: "/out".into(),
                    mode: MountMode::Rw,
                },
            ],
            image: Some("debian-slim".into()),
            guest_image: Some("husk-guest".into()),
            kernel: Some("/boot/vmlinuz".into()),
            initramfs: Some("/boot/initrd.img".into()),
        },
        llm: LlmSpec {
            provider: Some("claude".into()),
            model: Some("claude-sonnet-4-5".into()),
            base_url: Some("https://api.example.com".into()),
            api_key_env: Some("ANTHROPIC_API_KEY".into()),
            key_in_sandbox: false,
        },
        observe: ObserveSpec {
            traces: true,
            metrics: false,
            logs: true,
            otlp_endpoint: Some("http://127.0.0.1:4318".into()),
            service_name: Some("husk".into()),
            telemetry_buffer_size: Some(512),
        },
        body: Body::Agent(AgentSpec {
            prompt: "Fetch the top stories and summarise them.\n".into(),
            skills: vec![
                Skill::Agent("claude-code".into()),
                Skill::File("skills/hn.md".into()),
                Skill::Cli("jq".into()),
                Skill::Remote("https://example.com/skill".into()),
                Skill::Mcp("husk-mcp".into()),
                Skill::Inline {
                    name: "house-style".into(),
                    content:
                        "---\nname: house-style\ndescription: Write tersely.\n---\nBe brief.\n"
                            .into(),
                },
                Skill::McpCommand {
                    name: Some("git".into()),
                    command: "mcp-server-git".into(),
                    args: strings(&["--repo", "/workspace"]),
                    env: env(&[("GIT_DIR", "/workspace/.git")]),
                },
                Skill::McpUrl {
                    name: None,
                    url: "https://mcp.example.com/mcp".into(),
                },
            ],
            mode: AgentMode::Task,
            output_file: "/workspace/report.json".into(),
            timeout_secs: Some(600),
            ready_timeout_secs: None,
            messaging: Messaging {
                enabled: true,
                provider_bridge: Some("claude_channels".into()),
            },
        }),
        warnings: Vec::new(),
    };
    assert_eq!(spec, expected);
    assert_eq!(
        spec.agent().map(AgentSpec::effective_timeout_secs),
        Some(Some(600))
    );
}

#[test]
fn minimal_agent_gets_every_default() {
    let spec = parse(
        r#"
kind: agent
name: x
agent:
  prompt: do it
"#,
    );
    assert_eq!(spec.api_version, API_VERSION);
    assert_eq!(spec.sandbox, SandboxSpec::default());
    assert_eq!(spec.sandbox.mode, SandboxMode::Auto);
    assert_eq!(spec.sandbox.memory_mb, 1024);
    assert_eq!(spec.sandbox.disk_mb, None, "absent: the backend's default");
    assert_eq!(spec.sandbox.vcpus, 1);
    assert_eq!(spec.sandbox.network, NetworkSpec::None);
    assert_eq!(spec.llm, LlmSpec::default());
    assert_eq!(spec.observe, ObserveSpec::default());
    let agent = spec.agent().expect("agent");
    assert_eq!(agent.output_file, DEFAULT_OUTPUT_FILE);
    assert_eq!(agent.mode, AgentMode::Task);
    assert_eq!(agent.timeout_secs, None);
    assert_eq!(
        agent.effective_timeout_secs(),
        Some(DEFAULT_TASK_TIMEOUT_SECS)
    );
    assert_eq!(
        agent.messaging,
        Messaging {
            enabled: false,
            provider_bridge: None
        }
    );
    assert!(agent.skills.is_empty());
}

#[test]
fn service_agent_has_no_effective_timeout() {
    let spec = parse(
        r#"
api_version: v1
kind: agent
name: gateway
agent:
  prompt: run the gateway
  mode: service
  output_file: /workspace/output.json
  ready_timeout_secs: 300
"#,
    );
    let agent = spec.agent().expect("agent");
    assert_eq!(agent.mode, AgentMode::Service);
    assert_eq!(agent.effective_timeout_secs(), None);
    assert_eq!(agent.ready_timeout_secs, Some(300));
}

#[test]
fn void_box_mode_words_mean_namespace_and_are_remembered() {
    for word in ["mock", "local", "namespace"] {
        let spec = parse(&format!(
            "\nkind: agent\nname: x\nsandbox:\n  mode: {word}\nagent:\n  prompt: p\n"
        ));
        let alias = (word != "namespace").then(|| word.to_string());
        assert_eq!(spec.sandbox.mode, SandboxMode::Namespace { alias });
        assert_eq!(spec.sandbox.mode.as_str(), "namespace");
        assert_eq!(spec.sandbox.mode.word(), word);
        let json = serde_json::to_value(&spec).expect("serializes");
        assert_eq!(json["sandbox"]["mode"], word);
    }
}

const FULL_WORKFLOW: &str = r#"
api_version: v1
kind: workflow
name: quick-workflow
sandbox:
  mode: mock
  memory_mb: 256
workflow:
  steps:
    - name: fetch
      run:
        program: echo
        args: ["hello from workflow"]
    - name: transform
      depends_on: [fetch]
      timeout_secs: 30
      run:
        program: tr
        args: ["a-z", "A-Z"]
        stdin_from: fetch
    - name: serve
      mode: service
      depends_on: [transform]
      output_file: /workspace/serve.json
      ready_timeout_secs: 60
      run: {program: sleep, args: [infinity]}
  output_step: transform
"#;

#[test]
fn full_workflow_spec() {
    let spec = parse(FULL_WORKFLOW);
    assert_eq!(spec.kind, Kind::Workflow);
    assert_eq!(
        spec.sandbox.mode,
        SandboxMode::Namespace {
            alias: Some("mock".into())
        }
    );
    assert_eq!(spec.sandbox.memory_mb, 256);
    let expected = WorkflowSpec {
        steps: vec![
            Step {
                name: "fetch".into(),
                run: RunCmd {
                    program: "echo".into(),
                    args: strings(&["hello from workflow"]),
                    stdin_from: None,
                },
                depends_on: vec![],
                mode: StepMode::Task,
                timeout_secs: None,
                output_file: None,
                ready_timeout_secs: None,
            },
            Step {
                name: "transform".into(),
                run: RunCmd {
                    program: "tr".into(),
                    args: strings(&["a-z", "A-Z"]),
                    stdin_from: Some("fetch".into()),
                },
                depends_on: strings(&["fetch"]),
                mode: StepMode::Task,
                timeout_secs: Some(30),
                output_file: None,
                ready_timeout_secs: None,
            },
            Step {
                name: "serve".into(),
                run: RunCmd {
                    program: "sleep".into(),
                    args: strings(&["infinity"]),
                    stdin_from: None,
                },
                depends_on: strings(&["transform"]),
                mode: StepMode::Service,
                timeout_secs: None,
                output_file: Some("/workspace/serve.json".into()),
                ready_timeout_secs: Some(60),
            },
        ],
        output_step: Some("transform".into()),
    };
    assert_eq!(spec.body, Body::Workflow(expected));
}

const FULL_PIPELINE: &str = r#"
api_version: v1
kind: pipeline
name: quick-pipeline
sandbox:
  memory_mb: 512
  network: true
  env: {SHARED: "1", OVERRIDDEN: top}
  mounts:
    - {host: /srv/common, guest: /common}
llm:
  provider: claude
pipeline:
  boxes:
    - name: analyst
      prompt: Extract key facts from the input.
      skills: ["agent:claude-code"]
      timeout_secs: 300
      outputs: [facts]
    - name: writer
      prompt: Turn facts into a summary.
      skills: ["agent:codex"]
      inputs: [facts]
      outputs: [summary]
      llm: {provider: codex, model: gpt-5}
      sandbox:
        memory_mb: 4096
        disk_mb: 64
        env: {OVERRIDDEN: box, EXTRA: x}
        mounts:
          - {host: /srv/extra, guest: /extra, mode: rw}
    - name: checker
      prompt: Check the summary.
      inputs: [summary]
    - name: linter
      prompt: Lint the summary.
      inputs: [summary]
  stages:
    - type: box
      name: analyst
    - type: box
      name: writer
    - type: fan_out
      boxes: [checker, linter]
"#;

#[test]
fn full_pipeline_spec() {
    let spec = parse(FULL_PIPELINE);
    let p = spec.pipeline().expect("pipeline");
    assert_eq!(p.boxes.len(), 4);
    let analyst = &p.boxes[0];
    assert_eq!(
        analyst,
        &BoxSpec {
            name: "analyst".into(),
            prompt: "Extract key facts from the input.".into(),
            skills: vec![Skill::Agent("claude-code".into())],
            llm: None,
            timeout_secs: Some(300),
            sandbox: None,
            inputs: vec![],
            outputs: strings(&["facts"]),
        }
    );
    assert_eq!(analyst.effective_timeout_secs(), 300);
    assert_eq!(
        p.boxes[2].effective_timeout_secs(),
        DEFAULT_TASK_TIMEOUT_SECS
    );

    let writer = &p.boxes[1];
    assert_eq!(
        writer.llm,
        Some(LlmSpec {
            provider: Some("codex".into()),
            model: Some("gpt-5".into()),
            base_url: None,
            api_key_env: None,
            key_in_sandbox: false,
        })
    );
    // The box's sandbox is the top-level one with the box's keys laid over.
    let expected_sandbox = SandboxSpec {
        memory_mb: 4096,
        disk_mb: Some(64),
        network: NetworkSpec::Open,
        env: env(&[("SHARED", "1"), ("OVERRIDDEN", "box"), ("EXTRA", "x")]),
        mounts: vec![
            Mount {
                host: "/srv/common".into(),
                guest: "/common".into(),
                mode: MountMode::Ro,
            },
            Mount {
                host: "/srv/extra".into(),
                guest: "/extra".into(),
                mode: MountMode::Rw,
            },
        ],
        ..SandboxSpec::default()
    };
    assert_eq!(writer.sandbox.as_ref(), Some(&expected_sandbox));
    assert_eq!(
        p.stages,
        vec![
            Stage::Box {
                name: "analyst".into()
            },
            Stage::Box {
                name: "writer".into()
            },
            Stage::FanOut {
                boxes: strings(&["checker", "linter"])
            },
        ]
    );
    assert_eq!(p.effective_stages(), p.stages);
    assert_eq!(p.stages[2].box_names(), vec!["checker", "linter"]);
}

#[test]
fn pipeline_without_stages_runs_boxes_in_order() {
    let spec = parse(
        r#"
kind: pipeline
name: p
pipeline:
  boxes:
    - {name: a, prompt: one, outputs: [x]}
    - {name: b, prompt: two, inputs: [x]}
"#,
    );
    let p = spec.pipeline().expect("pipeline");
    assert!(p.stages.is_empty());
    assert_eq!(
        p.effective_stages(),
        vec![
            Stage::Box { name: "a".into() },
            Stage::Box { name: "b".into() }
        ]
    );
}

#[test]
fn json_spec_parses_like_its_yaml_twin() {
    let json = r#"{
	"api_version": "v1",
	"kind": "workflow",
	"name": "quick-workflow",
	"sandbox": {"mode": "mock", "memory_mb": 256},
	"workflow": {
		"steps": [
			{"name": "fetch", "run": {"program": "echo", "args": ["hello from workflow"]}},
			{"name": "transform", "depends_on": ["fetch"], "timeout_secs": 30,
			 "run": {"program": "tr", "args": ["a-z", "A-Z"], "stdin_from": "fetch"}},
			{"name": "serve", "mode": "service", "depends_on": ["transform"],
			 "output_file": "/workspace/serve.json", "ready_timeout_secs": 60,
			 "run": {"program": "sleep", "args": ["infinity"]}}
		],
		"output_step": "transform"
	}
}"#;
    let from_json = parse_str(json, "spec.json").expect("valid JSON spec");
    assert_eq!(from_json, parse(FULL_WORKFLOW));
}

#[test]
fn records_round_trip_through_json() {
    for spec_text in [FULL_AGENT, FULL_WORKFLOW, FULL_PIPELINE] {
        let spec = parse(spec_text);
        let json = serde_json::to_string(&spec).expect("serializes");
        let back: Spec = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, spec);
    }
}

#[test]
fn anchors_and_aliases_can_share_parts() {
    let spec = parse(
        r#"
kind: pipeline
name: p
pipeline:
  boxes:
    - name: a
      prompt: one
      skills: &common ["agent:claude-code", "cli:jq"]
    - name: b
      prompt: two
      skills: *common
"#,
    );
    let p = spec.pipeline().expect("pipeline");
    assert_eq!(p.boxes[0].skills, p.boxes[1].skills);
    assert_eq!(p.boxes[1].skills.len(), 2);
}

#[test]
fn byte_order_mark_and_document_markers_are_fine() {
    let spec = parse_str(
        "\u{feff}---\nkind: agent\nname: x\nagent: {prompt: p}\n...\n",
        "a.yml",
    )
    .expect("valid");
    assert_eq!(spec.name, "x");
}

#[test]
fn load_file_reads_yaml_and_json_and_names_the_file() {
    let dir = std::env::temp_dir().join(format!("husk-spec-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let yaml = dir.join("agent.yaml");
    std::fs::write(&yaml, text(FULL_AGENT)).expect("write");
    assert_eq!(load_file(&yaml).expect("loads"), parse(FULL_AGENT));

    let json = dir.join("bad.json");
    std::fs::write(&json, "{\"kind\": \"agent\",\n \"name\": \"x\",}\n").expect("write");
    let errs = load_file(&json).expect_err("trailing comma is not JSON");
    let e = &errs.0[0];
    assert_eq!(e.source, json.display().to_string());
    assert_eq!(e.line, Some(2));
    assert!(e.message.starts_with("invalid JSON"), "{e}");

    let missing = dir.join("nope.yaml");
    let errs = load_file(&missing).expect_err("missing file");
    assert!(errs.to_string().contains("cannot read the spec"), "{errs}");
    let errs = load_file(&dir).expect_err("a directory");
    assert!(errs.to_string().contains("is a directory"), "{errs}");

    let big = dir.join("big.yaml");
    std::fs::write(&big, "#".repeat(MAX_SPEC_BYTES + 1)).expect("write");
    let errs = load_file(&big).expect_err("too large");
    assert!(errs.to_string().contains("larger than 1024 KiB"), "{errs}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn network_modes() {
    let net = |v: &str| {
        parse(&format!(
            "\nkind: agent\nname: x\nsandbox:\n  network: {v}\nagent: {{prompt: p}}\n"
        ))
        .sandbox
        .network
    };
    assert_eq!(net("false"), NetworkSpec::None);
    assert_eq!(net("none"), NetworkSpec::None);
    assert_eq!(net("true"), NetworkSpec::Open);
    assert_eq!(net("open"), NetworkSpec::Open);
    let allow = net("{allow: [API.example.com, \"*.example.org:443\", localhost:8080]}");
    assert_eq!(
        allow,
        NetworkSpec::Allow(vec![
            AllowEntry {
                host: "api.example.com".into(),
                wildcard: false,
                port: None
            },
            AllowEntry {
                host: "example.org".into(),
                wildcard: true,
                port: Some(443)
            },
            AllowEntry {
                host: "localhost".into(),
                wildcard: false,
                port: Some(8080)
            },
        ])
    );
    assert!(allow.allows("api.example.com", 443));
    assert!(allow.allows("x.example.org", 443));
    assert!(!allow.allows("x.example.org", 80));
    assert!(!allow.allows("other.com", 443));
    // The record keeps the mode in a form that reads back.
    let j = serde_json::to_value(&allow).unwrap();
    assert_eq!(
        j,
        serde_json::json!({"allow": ["api.example.com", "*.example.org:443", "localhost:8080"]})
    );
}

#[test]
fn the_key_stays_on_the_host_unless_asked() {
    let spec = parse("\nkind: agent\nname: x\nagent: {prompt: p}\n");
    assert!(!spec.llm.key_in_sandbox);
    let spec = parse("\nkind: agent\nname: x\nllm: {key_in_sandbox: true}\nagent: {prompt: p}\n");
    assert!(spec.llm.key_in_sandbox);
}
