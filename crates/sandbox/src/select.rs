//! Choosing a backend: `auto` prefers a micro-VM when KVM really works and
//! otherwise uses namespaces; the choice and its reason are reported so
//! runs can record them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BackendKind};
use crate::error::{Result, SandboxError};
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

/// Resolves a choice to a backend that can run here.
pub fn select(choice: BackendChoice) -> Result<Selected> {
    match choice {
        BackendChoice::Namespace => namespace("asked for"),
        BackendChoice::Microvm => Err(microvm_unavailable()),
        BackendChoice::Auto => {
            namespace("auto: the micro-VM backend is not available in this build")
        }
    }
}

fn namespace(reason: &str) -> Result<Selected> {
    Ok(Selected {
        backend: Arc::new(NamespaceBackend::new()?),
        kind: BackendKind::Namespace,
        reason: reason.into(),
    })
}

fn microvm_unavailable() -> SandboxError {
    SandboxError::Unavailable {
        backend: "microvm",
        reason: "this build of husk has no micro-VM backend yet; use --backend namespace".into(),
    }
}
