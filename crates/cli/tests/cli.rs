//! End-to-end tests of the `husk` binary on the namespace backend: the
//! commands from the README and the issue, as a user types them.

mod common;

use std::process::Stdio;

use common::{have_bwrap, husk, out};
use std::time::{Duration, Instant};

#[test]
fn exec_streams_both_and_passes_the_exit_code() {
    if !have_bwrap() {
        return;
    }
    let (code, stdout, stderr) = out(husk().args([
        "exec",
        "--backend",
        "namespace",
        "--",
        "sh",
        "-c",
        "echo hello; echo oops >&2; exit 3",
    ]));
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (3, "hello\n", "oops\n")
    );
}

#[test]
fn exec_env_and_workdir() {
    if !have_bwrap() {
        return;
    }
    let (code, stdout, _) = out(husk().env("HUSK_TEST_HOST_VAR", "from-host").args([
        "exec",
        "--backend",
        "namespace",
        "--env",
        "FOO=bar",
        "--env",
        "HUSK_TEST_HOST_VAR",
        "--workdir",
        "/tmp",
        "--",
        "sh",
        "-c",
        "echo $FOO $HUSK_TEST_HOST_VAR; pwd",
    ]));
    assert_eq!((code, stdout.as_str()), (0, "bar from-host\n/tmp\n"));
}

#[test]
fn exec_timeout_kills_with_a_clear_message() {
    if !have_bwrap() {
        return;
    }
    let (code, stdout, stderr) = out(husk().args([
        "exec",
        "--backend",
        "namespace",
        "--timeout",
        "1",
        "--",
        "sh",
        "-c",
        "sleep 60; echo late",
    ]));
    assert_eq!(code, 124);
    assert_eq!(stdout, "");
    assert!(stderr.contains("timed out after 1s"), "{stderr}");
}

#[test]
fn exec_json_is_machine_readable() {
    if !have_bwrap() {
        return;
    }
    let (code, stdout, _) = out(husk().args([
        "exec",
        "--backend",
        "namespace",
        "--json",
        "--",
        "sh",
        "-c",
        "printf 'a\\nb'; exit 4",
    ]));
    assert_eq!(code, 4);
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("valid JSON");
    assert_eq!(v["exit_code"], 4);
    assert_eq!(v["stdout"], "a\nb");
    assert_eq!(v["backend"], "namespace");
}

