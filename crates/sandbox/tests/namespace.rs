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
/// file mount from one is shared: one hard link (or copy) in husk's shared
/// directory, bind-mounted read-only into every sandbox — not a copy in
/// each sandbox's tmpfs (host RAM). It keeps its execute bit and stays
/// read-only.
#[test]
fn file_mounts_the_sandbox_uid_cannot_reach_are_shared() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
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
    let guest = "/home/sandbox/.local/bin/tool";
    conformance::RT.block_on(async {
        let cfg = husk_sandbox::SandboxConfig {
            mounts: vec![husk_sandbox::Mount {
                host: tool.clone(),
                guest: guest.into(),
                writable: false,
            }],
            ..Default::default()
        };
        let a = backend
            .start(&cfg)
            .await
            .expect("start with a mount from a 0700 directory");
        let b = backend.start(&cfg).await.expect("a second sandbox");
        for sb in [&a, &b] {
            let script = format!(
                "{guest} ok; echo changed > {guest} && echo WRITABLE; \
                 grep ' {guest} ' /proc/self/mountinfo | sed 's/.* - //'"
            );
            let out = conformance::sh(sb, &script).await;
            let stdout = String::from_utf8_lossy(&out.stdout);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(stdout.contains("tool ran ok"), "{stdout} {err}");
            assert!(!stdout.contains("WRITABLE"), "{stdout}");
            // A bind mount of the shared file, not a file on the tmpfs.
            let fs_line = stdout.lines().last().unwrap_or_default();
            assert!(
                !fs_line.starts_with("tmpfs"),
                "copied into the sandbox: {stdout}"
            );
        }
        a.stop().await.unwrap();
        b.stop().await.unwrap();
    });
    // The one shared entry is a hard link of the tool (no bytes copied).
    let base = husk_sandbox::shared_tools::dir();
    let shared = husk_sandbox::shared_tools::shared_path(&tool, &base, 65534).unwrap();
    assert_eq!(
        std::fs::metadata(&shared).unwrap().ino(),
        std::fs::metadata(&tool).unwrap().ino()
    );
    std::fs::remove_dir_all(shared.parent().unwrap()).unwrap();
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
