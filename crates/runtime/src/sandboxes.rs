//! From a spec's `sandbox` section to a running sandbox: backend choice
//! (recorded with its reason), limits, environment (an empty value takes
//! the host's variable), mounts and rootfs image.

use std::sync::Arc;

use husk_sandbox::microvm::AccelChoice;
use husk_sandbox::{
    Backend, BackendChoice, BackendKind, Mount, Sandbox, SandboxConfig, ToolDelivery,
};
use husk_spec::{MountMode, SandboxMode, SandboxSpec};

use crate::error::RunError;
use crate::events::{Emitter, Level, Scope};

/// Which backend a spec's mode asks for.
pub fn backend_choice(mode: &SandboxMode) -> BackendChoice {
    match mode {
        SandboxMode::Auto => BackendChoice::Auto,
        SandboxMode::Microvm => BackendChoice::Microvm,
        SandboxMode::Namespace { .. } => BackendChoice::Namespace,
    }
}

/// The sandbox configuration of a spec. `host_env` looks up host
/// variables (injectable for tests). `secret`: a model key the run's proxy
/// adds on the host; a variable that would carry it (`ANTHROPIC_API_KEY:
/// ""` takes the host's value) gets the placeholder instead.
///
/// The sandbox never gets a network device: what `sandbox.network`
/// allows goes through the run's proxy (see [`crate::network`]), whose
/// variables every process gets unless the spec sets them itself.
pub fn config(
    spec: &SandboxSpec,
    host_env: &dyn Fn(&str) -> Option<String>,
    secret: Option<&str>,
) -> Result<SandboxConfig, RunError> {
    let mut env = Vec::new();
    for (name, value) in &spec.env {
        let value = if value.is_empty() {
            host_env(name).ok_or_else(|| {
                RunError::Provision(format!(
                    "sandbox.env.{name} is empty, which means \"take the host's {name}\", but the host has no {name}"
                ))
            })?
        } else {
            value.clone()
        };
        let value = match secret {
            Some(k) if !k.is_empty() && value.contains(k) => {
                crate::network::PLACEHOLDER_KEY.to_string()
            }
            _ => value,
        };
        env.push((name.clone(), value));
    }
    // With networking off there is nothing to proxy to (the model route
    // is reached by its base URL), and tools that ignore NO_PROXY (busybox
    // wget) would send even the sidecar's requests to the proxy.
    if spec.network.is_enabled() {
        for (name, value) in crate::network::proxy_env() {
            if !spec.env.contains_key(&name) {
                env.push((name, value));
            }
        }
    }
    let mounts = spec
        .mounts
        .iter()
        .map(|m| Mount {
            host: m.host.clone().into(),
            guest: m.guest.clone(),
            writable: m.mode == MountMode::Rw,
        })
        .collect();
    Ok(SandboxConfig {
        memory_mb: spec.memory_mb,
        vcpus: spec.vcpus,
        network: false,
        env,
        mounts,
        rootfs: spec.image.as_ref().map(Into::into),
        disk_mb: spec
            .disk_mb
            .unwrap_or(husk_sandbox::backend::DEFAULT_DISK_MB),
        ..SandboxConfig::default()
    })
}

/// A started sandbox and how it was chosen.
pub struct Started {
    pub sandbox: Sandbox,
    /// e.g. `namespace (auto: KVM is not available …)`.
    pub description: String,
    /// It is a micro-VM (counted in the run's `active_microvm_count`).
    pub microvm: bool,
    /// The host tools are already in place (bind-mounted read-only, the
    /// backend's [`ToolDelivery::Mount`]); otherwise the caller copies them in.
    pub tools_mounted: bool,
}

/// A host binary that must appear in the sandbox at `guest`.
pub struct HostTool<'a> {
    pub host: &'a std::path::Path,
    pub guest: String,
}

