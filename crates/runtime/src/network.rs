//! A sandbox's network: the policy proxy (`husk_netproxy`) that is its
//! only way out, and the model credential that stays on the host.
//!
//! Sandboxes have no network device on either backend. Each one gets a
//! proxy of its own, on the host, in this process, reached through a
//! forwarded port (`127.0.0.1:`[`PROXY_PORT`] in the sandbox, protocol 3
//! like the messaging sidecar), and the usual proxy variables pointing at
//! it. The proxy enforces `sandbox.network` (none, allow, open).
//!
//! With Claude Code or Codex and a key on the host, the agent's model base
//! URL is the proxy too, and its key a placeholder: the proxy's model route
//! adds the real key on requests to the model API only. The key never
//! enters the sandbox (`llm.key_in_sandbox: true` opts out).

use std::sync::Arc;

use husk_netproxy::{Limits, ModelAuth, ModelRoute, NetEvent, Policy, Proxy, Rule};
use husk_sandbox::Sandbox;
use husk_sandbox::tunnel::Forward;
use husk_spec::{LlmSpec, NetworkSpec};
use serde_json::json;

use crate::agents::AgentKind;
use crate::error::RunError;
use crate::events::{Emitter, Level, Scope};
use crate::provision::AgentChoice;

/// The proxy's port inside the sandbox.
pub const PROXY_PORT: u16 = 3128;

/// The key the agent sees when the proxy adds the real one.
pub const PLACEHOLDER_KEY: &str = "husk-placeholder-the-proxy-adds-the-real-key";

/// `http://127.0.0.1:3128`: the proxy, and the model base URL agents get.
pub fn proxy_url() -> String {
    format!("http://127.0.0.1:{PROXY_PORT}")
}

/// The proxy variables every process in the sandbox gets (lower and
/// upper case: tools read either). The sandbox's own loopback addresses
/// (the sidecar, the model route) are not proxied; the name `localhost`
/// is, like every name: names are resolved by the proxy, on the host.
pub fn proxy_env() -> Vec<(String, String)> {
    let url = proxy_url();
    let no_proxy = "127.0.0.1,::1".to_string();
    vec![
        ("HTTP_PROXY".into(), url.clone()),
        ("HTTPS_PROXY".into(), url.clone()),
        ("http_proxy".into(), url.clone()),
        ("https_proxy".into(), url),
        ("NO_PROXY".into(), no_proxy.clone()),
        ("no_proxy".into(), no_proxy),
    ]
}

/// The proxy's policy for a spec's `sandbox.network`.
pub fn policy(spec: &NetworkSpec) -> Policy {
    match spec {
        NetworkSpec::None => Policy::Deny,
        NetworkSpec::Open => Policy::Open,
        NetworkSpec::Allow(entries) => Policy::Allow(
            entries
                .iter()
                .map(|e| Rule {
                    host: e.host.clone(),
                    wildcard: e.wildcard,
                    port: e.port,
                })
                .collect(),
        ),
    }
}

/// How a stage's agent reaches its model.
#[derive(Default)]
pub struct ModelPlan {
    /// (variable, value) for the agent: the placeholder when injecting.
    pub agent_credential: Option<(String, String)>,
    /// The base URL the agent is given.
    pub agent_base_url: Option<String>,
    /// The proxy's model route, when the proxy adds the key.
    pub route: Option<ModelRoute>,
    /// The real key, to keep out of the sandbox's environment.
    pub secret: Option<String>,
    /// The model API's base URL as seen from the host (for pre-flight).
    pub upstream: Option<String>,
}

