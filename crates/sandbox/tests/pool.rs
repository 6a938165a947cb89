//! Warm pool behaviour with real namespace sandboxes: filling to target,
//! claims and misses, configs that do not fit, idle recycling, backoff
//! after failed starts, the warm-up command (and a sandbox that fails it),
//! and shutdown leaving no process behind. One test, run in order, so the launcher processes
//! counted are the pool's own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use husk_sandbox::namespace::NamespaceBackend;
use husk_sandbox::pool::{Pool, PoolOptions, PoolStatus};
use husk_sandbox::{
    Backend, BackendKind, Origin, Sandbox, SandboxConfig, SandboxError, ToolDelivery,
};

/// Polls `pool` until `ok` holds; panics with the last status after `limit`.
async fn until(pool: &Pool, limit: Duration, ok: impl Fn(&PoolStatus) -> bool) -> PoolStatus {
    let t0 = Instant::now();
    loop {
        let s = pool.status();
        if ok(&s) {
            return s;
        }
        assert!(t0.elapsed() < limit, "pool never got there: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Launcher processes (husk's own or bubblewrap) that are children of
/// this test process: one per live sandbox.
fn our_launchers() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid …
            let Some((head, rest)) = stat.rsplit_once(") ") else {
                return false;
            };
            let launcher = head.ends_with("(bwrap") || head.ends_with("(husk-guest");
            launcher && rest.split(' ').nth(1) == Some(me.as_str())
        })
        .count()
}

/// A backend whose starts always fail (counted).
struct Broken(AtomicU64);

#[async_trait::async_trait]
impl Backend for Broken {
    fn kind(&self) -> BackendKind {
        BackendKind::Microvm
    }
    fn tool_delivery(&self) -> ToolDelivery {
        ToolDelivery::Copy
    }
    async fn start(&self, _: &SandboxConfig) -> husk_sandbox::Result<Sandbox> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(SandboxError::Config("no such image".into()))
    }
}

/// A backend whose sandboxes die as soon as they have started (their
/// host process is killed), so the pool's warm-up finds them gone.
struct Dying(Arc<NamespaceBackend>);

#[async_trait::async_trait]
impl Backend for Dying {
    fn kind(&self) -> BackendKind {
        BackendKind::Namespace
    }
    fn tool_delivery(&self) -> ToolDelivery {
        self.0.tool_delivery()
    }
    async fn start(&self, config: &SandboxConfig) -> husk_sandbox::Result<Sandbox> {
        let sb = self.0.start(config).await?;
        let pid = sb.host_pid().expect("a live sandbox has a host process");
        // SAFETY: kill(2) takes no pointers.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
        // The guest dies with its launcher, a moment later.
        let t0 = Instant::now();
        while sb.client().ping().await.is_ok() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "guest outlived its launcher"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(sb)
    }
}

