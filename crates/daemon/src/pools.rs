//! The daemon's warm pools (`husk serve --pool microvm=2,namespace=4`, or
//! `--pool-config FILE` for pools of other sizes): parsing the request,
//! refusing one the host cannot hold, and starting each pool with the
//! sandbox a spec gets for the same `memory_mb`, `vcpus` and `disk_mb`
//! (so the stages asking for exactly that claim from it).

use std::time::Duration;

use husk_sandbox::microvm::AccelChoice;
use husk_sandbox::pool::{Pool, PoolOptions, Pools};
use husk_sandbox::{BackendChoice, BackendKind, SandboxConfig};
use husk_spec::SandboxSpec;

/// Host memory a micro-VM costs beyond its guest RAM (QEMU itself).
const MICROVM_OVERHEAD_MB: u64 = 64;
/// Most sandboxes one pool may keep.
pub const MAX_POOL_SIZE: usize = 64;

/// One pool to keep: `size` ready sandboxes of `backend`, sized as
/// `sandbox` says.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolRequest {
    pub backend: BackendKind,
    pub size: usize,
    pub sandbox: PoolSandbox,
}

/// The sandbox settings a pool is kept for; `None`: a spec's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSandbox {
    pub memory_mb: Option<u32>,
    pub vcpus: Option<u32>,
    pub disk_mb: Option<u32>,
}

impl PoolRequest {
    /// The sandbox this pool keeps ready: what a spec whose `sandbox`
    /// section sets only these fields gets.
    pub fn template(&self) -> SandboxConfig {
        let mut spec = SandboxSpec::default();
        if let Some(m) = self.sandbox.memory_mb {
            spec.memory_mb = m;
        }
        if let Some(v) = self.sandbox.vcpus {
            spec.vcpus = v;
        }
        spec.disk_mb = self.sandbox.disk_mb;
        husk_runtime::sandboxes::config(&spec, &|_| None, None).unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("--pool {0:?}: expected BACKEND=N[,BACKEND=N] with BACKEND namespace or microvm")]
    Syntax(String),
    #[error("--pool: {0}=N: N must be a number from 0 to {MAX_POOL_SIZE} (got {1:?})")]
    Size(String, String),
    #[error("--pool: {0} is given twice")]
    Twice(String),
    #[error(
        "--pool microvm={count}: {count} micro-VMs of {guest_mb} MiB (+{MICROVM_OVERHEAD_MB} MiB each for QEMU) need {need_mb} MiB, \
         but the host has {available_mb} MiB available; ask for fewer"
    )]
    Memory {
        count: usize,
        guest_mb: u32,
        need_mb: u64,
        available_mb: u64,
    },
    #[error("--pool {backend}: {reason}")]
    Backend { backend: String, reason: String },
    #[error("--pool-config {path}: {message}")]
    Config { path: String, message: String },
}

/// Parses `microvm=2,namespace=4`.
pub fn parse(s: &str) -> Result<Vec<PoolRequest>, PoolError> {
    let mut out: Vec<PoolRequest> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, n) = part
            .split_once('=')
            .ok_or_else(|| PoolError::Syntax(s.to_string()))?;
        let backend = match name.trim() {
            "namespace" => BackendKind::Namespace,
            "microvm" => BackendKind::Microvm,
            _ => return Err(PoolError::Syntax(s.to_string())),
        };
        let size = n
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= MAX_POOL_SIZE)
            .ok_or_else(|| PoolError::Size(name.to_string(), n.to_string()))?;
        if out.iter().any(|r| r.backend == backend) {
            return Err(PoolError::Twice(name.to_string()));
        }
        out.push(PoolRequest {
            backend,
            size,
            sandbox: PoolSandbox::default(),
        });
    }
    if out.is_empty() {
        return Err(PoolError::Syntax(s.to_string()));
    }
    Ok(out)
}

/// Joins the pools of `--pool` and `--pool-config`; a backend and
/// sandbox given twice is refused (one pool per backend and config).
pub fn merge(a: Vec<PoolRequest>, b: Vec<PoolRequest>) -> Result<Vec<PoolRequest>, PoolError> {
    let mut out: Vec<PoolRequest> = Vec::new();
    for r in a.into_iter().chain(b) {
        if out
            .iter()
            .any(|o| o.backend == r.backend && size_of(o) == size_of(&r))
        {
            return Err(PoolError::Twice(describe(&r)));
        }
        out.push(r);
    }
    Ok(out)
}

