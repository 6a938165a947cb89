//! The script steps, run through the real binary: what they do on disk and
//! the stream-json events they produce.

mod common;

use common::{agent, run, stream};
use serde_json::{Value, json};

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}

#[test]
fn stream_json_has_claude_codes_shape() {
    let dir = tempdir();
    let script = json!({
        "steps": [{"text": "thinking"}, {"shell": "true"}, {"text": "all done"}],
        "cost_usd": 0.0123, "input_tokens": 100, "output_tokens": 50
    });
    let out = stream(
        dir.path(),
        &script,
        &["--model", "m1", "--permission-mode", "acceptEdits"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.lines().all(|l| l.starts_with(r#"{"type":""#)),
        "{}",
        out.stdout
    );
    let events = out.events();
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        types,
        [
            "system",
            "assistant",
            "assistant",
            "user",
            "assistant",
            "result"
        ]
    );

    let init = &events[0];
    assert_eq!(init["subtype"], "init");
    assert_eq!(init["model"], "m1");
    assert_eq!(init["permissionMode"], "acceptEdits");
    assert_eq!(init["tools"], json!(["Bash", "Read", "Write"]));
    assert_eq!(init["mcp_servers"], json!([]));
    let cwd = dir.path().canonicalize().unwrap_or_default();
    assert_eq!(init["cwd"], cwd.display().to_string());
    let session = init["session_id"].as_str().unwrap_or_default();
    assert_eq!(session.len(), 36, "{init}");
    assert!(
        events.iter().all(|e| e["session_id"] == session),
        "{}",
        out.stdout
    );

    let first = &events[1]["message"];
    assert_eq!(first["role"], "assistant");
    assert_eq!(first["type"], "message");
    assert_eq!(first["model"], "m1");
    assert_eq!(
        first["content"],
        json!([{"type": "text", "text": "thinking"}])
    );
    let ids: Vec<&Value> = events[1..5]
        .iter()
        .filter(|e| e["type"] == "assistant")
        .map(|e| &e["message"]["id"])
        .collect();
    assert_eq!(
        ids,
        [
            &json!("msg_test_0001"),
            &json!("msg_test_0002"),
            &json!("msg_test_0003")
        ]
    );
    // The tokens are shared out over the turns and add up to the totals.
    let input: u64 = events
        .iter()
        .filter(|e| e["type"] == "assistant")
        .map(|e| e["message"]["usage"]["input_tokens"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(input, 100);

    let result = out.result();
    assert_eq!(result["subtype"], "success");
    assert_eq!(result["is_error"], false);
    assert_eq!(result["result"], "all done");
    assert_eq!(result["num_turns"], 3);
    assert_eq!(result["total_cost_usd"], 0.0123);
    assert!(result["duration_ms"].is_u64());
    assert_eq!(
        result["usage"],
        json!({"input_tokens": 100, "output_tokens": 50,
               "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
    );
}

#[test]
fn write_read_and_shell_steps_really_happen() {
    let dir = tempdir();
    let base = dir.path().display().to_string();
    let script = json!({"steps": [
        {"write": {"path": format!("{base}/a/b/notes.txt"), "content": "line one\nline two"}},
        {"write": {"path": format!("{base}/r.json"), "json": {"ok": true, "n": [1, 2]}}},
        {"read": format!("{base}/a/b/notes.txt")},
        {"read": format!("{base}/missing.txt")},
        {"shell": "echo out; echo err >&2; cat r.json"},
        {"shell": "echo partial; exit 3"},
    ]});
    let out = stream(dir.path(), &script, &[]);
    assert_eq!(out.code, 0, "{out:?}");

    let notes = std::fs::read_to_string(dir.path().join("a/b/notes.txt")).unwrap_or_default();
    assert_eq!(notes, "line one\nline two");
    let written: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("r.json")).unwrap_or_default())
            .unwrap_or_default();
    assert_eq!(written, json!({"ok": true, "n": [1, 2]}));

    let uses = out.tool_uses();
    let names: Vec<&str> = uses.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["Write", "Write", "Read", "Read", "Bash", "Bash"]);
    assert_eq!(uses[0].1["file_path"], format!("{base}/a/b/notes.txt"));
    assert_eq!(uses[0].1["content"], "line one\nline two");
    assert_eq!(
        uses[4].1,
        json!({"command": "echo out; echo err >&2; cat r.json"})
    );

    let results = out.tool_results();
    assert_eq!(
        results[0],
        (
            json!(format!(
                "File created successfully at: {base}/a/b/notes.txt"
            )),
            false
        )
    );
    assert_eq!(results[2], (json!("line one\nline two"), false));
    assert!(
        results[3].1,
        "a missing file is an error result: {results:?}"
    );
    assert!(
        results[3]
            .0
            .as_str()
            .unwrap_or_default()
            .contains("missing.txt")
    );
    assert_eq!(
        results[4],
        (json!("out\n{\"n\":[1,2],\"ok\":true}\nerr"), false)
    );
    assert_eq!(results[5], (json!("Exit code 3\npartial"), true));

    // Each tool_result answers the tool_use just before it.
    let events = out.events();
    for (i, event) in events
        .iter()
        .enumerate()
        .filter(|(_, e)| e["type"] == "user")
    {
        let use_id = &events[i - 1]["message"]["content"][0]["id"];
        assert_eq!(&event["message"]["content"][0]["tool_use_id"], use_id);
    }
    // Without a text step the result text is empty.
    assert_eq!(out.result()["result"], "");
}

#[test]
fn a_fail_step_stops_the_run_with_an_error_result() {
    let dir = tempdir();
    let after = dir.path().join("after.txt");
    let script = json!({"steps": [
        {"text": "starting"},
        {"fail": "could not finish the task"},
        {"write": {"path": after, "content": "never"}},
    ]});
    let out = stream(dir.path(), &script, &[]);
    assert_eq!(out.code, 1, "{out:?}");
    let result = out.result();
    assert_eq!(result["subtype"], "error_during_execution");
    assert_eq!(result["is_error"], true);
    assert_eq!(result["result"], "could not finish the task");
    assert!(!after.exists(), "steps after a fail must not run");
}

#[test]
fn expect_ok_fails_the_run_when_the_tool_fails() {
    let dir = tempdir();
    let script = json!({"steps": [
        {"shell": "exit 0", "expect_ok": true},
        {"shell": "echo nope >&2; exit 4", "expect_ok": true},
        {"text": "unreachable"},
    ]});
    let out = stream(dir.path(), &script, &[]);
    assert_eq!(out.code, 1, "{out:?}");
    let result = out.result();
    assert_eq!(result["subtype"], "error_during_execution");
    assert_eq!(
        result["result"],
        "step 2: Bash failed (expect_ok): Exit code 4"
    );
    assert!(!out.stdout.contains("unreachable"));
}

#[test]
fn exit_steps_and_exit_code_set_the_exit_code_after_the_result() {
    let dir = tempdir();
    let out = stream(
        dir.path(),
        &json!({"steps": [{"text": "bye"}, {"exit": 7}, {"text": "no"}]}),
        &[],
    );
    assert_eq!(out.code, 7, "{out:?}");
    assert_eq!(out.result()["result"], "bye");
    assert_eq!(out.result()["subtype"], "success");

    let out = stream(dir.path(), &json!({"steps": [], "exit_code": 3}), &[]);
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(out.result()["num_turns"], 0);
}

#[test]
fn stderr_and_sleep_steps() {
    let dir = tempdir();
    let script = json!({"steps": [{"stderr": "a log line"}, {"sleep_ms": 150}, {"text": "ok"}]});
    let started = std::time::Instant::now();
    let out = stream(dir.path(), &script, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(started.elapsed().as_millis() >= 150);
    assert_eq!(out.stderr, "a log line\n");
    assert!(!out.stdout.contains("a log line"));
}

#[test]
fn max_turns_stops_before_the_next_turn() {
    let dir = tempdir();
    let script = json!({"steps": [{"shell": "true"}, {"text": "one"}, {"text": "two"}]});
    let out = stream(dir.path(), &script, &["--max-turns", "2"]);
    assert_eq!(out.code, 1, "{out:?}");
    let result = out.result();
    assert_eq!(result["subtype"], "error_max_turns");
    assert_eq!(result["is_error"], true);
    assert_eq!(result["num_turns"], 2);
    assert!(!out.stdout.contains("\"two\""));
}

#[test]
fn a_bad_script_is_one_clear_line_and_exit_2() {
    let dir = tempdir();
    let script = json!({"steps": [{"text": "a"}, {"text": "b"}, {"wirte": {"path": "/x"}}]});
    let out = stream(dir.path(), &script, &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(
        out.stdout, "",
        "nothing may be printed before the script is checked"
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with(
            "husk-test-agent: bad script in $HUSK_TEST_AGENT_SCRIPT: step 3: unknown step kind \"wirte\""
        ),
        "{}",
        out.stderr
    );

    // Not JSON at all, from the file in the working directory.
    let file = dir.path().join(".husk-test-agent.json");
    std::fs::write(&file, "{\"steps\": [").unwrap_or_default();
    let out = run(agent(dir.path()).args(["-p", "x"]));
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .starts_with("husk-test-agent: bad script ./.husk-test-agent.json: invalid JSON"),
        "{}",
        out.stderr
    );

    // A script file named by the environment that does not exist.
    let out = run(agent(dir.path())
        .env("HUSK_TEST_AGENT_SCRIPT", "/nonexistent/s.json")
        .args(["-p", "x"]));
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("cannot read script /nonexistent/s.json"),
        "{}",
        out.stderr
    );
}

#[test]
fn scripts_come_from_the_env_file_or_the_working_directory() {
    let dir = tempdir();
    let file = dir.path().join("s.json");
    std::fs::write(&file, r#"{"steps": [{"text": "from env file"}]}"#).unwrap_or_default();
    let out = run(agent(dir.path())
        .env("HUSK_TEST_AGENT_SCRIPT", &file)
        .args(["-p", "x", "--output-format", "text"]));
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "from env file\n"),
        "{out:?}"
    );

    std::fs::write(
        dir.path().join(".husk-test-agent.json"),
        r#"{"steps": [{"text": "from cwd"}]}"#,
    )
    .unwrap_or_default();
    let out = run(agent(dir.path()).args(["-p", "x", "--output-format", "text"]));
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "from cwd\n"),
        "{out:?}"
    );
}

#[test]
fn the_default_script_writes_to_the_path_in_the_prompt() {
    let dir = tempdir();
    let target = dir.path().join("deep/out.json");
    let prompt = format!(
        "Fix the failing test in src/lib.rs. When you are done, write your result as JSON to {} with a status field.",
        target.display()
    );
    let out =
        run(agent(dir.path()).args(["-p", &prompt, "--output-format", "stream-json", "--verbose"]));
    assert_eq!(out.code, 0, "{out:?}");
    let written: Value =
        serde_json::from_slice(&std::fs::read(&target).unwrap_or_default()).unwrap_or_default();
    assert_eq!(
        written,
        json!({"status": "success", "summary": "test agent finished"})
    );
    assert_eq!(out.tool_uses()[0].0, "Write");
    assert_eq!(
        out.result()["result"],
        format!("Done: wrote the result to {}.", target.display())
    );
}
