//! The conformance suite on sandboxes claimed from a warm pool (namespace
//! backend): every case's sandbox must come from the pool, started ahead
//! of time, and behave exactly like a cold one.

mod conformance;

use std::sync::Arc;
use std::time::Duration;

use husk_sandbox::namespace::NamespaceBackend;
use husk_sandbox::pool::{Pool, PoolOptions};
use husk_sandbox::{
    Backend, BackendKind, Origin, Sandbox, SandboxConfig, SandboxError, ToolDelivery,
};
use tokio::sync::OnceCell;

/// Every start of the template claims from the pool (waiting for a refill
/// if needed) and fails the case if it got anything but a pooled sandbox;
/// the cases that need another config (a disk size, a wrong secret) must
/// get a cold start from the pool instead.
struct StrictPool;

static POOL: OnceCell<Arc<Pool>> = OnceCell::const_new();

#[async_trait::async_trait]
impl Backend for StrictPool {
    fn kind(&self) -> BackendKind {
        BackendKind::Namespace
    }

    fn tool_delivery(&self) -> ToolDelivery {
        ToolDelivery::Mount
    }

    async fn start(&self, config: &SandboxConfig) -> husk_sandbox::Result<Sandbox> {
        let pool = POOL
            .get_or_init(|| async {
                let backend = Arc::new(NamespaceBackend::new().expect("namespace backend"));
                let options = PoolOptions {
                    target: 2,
                    idle_limit: Duration::from_secs(600),
                };
                Pool::start(backend, SandboxConfig::default(), options)
            })
            .await;
        if !pool.fits(config) {
            let sandbox = pool.start(config).await?;
            assert_eq!(sandbox.origin(), Origin::Cold);
            return Ok(sandbox);
        }
        let sandbox = pool
            .claim_wait(config, Duration::from_secs(30))
            .await
            .ok_or_else(|| {
                SandboxError::Config(format!("no pooled sandbox: {:?}", pool.status()))
            })?;
        assert_eq!(sandbox.origin(), Origin::Pool);
        Ok(sandbox)
    }
}

struct Pooled;

static HARNESS: Pooled = Pooled;

impl conformance::Harness for Pooled {
    fn backend(&self) -> Result<Arc<dyn Backend>, String> {
        match NamespaceBackend::new() {
            Ok(_) => Ok(Arc::new(StrictPool)),
            Err(SandboxError::MissingTool { tool, hint }) => Err(format!("{tool}: {hint}")),
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
