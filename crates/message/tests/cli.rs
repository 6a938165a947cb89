//! The built `husk-message` binary against a real sidecar on 127.0.0.1:
//! every command, every error path and its exit status.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::OnceLock;

use husk_sidecar::{Identity, InboxEntry, InboxLoad, Kind, Sidecar};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_husk-message");

/// Serves `sidecar` on a loopback port from a background runtime.
fn serve(sidecar: Sidecar) -> SocketAddr {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    });
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(husk_sidecar::serve_on(listener, sidecar));
    addr
}

fn sidecar() -> (Sidecar, String) {
    let input = json!({"execution_id": "exec-1", "candidate_id": "cand-1",
                       "peers": ["cand-2"], "iteration": 1});
    let s = Sidecar::new(Identity::from_input("run-1", Some(&input)).unwrap());
    let addr = serve(s.clone());
    (s, format!("http://{addr}"))
}

/// Runs the binary with only the given sidecar variables set.
fn run(vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("VOID_SIDECAR_URL")
        .env_remove("HUSK_SIDECAR_URL");
    for (k, v) in vars {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok_json(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap()
}

/// Exit 1, nothing on stdout, one `error: …` on stderr containing `needle`.
fn assert_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(needle), "wanted {needle:?} in {stderr}");
}

#[test]
fn context_and_health() {
    let (_s, url) = sidecar();
    let v = ok_json(&run(&[("VOID_SIDECAR_URL", &url)], &["context"]));
    assert_eq!(v["candidate_id"], "cand-1");
    assert_eq!(v["execution_id"], "exec-1");
    assert_eq!(v["peers"], json!(["cand-2"]));
    assert_eq!(v["iteration"], 1);
    let v = ok_json(&run(&[("VOID_SIDECAR_URL", &url)], &["health"]));
    assert_eq!(v["status"], "ok");
    assert_eq!(v["run_id"], "run-1");
}

#[test]
fn husk_sidecar_url_is_the_fallback_and_void_wins() {
    let (_s, url) = sidecar();
    let v = ok_json(&run(
        &[("HUSK_SIDECAR_URL", &format!("{url}/"))],
        &["health"],
    ));
    assert_eq!(v["run_id"], "run-1");
    // VOID_SIDECAR_URL is read first: a dead one fails even with a good fallback.
    let dead = format!("http://{}", dead_addr());
    let out = run(
        &[("VOID_SIDECAR_URL", &dead), ("HUSK_SIDECAR_URL", &url)],
        &["health"],
    );
    assert_error(&out, "cannot reach the sidecar");
}

#[test]
fn inbox_with_and_without_since() {
    let (s, url) = sidecar();
    let env = [("VOID_SIDECAR_URL", url.as_str())];
    let v = ok_json(&run(&env, &["inbox"]));
    assert_eq!(
        (v["version"].as_u64(), v["entries"].clone()),
        (Some(0), json!([]))
    );
    s.load_inbox(InboxLoad {
        version: Some(2),
        execution_id: None,
        candidate_id: None,
        iteration: Some(1),
        entries: vec![InboxEntry {
            message_id: "m1".into(),
            from_candidate_id: "cand-2".into(),
            kind: Kind::Signal,
            payload: json!({"summary_text": "hi"}),
        }],
    })
    .unwrap();
    let v = ok_json(&run(&env, &["inbox"]));
    assert_eq!(v["version"], 2);
    assert_eq!(v["entries"][0]["payload"]["summary_text"], "hi");
    assert_eq!(
        ok_json(&run(&env, &["inbox", "--since", "1"]))["entries"],
        v["entries"]
    );
    let v = ok_json(&run(&env, &["inbox", "--since", "2"]));
    assert_eq!(
        (v["version"].as_u64(), v["entries"].clone()),
        (Some(2), json!([]))
    );
}

#[test]
fn send_submits_a_stamped_intent() {
    let (s, url) = sidecar();
    let env = [("VOID_SIDECAR_URL", url.as_str())];
    let args = [
        "send",
        "--kind",
        "proposal",
        "--audience",
        "leader",
        "--summary",
        "use the cache",
        "--priority",
        "high",
    ];
    let v = ok_json(&run(&env, &args));
    assert_eq!(v["kind"], "proposal");
    assert_eq!(v["audience"], "leader");
    assert_eq!(v["priority"], "high");
    assert_eq!(v["payload"], json!({"summary_text": "use the cache"}));
    assert_eq!(v["from_candidate_id"], "cand-1");
    let v = ok_json(&run(
        &env,
        &[
            "send",
            "--kind",
            "signal",
            "--audience",
            "broadcast",
            "--summary",
            "x",
        ],
    ));
    assert_eq!(v["priority"], "normal");
    let drained = s.drain_intents();
    assert_eq!(drained.len(), 2);
    assert_ne!(drained[0].intent_id, drained[1].intent_id);
}