/// The model API's base URL: `llm.base_url`, else the host's
/// `ANTHROPIC_BASE_URL` / `OPENAI_BASE_URL`, else the public API.
pub fn upstream_base(
    kind: AgentKind,
    llm: &LlmSpec,
    host_env: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    let (var, default) = match kind {
        AgentKind::ClaudeCode => ("ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
        AgentKind::Codex => ("OPENAI_BASE_URL", "https://api.openai.com/v1"),
        AgentKind::Command => return llm.base_url.clone(),
    };
    Some(
        llm.base_url
            .clone()
            .or_else(|| host_env(var).filter(|v| !v.is_empty()))
            .unwrap_or_else(|| default.to_string()),
    )
}

/// Decides where the agent's key lives. `credential` is the host's
/// (variable, key) for the agent, if any.
pub fn model_plan(
    agent: &AgentChoice,
    llm: &LlmSpec,
    credential: Option<(String, String)>,
    host_env: &dyn Fn(&str) -> Option<String>,
) -> Result<ModelPlan, RunError> {
    let upstream = upstream_base(agent.kind, llm, host_env);
    let auth = match agent.kind {
        AgentKind::ClaudeCode => ModelAuth::XApiKey,
        AgentKind::Codex => ModelAuth::Bearer,
        AgentKind::Command => {
            return Ok(ModelPlan {
                agent_credential: credential,
                agent_base_url: llm.base_url.clone(),
                upstream,
                ..ModelPlan::default()
            });
        }
    };
    let (Some((var, key)), Some(base), false) = (credential.clone(), &upstream, llm.key_in_sandbox)
    else {
        return Ok(ModelPlan {
            agent_credential: credential,
            agent_base_url: llm.base_url.clone(),
            upstream,
            ..ModelPlan::default()
        });
    };
    let route = ModelRoute::new(base, auth, &key)
        .map_err(|e| RunError::Provision(format!("the model route: {e}")))?;
    Ok(ModelPlan {
        agent_credential: Some((var, PLACEHOLDER_KEY.to_string())),
        agent_base_url: Some(proxy_url()),
        route: Some(route),
        secret: Some(key),
        upstream,
    })
}

/// The proxy of one sandbox; its decisions become `net.*` events in
/// `scope`.
pub fn proxy(
    spec: &NetworkSpec,
    route: Option<ModelRoute>,
    emitter: &Arc<Emitter>,
    scope: &Scope,
) -> Result<Proxy, RunError> {
    let em = emitter.clone();
    let scope = scope.clone();
    let sink = move |ev: NetEvent| {
        let level = match ev {
            NetEvent::Allowed { .. } => Level::Info,
            _ => Level::Warn,
        };
        em.emit(level, ev.kind(), &scope, ev.to_string(), Some(payload(&ev)));
    };
    Proxy::new(policy(spec), route, Limits::default(), sink)
        .map_err(|e| RunError::Provision(format!("the network proxy: {e}")))
}

/// A proxy for a sandbox outside any run (`husk exec`): no model route,
/// and each decision goes to `report` as one line (`allowed …`,
/// `denied …: why`) with its event kind.
pub fn standalone_proxy(
    spec: &NetworkSpec,
    report: impl Fn(&'static str, String) + Send + Sync + 'static,
) -> Result<Proxy, RunError> {
    let sink = move |ev: NetEvent| report(ev.kind(), ev.to_string());
    Proxy::new(policy(spec), None, Limits::default(), sink)
        .map_err(|e| RunError::Provision(format!("the network proxy: {e}")))
}

/// Host and port (and why), never payloads.
fn payload(ev: &NetEvent) -> serde_json::Value {
    match ev {
        NetEvent::Allowed { host, port, via } => {
            json!({"host": host, "port": port, "via": via.as_str()})
        }
        NetEvent::Denied { host, port, reason } => {
            json!({"host": host, "port": port, "reason": reason.to_string()})
        }
        NetEvent::Failed { host, port, why } => json!({"host": host, "port": port, "error": why}),
        NetEvent::Suppressed { after } => json!({"after": after}),
    }
}

/// Serves `proxy` on the sandbox-local port until the handle is dropped.
pub async fn attach(sandbox: &Sandbox, proxy: Proxy) -> Result<Forward, RunError> {
    husk_sandbox::tunnel::forward(sandbox.client(), PROXY_PORT, move |io| proxy.spawn(io))
        .await
        .map_err(|e| RunError::Provision(format!("serving the network proxy in the sandbox: {e}")))
}

/// One line for the `net.policy` event.
pub fn describe(spec: &NetworkSpec, plan: &ModelPlan) -> String {
    let mode = match spec {
        NetworkSpec::None => "none (loopback only)".to_string(),
        NetworkSpec::Open => "open (any host but this machine), through the proxy".to_string(),
        NetworkSpec::Allow(e) => format!(
            "allow {} through the proxy",
            e.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    match (&plan.route, &plan.upstream) {
        (Some(_), Some(up)) => format!("network: {mode}; model API {up}, key added by the proxy"),
        _ => format!("network: {mode}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claude() -> AgentChoice {
        AgentChoice {
            kind: AgentKind::ClaudeCode,
            program: "claude".into(),
            host_path: None,
            companions: Vec::new(),
        }
    }

    #[test]
    fn the_agent_gets_a_placeholder_and_the_proxy_the_key() {
        let llm = LlmSpec::default();
        let cred = Some(("ANTHROPIC_API_KEY".to_string(), "sk-real".to_string()));
        let env = |n: &str| (n == "ANTHROPIC_BASE_URL").then(|| "http://localhost:9".to_string());
        let p = model_plan(&claude(), &llm, cred.clone(), &env).unwrap();
        assert_eq!(
            p.agent_credential,
            Some(("ANTHROPIC_API_KEY".into(), PLACEHOLDER_KEY.into()))
        );
        assert_eq!(p.agent_base_url.as_deref(), Some("http://127.0.0.1:3128"));
        assert_eq!(p.upstream.as_deref(), Some("http://localhost:9"));
        assert_eq!(p.secret.as_deref(), Some("sk-real"));
        // Opted out: the real key and the spec's base URL, no route.
        let out = LlmSpec {
            key_in_sandbox: true,
            ..LlmSpec::default()
        };
        let p = model_plan(&claude(), &out, cred, &|_| None).unwrap();
        assert_eq!(p.agent_credential.unwrap().1, "sk-real");
        assert!(p.route.is_none() && p.secret.is_none() && p.agent_base_url.is_none());
        assert_eq!(p.upstream.as_deref(), Some("https://api.anthropic.com"));
        // No key on the host: nothing to inject.
        let p = model_plan(&claude(), &LlmSpec::default(), None, &|_| None).unwrap();
        assert!(p.route.is_none() && p.agent_credential.is_none());
    }

    #[test]
    fn proxy_variables_point_at_the_forwarded_port() {
        let env = proxy_env();
        assert!(env.contains(&("HTTPS_PROXY".into(), "http://127.0.0.1:3128".into())));
        assert!(
            env.iter()
                .any(|(k, v)| k == "NO_PROXY" && v.contains("127.0.0.1"))
        );
    }
}
