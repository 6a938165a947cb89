//! Every rule fails with the right path, line and message.

mod common;

use common::{errors, has_error, only_error, render};
use husk_spec::parse_str;

// ---- top level ----------------------------------------------------------

#[test]
fn unsupported_api_version() {
    let m = only_error(
        r#"
api_version: v2
kind: agent
name: x
agent: {prompt: p}
"#,
        "api_version",
        1,
        "unsupported api_version `v2`",
    );
    assert!(m.contains("only `v1`"), "{m}");
}

#[test]
fn kind_requires_its_section() {
    // The `workflow` section does not apply (a warning, not an error), so
    // the missing `agent` section is the one problem.
    only_error(
        r#"
api_version: v1
kind: agent
name: x
workflow:
  steps: []
"#,
        "agent",
        2,
        "kind=agent requires 'agent' section",
    );
}

#[test]
fn unknown_kind_gets_a_suggestion() {
    only_error(
        r#"
kind: agnet
name: x
agent: {prompt: p}
"#,
        "kind",
        1,
        "unknown kind `agnet`; did you mean `agent`?",
    );
}

#[test]
fn name_is_required_and_not_blank() {
    only_error(
        "\nkind: agent\nagent: {prompt: p}\n",
        "name",
        1,
        "missing required key `name`",
    );
    only_error(
        "\nkind: agent\nname: '  '\nagent: {prompt: p}\n",
        "name",
        2,
        "name cannot be empty",
    );
    only_error(
        "\nkind: agent\nname: \"a\\nb\"\nagent: {prompt: p}\n",
        "name",
        2,
        "control characters",
    );
}

#[test]
fn the_document_must_be_a_mapping() {
    only_error(
        "\n- a\n- b\n",
        "",
        1,
        "expected a mapping of keys to values, found a list",
    );
}

// ---- agent --------------------------------------------------------------

#[test]
fn blank_prompt() {
    only_error(
        r#"
kind: agent
name: x
agent:
  prompt: "   "
"#,
        "agent.prompt",
        4,
        "agent.prompt cannot be empty",
    );
}

#[test]
fn missing_prompt_is_placed_at_the_agent_section() {
    only_error(
        r#"
kind: agent
name: x
agent:
  skills: []
"#,
        "agent.prompt",
        4,
        "agent.prompt cannot be empty",
    );
}

#[test]
fn service_mode_and_timeout_are_mutually_exclusive() {
    only_error(
        r#"
kind: agent
name: x
agent:
  prompt: p
  mode: service
  output_file: /workspace/out.json
  timeout_secs: 60
"#,
        "agent.timeout_secs",
        7,
        "mode: service and timeout_secs are mutually exclusive",
    );
}

#[test]
fn service_mode_requires_an_explicit_output_file() {
    only_error(
        r#"
kind: agent
name: x
agent:
  prompt: p
  mode: service
"#,
        "agent.mode",
        5,
        "mode: service requires output_file",
    );
}

#[test]
fn ready_timeout_is_for_services_only() {
    only_error(
        r#"
kind: agent
name: x
agent:
  prompt: p
  ready_timeout_secs: 10
"#,
        "agent.ready_timeout_secs",
        5,
        "applies only to mode: service",
    );
}

#[test]
fn timeouts_must_be_positive_and_bounded() {
    only_error(
        "\nkind: agent\nname: x\nagent:\n  prompt: p\n  timeout_secs: 0\n",
        "agent.timeout_secs",
        5,
        "must be more than 0",
    );
    only_error(
        "\nkind: agent\nname: x\nagent:\n  prompt: p\n  timeout_secs: 99999999\n",
        "agent.timeout_secs",
        5,
        "at most 2592000",
    );
    only_error(
        "\nkind: agent\nname: x\nagent:\n  prompt: p\n  timeout_secs: -5\n",
        "agent.timeout_secs",
        5,
        "must not be negative",
    );
}

#[test]
fn output_file_must_be_an_absolute_file_path() {
    only_error(
        "\nkind: agent\nname: x\nagent:\n  prompt: p\n  output_file: out.json\n",
        "agent.output_file",
        5,
        "must be an absolute path",
    );
}