#[test]
fn exec_interactive_forwards_stdin() {
    if !have_bwrap() {
        return;
    }
    let mut child = husk()
        .args([
            "exec",
            "--backend",
            "namespace",
            "-i",
            "--",
            "tr",
            "a-z",
            "A-Z",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"shout\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "SHOUT\n");
}

#[test]
fn bad_input_gets_one_clear_line_and_a_nonzero_exit() {
    let cases: &[(&[&str], i32, &str)] = &[
        (&["exec", "--bogus", "--", "true"], 2, "--bogus"),
        (&["exec"], 2, "COMMAND"),
        (&["exec", "--env", "=bar", "--", "true"], 2, "NAME=VALUE"),
        (
            &["exec", "--env", "HUSK_SURELY_UNSET_VAR", "--", "true"],
            2,
            "not set on the host",
        ),
        (&["exec", "--timeout", "0", "--", "true"], 2, "more than 0"),
        (&["exec", "--timeout", "soon", "--", "true"], 2, "seconds"),
        (
            &["exec", "--workdir", "relative", "--", "true"],
            2,
            "absolute",
        ),
        (
            &["exec", "--backend", "xen", "--", "true"],
            2,
            "unknown backend",
        ),
        (&["image", "build", "--disk", "1"], 2, "not in 8.."),
    ];
    for (args, want_code, needle) in cases {
        let (code, _, stderr) = out(husk().args(*args));
        assert_eq!(code, *want_code, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    if !have_bwrap() {
        return;
    }
    let guest_cases: &[(&[&str], &str)] = &[
        (
            &["exec", "--backend", "namespace", "--", "no-such-command-zz"],
            "no-such-command-zz: command not found",
        ),
        (
            &[
                "exec",
                "--backend",
                "namespace",
                "--workdir",
                "/nowhere",
                "--",
                "true",
            ],
            "working directory /nowhere",
        ),
    ];
    for (args, needle) in guest_cases {
        let (code, _, stderr) = out(husk().args(*args));
        assert_eq!(code, 125, "{args:?}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{args:?}: one line, got {stderr}"
        );
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn doctor_reports_and_emits_json() {
    let (code, stdout, stderr) = out(husk().args(["doctor", "--json"]));
    let v: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
    let checks = v["checks"].as_array().expect("checks");
    let ns = checks
        .iter()
        .find(|c| c["name"] == "namespace backend")
        .expect("namespace check");
    assert_eq!(ns["ok"].as_bool(), Some(have_bwrap()), "{ns}");
    assert_eq!(code, if have_bwrap() { 0 } else { 1 });
    assert!(checks.iter().any(|c| c["name"] == "resource limits"));
    let cache = checks
        .iter()
        .find(|c| c["name"] == "image cache")
        .expect("image cache check");
    assert!(
        cache["detail"].as_str().unwrap().contains("husk"),
        "{cache}"
    );
}

/// Processes on the host that live in pid namespace `ns`.
fn in_namespace(ns: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path().join("ns/pid")).is_ok_and(|l| l.to_string_lossy() == ns)
        })
        .count()
}

#[test]
fn killing_husk_leaves_no_sandbox_process_behind() {
    if !have_bwrap() {
        return;
    }
    let mut child = husk()
        .args([
            "exec",
            "--backend",
            "namespace",
            "--",
            "sh",
            "-c",
            "sleep 1000 & setsid sleep 1000 & readlink /proc/self/ns/pid; exec sleep 1000",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let line = common::first_line(&mut child);
    let ns = line.trim().to_string();
    assert!(ns.starts_with("pid:["), "{ns}");
    assert!(
        in_namespace(&ns) >= 3,
        "sandbox processes should be running"
    );
    child.kill().unwrap(); // SIGKILL: husk gets no chance to clean up
    child.wait().unwrap();
    // The kernel tears the sandbox down asynchronously; wait for it (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_namespace(&ns) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        in_namespace(&ns),
        0,
        "sandbox processes survived husk's death"
    );
}

/// Host processes whose command line contains `needle`.
fn processes_with(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .count()
}

#[test]
fn killing_husk_leaves_no_qemu_behind() {
    if which("qemu-system-x86_64").is_none() {
        eprintln!("skipped: qemu-system-x86_64 is not installed");
        return;
    }
    let mut child = husk()
        .args(["exec", "--backend", "microvm", "--accel", "tcg", "--"])
        .args([
            "sh",
            "-c",
            "tr ' ' '\\n' < /proc/cmdline | grep '^husk.id='; exec sleep 1000",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let line = common::first_line(&mut child);
    let id = line.trim().to_string();
    assert!(id.starts_with("husk.id="), "no VM identity: {line:?}");
    assert_eq!(processes_with(&id), 1, "exactly one QEMU for the VM");
    child.kill().unwrap(); // SIGKILL: husk gets no chance to clean up
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with(&id) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(processes_with(&id), 0, "QEMU survived husk's death");
    let short = id.trim_start_matches("husk.id=");
    let base = husk_sandbox::microvm::run_base_dir();
    let left: Vec<_> = std::fs::read_dir(&base)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().contains(short))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "run files left behind: {left:?}");
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[test]
fn a_failed_boot_quotes_the_serial_console() {
    if which("qemu-system-x86_64").is_none() {
        eprintln!("skipped: qemu-system-x86_64 is not installed");
        return;
    }
    // A guest without an init panics at boot; the error must show why.
    let (code, _, err) = out(husk()
        .env("HUSK_KERNEL_ARGS", "rdinit=/no-such-init")
        .args([
            "exec",
            "--backend",
            "microvm",
            "--accel",
            "tcg",
            "--",
            "true",
        ]));
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("serial console"), "{err}");
    assert!(
        err.contains("stopped before its guest agent answered"),
        "{err}"
    );
    assert!(
        err.contains("Kernel panic"),
        "the console tail should show the panic: {err}"
    );
}

/// Under TCG, `husk exec --backend microvm` warns, and says what this
/// start will cost: a kernel boot (with the way to a snapshot), a restore,
/// or the cold boot `--cold` asked for.
/// The kernel argument gives this test a snapshot slot of its own.
#[test]
fn the_tcg_warning_says_whether_starts_restore_a_snapshot() {
    if which("qemu-system-x86_64").is_none() {
        eprintln!("skipped: qemu-system-x86_64 is not installed");
        return;
    }
    let args = format!("husk.test-warning={}", std::process::id());
    let exec = |extra: &[&str]| {
        out(husk()
            .env("HUSK_KERNEL_ARGS", &args)
            .args(["exec", "--backend", "microvm"])
            .args(extra)
            .args(["--", "true"]))
    };
    let (code, _, err) = exec(&[]);
    assert_eq!(code, 0, "{err}");
    if !err.contains("TCG software emulation") {
        eprintln!("skipped: micro-VMs run under KVM here, which has no warning: {err}");
        return;
    }
    assert!(err.contains("with no saved snapshot"), "{err}");
    assert!(err.contains("`husk image build` saves one"), "{err}");
    let (code, _, err) = exec(&["--memory", "768"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("`husk image build --memory 768` saves one"),
        "{err}"
    );

    let (code, built, err) = out(husk()
        .env("HUSK_KERNEL_ARGS", &args)
        .args(["image", "build", "--json"]));
    assert_eq!(code, 0, "{err}");
    let built: serde_json::Value = serde_json::from_str(&built).unwrap();
    let dir = std::path::PathBuf::from(built["snapshot"]["dir"].as_str().unwrap());
    assert_eq!(built["snapshot"]["kernel_args"], args.as_str());
    let restored = exec(&[]);
    let cold = exec(&["--cold"]);
    std::fs::remove_dir_all(&dir).unwrap();
    let (code, _, err) = restored;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("starts restore a saved snapshot"), "{err}");
    assert!(!err.contains("with no saved snapshot"), "{err}");
    let (code, _, err) = cold;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("a cold boot takes seconds"), "{err}");
    assert!(!err.contains("restore"), "{err}");
}

#[test]
fn validate_accepts_a_workflow_with_an_agent_override_and_warns() {
    let dir = std::env::temp_dir().join(format!("husk-cli-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let spec = dir.join("candidate.yaml");
    std::fs::write(
        &spec,
        "api_version: v1\nkind: workflow\nname: candidate\nagent:\n  prompt: Try the faster \
         path.\nworkflow:\n  steps:\n    - name: build\n      run: {program: make}\n",
    )
    .expect("write the spec");

    let (code, stdout, stderr) = out(husk().arg("validate").arg(&spec));
    assert_eq!(code, 0, "{stderr}");
    let want = format!(
        "warning: {}:4:1: agent: section `agent` does not apply to kind=workflow; it is ignored",
        spec.display()
    );
    assert_eq!(stderr.trim_end(), want);
    assert!(stdout.starts_with("ok: "), "{stdout}");

    let (code, stdout, stderr) = out(husk().args(["validate", "--json"]).arg(&spec));
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(v["valid"], true);
    let w = &v["specs"][0]["warnings"][0];
    assert_eq!(
        (w["path"].as_str(), w["line"].as_u64()),
        (Some("agent"), Some(4))
    );
    assert_eq!(w["column"], 1);
    assert!(
        w["message"]
            .as_str()
            .is_some_and(|m| m.contains("it is ignored")),
        "{stdout}"
    );
    assert_eq!(w["text"], want.trim_start_matches("warning: "));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// An unwritable runs directory is refused before the run starts.
#[test]
fn an_unwritable_runs_dir_is_refused_up_front() {
    let spec =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello-agent.yaml");
    let (code, _, err) = out(husk()
        .args(["run", "--runs-dir", "/proc/husk-no-such-dir"])
        .arg(&spec));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not writable"), "{err}");
    assert!(
        !err.contains("stage main started"),
        "the run must not start: {err}"
    );
}
