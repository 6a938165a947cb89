//! The conformance suite on the namespace (bubblewrap) backend.

mod conformance;

use std::sync::Arc;

use husk_sandbox::Backend;
use husk_sandbox::namespace::NamespaceBackend;

struct Namespace;

static HARNESS: Namespace = Namespace;

impl conformance::Harness for Namespace {
    fn backend(&self) -> Result<Arc<dyn Backend>, String> {
        // bubblewrap missing is the only honest skip; anything else is a failure.
        match NamespaceBackend::new() {
            Ok(b) => Ok(Arc::new(b)),
            Err(husk_sandbox::SandboxError::MissingTool { tool, hint }) => {
                Err(format!("{tool}: {hint}"))
            }
            Err(e) => panic!("namespace backend: {e}"),
        }
    }

    fn identity_command(&self) -> Vec<String> {
        vec!["readlink".into(), "/proc/self/ns/pid".into()]
    }

    fn leftovers(&self, identity: &str) -> usize {
        conformance::processes_in_pid_namespace(identity)
    }
}

suite!(HARNESS);

/// Namespace-only: the rlimit fallback really limits processes and memory.
#[test]
fn rlimits_limit_processes_and_memory() {
    let Ok(backend) = NamespaceBackend::new() else {
        eprintln!("SKIP: bubblewrap is not installed");
        return;
    };
    // RLIMIT_NPROC counts every process of the host uid, so the other
    // cases' sandboxes (uid 65534 when root) must not count against this one.
    let backend = backend.with_host_uid(65533);
    conformance::RT.block_on(async {
        let cfg = husk_sandbox::SandboxConfig { max_processes: 16, memory_mb: 64, ..Default::default() };
        let sb = backend.start(&cfg).await.unwrap();
        assert!(sb.info().limits.contains("16 processes"), "{}", sb.info().limits);
        // Each background child that manages to start records itself.
        conformance::sh(&sb, "for i in $(seq 40); do (echo x >> /tmp/started; sleep 1) & done 2>/dev/null; true").await;
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let started = sb.client().read_file("/tmp/started", 1 << 20).await.unwrap();
        let count = started.iter().filter(|&&b| b == b'\n').count();
        assert!((1..16).contains(&count), "{count} children started despite a limit of 16 processes");
        // 200 MiB of heap cannot be had under a 64 MiB data limit.
        let out = conformance::sh(&sb, "head -c 200000000 /dev/zero | tail -c 1 >/dev/null; awk 'BEGIN { s = sprintf(\"%200000000s\", \"\"); print length(s) }'").await;
        assert_ne!(String::from_utf8_lossy(&out.stdout).trim(), "200000000", "allocation should fail");
        sb.stop().await.unwrap();
    });
}

/// Namespace-only, as root: bubblewrap then runs as an unprivileged uid
/// that cannot search `0700` directories such as `/root`, so a read-only
/// file mount from one is copied in from a descriptor husk opened; it
/// keeps its execute bit and stays read-only.
#[test]
fn file_mounts_the_sandbox_uid_cannot_reach_are_copied_in() {
    use std::os::unix::fs::PermissionsExt;
    let Ok(backend) = NamespaceBackend::new() else {
        eprintln!("SKIP: bubblewrap is not installed");
        return;
    };
    if !rustix::process::geteuid().is_root() {
        // Not root: bubblewrap runs as this user, who can reach its own files.
        return;
    }
    let private = std::env::temp_dir().join(format!("husk-private-{}", std::process::id()));
    std::fs::create_dir_all(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let tool = private.join("tool");
    std::fs::write(&tool, "#!/bin/sh\necho tool ran \"$@\"\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    conformance::RT.block_on(async {
        let cfg = husk_sandbox::SandboxConfig {
            mounts: vec![husk_sandbox::Mount {
                host: tool.clone(),
                guest: "/home/sandbox/.local/bin/tool".into(),
                writable: false,
            }],
            ..Default::default()
        };
        let sb = backend.start(&cfg).await.expect("start with a mount from a 0700 directory");
        let out = conformance::sh(&sb, "/home/sandbox/.local/bin/tool ok; echo changed > /home/sandbox/.local/bin/tool && echo WRITABLE; ls -l /home/sandbox/.local/bin/tool").await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("tool ran ok"), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
        assert!(!stdout.contains("WRITABLE"), "{stdout}");
        assert!(stdout.contains("-r-xr-xr-x"), "{stdout}");
        sb.stop().await.unwrap();
    });
    std::fs::remove_dir_all(&private).unwrap();
}

/// Namespace-only: memory is a per-process data limit, which fails
/// allocations instead of killing, so the honest report is "possibly out
/// of memory" when a failed process said an allocation failed; nothing
/// when it did not, or when it succeeded.
#[test]
fn possible_ooms_are_reported() {
    use husk_sandbox::protocol::ExitCause;
    let Ok(backend) = NamespaceBackend::new() else {
        eprintln!("SKIP: bubblewrap is not installed");
        return;
    };
    conformance::RT.block_on(async {
        let cfg = husk_sandbox::SandboxConfig {
            memory_mb: 64,
            ..Default::default()
        };
        let sb = backend.start(&cfg).await.unwrap();
        // tail keeps the last "line" of /dev/zero (no newline): 200 MB.
        let out = conformance::sh(&sb, "head -c 200000000 /dev/zero | tail > /dev/null").await;
        let detail = format!("{:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
        assert_ne!(out.status.code, Some(0), "{detail}");
        assert_eq!(
            out.status.cause,
            ExitCause::PossiblyOutOfMemory { limit_mb: Some(64) },
            "{detail}"
        );
        assert_eq!(
            out.status.cause.describe().unwrap(),
            "possibly out of memory (limit 64 MiB)"
        );
        for (script, what) in [
            ("echo 'out of memory' >&2", "succeeded"),
            (
                "echo 'no such file' >&2; exit 1",
                "failed for another reason",
            ),
            ("kill -9 $$", "SIGKILL, but no private OOM counter"),
        ] {
            let out = conformance::sh(&sb, script).await;
            assert_eq!(
                out.status.cause,
                ExitCause::Unknown,
                "{what}: {:?}",
                out.status
            );
        }
        sb.stop().await.unwrap();
    });
}
