//! What the proxy tells its owner: one event per decision, host and port
//! only (never a payload, a header or a key).

use std::fmt;

/// How an allowed connection went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A `CONNECT` tunnel.
    Connect,
    /// A plain HTTP request forwarded by the proxy.
    Http,
    /// The model route (credential added by the proxy).
    Model,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Connect => "connect",
            Via::Http => "http",
            Via::Model => "model",
        }
    }
}

/// Why a request or connection was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// Networking is off (`none`): only the model route is served.
    NoNetwork,
    /// The name is not in the allowlist.
    HostNotAllowed,
    /// The name is allowed, but not on this port.
    PortNotAllowed,
    /// Open mode: the name resolves only to the host's own addresses.
    HostAddress,
    /// The TLS ClientHello names another host than the CONNECT.
    SniMismatch { sni: String },
    /// After CONNECT, the client sent a TLS record that is no ClientHello.
    BadClientHello(String),
    /// The bytes received are not a usable HTTP/1.1 request.
    BadRequest(String),
    /// Too many connections are open at once.
    ConnectionLimit(usize),
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::NoNetwork => f.write_str("networking is off for this run (network: none)"),
            DenyReason::HostNotAllowed => f.write_str("the host is not in this run's allowlist"),
            DenyReason::PortNotAllowed => {
                f.write_str("the host is allowed, but not on this port")
            }
            DenyReason::HostAddress => f.write_str(
                "the host resolves to an address of the machine husk runs on, which sandboxes never reach",
            ),
            DenyReason::SniMismatch { sni } => write!(
                f,
                "the TLS ClientHello names `{sni}`, not the host of the CONNECT"
            ),
            DenyReason::BadClientHello(why) => write!(f, "not a valid TLS ClientHello: {why}"),
            DenyReason::BadRequest(why) => write!(f, "bad request: {why}"),
            DenyReason::ConnectionLimit(n) => {
                write!(f, "too many connections ({n} open); try again later")
            }
        }
    }
}

/// One decision of the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    Allowed {
        host: String,
        port: u16,
        via: Via,
    },
    Denied {
        /// `None` when the request named no host (garbage, flood).
        host: Option<String>,
        port: Option<u16>,
        reason: DenyReason,
    },
    /// Allowed, but the far end could not be reached.
    Failed {
        host: String,
        port: u16,
        why: String,
    },
    /// This many events were reported; further ones are dropped (the
    /// proxy keeps enforcing its policy).
    Suppressed {
        after: usize,
    },
}

impl NetEvent {
    /// `net.allowed`, `net.denied`, `net.failed`, `net.suppressed`.
    pub fn kind(&self) -> &'static str {
        match self {
            NetEvent::Allowed { .. } => "net.allowed",
            NetEvent::Denied { .. } => "net.denied",
            NetEvent::Failed { .. } => "net.failed",
            NetEvent::Suppressed { .. } => "net.suppressed",
        }
    }
}

impl fmt::Display for NetEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = |host: &Option<String>, port: &Option<u16>| match (host, port) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.clone(),
            _ => "(no host)".into(),
        };
        match self {
            NetEvent::Allowed { host, port, via } => {
                write!(f, "allowed {host}:{port} ({})", via.as_str())
            }
            NetEvent::Denied { host, port, reason } => {
                write!(f, "denied {}: {reason}", target(host, port))
            }
            NetEvent::Failed { host, port, why } => write!(f, "{host}:{port} failed: {why}"),
            NetEvent::Suppressed { after } => write!(
                f,
                "{after} network events reported; further ones are not (the policy still applies)"
            ),
        }
    }
}