#[test]
fn agent_mode_word_is_checked() {
    only_error(
        "\nkind: agent\nname: x\nagent:\n  prompt: p\n  mode: servce\n",
        "agent.mode",
        5,
        "unknown mode `servce`; did you mean `service`?",
    );
}

// ---- skills -------------------------------------------------------------

#[test]
fn unknown_skill_type_lists_the_valid_ones() {
    let m = only_error(
        r#"
kind: agent
name: x
agent:
  prompt: p
  skills:
    - "file:a.md"
    - "fiel:b.md"
"#,
        "agent.skills[1]",
        7,
        "unknown skill type `fiel`",
    );
    assert!(m.contains("did you mean `file`?"), "{m}");
    assert!(m.contains("`file`, `agent`, `cli`, `remote`, `mcp`"), "{m}");
}

#[test]
fn skill_string_needs_a_type() {
    only_error(
        "\nkind: agent\nname: x\nagent:\n  prompt: p\n  skills: [claude-code]\n",
        "agent.skills[0]",
        5,
        "has no type",
    );
}

#[test]
fn skill_values_are_checked() {
    let s = r#"
kind: agent
name: x
agent:
  prompt: p
  skills:
    - "file:"
    - "cli:../../bin/sh"
    - "agent:claude-code"
    - "agent:codex"
"#;
    let errs = errors(s);
    assert_eq!(errs.len(), 3, "{}", render(&errs));
    has_error(s, "agent.skills[0]", 6, "has no value");
    has_error(s, "agent.skills[1]", 7, "needs a program name");
    has_error(s, "agent.skills[3]", 9, "only one `agent:` skill");
}

#[test]
fn inline_skill_rules() {
    let s = r#"
kind: agent
name: x
agent:
  prompt: p
  skills:
    - name: My_Skill
      content: hello
    - name: ok-skill
      content: "  "
    - name: ok-skill
      content: again
"#;
    let errs = errors(s);
    assert_eq!(errs.len(), 3, "{}", render(&errs));
    has_error(
        s,
        "agent.skills[0].name",
        6,
        "lowercase letters, digits and hyphens",
    );
    has_error(
        s,
        "agent.skills[1].content",
        9,
        "inline skill content cannot be empty",
    );
    has_error(s, "agent.skills[2].name", 10, "already used by skills[1]");
}

