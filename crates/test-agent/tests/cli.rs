//! The command line: Claude Code's flags, both prompt forms, the output
//! formats and the usage errors.

mod common;

use common::{agent, run};
use serde_json::{Value, json};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}

const SCRIPT: &str = r#"{"steps": [{"text": "first"}, {"text": "final answer"}], "cost_usd": 0.5}"#;

#[test]
fn version_names_the_agent() {
    let dir = tempdir();
    for flag in ["--version", "-v"] {
        let out = run(agent(dir.path()).arg(flag));
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(
            out.stdout,
            format!(
                "husk-test-agent {} (Claude Code compatible)\n",
                env!("CARGO_PKG_VERSION")
            )
        );
    }
}

#[test]
fn both_prompt_forms_and_every_claude_flag_are_accepted() {
    let dir = tempdir();
    let config = dir.path().join("mcp.json");
    std::fs::write(&config, r#"{"mcpServers": {}}"#).unwrap_or_default();
    let config = config.display().to_string();
    let common = [
        "--output-format",
        "stream-json",
        "--verbose",
        "--mcp-config",
        &config,
        "--mcp-config",
        r#"{"mcpServers": {}}"#,
        "--strict-mcp-config",
        "--permission-mode",
        "bypassPermissions",
        "--allowedTools",
        "mcp__husk",
        "--allowed-tools",
        "Bash",
        "--disallowedTools",
        "WebFetch",
        "--max-turns",
        "5",
        "--model",
        "claude-x",
        "--append-system-prompt",
        "be brief",
        "--session-id",
        "11111111-2222-4333-8444-555555555555",
    ];
    let short = run(agent(dir.path())
        .env("HUSK_TEST_AGENT_SCRIPT", SCRIPT)
        .arg("-p")
        .arg("TASK")
        .args(common));
    let long = run(agent(dir.path())
        .env("HUSK_TEST_AGENT_SCRIPT", SCRIPT)
        .arg("--print")
        .args(common)
        .arg("TASK"));
    for out in [&short, &long] {
        assert_eq!(out.code, 0, "{out:?}");
        let events = out.events();
        assert_eq!(events[0]["permissionMode"], "bypassPermissions");
        assert_eq!(events[0]["model"], "claude-x");
        assert_eq!(
            events[0]["session_id"],
            "11111111-2222-4333-8444-555555555555"
        );
        assert_eq!(out.result()["result"], "final answer");
    }
}

#[test]
fn the_prompt_can_come_from_stdin() {
    let dir = tempdir();
    let target = dir.path().join("from-stdin.json");
    let mut command = agent(dir.path());
    command.args(["-p", "--output-format", "json"]);
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ = write!(stdin, "Output goes to {}", target.display());
    }
    let output = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(output.status.success(), "{output:?}");
    assert!(target.exists(), "{output:?}");
}

#[test]
fn json_prints_only_the_result_and_text_only_the_final_text() {
    let dir = tempdir();
    let out = run(agent(dir.path())
        .env("HUSK_TEST_AGENT_SCRIPT", SCRIPT)
        .args(["-p", "x", "--output-format", "json"]));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    let result: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_default();
    assert_eq!(result["type"], "result");
    assert_eq!(result["result"], "final answer");
    assert_eq!(result["total_cost_usd"], json!(0.5));
    assert_eq!(result["num_turns"], 2);

    let out = run(agent(dir.path())
        .env("HUSK_TEST_AGENT_SCRIPT", SCRIPT)
        .args(["-p", "x"]));
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "final answer\n"),
        "{out:?}"
    );
}

#[test]
fn usage_errors_exit_2_with_a_message() {
    let dir = tempdir();
    let cases: [(&[&str], &str); 4] = [
        (
            &["-p", "x", "--frobnicate"],
            "unexpected argument '--frobnicate'",
        ),
        (
            &["-p", "x", "--output-format", "stream-json"],
            "stream-json requires --verbose",
        ),
        (
            &["-p", "x", "--output-format", "yaml"],
            "invalid value 'yaml'",
        ),
        (&["x"], "only print mode is implemented"),
    ];
    for (args, message) in cases {
        let out = run(agent(dir.path())
            .env("HUSK_TEST_AGENT_SCRIPT", SCRIPT)
            .args(args));
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
        assert_eq!(out.stdout, "", "{args:?}");
    }
}
