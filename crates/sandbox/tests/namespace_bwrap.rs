//! The conformance suite on the namespace backend with bubblewrap as the
//! launcher: the fallback where husk's own launcher cannot run must give
//! the same sandbox.

mod conformance;

use std::sync::Arc;

use husk_sandbox::Backend;
use husk_sandbox::namespace::{Launcher, NamespaceBackend};

struct Bubblewrap;

static HARNESS: Bubblewrap = Bubblewrap;

impl conformance::Harness for Bubblewrap {
    fn backend(&self) -> Result<Arc<dyn Backend>, String> {
        // bubblewrap missing is the only honest skip; anything else is a failure.
        let backend = NamespaceBackend::new()
            .and_then(|b| b.with_launcher(Launcher::Bubblewrap))
            .map_err(|e| match e {
                husk_sandbox::SandboxError::MissingTool { tool, hint } => format!("{tool}: {hint}"),
                e => panic!("namespace backend: {e}"),
            })?;
        Ok(Arc::new(backend))
    }

    fn identity_command(&self) -> Vec<String> {
        vec!["readlink".into(), "/proc/self/ns/pid".into()]
    }

    fn leftovers(&self, identity: &str) -> usize {
        conformance::processes_in_pid_namespace(identity)
    }
}

suite!(HARNESS);

/// The launcher a sandbox was built by is named in its isolation.
#[test]
fn the_launcher_is_named() {
    let Ok(bwrap) = NamespaceBackend::new().and_then(|b| b.with_launcher(Launcher::Bubblewrap))
    else {
        eprintln!("SKIP: bubblewrap is not installed");
        return;
    };
    let native = NamespaceBackend::new()
        .unwrap()
        .with_launcher(Launcher::Native)
        .unwrap();
    conformance::RT.block_on(async {
        let cfg = husk_sandbox::SandboxConfig::default();
        for (backend, name) in [(bwrap, "(bubblewrap)"), (native, "(husk launcher)")] {
            let sb = backend.start(&cfg).await.unwrap();
            assert!(
                sb.info().isolation.contains(name),
                "{}",
                sb.info().isolation
            );
            sb.stop().await.unwrap();
        }
    });
}