#[test]
fn mcp_server_rules() {
    let s = r#"
kind: agent
name: x
agent:
  prompt: p
  skills:
    - {name: "my server", command: srv}
    - {name: web, url: ftp://example.com}
    - {name: web, command: other}
    - {command: a, url: http://b}
    - {command: srv, env: {"A=B": x}}
"#;
    let errs = errors(s);
    assert_eq!(errs.len(), 5, "{}", render(&errs));
    has_error(s, "agent.skills[0].name", 6, "MCP server name `my server`");
    has_error(
        s,
        "agent.skills[1].url",
        7,
        "must start with http:// or https://",
    );
    has_error(s, "agent.skills[2].name", 8, "already used by skills[1]");
    has_error(s, "agent.skills[3]", 9, "cannot mix them");
    has_error(s, "agent.skills[4].env.A=B", 10, "cannot contain `=`");
}

#[test]
fn skill_objects_need_a_known_shape() {
    only_error(
        "\nkind: agent\nname: x\nagent:\n  prompt: p\n  skills:\n    - {image: python, mount: /py}\n",
        "agent.skills[0]",
        6,
        "OCI image skills",
    );
    only_error(
        "\nkind: agent\nname: x\nagent:\n  prompt: p\n  skills:\n    - {name: a, content: b, extra: c}\n",
        "agent.skills[0].extra",
        6,
        "unknown key `extra`; valid keys here: `name`, `content`",
    );
}

// ---- sandbox ------------------------------------------------------------

#[test]
fn sandbox_limits() {
    let s = r#"
kind: agent
name: x
sandbox:
  memory_mb: 64
  vcpus: 65
agent: {prompt: p}
"#;
    let errs = errors(s);
    assert_eq!(errs.len(), 2, "{}", render(&errs));
    has_error(s, "sandbox.memory_mb", 4, "at least 128");
    has_error(s, "sandbox.vcpus", 5, "between 1 and 64");
    only_error(
        "\nkind: agent\nname: x\nsandbox: {memory_mb: 2000000}\nagent: {prompt: p}\n",
        "sandbox.memory_mb",
        3,
        "at most 1048576",
    );
    only_error(
        "\nkind: agent\nname: x\nsandbox: {vcpus: 0}\nagent: {prompt: p}\n",
        "sandbox.vcpus",
        3,
        "between 1 and 64",
    );
    only_error(
        "\nkind: agent\nname: x\nsandbox: {memory_mb: 99999999999}\nagent: {prompt: p}\n",
        "sandbox.memory_mb",
        3,
        "too large",
    );
}

#[test]
fn sandbox_disk_mb_is_bounded_and_named() {
    for (value, needle) in [
        (
            "15",
            "disk_mb must be between 16 and 1048576 (MiB; at most 1 TiB), found 15",
        ),
        ("0", "found 0"),
        ("1048577", "disk_mb must be between 16 and 1048576"),
        ("99999999999", "too large"),
        ("\"64\"", "remove the quotes"),
        ("1.5", "expected a whole number"),
    ] {
        only_error(
            &format!(
                "\nkind: agent\nname: x\nsandbox:\n  disk_mb: {value}\nagent: {{prompt: p}}\n"
            ),
            "sandbox.disk_mb",
            4,
            needle,
        );
    }
}

#[test]
fn a_box_disk_mb_is_checked_at_the_box() {
    only_error(
        r#"
kind: pipeline
name: p
sandbox: {disk_mb: 32}
pipeline:
  boxes:
    - name: a
      prompt: x
      sandbox: {disk_mb: 8}
"#,
        "pipeline.boxes[0].sandbox.disk_mb",
        8,
        "found 8",
    );
}

#[test]
fn sandbox_mode_word_is_checked() {
    let m = only_error(
        "\nkind: agent\nname: x\nsandbox: {mode: docker}\nagent: {prompt: p}\n",
        "sandbox.mode",
        3,
        "unknown sandbox mode `docker`",
    );
    assert!(
        m.contains("`auto`, `microvm`, `namespace`, `mock`, `local`"),
        "{m}"
    );
}

#[test]
fn mount_rules() {
    let s = r#"
kind: agent
name: x
sandbox:
  mounts:
    - {host: /a, guest: data}
    - {host: /b, guest: /data, mode: rx}
    - {host: "", guest: /c}
    - {host: /d, guest: /x/../etc}
    - {host: /e, guest: /data}
    - {host: /f}
agent: {prompt: p}
"#;
    let errs = errors(s);
    assert_eq!(errs.len(), 6, "{}", render(&errs));
    has_error(s, "sandbox.mounts[0].guest", 5, "must be absolute");
    has_error(s, "sandbox.mounts[1].mode", 6, "unknown mount mode `rx`");
    has_error(s, "sandbox.mounts[2].host", 7, "host cannot be empty");
    has_error(s, "sandbox.mounts[3].guest", 8, "cannot contain `..`");
    has_error(
        s,
        "sandbox.mounts[4].guest",
        9,
        "already mounted by mounts[1]",
    );
    has_error(
        s,
        "sandbox.mounts[5].guest",
        10,
        "missing required key `guest`",
    );
}

#[test]
fn env_rules() {
    let s = r#"
kind: agent
name: x
sandbox:
  env:
    "": x
    "A=B": y
    OK: "fine"
    LIST: [1, 2]
agent: {prompt: p}
"#;
    let errs = errors(s);
    assert_eq!(errs.len(), 3, "{}", render(&errs));
    has_error(s, "sandbox.env", 5, "name cannot be empty");
    has_error(s, "sandbox.env.A=B", 6, "cannot contain `=`");
    has_error(s, "sandbox.env.LIST", 8, "expected a string, found a list");
}

#[test]
fn snapshot_gets_a_specific_message() {
    only_error(
        "\nkind: agent\nname: x\nsandbox: {snapshot: abc}\nagent: {prompt: p}\n",
        "sandbox.snapshot",
        3,
        "not supported by husk",
    );
}

// ---- llm and observe ----------------------------------------------------

#[test]
fn llm_rules() {
    let s = r#"
kind: agent
name: x
llm:
  provider: "open ai"
  base_url: api.example.com
  api_key_env: sk-123
agent: {prompt: p}
"#;
    let errs = errors(s);
    assert_eq!(errs.len(), 3, "{}", render(&errs));
    has_error(s, "llm.provider", 4, "must be one word");
    has_error(s, "llm.base_url", 5, "must start with http");
    has_error(s, "llm.api_key_env", 6, "name of an environment variable");
}

#[test]
fn observe_rules() {
    let s = r#"
kind: agent
name: x
observe:
  otlp_endpoint: localhost:4317
  telemetry_buffer_size: 0
  events: true
agent: {prompt: p}
"#;
    let errs = errors(s);
    assert_eq!(errs.len(), 3, "{}", render(&errs));
    has_error(s, "observe.otlp_endpoint", 4, "must start with http");
    has_error(s, "observe.telemetry_buffer_size", 5, "between 1 and");
    has_error(s, "observe.events", 6, "unknown key `events`");
}

// ---- workflow -----------------------------------------------------------

#[test]
fn empty_workflow() {
    only_error(
        "\nkind: workflow\nname: x\nworkflow:\n  steps: []\n",
        "workflow.steps",
        4,
        "workflow.steps cannot be empty",
    );
    only_error(
        "\nkind: workflow\nname: x\nworkflow: {}\n",
        "workflow.steps",
        3,
        "workflow.steps cannot be empty",
    );
}

#[test]
fn step_names_references_and_modes() {
    let s = r#"
kind: workflow
name: x
workflow:
  steps:
    - name: fetch
      run: {program: echo}
    - name: fetch
      run: {program: echo}
    - name: "bad name"
      run: {program: echo}
    - name: build
      depends_on: [fecth, build]
      run: {program: make}
    - name: svc
      mode: service
      timeout_secs: 5
      run: {program: sleep}
    - name: empty
      run: {program: ""}
  output_step: biuld
"#;
    let errs = errors(s);
    assert_eq!(errs.len(), 8, "{}", render(&errs));
    has_error(
        s,
        "workflow.steps[4].mode",
        15,
        "mode: service requires output_file",
    );
    has_error(
        s,
        "workflow.steps[1].name",
        7,
        "step name `fetch` is already used by steps[0]",
    );
    has_error(s, "workflow.steps[2].name", 9, "must be 1 to 64 letters");
    has_error(
        s,
        "workflow.steps[3].depends_on[0]",
        12,
        "unknown step `fecth`; did you mean `fetch`?",
    );
    has_error(
        s,
        "workflow.steps[3].depends_on[1]",
        12,
        "depends on itself",
    );
    has_error(
        s,
        "workflow.steps[4].timeout_secs",
        16,
        "mode: service and timeout_secs are mutually exclusive",
    );
    has_error(
        s,
        "workflow.steps[5].run.program",
        19,
        "program cannot be empty",
    );
    has_error(
        s,
        "workflow.output_step",
        20,
        "unknown step `biuld`; did you mean `build`?",
    );
}

#[test]
fn service_step_requires_output_file() {
    only_error(
        r#"
kind: workflow
name: x
workflow:
  steps:
    - name: svc
      mode: service
      run: {program: sleep}
"#,
        "workflow.steps[0].mode",
        6,
        "mode: service requires output_file: set `output_file`",
    );
}

#[test]
fn service_step_and_timeout_are_mutually_exclusive() {
    only_error(
        r#"
kind: workflow
name: x
workflow:
  steps:
    - name: svc
      mode: service
      output_file: /workspace/ready.json
      timeout_secs: 5
      run: {program: sleep}
"#,
        "workflow.steps[0].timeout_secs",
        8,
        "mode: service and timeout_secs are mutually exclusive",
    );
}

#[test]
fn service_step_output_file_is_checked_like_the_agents() {
    for (file, needle) in [
        ("ready.json", "must be an absolute path in the sandbox"),
        ("/workspace/", "names a directory"),
        ("/workspace/../etc/x", "cannot contain `..`"),
    ] {
        let s = format!(
            "\nkind: workflow\nname: x\nworkflow:\n  steps:\n    - name: svc\n      \
             mode: service\n      output_file: \"{file}\"\n      run: {{program: sleep}}\n"
        );
        only_error(&s, "workflow.steps[0].output_file", 7, needle);
    }
}

#[test]
fn service_step_ready_timeout_is_bounded() {
    only_error(
        r#"
kind: workflow
name: x
workflow:
  steps:
    - name: svc
      mode: service
      output_file: /workspace/ready.json
      ready_timeout_secs: 0
      run: {program: sleep}
"#,
        "workflow.steps[0].ready_timeout_secs",
        8,
        "ready_timeout_secs must be more than 0",
    );
}

#[test]
fn task_step_takes_neither_output_file_nor_ready_timeout() {
    let s = r#"
kind: workflow
name: x
workflow:
  steps:
    - name: build
      output_file: /workspace/out.json
      ready_timeout_secs: 30
      run: {program: make}
"#;
    let errs = errors(s);
    assert_eq!(errs.len(), 2, "{}", render(&errs));
    has_error(
        s,
        "workflow.steps[0].output_file",
        6,
        "output_file applies only to mode: service: a task step's output is \
         /workspace/result.json",
    );
    has_error(
        s,
        "workflow.steps[0].ready_timeout_secs",
        7,
        "ready_timeout_secs applies only to mode: service",
    );
}

#[test]
fn step_output_file_and_ready_timeout_are_typed() {
    let s = r#"
kind: workflow
name: x
workflow:
  steps:
    - name: svc
      mode: service
      output_file: 12
      ready_timeout_secs: "30"
      run: {program: sleep}
"#;
    let errs = errors(s);
    assert_eq!(errs.len(), 2, "{}", render(&errs));
    has_error(
        s,
        "workflow.steps[0].output_file",
        7,
        "expected a string, found an integer",
    );
    has_error(
        s,
        "workflow.steps[0].ready_timeout_secs",
        8,
        "remove the quotes",
    );
}

#[test]
fn dependency_cycles_are_named() {
    let s = r#"
kind: workflow
name: x
workflow:
  steps:
    - name: a
      depends_on: [c]
      run: {program: "true"}
    - name: b
      depends_on: [a]
      run: {program: "true"}
    - name: c
      depends_on: [b]
      run: {program: "true"}
    - name: d
      run: {program: "true"}
"#;
    only_error(
        s,
        "workflow.steps[0].depends_on",
        6,
        "dependency cycle: a -> c -> b -> a",
    );
}

#[test]
fn stdin_from_must_be_a_dependency() {
    let s = r#"
kind: workflow
name: x
workflow:
  steps:
    - name: a
      run: {program: echo}
    - name: b
      run: {program: cat, stdin_from: a}
    - name: e
      depends_on: [a]
      run: {program: "true"}
    - name: c
      depends_on: [e]
      run: {program: cat, stdin_from: a}
    - name: d
      run: {program: cat, stdin_from: zzz}
"#;
    let errs = errors(s);
    assert_eq!(errs.len(), 2, "{}", render(&errs));
    has_error(
        s,
        "workflow.steps[1].run.stdin_from",
        8,
        "add it to depends_on",
    );
    has_error(
        s,
        "workflow.steps[4].run.stdin_from",
        16,
        "unknown step `zzz`",
    );
}

#[test]
fn step_needs_run() {
    only_error(
        "\nkind: workflow\nname: x\nworkflow:\n  steps:\n    - name: a\n",
        "workflow.steps[0].run",
        5,
        "missing required key `run`",
    );
}

// ---- pipeline -----------------------------------------------------------

#[test]
fn empty_pipeline() {
    only_error(
        "\nkind: pipeline\nname: x\npipeline:\n  boxes: []\n",
        "pipeline.boxes",
        4,
        "pipeline.boxes cannot be empty",
    );
}

#[test]
fn boxes_and_stages() {
    let s = r#"
kind: pipeline
name: x
pipeline:
  boxes:
    - {name: a, prompt: one}
    - {name: a, prompt: two}
    - {name: b, prompt: ""}
    - {name: lonely, prompt: three}
  stages:
    - {type: box, name: a}
    - {type: fan_out, boxes: [b, c]}
    - {type: box, name: a}
    - {type: fan_out, boxes: []}
    - {type: parallel, boxes: [b]}
"#;
    let errs = errors(s);
    assert_eq!(errs.len(), 7, "{}", render(&errs));
    has_error(
        s,
        "pipeline.boxes[1].name",
        6,
        "box name `a` is already used by boxes[0]",
    );
    has_error(
        s,
        "pipeline.boxes[2].prompt",
        7,
        "pipeline.boxes[2].prompt cannot be empty",
    );
    has_error(
        s,
        "pipeline.boxes[3].name",
        8,
        "box `lonely` is not in any stage",
    );
    has_error(s, "pipeline.stages[1].boxes[1]", 11, "unknown box `c`");
    has_error(
        s,
        "pipeline.stages[2].name",
        12,
        "already runs in stages[0]",
    );
    has_error(s, "pipeline.stages[3].boxes", 13, "needs at least one box");
    has_error(
        s,
        "pipeline.stages[4].type",
        14,
        "unknown stage type `parallel`",
    );
}

#[test]
fn inputs_must_come_from_earlier_outputs() {
    let s = r#"
kind: pipeline
name: x
pipeline:
  boxes:
    - {name: a, prompt: one, inputs: [later], outputs: [facts]}
    - {name: b, prompt: two, inputs: [fcats], outputs: [later, "not ok"]}
"#;
    let errs = errors(s);
    assert_eq!(errs.len(), 3, "{}", render(&errs));
    has_error(
        s,
        "pipeline.boxes[0].inputs[0]",
        5,
        "does not run before this box",
    );
    has_error(s, "pipeline.boxes[1].inputs[0]", 6, "did you mean `facts`?");
    has_error(s, "pipeline.boxes[1].outputs[1]", 6, "output name `not ok`");
}

#[test]
fn box_sandbox_is_checked_for_what_the_box_sets() {
    let s = r#"
kind: pipeline
name: x
sandbox:
  memory_mb: 64
pipeline:
  boxes:
    - name: a
      prompt: one
      sandbox:
        vcpus: 100
        mounts: [{host: /x, guest: rel}]
"#;
    let errs = errors(s);
    assert_eq!(errs.len(), 3, "{}", render(&errs));
    has_error(s, "sandbox.memory_mb", 4, "at least 128");
    has_error(s, "pipeline.boxes[0].sandbox.vcpus", 10, "between 1 and 64");
    has_error(
        s,
        "pipeline.boxes[0].sandbox.mounts[0].guest",
        11,
        "must be absolute",
    );
}

// ---- unknown keys, types, duplicates -------------------------------------

#[test]
fn unknown_keys_suggest_the_close_key() {
    only_error(
        "\nkind: agent\nname: x\nsandbx: {}\nagent: {prompt: p}\n",
        "sandbx",
        3,
        "unknown key `sandbx`; did you mean `sandbox`?",
    );
    let m = only_error(
        "\nkind: agent\nname: x\nagent: {prompt: p, banana: 1}\n",
        "agent.banana",
        3,
        "unknown key `banana`; valid keys here:",
    );
    assert!(m.contains("`prompt`") && m.contains("`messaging`"), "{m}");
}

#[test]
fn a_typo_of_a_required_key_is_one_error() {
    only_error(
        "\nkind: agent\nname: x\nagent:\n  promt: hi\n",
        "agent.promt",
        4,
        "did you mean `prompt`?",
    );
    only_error(
        "\nkind: agent\nnmae: x\nagent: {prompt: p}\n",
        "nmae",
        2,
        "did you mean `name`?",
    );
}

#[test]
fn wrong_types_say_what_was_expected_and_found() {
    only_error(
        "\nkind: agent\nname: x\nagent:\n  prompt: [a, b]\n",
        "agent.prompt",
        4,
        "expected a string, found a list",
    );
    only_error(
        "\nkind: agent\nname: x\nsandbox: {memory_mb: {a: 1}}\nagent: {prompt: p}\n",
        "sandbox.memory_mb",
        3,
        "expected a whole number, found a mapping",
    );
    only_error(
        "\nkind: agent\nname: x\nsandbox: {memory_mb: \"512\"}\nagent: {prompt: p}\n",
        "sandbox.memory_mb",
        3,
        "remove the quotes",
    );
    only_error(
        "\nkind: agent\nname: x\nsandbox: {network: yes}\nagent: {prompt: p}\n",
        "sandbox.network",
        3,
        "(YAML 1.2 has no yes/no booleans)",
    );
    only_error(
        "\nkind: agent\nname: x\nllm: {model: 4}\nagent: {prompt: p}\n",
        "llm.model",
        3,
        "expected a string, found an integer `4`; put it in quotes",
    );
    only_error(
        "\nkind: workflow\nname: x\nworkflow:\n  steps:\n    - name: a\n      depends_on: b\n      run: {program: c}\n",
        "workflow.steps[0].depends_on",
        6,
        "write it as a list: [b]",
    );
}

#[test]
fn a_rejected_value_gives_one_error_not_a_cascade() {
    only_error(
        "\nkind: agent\nname: x\nsandbox: {memory_mb: lots}\nagent: {prompt: p}\n",
        "sandbox.memory_mb",
        3,
        "expected a whole number, found a string",
    );
}

#[test]
fn duplicate_keys_are_errors() {
    let m = only_error(
        "\nkind: agent\nname: x\nname: y\nagent: {prompt: p}\n",
        "name",
        3,
        "duplicate key `name`",
    );
    assert!(m.contains("first set on line 2"), "{m}");
}

#[test]
fn yaml_syntax_errors_have_a_position() {
    let errs = errors("\nkind: agent\nname: [x\nagent: {prompt: p}\n");
    assert_eq!(errs.len(), 1, "{}", render(&errs));
    assert!(
        errs[0].message.starts_with("invalid YAML"),
        "{}",
        render(&errs)
    );
    assert!(errs[0].line.is_some());
}

#[test]
fn custom_tags_are_rejected() {
    only_error(
        "\nkind: agent\nname: !env X\nagent: {prompt: p}\n",
        "name",
        2,
        "YAML tag `!env`",
    );
}

// ---- many problems at once ------------------------------------------------

#[test]
fn every_problem_is_reported_in_one_pass_sorted_by_line() {
    let s = r#"
api_version: v3
kind: agent
name: x
sandbox:
  memroy_mb: 512
  vcpus: 0
agent:
  prompt: ""
  mode: service
  timeout_secs: 10
  skills: ["tool:x"]
"#;
    let errs = errors(s);
    let lines: Vec<Option<usize>> = errs.iter().map(|e| e.line).collect();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "api_version",
            "sandbox.memroy_mb",
            "sandbox.vcpus",
            "agent.prompt",
            "agent.mode",
            "agent.timeout_secs",
            "agent.skills[0]",
        ],
        "{}",
        render(&errs)
    );
    assert_eq!(
        lines,
        vec![
            Some(1),
            Some(5),
            Some(6),
            Some(8),
            Some(9),
            Some(10),
            Some(11)
        ],
        "{}",
        render(&errs)
    );
    let shown = husk_spec::SpecErrors(errs).to_string();
    assert_eq!(shown.lines().count(), 7);
    assert!(
        shown.starts_with("spec.yaml:1:14: api_version: unsupported api_version"),
        "{shown}"
    );
    assert!(
        shown.contains(
            "spec.yaml:5:3: sandbox.memroy_mb: unknown key `memroy_mb`; did you mean `memory_mb`?"
        ),
        "{shown}"
    );
}