#[test]
fn pool_fills_serves_recycles_backs_off_and_shuts_down() {
    let backend = match NamespaceBackend::new() {
        Ok(b) => Arc::new(b),
        Err(e) => {
            eprintln!("SKIP: bubblewrap unavailable: {e}");
            return;
        }
    };
    if std::env::var_os("HUSK_GUEST_BIN").is_none()
        && husk_sandbox::guest_bin::locate_guest().is_err()
    {
        panic!("the guest agent is not built (scripts/build-guest)");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let limit = Duration::from_secs(60);
        let options = PoolOptions {
            target: 2,
            idle_limit: Duration::from_secs(600),
        };
        let pool = Pool::start(backend.clone(), SandboxConfig::default(), options);
        until(&pool, limit, |s| s.ready == 2).await;
        assert_eq!(our_launchers(), 2);

        // A claim gets a live, pooled sandbox with the stage's environment.
        let config = SandboxConfig {
            env: vec![("STAGE".into(), "one".into())],
            ..SandboxConfig::default()
        };
        let sb = pool.claim(&config).await.expect("a ready sandbox");
        assert_eq!(sb.origin(), Origin::Pool);
        let req = husk_sandbox::protocol::ExecRequest::new(["sh", "-c", "echo $STAGE $$"]);
        let out = sb
            .client()
            .run(&sb.with_default_env(&req), 1024)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (stage, pooled_pid) = text.trim().split_once(' ').expect("stage and pid");
        assert_eq!(stage, "one");
        let s = until(&pool, limit, |s| s.ready == 2).await;
        assert_eq!((s.claims, s.misses, s.started), (1, 0, 3), "{s:?}");
        sb.stop().await.unwrap();

        // A config the template cannot serve is not a claim.
        let other = SandboxConfig {
            memory_mb: 512,
            ..SandboxConfig::default()
        };
        assert!(pool.claim(&other).await.is_none());
        let cold = pool.start(&other).await.unwrap();
        assert_eq!(cold.origin(), Origin::Cold);
        // The pool ran exactly one warm-up command in its sandbox before
        // handing it out: the stage's first process got the next pid
        // after the one a cold sandbox's first process gets.
        let req = husk_sandbox::protocol::ExecRequest::new(["sh", "-c", "echo $$"]);
        let out = cold.client().run(&req, 1024).await.unwrap();
        let cold_pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert_eq!(pooled_pid.parse::<u32>().unwrap(), cold_pid + 1, "{text}");
        cold.stop().await.unwrap();
        assert_eq!(pool.status().claims, 1);

        // Shutdown stops every ready sandbox and the refill.
        pool.shutdown().await;
        let s = pool.status();
        assert_eq!((s.ready, s.starting), (0, 0), "{s:?}");
        until(&pool, limit, |_| our_launchers() == 0).await;

        // An empty pool: every fitting claim is a miss.
        let empty = Pool::start(
            backend.clone(),
            SandboxConfig::default(),
            PoolOptions {
                target: 0,
                idle_limit: Duration::from_secs(600),
            },
        );
        assert!(empty.claim(&SandboxConfig::default()).await.is_none());
        assert_eq!(empty.status().misses, 1);

        // Idle sandboxes are replaced by fresh ones.
        let idle = Pool::start(
            backend.clone(),
            SandboxConfig::default(),
            PoolOptions {
                target: 1,
                idle_limit: Duration::from_millis(300),
            },
        );
        let s = until(&idle, limit, |s| s.recycled >= 2 && s.ready == 1).await;
        assert!(s.started >= 3, "{s:?}");
        idle.shutdown().await;
        until(&idle, limit, |_| our_launchers() == 0).await;

        // A sandbox whose warm-up fails is stopped, never offered, and
        // counts as a failed start.
        let dying = Pool::start(
            Arc::new(Dying(backend.clone())),
            SandboxConfig::default(),
            PoolOptions {
                target: 1,
                idle_limit: Duration::from_secs(600),
            },
        );
        let s = until(&dying, limit, |s| s.failed >= 1).await;
        assert_eq!((s.ready, s.started), (0, 0), "{s:?}");
        let err = s.last_error.unwrap_or_default();
        assert!(err.contains("warm-up command failed"), "{err}");
        assert!(dying.claim(&SandboxConfig::default()).await.is_none());
        dying.shutdown().await;
        until(&dying, limit, |_| our_launchers() == 0).await;

        // Failed starts back off (1 s, then 2 s, …) instead of spinning,
        // and the error is kept for health.
        let broken = Arc::new(Broken(AtomicU64::new(0)));
        let bad = Pool::start(
            broken.clone(),
            SandboxConfig::default(),
            PoolOptions {
                target: 3,
                idle_limit: Duration::from_secs(600),
            },
        );
        until(&bad, limit, |s| s.failed >= 1).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let s = bad.status();
        assert!(
            s.failed <= 2,
            "a failing backend is retried in a loop: {s:?}"
        );
        assert_eq!(
            s.last_error.as_deref(),
            Some("invalid sandbox configuration: no such image")
        );
        bad.shutdown().await;
    });
}
