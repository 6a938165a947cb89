//! The daemon's warm pools (`husk serve --pool microvm=2,namespace=4`):
//! parsing the request, refusing one the host cannot hold, and starting
//! the pools with the sandbox a spec gets by default (so the stages that
//! leave `sandbox` at its defaults claim from them).

use std::time::Duration;

use husk_sandbox::microvm::AccelChoice;
use husk_sandbox::pool::{Pool, PoolOptions, Pools};
use husk_sandbox::{BackendChoice, BackendKind, SandboxConfig};
use husk_spec::SandboxSpec;

/// Host memory a micro-VM costs beyond its guest RAM (QEMU itself).
const MICROVM_OVERHEAD_MB: u64 = 64;
/// Most sandboxes one pool may keep.
pub const MAX_POOL_SIZE: usize = 64;

/// One `--pool` entry: keep `size` ready sandboxes of `backend`.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolRequest {
    pub backend: BackendKind,
    pub size: usize,
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
        out.push(PoolRequest { backend, size });
    }
    if out.is_empty() {
        return Err(PoolError::Syntax(s.to_string()));
    }
    Ok(out)
}

/// The sandbox a spec gets when its `sandbox` section says nothing: what
/// the pools keep ready.
pub fn template() -> SandboxConfig {
    husk_runtime::sandboxes::config(&SandboxSpec::default(), &|_| None, None).unwrap_or_default()
}

/// Refuses a request whose micro-VMs need more memory than the host has
/// available (`available_mb`, from /proc/meminfo).
pub fn check_memory(
    requests: &[PoolRequest],
    template: &SandboxConfig,
    available_mb: u64,
) -> Result<(), PoolError> {
    for r in requests
        .iter()
        .filter(|r| r.backend == BackendKind::Microvm)
    {
        let need_mb = r.size as u64 * (u64::from(template.memory_mb) + MICROVM_OVERHEAD_MB);
        if need_mb > available_mb {
            return Err(PoolError::Memory {
                count: r.size,
                guest_mb: template.memory_mb,
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
    let template = template();
    if let Some(available) = host_available_mb() {
        check_memory(requests, &template, available)?;
    }
    let mut pools = Vec::new();
    for r in requests.iter().filter(|r| r.size > 0) {
        let choice = match r.backend {
            BackendKind::Namespace => BackendChoice::Namespace,
            BackendKind::Microvm => BackendChoice::Microvm,
        };
        let progress = |line: &str| tracing::info!("pool {}: {line}", r.backend);
        let selected = husk_sandbox::select(choice, AccelChoice::Auto, &progress)
            .await
            .map_err(|e| PoolError::Backend {
                backend: r.backend.to_string(),
                reason: e.to_string(),
            })?;
        let options = PoolOptions {
            target: r.size,
            idle_limit,
        };
        pools.push(Pool::start(selected.backend, template.clone(), options));
    }
    Ok(Pools::new(pools))
}

/// A pool in `/v1/health`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PoolHealth {
    /// `namespace` or `microvm`.
    pub backend: String,
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
            .map(|s| (format!("{{backend=\"{}\"}}", s.backend), f(s)))
            .collect::<Vec<_>>()
    };
    family(
        "husk_pool_target",
        "gauge",
        "Sandboxes the warm pool keeps ready.",
        per_pool(&|s| s.target as u64),
    );
    family(
        "husk_pool_ready",
        "gauge",
        "Ready sandboxes in the warm pool.",
        per_pool(&|s| s.ready as u64),
    );
    family(
        "husk_pool_starting",
        "gauge",
        "Sandboxes the warm pool is starting.",
        per_pool(&|s| s.starting as u64),
    );
    family(
        "husk_pool_claims_total",
        "counter",
        "Stages served a ready sandbox.",
        per_pool(&|s| s.claims),
    );
    family(
        "husk_pool_misses_total",
        "counter",
        "Fitting stages that found the pool empty.",
        per_pool(&|s| s.misses),
    );
    family(
        "husk_pool_started_total",
        "counter",
        "Sandboxes the pool started.",
        per_pool(&|s| s.started),
    );
    family(
        "husk_pool_failed_total",
        "counter",
        "Pool starts that failed.",
        per_pool(&|s| s.failed),
    );
    family(
        "husk_pool_recycled_total",
        "counter",
        "Ready sandboxes replaced (idle or dead).",
        per_pool(&|s| s.recycled),
    );
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
                    size: 2
                },
                PoolRequest {
                    backend: BackendKind::Namespace,
                    size: 4
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
        let t = SandboxConfig {
            memory_mb: 1024,
            ..SandboxConfig::default()
        };
        let req = parse("microvm=3,namespace=50").unwrap();
        assert!(check_memory(&req, &t, 4000).is_ok());
        let e = check_memory(&req, &t, 3000).unwrap_err().to_string();
        assert!(
            e.contains("need 3264 MiB") && e.contains("3000 MiB available"),
            "{e}"
        );
    }

    #[test]
    fn the_template_is_what_a_default_spec_gets() {
        let t = template();
        assert!(t.mounts.is_empty() && t.env.is_empty() && t.rootfs.is_none());
        assert_eq!(t.memory_mb, husk_spec::SandboxSpec::default().memory_mb);
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