#[test]
fn the_error_list_is_capped() {
    let mut s = String::from("kind: agent\nname: x\nagent:\n  prompt: p\n");
    for i in 0..150 {
        s.push_str(&format!("  unknown_{i}: 1\n"));
    }
    let errs = parse_str(&s, "big.yaml").expect_err("unknown keys");
    assert_eq!(errs.len(), husk_spec::MAX_REPORTED_ERRORS + 1);
    assert!(
        errs.0
            .last()
            .is_some_and(|e| e.message.contains("50 more problems")),
        "{errs}"
    );
}

#[test]
fn json_syntax_errors_are_worded_for_json() {
    let errs = parse_str("{\"kind\": \"agent\",\n  \"name\": 'x'}", "spec.json").expect_err("bad");
    assert_eq!(errs.len(), 1);
    let e = &errs.0[0];
    assert_eq!(e.line, Some(2));
    assert!(e.message.starts_with("invalid JSON"), "{e}");
    // The same text is fine as YAML.
    let as_yaml = parse_str(
        "{\"kind\": \"agent\",\n  \"name\": 'x', \"agent\": {\"prompt\": \"p\"}}",
        "spec.yaml",
    );
    assert!(as_yaml.is_ok(), "{as_yaml:?}");
}

#[test]
fn json_specs_get_positions_too() {
    let errs = parse_str(
        "{\n  \"kind\": \"agent\",\n  \"name\": \"x\",\n  \"agent\": {\"prompt\": \"p\", \"timeout\": 5}\n}\n",
        "spec.json",
    )
    .expect_err("unknown key");
    assert_eq!(errs.len(), 1, "{errs}");
    let e = &errs.0[0];
    assert_eq!((e.path.as_str(), e.line), ("agent.timeout", Some(4)));
    assert!(e.message.contains("did you mean `timeout_secs`?"), "{e}");
}

