//! The policy: which names a run may reach, and (open mode) which
//! addresses it never may.

use std::net::{IpAddr, SocketAddr};

use crate::event::DenyReason;

/// What the proxy lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// Nothing but the model route.
    Deny,
    /// Only names matching one of the rules; they may resolve anywhere
    /// (naming a host is the spec author's decision).
    Allow(Vec<Rule>),
    /// Any name or address, except those of the host itself.
    Open,
}

/// One allowlist rule, as `husk_spec::AllowEntry` parses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Lower case; for a wildcard, the domain after `*.`.
    pub host: String,
    /// Any name strictly below `host`.
    pub wildcard: bool,
    /// Only this port; `None`: any.
    pub port: Option<u16>,
}

impl Rule {
    fn name_matches(&self, host: &str) -> bool {
        if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        }
    }
}

/// A host as a client wrote it, compared without case, brackets or a
/// trailing dot.
pub(crate) fn normalize(host: &str) -> String {
    let h = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase()
}

impl Policy {
    /// Whether `host:port` is allowed by name. `host` is normalized.
    pub fn check(&self, host: &str, port: u16) -> Result<(), DenyReason> {
        match self {
            Policy::Deny => Err(DenyReason::NoNetwork),
            Policy::Open => Ok(()),
            Policy::Allow(rules) => {
                let named: Vec<&Rule> = rules.iter().filter(|r| r.name_matches(host)).collect();
                if named.is_empty() {
                    Err(DenyReason::HostNotAllowed)
                } else if named.iter().any(|r| r.port.is_none_or(|p| p == port)) {
                    Ok(())
                } else {
                    Err(DenyReason::PortNotAllowed)
                }
            }
        }
    }
}

/// Whether `ip` belongs to the machine itself: loopback, unspecified,
/// `0.0.0.0/8`, link-local, multicast, broadcast, or an address of one of
/// its interfaces (`local`).
pub fn is_host_address(ip: IpAddr, local: &[IpAddr]) -> bool {
    let ip = ip.to_canonical();
    let special = match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_unspecified()
                || v4.octets()[0] == 0
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    };
    special || local.iter().any(|l| l.to_canonical() == ip)
}

/// The addresses of this machine's interfaces (empty if they cannot be
/// listed; loopback and the like are refused regardless).
fn local_addresses() -> Vec<IpAddr> {
    if_addrs::get_if_addrs()
        .map(|ifs| ifs.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default()
}

/// Why a name could not be turned into addresses to connect to.
pub(crate) enum Unusable {
    Denied(DenyReason),
    Failed(String),
}

/// Resolves `host:port` on the host; in open mode, drops the host's own
/// addresses (and refuses when none is left).
pub(crate) async fn resolve(
    policy: &Policy,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, Unusable> {
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Unusable::Failed(format!("cannot resolve {host}: {e}")))?
            .collect(),
    };
    if *policy != Policy::Open {
        return Ok(addrs);
    }
    let local = local_addresses();
    let outside: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| !is_host_address(a.ip(), &local))
        .collect();
    if outside.is_empty() {
        return Err(Unusable::Denied(DenyReason::HostAddress));
    }
    Ok(outside)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(host: &str, wildcard: bool, port: Option<u16>) -> Rule {
        Rule {
            host: host.into(),
            wildcard,
            port,
        }
    }

    #[test]
    fn names_and_ports() {
        let p = Policy::Allow(vec![
            rule("a.com", false, Some(443)),
            rule("b.com", true, None),
        ]);
        assert_eq!(p.check("a.com", 443), Ok(()));
        assert_eq!(p.check("a.com", 80), Err(DenyReason::PortNotAllowed));
        assert_eq!(p.check("x.a.com", 443), Err(DenyReason::HostNotAllowed));
        assert_eq!(p.check("x.b.com", 1), Ok(()));
        assert_eq!(p.check("b.com", 1), Err(DenyReason::HostNotAllowed));
        assert_eq!(p.check("xb.com", 1), Err(DenyReason::HostNotAllowed));
        assert_eq!(Policy::Deny.check("a.com", 443), Err(DenyReason::NoNetwork));
        assert_eq!(Policy::Open.check("anything", 1), Ok(()));
        assert_eq!(normalize("[::1]"), "::1");
        assert_eq!(normalize("A.Com."), "a.com");
    }

    #[test]
    fn host_addresses() {
        let local: Vec<IpAddr> = vec!["192.0.2.7".parse().unwrap()];
        for a in [
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "169.254.1.1",
            "fe80::1",
            "224.0.0.1",
            "255.255.255.255",
            "::ffff:127.0.0.1",
            "192.0.2.7",
            "::ffff:192.0.2.7",
        ] {
            assert!(is_host_address(a.parse().unwrap(), &local), "{a}");
        }
        for a in ["192.0.2.8", "10.253.0.2", "2001:db8::1"] {
            assert!(!is_host_address(a.parse().unwrap(), &local), "{a}");
        }
    }

    #[tokio::test]
    async fn open_mode_refuses_the_host_by_name() {
        let r = resolve(&Policy::Open, "localhost", 80).await;
        assert!(matches!(r, Err(Unusable::Denied(DenyReason::HostAddress))));
        let r = resolve(&Policy::Open, "127.0.0.1", 80).await;
        assert!(matches!(r, Err(Unusable::Denied(DenyReason::HostAddress))));
        // In allow mode a named host may be anywhere, loopback included.
        let allow = Policy::Allow(vec![rule("localhost", false, None)]);
        assert!(resolve(&allow, "localhost", 80).await.is_ok());
    }
}
