//! `sandbox.network`: what a sandbox may reach, and the allowlist entries
//! of the `allow` mode.
//!
//! Entries are host names, not addresses: the policy proxy checks the name
//! a client asks for (and the TLS SNI it sends), so an IP literal, a URL or
//! a misplaced wildcard could never match what the proxy sees and is
//! refused here, with the reason, instead of silently allowing nothing.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Most entries in one allowlist.
pub const MAX_ALLOW_ENTRIES: usize = 256;
/// Longest host name (DNS: 253 characters without the trailing dot).
pub const MAX_HOST_LEN: usize = 253;

/// The network a sandbox gets. The same on every backend: the sandbox has
/// no network device of its own and reaches out (if at all) only through
/// the run's policy proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetworkSpec {
    /// `false` / `none`: loopback only (the default).
    #[default]
    None,
    /// `{allow: [...]}`: egress only to these names.
    Allow(Vec<AllowEntry>),
    /// `true` / `open`: any host, except the host husk runs on.
    Open,
}

impl NetworkSpec {
    /// `none`, `allow` or `open`.
    pub fn mode_name(&self) -> &'static str {
        match self {
            NetworkSpec::None => "none",
            NetworkSpec::Allow(_) => "allow",
            NetworkSpec::Open => "open",
        }
    }

    /// Whether the sandbox may reach anything beyond its own loopback.
    pub fn is_enabled(&self) -> bool {
        !matches!(self, NetworkSpec::None)
    }

    /// Whether a connection to `host:port` is within this policy by name
    /// (open mode still refuses the host's own addresses; that is checked
    /// where names are resolved).
    pub fn allows(&self, host: &str, port: u16) -> bool {
        match self {
            NetworkSpec::None => false,
            NetworkSpec::Allow(entries) => entries.iter().any(|e| e.matches(host, port)),
            NetworkSpec::Open => true,
        }
    }
}

/// One allowlist entry: `host`, `*.domain`, either with `:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AllowEntry {
    /// Lower-case host name; for a wildcard, the domain after `*.`.
    pub host: String,
    /// `*.domain`: any name strictly below `domain` (not `domain` itself).
    pub wildcard: bool,
    /// Only this port; `None`: any port.
    pub port: Option<u16>,
}

impl AllowEntry {
    /// Parses an entry; the error says what is wrong and what is allowed.
    pub fn parse(s: &str) -> Result<AllowEntry, String> {
        const ALLOWED: &str =
            "entries are host names (`api.example.com`), `*.example.com`, or either with `:PORT`";
        if s.trim().is_empty() {
            return Err(format!("an empty entry; {ALLOWED}"));
        }
        if s.contains("://") || s.contains('/') {
            return Err(format!(
                "`{s}` is a URL or a path, not a host name; write the host alone (e.g. `{}`); {ALLOWED}",
                url_host(s)
            ));
        }
        if s.parse::<std::net::IpAddr>().is_ok() || s.starts_with('[') {
            return Err(format!(
                "`{s}` is an IP address; the proxy checks names, so name the host; {ALLOWED}"
            ));
        }
        let (name, port) = match s.rsplit_once(':') {
            Some((name, p)) => (name, Some(parse_port(s, p)?)),
            None => (s, None),
        };
        if name.parse::<std::net::Ipv4Addr>().is_ok() {
            return Err(format!(
                "`{s}` is an IP address; the proxy checks names, so name the host; {ALLOWED}"
            ));
        }
        let (wildcard, host) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, name),
        };
        if host.contains('*') {
            return Err(format!(
                "`{s}`: a wildcard is allowed only as a whole first label (`*.example.com`); {ALLOWED}"
            ));
        }
        check_host(s, host)?;
        if wildcard && !host.contains('.') {
            return Err(format!(
                "`{s}` matches a whole top-level domain; a wildcard needs at least two labels after `*.` (`*.example.com`)"
            ));
        }
        Ok(AllowEntry {
            host: host.to_ascii_lowercase(),
            wildcard,
            port,
        })
    }

    /// Whether `host:port` (as a client asked for it) is allowed by this
    /// entry. Names compare without letter case and without a trailing dot.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        }
    }
}

fn parse_port(entry: &str, p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(port) if port > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        _ => Err(format!(
            "`{entry}`: the port `{p}` is not a number from 1 to 65535"
        )),
    }
}

/// RFC 1123 host name rules, with a message naming the broken rule.
fn check_host(entry: &str, host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err(format!("`{entry}` has no host name"));
    }
    if host.len() > MAX_HOST_LEN {
        return Err(format!(
            "`{entry}`: a host name is at most {MAX_HOST_LEN} characters"
        ));
    }
    let labels: Vec<&str> = host.split('.').collect();
    for label in &labels {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "`{entry}`: each dot-separated label must be 1 to 63 characters (no empty label, no trailing dot)"
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "`{entry}`: a host name has only letters, digits, `-` and `.`"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("`{entry}`: a label must not start or end with `-`"));
        }
    }
    if labels.len() > 1
        && labels
            .last()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "`{entry}` looks like an IP address (its last label is all digits); name the host"
        ));
    }
    Ok(())
}

