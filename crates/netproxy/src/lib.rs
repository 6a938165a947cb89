//! A run's network policy proxy.
//!
//! husk sandboxes have no network device: whatever they reach beyond their
//! own loopback goes through this proxy, which runs on the host, one per
//! run, and is exposed inside the sandbox as a forwarded port (see
//! `husk_sandbox::tunnel`). It speaks three kinds of HTTP/1.1 request, all
//! parsed by hyper:
//!
//! - `CONNECT host:port`: a tunnel, allowed only when the [`Policy`]
//!   allows `host:port` by name; when the client then starts TLS, the SNI
//!   of its ClientHello (read with rustls) must name the same host, so a
//!   tunnel opened for an allowed name cannot carry a session for another.
//! - absolute-form `GET http://host/...`: plain HTTP forwarded under the
//!   same check, with `Host` set from the checked URL.
//! - origin-form `POST /v1/messages`: the model route. It forwards to the
//!   configured model API ([`ModelRoute`]) and puts the real API key on the
//!   request there, so the sandbox only ever holds a placeholder.
//!
//! Every decision is reported to the caller's sink as a [`NetEvent`] (host
//! and port, never payloads). Bad input (not HTTP, a port or name outside
//! the policy, a flood of connections) is answered with an error status
//! and an event; the proxy keeps serving. Limits are in [`Limits`] and
//! docs/network.md.

mod connect;
mod error;
mod event;
mod forward;
mod model;
mod policy;
mod server;
mod sni;

pub use error::ProxyError;
pub use event::{DenyReason, NetEvent, Via};
pub use model::{ModelAuth, ModelRoute};
pub use policy::{Policy, Rule, is_host_address};
pub use server::{Limits, Proxy};