/// What tells two pools of one backend apart.
fn size_of(r: &PoolRequest) -> (u32, u32, u32) {
    let t = r.template();
    (t.memory_mb, t.vcpus, t.disk_mb)
}

/// `microvm (memory_mb 2048, vcpus 2)`, for messages.
fn describe(r: &PoolRequest) -> String {
    let t = r.template();
    format!(
        "{} (memory_mb {}, vcpus {}, disk_mb {})",
        r.backend, t.memory_mb, t.vcpus, t.disk_mb
    )
}

/// Refuses a request whose micro-VMs need more memory than the host has
/// available (`available_mb`, from /proc/meminfo). The pools are counted
/// together: two pools that fit one by one may not fit side by side.
pub fn check_memory(requests: &[PoolRequest], available_mb: u64) -> Result<(), PoolError> {
    let mut need_mb = 0;
    for r in requests
        .iter()
        .filter(|r| r.backend == BackendKind::Microvm)
    {
        let guest_mb = r.template().memory_mb;
        need_mb += r.size as u64 * (u64::from(guest_mb) + MICROVM_OVERHEAD_MB);
        if need_mb > available_mb {
            return Err(PoolError::Memory {
                count: r.size,
                guest_mb,
                need_mb,
                available_mb,
            });
        }
    }
    Ok(())
}

/// `MemAvailable` of /proc/meminfo, in MiB (`None` when unreadable).
pub fn host_available_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// Starts the requested pools (they fill in the background). The backends
/// are selected first, so a host without QEMU or bubblewrap is refused
/// here rather than failing in the background forever.
pub async fn start(requests: &[PoolRequest], idle_limit: Duration) -> Result<Pools, PoolError> {
    if let Some(available) = host_available_mb() {
        check_memory(requests, available)?;
    }
    let mut pools = Vec::new();
    for r in requests.iter().filter(|r| r.size > 0) {
        let choice = match r.backend {
            BackendKind::Namespace => BackendChoice::Namespace,
            BackendKind::Microvm => BackendChoice::Microvm,
        };
        let progress = |line: &str| tracing::info!("pool {}: {line}", r.backend);
        let selected = husk_sandbox::select(choice, AccelChoice::Auto, &r.template(), &progress)
            .await
            .map_err(|e| PoolError::Backend {
                backend: r.backend.to_string(),
                reason: e.to_string(),
            })?;
        let options = PoolOptions {
            target: r.size,
            idle_limit,
        };
        pools.push(Pool::start(selected.backend, r.template(), options));
    }
    Ok(Pools::new(pools))
}

/// A pool in `/v1/health`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PoolHealth {
    /// `namespace` or `microvm`.
    pub backend: String,
    /// The sandbox the pool keeps: a stage must ask for exactly these
    /// (and otherwise the defaults) to claim one.
    pub memory_mb: u32,
    pub vcpus: u32,
    pub disk_mb: u32,
    /// Sandboxes the pool keeps ready.
    pub target: usize,
    pub ready: usize,
    pub starting: usize,
    /// Stages that got a ready sandbox.
    pub claims: u64,
    /// Fitting stages that found the pool empty and started cold.
    pub misses: u64,
    pub started: u64,
    pub failed: u64,
    /// Ready sandboxes replaced for idling too long or found dead.
    pub recycled: u64,
    /// The last failed start, until a start succeeds.
    pub last_error: Option<String>,
}

pub fn health(pools: &Pools) -> Vec<PoolHealth> {
    pools
        .status()
        .into_iter()
        .map(|s| PoolHealth {
            backend: s.backend.to_string(),
            memory_mb: s.memory_mb,
            vcpus: s.vcpus,
            disk_mb: s.disk_mb,
            target: s.target,
            ready: s.ready,
            starting: s.starting,
            claims: s.claims,
            misses: s.misses,
            started: s.started,
            failed: s.failed,
            recycled: s.recycled,
            last_error: s.last_error,
        })
        .collect()
}

