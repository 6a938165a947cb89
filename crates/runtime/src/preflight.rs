//! Checks made before a stage's sandbox starts, so that a run that cannot
//! work fails at once with a message naming the problem, instead of an
//! agent retrying a dead endpoint until its timeout.

use std::net::ToSocketAddrs;
use std::time::Duration;

use husk_spec::NetworkSpec;

use crate::agents::AgentKind;
use crate::error::RunError;
use crate::provision::AgentChoice;

/// How long the host waits for a model endpoint to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A model CLI needs the network to reach its API (the scripted test agent
/// and plain commands do not): networking off fails the run, and so does an
/// allowlist without the model API's host (`upstream`, its base URL as the
/// host sees it).
pub fn network_needed(
    agent: &AgentChoice,
    network: &NetworkSpec,
    upstream: Option<&str>,
) -> Result<(), RunError> {
    let model_cli = matches!(agent.kind, AgentKind::ClaudeCode | AgentKind::Codex)
        && agent.program != "husk-test-agent";
    if !model_cli {
        return Ok(());
    }
    let program = &agent.program;
    match network {
        NetworkSpec::None => Err(RunError::Provision(format!(
            "the agent `{program}` must reach its model API, but the sandbox has no network; \
             set `sandbox.network` to `{{allow: [MODEL_HOST]}}` or `open`"
        ))),
        NetworkSpec::Open => Ok(()),
        NetworkSpec::Allow(_) => {
            let Some(url) = upstream else { return Ok(()) };
            let (host, port) = host_port(url).ok_or_else(|| {
                RunError::Provision(format!(
                    "the model API URL {url:?} is not an http:// or https:// URL with a host"
                ))
            })?;
            if host.parse::<std::net::IpAddr>().is_ok() {
                return Err(RunError::Provision(format!(
                    "the model API {url} is addressed by IP, but an allowlist holds host names; \
                     use a name in the URL (e.g. `localhost` for 127.0.0.1) and allow it"
                )));
            }
            if network.allows(&host, port) {
                Ok(())
            } else {
                Err(RunError::Provision(format!(
                    "the agent `{program}` must reach its model API {url}, but `{host}:{port}` \
                     is not in sandbox.network.allow; add `{host}`"
                )))
            }
        }
    }
}

/// `llm.base_url`, when given, must accept a TCP connection from this
/// host (namespace sandboxes with network share the host's).
pub async fn endpoint_reachable(base_url: Option<&str>) -> Result<(), RunError> {
    let Some(url) = base_url else { return Ok(()) };
    let (host, port) = host_port(url).ok_or_else(|| {
        RunError::Provision(format!(
            "llm.base_url {url:?} is not an http:// or https:// URL with a host"
        ))
    })?;
    let unreachable =
        |why: String| RunError::Provision(format!("model endpoint {url} is unreachable: {why}"));
    let target = format!("{host}:{port}");
    let addrs: Vec<_> = tokio::task::spawn_blocking(move || {
        target.to_socket_addrs().map(Iterator::collect::<Vec<_>>)
    })
    .await
    .map_err(|e| unreachable(e.to_string()))?
    .map_err(|e| unreachable(format!("cannot resolve {host}: {e}")))?;
    let mut last = String::from("no address");
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => last = format!("{addr}: {e}"),
            Err(_) => last = format!("{addr}: no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        }
    }
    Err(unreachable(last))
}

/// `http://host:port/path` → (host, port), with the scheme's default port.
fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let default = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?.rsplit('@').next()?;
    if authority.is_empty() {
        return None;
    }
    if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        let port = after
            .strip_prefix(':')
            .map_or(Some(default), |p| p.parse().ok())?;
        return Some((h.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((authority.to_string(), default)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            host_port("http://127.0.0.1:8080/v1"),
            Some(("127.0.0.1".into(), 8080))
        );
        assert_eq!(
            host_port("https://api.example.com"),
            Some(("api.example.com".into(), 443))
        );
        assert_eq!(host_port("http://[::1]:9/x"), Some(("::1".into(), 9)));
        assert_eq!(host_port("http://user@h:81"), Some(("h".into(), 81)));
        assert_eq!(host_port("ftp://h"), None);
        assert_eq!(host_port("http://"), None);
        assert_eq!(host_port("http://h:notaport"), None);
    }

    #[tokio::test]
    async fn a_closed_port_is_named() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(
            endpoint_reachable(Some(&format!("http://127.0.0.1:{port}")))
                .await
                .is_ok()
        );
        drop(l);
        let e = endpoint_reachable(Some(&format!("http://127.0.0.1:{port}/v1")))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!(
                "model endpoint http://127.0.0.1:{port}/v1 is unreachable"
            )),
            "{e}"
        );
    }

    #[test]
    fn model_clis_need_the_network() {
        let a = |kind, program: &str| AgentChoice {
            kind,
            program: program.into(),
            host_path: None,
            companions: Vec::new(),
        };
        let claude = a(AgentKind::ClaudeCode, "claude");
        let api = Some("https://api.anthropic.com");
        let none = NetworkSpec::None;
        assert!(
            network_needed(&claude, &none, api)
                .unwrap_err()
                .to_string()
                .contains("set `sandbox.network` to `{allow: [MODEL_HOST]}` or `open`")
        );
        assert!(network_needed(&claude, &NetworkSpec::Open, api).is_ok());
        assert!(network_needed(&a(AgentKind::ClaudeCode, "husk-test-agent"), &none, api).is_ok());
        assert!(network_needed(&a(AgentKind::Command, "x"), &none, None).is_ok());
        let allow = |e: &[&str]| {
            NetworkSpec::Allow(
                e.iter()
                    .map(|s| husk_spec::AllowEntry::parse(s).unwrap())
                    .collect(),
            )
        };
        assert!(network_needed(&claude, &allow(&["api.anthropic.com"]), api).is_ok());
        assert!(network_needed(&claude, &allow(&["*.anthropic.com:443"]), api).is_ok());
        let e = network_needed(&claude, &allow(&["pypi.org"]), api)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "`api.anthropic.com:443` is not in sandbox.network.allow; add `api.anthropic.com`"
            ),
            "{e}"
        );
        assert!(network_needed(&claude, &allow(&["api.anthropic.com:80"]), api).is_err());
        let e = network_needed(&claude, &allow(&["localhost"]), Some("http://127.0.0.1:9"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("addressed by IP"), "{e}");
        assert!(
            network_needed(&claude, &allow(&["localhost"]), Some("http://localhost:9")).is_ok()
        );
    }
}
