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
