//! Checks made before a stage's sandbox starts, so that a run that cannot
//! work fails at once with a message naming the problem, instead of an
//! agent retrying a dead endpoint until its timeout.

use std::net::ToSocketAddrs;
use std::time::Duration;

use crate::agents::AgentKind;
use crate::error::RunError;
use crate::provision::AgentChoice;

/// How long the host waits for a model endpoint to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A model CLI needs the network to reach its API (the scripted test agent
/// and plain commands do not).
pub fn network_needed(agent: &AgentChoice, network: bool) -> Result<(), RunError> {
    let model_cli = matches!(agent.kind, AgentKind::ClaudeCode | AgentKind::Codex)
        && agent.program != "husk-test-agent";
    if model_cli && !network {
        return Err(RunError::Provision(format!(
            "the agent `{}` must reach its model API, but the sandbox has no network; set `sandbox.network: true`",
            agent.program
        )));
    }
    Ok(())
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
        assert!(
            network_needed(&a(AgentKind::ClaudeCode, "claude"), false)
                .unwrap_err()
                .to_string()
                .contains("sandbox.network: true")
        );
        assert!(network_needed(&a(AgentKind::ClaudeCode, "claude"), true).is_ok());
        assert!(network_needed(&a(AgentKind::ClaudeCode, "husk-test-agent"), false).is_ok());
        assert!(network_needed(&a(AgentKind::Command, "x"), false).is_ok());
    }
}