/// The host part of something that looks like a URL, for the hint.
fn url_host(s: &str) -> &str {
    let rest = s.split_once("://").map_or(s, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or(rest);
    if host.is_empty() {
        "api.example.com"
    } else {
        host
    }
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// Records show `"none"`, `"open"` or `{"allow": ["host", …]}`.
impl Serialize for NetworkSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            NetworkSpec::None => s.serialize_str("none"),
            NetworkSpec::Open => s.serialize_str("open"),
            NetworkSpec::Allow(entries) => {
                let list: Vec<String> = entries.iter().map(ToString::to_string).collect();
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("allow", &list)?;
                m.end()
            }
        }
    }
}

/// Reads what [`Serialize`] writes, and the booleans of records written
/// before the modes existed (`false` → none, `true` → open).
impl<'de> Deserialize<'de> for NetworkSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Word(String),
            Allow { allow: Vec<String> },
        }
        use serde::de::Error;
        match Raw::deserialize(d)? {
            Raw::Bool(false) => Ok(NetworkSpec::None),
            Raw::Bool(true) => Ok(NetworkSpec::Open),
            Raw::Word(w) => match w.as_str() {
                "none" => Ok(NetworkSpec::None),
                "open" => Ok(NetworkSpec::Open),
                other => Err(D::Error::custom(format!(
                    "unknown network mode `{other}` (none, open or {{allow: [...]}})"
                ))),
            },
            Raw::Allow { allow } => allow
                .iter()
                .map(|e| AllowEntry::parse(e))
                .collect::<Result<Vec<_>, _>>()
                .map(NetworkSpec::Allow)
                .map_err(D::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        AllowEntry::parse(s).unwrap_err()
    }

    #[test]
    fn entries() {
        let e = AllowEntry::parse("API.Example.com:443").unwrap();
        assert_eq!(
            e,
            AllowEntry {
                host: "api.example.com".into(),
                wildcard: false,
                port: Some(443)
            }
        );
        assert_eq!(e.to_string(), "api.example.com:443");
        let w = AllowEntry::parse("*.example.com").unwrap();
        assert!(w.wildcard && w.port.is_none());
        assert!(AllowEntry::parse("localhost").is_ok());
        assert!(
            err("https://api.example.com/v1")
                .contains("write the host alone (e.g. `api.example.com`)")
        );
        assert!(err("example.com/x").contains("URL or a path"));
        assert!(err("127.0.0.1").contains("IP address"));
        assert!(err("127.0.0.1:80").contains("IP address"));
        assert!(err("::1").contains("IP address"));
        assert!(err("[::1]:443").contains("IP address"));
        assert!(err("10.1").contains("looks like an IP address"));
        assert!(err("api.*.com").contains("whole first label"));
        assert!(err("*api.com").contains("whole first label"));
        assert!(err("*").contains("whole first label"));
        assert!(err("*.com").contains("top-level domain"));
        assert!(err("a..b").contains("1 to 63"));
        assert!(err("a.b.").contains("trailing dot"));
        assert!(err("a_b.com").contains("letters, digits"));
        assert!(err("-a.com").contains("start or end"));
        assert!(err("a.com:0").contains("1 to 65535"));
        assert!(err("a.com:+80").contains("1 to 65535"));
        assert!(err("a.com:99999").contains("1 to 65535"));
        assert!(err(":80").contains("no host name"));
        assert!(err(" ").contains("empty entry"));
        assert!(err(&format!("{}.com", "a".repeat(64))).contains("1 to 63"));
    }

    #[test]
    fn matching() {
        let exact = AllowEntry::parse("api.example.com").unwrap();
        assert!(exact.matches("api.example.com", 443));
        assert!(exact.matches("API.example.com.", 80));
        assert!(!exact.matches("x.api.example.com", 443));
        assert!(!exact.matches("example.com", 443));
        let port = AllowEntry::parse("api.example.com:443").unwrap();
        assert!(port.matches("api.example.com", 443));
        assert!(!port.matches("api.example.com", 22));
        let w = AllowEntry::parse("*.example.com").unwrap();
        assert!(w.matches("a.example.com", 1));
        assert!(w.matches("a.b.example.com", 1));
        assert!(!w.matches("example.com", 1));
        assert!(!w.matches("badexample.com", 1));
        assert!(!w.matches(".example.com", 1));
    }

    #[test]
    fn serde_round_trip_and_old_booleans() {
        for n in [
            NetworkSpec::None,
            NetworkSpec::Open,
            NetworkSpec::Allow(vec![AllowEntry::parse("*.a.com:1").unwrap()]),
        ] {
            let j = serde_json::to_value(&n).unwrap();
            assert_eq!(serde_json::from_value::<NetworkSpec>(j).unwrap(), n);
        }
        assert_eq!(
            serde_json::to_value(NetworkSpec::Allow(vec![
                AllowEntry::parse("a.com").unwrap()
            ]))
            .unwrap(),
            serde_json::json!({"allow": ["a.com"]})
        );
        assert_eq!(
            serde_json::from_str::<NetworkSpec>("true").unwrap(),
            NetworkSpec::Open
        );
        assert_eq!(
            serde_json::from_str::<NetworkSpec>("false").unwrap(),
            NetworkSpec::None
        );
        assert!(serde_json::from_str::<NetworkSpec>(r#"{"allow":["1.2.3.4"]}"#).is_err());
    }
}
