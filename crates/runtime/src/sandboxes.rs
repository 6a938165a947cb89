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
use crate::events::{Emitter, Scope};

/// Which backend a spec's mode asks for.
pub fn backend_choice(mode: &SandboxMode) -> BackendChoice {
    match mode {
        SandboxMode::Auto => BackendChoice::Auto,
        SandboxMode::Microvm => BackendChoice::Microvm,
        SandboxMode::Namespace { .. } => BackendChoice::Namespace,
    }
}

/// The sandbox configuration of a spec. `host_env` looks up host
/// variables (injectable for tests).
pub fn config(
    spec: &SandboxSpec,
    host_env: &dyn Fn(&str) -> Option<String>,
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
        env.push((name.clone(), value));
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
        network: spec.network,
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
) -> Result<Started, RunError> {
    let mut config = config(spec, &|n| std::env::var(n).ok())?;
    let (backend, description) = match given {
        Some(b) => (b.clone(), format!("{} (given by the caller)", b.kind())),
        None => {
            let progress_em = emitter.clone();
            let progress_scope = scope.clone();
            let progress = move |line: &str| {
                progress_em.info("sandbox.progress", &progress_scope, line.to_string());
            };
            let selected =
                husk_sandbox::select(backend_choice(&spec.mode), AccelChoice::Auto, &progress)
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
    let sandbox = backend.start(&config).await?;
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
        let c = config(&spec, &|n| (n == "A").then(|| "from-host".to_string())).unwrap();
        assert_eq!(
            c.env,
            vec![("A".into(), "from-host".into()), ("B".into(), "set".into())]
        );
        spec.env.insert("C".into(), "".into());
        let e = config(&spec, &|_| None).unwrap_err().to_string();
        assert!(e.contains("sandbox.env.A"), "{e}");
    }
}