/// Starts the sandbox of a stage on `given` (the run's backend, when the
/// caller chose one) or on the backend the spec's mode selects; slow steps
/// (image build, KVM probe) become `sandbox.progress` events. When the
/// backend mounts tools ([`ToolDelivery::Mount`]), `tools` are bind-mounted
/// read-only (no copy, however large: Claude Code's binary is ~380 MB);
/// otherwise the caller copies them.
pub async fn start(
    spec: &SandboxSpec,
    given: Option<&Arc<dyn Backend>>,
    emitter: &Arc<Emitter>,
    scope: &Scope,
    tools: &[HostTool<'_>],
    secret: Option<&str>,
    pools: &husk_sandbox::pool::Pools,
) -> Result<Started, RunError> {
    let mut config = config(spec, &|n| std::env::var(n).ok(), secret)?;
    let (backend, mut description) = match given {
        Some(b) => (b.clone(), format!("{} (given by the caller)", b.kind())),
        None => {
            let progress_em = emitter.clone();
            let progress_scope = scope.clone();
            let progress = move |line: &str| {
                progress_em.info("sandbox.progress", &progress_scope, line.to_string());
            };
            let selected = husk_sandbox::select(
                backend_choice(&spec.mode),
                AccelChoice::Auto,
                &config,
                &progress,
            )
            .await?;
            let description = format!("{} ({})", selected.kind.as_str(), selected.reason);
            (selected.backend, description)
        }
    };
    let tools_mounted = backend.tool_delivery() == ToolDelivery::Mount;
    if tools_mounted {
        for t in tools {
            let host = t
                .host
                .canonicalize()
                .unwrap_or_else(|_| t.host.to_path_buf());
            config.mounts.push(Mount {
                host,
                guest: t.guest.clone(),
                writable: false,
            });
        }
    }
    // A stage claims a ready sandbox from the warm pool kept for its
    // backend and configuration (the pool starts cold on a miss).
    let backend: Arc<dyn husk_sandbox::Backend> = match pools.fitting(backend.kind(), &config) {
        Some(pool) if given.is_none() => pool.clone(),
        _ => backend,
    };
    let sandbox = backend.start(&config).await?;
    if sandbox.origin() == husk_sandbox::Origin::Pool {
        description.push_str(", from the warm pool");
    }
    match &sandbox.info().boot {
        husk_sandbox::BootPath::Fresh => {}
        husk_sandbox::BootPath::Restored { .. } => {
            description.push_str(", restored from its snapshot")
        }
        husk_sandbox::BootPath::ColdFallback { reason } => {
            // Said in the run's events: a snapshot that could not be used
            // costs a whole boot, and the user should learn why.
            emitter.emit(
                Level::Warn,
                "sandbox.snapshot_unusable",
                scope,
                format!("snapshot not used, booted cold: {reason}"),
                Some(serde_json::json!({ "reason": reason })),
            );
            description.push_str(", booted cold (snapshot unusable)");
        }
    }
    Ok(Started {
        sandbox,
        description,
        microvm: backend.kind() == BackendKind::Microvm,
        tools_mounted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_env_values_come_from_the_host() {
        let mut spec = SandboxSpec::default();
        spec.env.insert("A".into(), "".into());
        spec.env.insert("B".into(), "set".into());
        let c = config(
            &spec,
            &|n| (n == "A").then(|| "from-host".to_string()),
            None,
        )
        .unwrap();
        assert_eq!(
            c.env[..2],
            [("A".into(), "from-host".into()), ("B".into(), "set".into())]
        );
        spec.env.insert("C".into(), "".into());
        let e = config(&spec, &|_| None, None).unwrap_err().to_string();
        assert!(e.contains("sandbox.env.A"), "{e}");
    }

    #[test]
    fn the_key_the_proxy_adds_never_enters_the_sandbox() {
        let mut spec = SandboxSpec::default();
        spec.env.insert("ANTHROPIC_API_KEY".into(), "".into());
        spec.env.insert("OTHER".into(), "Bearer sk-real".into());
        spec.env
            .insert("HTTPS_PROXY".into(), "http://mine:1".into());
        spec.network = husk_spec::NetworkSpec::Open;
        let c = config(&spec, &|_| Some("sk-real".to_string()), Some("sk-real")).unwrap();
        assert!(
            c.env.iter().all(|(_, v)| !v.contains("sk-real")),
            "{:?}",
            c.env
        );
        assert!(c.env.contains(&(
            "ANTHROPIC_API_KEY".into(),
            crate::network::PLACEHOLDER_KEY.into()
        )));
        // No network device, whatever the mode; the proxy variables are
        // set, except where the spec set its own, and only with a network.
        assert!(!c.network);
        assert!(
            c.env
                .contains(&("HTTPS_PROXY".into(), "http://mine:1".into()))
        );
        assert!(
            c.env
                .contains(&("HTTP_PROXY".into(), "http://127.0.0.1:3128".into()))
        );
        assert_eq!(c.env.iter().filter(|(k, _)| k == "HTTPS_PROXY").count(), 1);
        spec.network = husk_spec::NetworkSpec::None;
        let c = config(&spec, &|_| None, None).unwrap_err();
        assert!(c.to_string().contains("ANTHROPIC_API_KEY"));
        spec.env.clear();
        let c = config(&spec, &|_| None, None).unwrap();
        assert!(c.env.iter().all(|(k, _)| k != "HTTP_PROXY"), "{:?}", c.env);
    }
}
