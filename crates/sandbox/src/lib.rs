//! husk sandboxes.
//!
//! A [`Backend`] starts a [`Sandbox`]: an isolated environment whose PID 1
//! is the husk guest agent. The host talks to the guest through a
//! [`Client`] over the husk protocol; everything a sandbox can do (exec,
//! files, detached processes) goes through it, so backends differ only in
//! how they create the isolation and the control channel.
//!
//! Backends: [`namespace::NamespaceBackend`] (husk's own launcher, or
//! bubblewrap). The micro-VM
//! backend plugs into the same trait.

pub mod backend;
pub mod client;
pub mod error;
pub mod guest_bin;
pub mod host;
pub mod microvm;
pub mod namespace;
pub mod pool;
mod root_open;
pub mod select;
pub mod shared_tools;
mod spawner;
mod stderr;
pub mod tunnel;

pub use backend::{
    Backend, BackendKind, BootPath, Mount, Origin, Sandbox, SandboxConfig, SandboxControl,
    SandboxInfo, ToolDelivery,
};
pub use client::{Client, ListenEvent, Listener, Output, Process, ProcessEvent};
pub use error::{Result, SandboxError};
pub use husk_protocol as protocol;
pub use select::{BackendChoice, Selected, select};