#[test]
fn oversized_and_empty_input() {
    let big = format!(
        "kind: agent\nname: x\nagent: {{prompt: p}}\n#{}",
        "x".repeat(1024 * 1024)
    );
    let errs = parse_str(&big, "big.yaml").expect_err("too large");
    assert_eq!(errs.len(), 1);
    assert!(errs.0[0].message.contains("larger than"), "{errs}");
    let errs = parse_str("", "empty.yaml").expect_err("empty");
    assert!(errs.0[0].message.contains("the spec is empty"), "{errs}");
}

#[test]
fn deep_nesting_is_refused() {
    let deep = format!(
        "kind: agent\nname: x\nagent: {{prompt: p}}\nx: {}{}\n",
        "[".repeat(200),
        "]".repeat(200)
    );
    let errs = parse_str(&deep, "deep.yaml").expect_err("too deep");
    assert!(
        errs.to_string().contains("nested deeper than 32 levels"),
        "{errs}"
    );
}

#[test]
fn network_modes_are_checked() {
    only_error(
        "\nkind: agent\nname: x\nsandbox: {network: opne}\nagent: {prompt: p}\n",
        "sandbox.network",
        3,
        "unknown network mode `opne`; did you mean `open`?",
    );
    only_error(
        "\nkind: agent\nname: x\nsandbox: {network: 3}\nagent: {prompt: p}\n",
        "sandbox.network",
        3,
        "expected `false`/`none`, `true`/`open`, or a mapping `{allow: [host, …]}`, found an integer",
    );
    only_error(
        "\nkind: agent\nname: x\nsandbox: {network: {alow: [a.com]}}\nagent: {prompt: p}\n",
        "sandbox.network.alow",
        3,
        "did you mean `allow`?",
    );
    only_error(
        "\nkind: agent\nname: x\nsandbox: {network: {allow: []}}\nagent: {prompt: p}\n",
        "sandbox.network.allow",
        3,
        "an empty allowlist allows nothing",
    );
    only_error(
        "\nkind: agent\nname: x\nsandbox: {network: {allow: a.com}}\nagent: {prompt: p}\n",
        "sandbox.network.allow",
        3,
        "write it as a list: [a.com]",
    );
}

#[test]
fn every_bad_allowlist_entry_is_named() {
    let spec = "
kind: agent
name: x
sandbox:
  network:
    allow:
      - api.example.com
      - https://api.example.com/v1
      - 127.0.0.1
      - api.*.com
      - a.com:70000
      - 8080
agent: {prompt: p}
";
    let errs = common::errors(spec);
    let all = common::render(&errs);
    assert_eq!(errs.len(), 5, "{all}");
    let at = |i: usize, needle: &str| {
        let e = &errs[i];
        assert_eq!(e.path, format!("sandbox.network.allow[{}]", i + 1), "{all}");
        assert_eq!(e.line, Some(i + 7), "{all}");
        assert!(e.message.contains(needle), "{needle:?} in {all}");
    };
    at(
        0,
        "is a URL or a path, not a host name; write the host alone (e.g. `api.example.com`)",
    );
    at(1, "is an IP address; the proxy checks names");
    at(2, "a wildcard is allowed only as a whole first label");
    at(3, "not a number from 1 to 65535");
    at(4, "expected a host name (a string), found an integer");
}
