//! Choosing a backend: `auto` uses a micro-VM when KVM really works (a probe
//! VM boots under it) and otherwise namespaces; the choice and its reason
//! are reported so runs can record them. A micro-VM under TCG is only used
//! when asked for explicitly: it is correct but slow.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BackendKind};
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

/// Resolves a choice to a backend that can run here. `progress` receives
/// one line per slow step (image build, KVM probe).
pub async fn select(
    choice: BackendChoice,
    accel: AccelChoice,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Selected> {
    match choice {
        BackendChoice::Namespace => namespace("asked for".into()),
        BackendChoice::Microvm => {
            let vm = MicrovmBackend::shared(accel, progress).await?;
            if vm.accel() == Accel::Tcg && accel == AccelChoice::Auto {
                progress(&format!(
                    "warning: micro-VMs run under TCG software emulation ({}); expect boots of a few seconds",
                    vm.accel_reason()
                ));
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

fn namespace(reason: String) -> Result<Selected> {
    Ok(Selected {
        backend: Arc::new(NamespaceBackend::new()?),
        kind: BackendKind::Namespace,
        reason,
    })
}