/// The Prometheus text exposition of the daemon's gauges and counters.
pub fn metrics(pools: &Pools, active_runs: usize, runs_started: u64) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in samples {
            out.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    family(
        "husk_active_runs",
        "gauge",
        "Runs pending, starting or running.",
        vec![(String::new(), active_runs as u64)],
    );
    family(
        "husk_runs_started_total",
        "counter",
        "Runs started by this daemon.",
        vec![(String::new(), runs_started)],
    );
    let status = pools.status();
    let per_pool = |f: &dyn Fn(&husk_sandbox::pool::PoolStatus) -> u64| {
        status
            .iter()
            .map(|s| {
                let labels = format!(
                    "{{backend=\"{}\",memory_mb=\"{}\",vcpus=\"{}\",disk_mb=\"{}\"}}",
                    s.backend, s.memory_mb, s.vcpus, s.disk_mb
                );
                (labels, f(s))
            })
            .collect::<Vec<_>>()
    };
    type Read = fn(&husk_sandbox::pool::PoolStatus) -> u64;
    let pool_families: [(&str, &str, &str, Read); 8] = [
        (
            "husk_pool_target",
            "gauge",
            "Sandboxes the warm pool keeps ready.",
            |s| s.target as u64,
        ),
        (
            "husk_pool_ready",
            "gauge",
            "Ready sandboxes in the warm pool.",
            |s| s.ready as u64,
        ),
        (
            "husk_pool_starting",
            "gauge",
            "Sandboxes the warm pool is starting.",
            |s| s.starting as u64,
        ),
        (
            "husk_pool_claims_total",
            "counter",
            "Stages served a ready sandbox.",
            |s| s.claims,
        ),
        (
            "husk_pool_misses_total",
            "counter",
            "Fitting stages that found the pool empty.",
            |s| s.misses,
        ),
        (
            "husk_pool_started_total",
            "counter",
            "Sandboxes the pool started.",
            |s| s.started,
        ),
        (
            "husk_pool_failed_total",
            "counter",
            "Pool starts that failed.",
            |s| s.failed,
        ),
        (
            "husk_pool_recycled_total",
            "counter",
            "Ready sandboxes replaced (idle or dead).",
            |s| s.recycled,
        ),
    ];
    for (name, kind, help, read) in pool_families {
        family(name, kind, help, per_pool(&read));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(
            parse("microvm=2, namespace=4").unwrap(),
            vec![
                PoolRequest {
                    backend: BackendKind::Microvm,
                    size: 2,
                    sandbox: PoolSandbox::default(),
                },
                PoolRequest {
                    backend: BackendKind::Namespace,
                    size: 4,
                    sandbox: PoolSandbox::default(),
                },
            ]
        );
        for (bad, says) in [
            ("", "expected BACKEND=N"),
            ("vm=2", "expected BACKEND=N"),
            ("microvm", "expected BACKEND=N"),
            ("microvm=x", "must be a number from 0 to 64"),
            ("microvm=65", "must be a number from 0 to 64"),
            ("microvm=1,microvm=2", "given twice"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_pool_larger_than_the_host_is_refused() {
        let req = parse("microvm=3,namespace=50").unwrap();
        assert!(check_memory(&req, 4000).is_ok());
        let e = check_memory(&req, 3000).unwrap_err().to_string();
        assert!(
            e.contains("need 3264 MiB") && e.contains("3000 MiB available"),
            "{e}"
        );
        // Pools of one backend count together.
        let mut two = parse("microvm=1").unwrap();
        two.extend(
            crate::pool_config::parse("pools:\n  - {backend: microvm, size: 1, memory_mb: 2048}")
                .unwrap(),
        );
        assert!(check_memory(&two, 3200).is_ok());
        let e = check_memory(&two, 3000).unwrap_err().to_string();
        assert!(e.contains("need 3200 MiB"), "{e}");
    }

    #[test]
    fn the_template_is_what_a_default_spec_gets() {
        let t = parse("microvm=1").unwrap()[0].template();
        assert!(t.mounts.is_empty() && t.env.is_empty() && t.rootfs.is_none());
        assert_eq!(t.memory_mb, husk_spec::SandboxSpec::default().memory_mb);
        let spec = husk_spec::SandboxSpec {
            memory_mb: 2048,
            vcpus: 2,
            ..Default::default()
        };
        let from_spec = husk_runtime::sandboxes::config(&spec, &|_| None, None).unwrap();
        let sized = crate::pool_config::parse(
            "pools:\n  - {backend: microvm, size: 1, memory_mb: 2048, vcpus: 2}",
        )
        .unwrap()[0]
            .template();
        assert_eq!(
            (
                sized.memory_mb,
                sized.vcpus,
                sized.disk_mb,
                sized.max_processes
            ),
            (
                from_spec.memory_mb,
                from_spec.vcpus,
                from_spec.disk_mb,
                from_spec.max_processes
            )
        );
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let m = metrics(&Pools::default(), 3, 7);
        assert!(
            m.contains("# TYPE husk_active_runs gauge\nhusk_active_runs 3\n"),
            "{m}"
        );
        assert!(m.contains("husk_runs_started_total 7\n"), "{m}");
    }
}
