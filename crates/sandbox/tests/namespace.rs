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

    /// Host processes living in the sandbox's pid namespace.
    fn leftovers(&self, identity: &str) -> usize {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return 0;
        };
        dir.filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|c| c.is_ascii_digit())
            })
            .filter(|e| {
                std::fs::read_link(e.path().join("ns/pid"))
                    .map(|l| l.to_string_lossy() == identity)
                    .unwrap_or(false)
            })
            .count()
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
