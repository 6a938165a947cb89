//! Warnings: a section that does not apply to the spec's `kind` is ignored
//! with a warning (orchestrators write per-candidate overrides such as
//! `agent: {prompt: …}` into copies of workflow templates), but it is still
//! checked for shape.

mod common;

use common::{has_error, only_error, parse, render};
use husk_spec::{Kind, Spec, parse_str};

const WORKFLOW_WITH_AGENT: &str = r#"
api_version: v1
kind: workflow
name: candidate-3
agent:
  prompt: Try the faster algorithm.
workflow:
  steps:
    - name: build
      run: {program: make}
"#;

#[test]
fn a_section_for_another_kind_is_a_warning_with_its_position() {
    let spec = parse(WORKFLOW_WITH_AGENT);
    assert_eq!(spec.kind, Kind::Workflow);
    assert!(spec.workflow().is_some());
    assert_eq!(spec.warnings.len(), 1, "{}", render(&spec.warnings));
    let w = &spec.warnings[0];
    assert_eq!(
        w.to_string(),
        "spec.yaml:4:1: agent: section `agent` does not apply to kind=workflow; it is ignored"
    );
    assert_eq!((w.line, w.column), (Some(4), Some(1)));
}

#[test]
fn a_valid_spec_has_no_warnings_and_records_none() {
    let spec = parse("\nkind: agent\nname: x\nagent: {prompt: p}\n");
    assert!(spec.warnings.is_empty());
    let json = serde_json::to_value(&spec).expect("serializes");
    assert!(json.get("warnings").is_none(), "{json}");
}

#[test]
fn warnings_survive_the_json_record() {
    let spec = parse(WORKFLOW_WITH_AGENT);
    let json = serde_json::to_string(&spec).expect("serializes");
    let back: Spec = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(back, spec);
    assert_eq!(back.warnings.len(), 1);
}

#[test]
fn partial_overrides_need_no_required_keys() {
    // No prompt in the agent; steps without `run` and a fan_out stage
    // without `boxes` in the pipeline: none of it is required when ignored.
    let spec = parse(
        r#"
kind: workflow
name: w
agent:
  messaging: {enabled: true}
pipeline:
  boxes:
    - prompt: only a prompt
  stages:
    - {type: fan_out}
workflow:
  steps:
    - name: a
      run: {program: "true"}
"#,
    );
    let warned: Vec<(&str, Option<usize>)> = spec
        .warnings
        .iter()
        .map(|w| (w.path.as_str(), w.line))
        .collect();
    assert_eq!(warned, [("agent", Some(3)), ("pipeline", Some(5))]);
}

#[test]
fn an_empty_ignored_section_is_still_named() {
    let spec = parse(
        "\nkind: workflow\nname: w\nagent:\nworkflow:\n  steps: [{name: a, run: {program: x}}]\n",
    );
    assert_eq!(spec.warnings.len(), 1);
    assert_eq!(spec.warnings[0].path, "agent");
}

#[test]
fn unknown_keys_in_an_ignored_section_are_errors() {
    only_error(
        r#"
kind: workflow
name: w
agent:
  promt: Try again.
workflow:
  steps: [{name: a, run: {program: x}}]
"#,
        "agent.promt",
        4,
        "unknown key `promt`; did you mean `prompt`?",
    );
}

#[test]
fn wrong_types_and_words_in_an_ignored_section_are_errors() {
    let s = r#"
kind: agent
name: a
agent: {prompt: p}
workflow:
  steps:
    - name: a
      mode: servce
      timeout_secs: "10"
"#;
    has_error(s, "workflow.steps[0].mode", 7, "unknown mode `servce`");
    has_error(s, "workflow.steps[0].timeout_secs", 8, "remove the quotes");
}

#[test]
fn rules_are_not_applied_to_an_ignored_section() {
    // A blank prompt and a zero timeout would be errors in a used agent
    // section; in an ignored one only the shape is checked.
    let spec = parse(
        r#"
kind: workflow
name: w
agent:
  prompt: "  "
  timeout_secs: 0
workflow:
  steps: [{name: a, run: {program: x}}]
"#,
    );
    assert_eq!(spec.warnings.len(), 1);
}

#[test]
fn warnings_are_not_returned_with_errors() {
    // With errors the result is the error list; the ignored section's
    // warning does not turn into an error.
    let errs = parse_str(
        "kind: workflow\nname: w\nagent: {prompt: p}\nworkflow: {steps: []}\n",
        "w.yaml",
    )
    .expect_err("empty steps");
    assert_eq!(errs.len(), 1, "{errs}");
    assert!(
        errs.to_string().contains("workflow.steps cannot be empty"),
        "{errs}"
    );
}