#[test]
fn http_errors_show_status_and_body() {
    let (_s, url) = sidecar();
    let env = [("VOID_SIDECAR_URL", url.as_str())];
    for n in 0..3 {
        let summary = format!("n{n}");
        let out = run(
            &env,
            &[
                "send",
                "--kind",
                "signal",
                "--audience",
                "leader",
                "--summary",
                &summary,
            ],
        );
        ok_json(&out);
    }
    let out = run(
        &env,
        &[
            "send",
            "--kind",
            "signal",
            "--audience",
            "leader",
            "--summary",
            "4th",
        ],
    );
    assert_error(&out, "HTTP 429");
    assert_error(&out, "TOO_MANY_REQUESTS");
    let big = "x".repeat(5000);
    let out = run(
        &env,
        &[
            "send",
            "--kind",
            "signal",
            "--audience",
            "leader",
            "--summary",
            &big,
        ],
    );
    assert_error(&out, "HTTP 413");
    assert_error(&out, "PAYLOAD_TOO_LARGE");
}

#[test]
fn missing_or_bad_url() {
    assert_error(&run(&[], &["context"]), "VOID_SIDECAR_URL");
    assert_error(
        &run(&[("VOID_SIDECAR_URL", " ")], &["health"]),
        "is not set",
    );
    assert_error(
        &run(&[("VOID_SIDECAR_URL", "https://127.0.0.1:1")], &["health"]),
        "must be an http:// URL",
    );
    assert_error(
        &run(&[("HUSK_SIDECAR_URL", "127.0.0.1:8080")], &["health"]),
        "HUSK_SIDECAR_URL must be an http:// URL",
    );
}

#[test]
fn connection_failure() {
    let url = format!("http://{}", dead_addr());
    for cmd in [&["context"][..], &["inbox"], &["health"]] {
        assert_error(
            &run(&[("VOID_SIDECAR_URL", &url)], cmd),
            "cannot reach the sidecar",
        );
    }
    let out = run(
        &[("VOID_SIDECAR_URL", &url)],
        &[
            "send",
            "--kind",
            "signal",
            "--audience",
            "leader",
            "--summary",
            "s",
        ],
    );
    assert_error(&out, "cannot reach the sidecar");
}

#[test]
fn bad_and_missing_options_exit_1() {
    let (_s, url) = sidecar();
    let env = [("VOID_SIDECAR_URL", url.as_str())];
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "send",
                "--kind",
                "gossip",
                "--audience",
                "leader",
                "--summary",
                "s",
            ],
            "gossip",
        ),
        (
            &[
                "send",
                "--kind",
                "signal",
                "--audience",
                "all",
                "--summary",
                "s",
            ],
            "all",
        ),
        (
            &[
                "send",
                "--kind",
                "signal",
                "--audience",
                "leader",
                "--summary",
                "s",
                "--priority",
                "now",
            ],
            "now",
        ),
        (
            &["send", "--kind", "signal", "--audience", "leader"],
            "--summary",
        ),
        (
            &["send", "--audience", "leader", "--summary", "s"],
            "--kind",
        ),
        (
            &[
                "send",
                "--kind",
                "signal",
                "--audience",
                "leader",
                "--summary",
                " ",
            ],
            "--summary must not be empty",
        ),
        (&["inbox", "--since", "-1"], "--since"),
        (&["inbox", "--since", "soon"], "soon"),
        (&["inbox", "--until", "3"], "--until"),
        (&["shout"], "shout"),
        (&[], "Usage"),
    ];
    for (args, needle) in cases {
        let out = run(&env, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(
            stderr.contains(needle),
            "{args:?}: wanted {needle:?} in {stderr}"
        );
        if !args.is_empty() {
            assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        }
    }
}

#[test]
fn help_for_every_command_exits_0() {
    for args in [
        &["help"][..],
        &["--help"],
        &["help", "send"],
        &["context", "--help"],
        &["inbox", "--help"],
        &["send", "--help"],
        &["health", "--help"],
    ] {
        let out = run(&[], args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(stdout.contains("Usage: husk-message"), "{args:?}: {stdout}");
    }
    let out = run(&[], &["send", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    // The CLI's values are the sidecar's values.
    let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
    let audiences: Vec<&str> = husk_sidecar::Audience::ALL
        .iter()
        .map(|a| a.as_str())
        .collect();
    let priorities: Vec<&str> = husk_sidecar::Priority::ALL
        .iter()
        .map(|p| p.as_str())
        .collect();
    for values in [kinds, audiences, priorities] {
        let line = format!("[possible values: {}]", values.join(", "));
        assert!(help.contains(&line), "wanted {line} in {help}");
    }
}

/// A loopback address nobody listens on (bound, then released).
fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}
