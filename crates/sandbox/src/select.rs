//! Choosing a backend: `auto` uses a micro-VM when KVM really works (a probe
//! VM boots under it) and otherwise namespaces; the choice and its reason
//! are reported so runs can record them. A micro-VM under TCG is only used
//! when asked for explicitly: it is correct but slow.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BackendKind, SandboxConfig};
use crate::error::Result;
use crate::microvm::{Accel, AccelChoice, MicrovmBackend};
use crate::namespace::NamespaceBackend;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    #[default]
    Auto,
    Namespace,
    Microvm,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "namespace" => Ok(BackendChoice::Namespace),
            "microvm" => Ok(BackendChoice::Microvm),
            other => Err(format!(
                "unknown backend {other:?} (expected auto, namespace or microvm)"
            )),
        }
    }
}

/// A backend and why it was picked.
pub struct Selected {
    pub backend: Arc<dyn Backend>,
    pub kind: BackendKind,
    pub reason: String,
}

/// Resolves a choice to a backend that can run here, for sandboxes like
/// `config` (what a micro-VM start will cost depends on it). `progress`
/// receives one line per slow step (image build, KVM probe) and warnings.
pub async fn select(
    choice: BackendChoice,
    accel: AccelChoice,
    config: &SandboxConfig,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Selected> {
    match choice {
        BackendChoice::Namespace => namespace("asked for".into()),
        BackendChoice::Microvm => {
            let vm = MicrovmBackend::shared(accel, progress).await?;
            if vm.accel() == Accel::Tcg && accel == AccelChoice::Auto {
                progress(&tcg_warning(&vm, config));
            }
            let reason = format!(
                "asked for; accelerator {} ({})",
                vm.accel().as_str(),
                vm.accel_reason()
            );
            Ok(Selected {
                backend: vm,
                kind: BackendKind::Microvm,
                reason,
            })
        }
        BackendChoice::Auto => auto(progress).await,
    }
}

async fn auto(progress: &(dyn Fn(&str) + Sync)) -> Result<Selected> {
    let kvm = crate::host::kvm_device();
    if !kvm.present || !kvm.accessible {
        return namespace("auto: KVM is not available (no usable /dev/kvm)".into());
    }
    if let Some((Accel::Tcg, reason)) = crate::microvm::cached_kvm_verdict() {
        return namespace(format!("auto: {reason}"));
    }
    match MicrovmBackend::shared(AccelChoice::Auto, progress).await {
        Ok(vm) if vm.accel() == Accel::Kvm => {
            let reason = format!("auto: KVM works ({})", vm.accel_reason());
            Ok(Selected {
                backend: vm,
                kind: BackendKind::Microvm,
                reason,
            })
        }
        Ok(vm) => namespace(format!("auto: {}", vm.accel_reason())),
        Err(e) => {
            progress(&format!("micro-VM backend unavailable: {e}"));
            namespace(format!("auto: micro-VM backend unavailable: {e}"))
        }
    }
}

/// The warning for a micro-VM under TCG. What a start costs depends on
/// whether it restores a snapshot (a fraction of a second) or boots the
/// kernel (seconds), so it says which one `config` gets and, for a boot
/// without a snapshot, the command that saves one.
fn tcg_warning(vm: &MicrovmBackend, config: &SandboxConfig) -> String {
    let start = if vm.has_snapshot(config) {
        "starts restore a saved snapshot, but code in the guest runs several times slower than under KVM"
            .to_string()
    } else if config.cold_boot {
        "a cold boot takes seconds".to_string()
    } else if crate::microvm::snapshot::eligible(config).is_ok() {
        format!(
            "with no saved snapshot for this size each start boots the kernel, \
             which takes seconds (`{}` saves one)",
            snapshot_command(config)
        )
    } else {
        "sandboxes with a root file system boot the kernel, which takes seconds".to_string()
    };
    format!(
        "warning: micro-VMs run under TCG software emulation ({}); {start}",
        vm.accel_reason()
    )
}

/// `husk image build` with the options that save `config`'s snapshot.
fn snapshot_command(config: &SandboxConfig) -> String {
    let d = SandboxConfig::default();
    let mut cmd = "husk image build".to_string();
    for (flag, value, default) in [
        ("--memory", config.memory_mb, d.memory_mb),
        ("--cpus", config.vcpus, d.vcpus),
        ("--disk", config.disk_mb, d.disk_mb),
    ] {
        if value != default {
            cmd.push_str(&format!(" {flag} {value}"));
        }
    }
    cmd
}

fn namespace(reason: String) -> Result<Selected> {
    Ok(Selected {
        backend: Arc::new(NamespaceBackend::new()?),
        kind: BackendKind::Namespace,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_command_names_only_what_differs_from_the_default() {
        let d = SandboxConfig::default();
        assert_eq!(snapshot_command(&d), "husk image build");
        let c = SandboxConfig {
            memory_mb: 2048,
            disk_mb: 4096,
            ..d.clone()
        };
        assert_eq!(
            snapshot_command(&c),
            "husk image build --memory 2048 --disk 4096"
        );
        let c = SandboxConfig { vcpus: 2, ..d };
        assert_eq!(snapshot_command(&c), "husk image build --cpus 2");
    }
}
