//! [`HuskMcp`]: the MCP server handler both transports serve. rmcp does
//! the protocol (handshake and version negotiation for every era, ping,
//! method routing, -32601 for unknown methods); this file answers
//! `tools/list` and `tools/call` and turns sidecar failures into tool
//! results the model can act on.
//!
//! The split between the two kinds of failure is the MCP rule: a call the
//! server cannot route (an unknown tool) is a JSON-RPC error (-32602);
//! everything else (bad arguments, a sidecar that is down, slow or says
//! no) is a normal result with `isError: true` whose text says what
//! happened and what to do next, because only that reaches the model.

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};

use crate::limits::{INTENT_PAYLOAD_BYTES, INTENTS_PER_ITERATION};
use crate::sidecar::{Sidecar, SidecarError};
use crate::tools::{self, Call};

/// The server's name in `serverInfo` (and the name runs register it under).
pub const SERVER_NAME: &str = "husk-mcp";

/// One MCP server over one sidecar. Cheap to clone (the HTTP transport
/// makes one per session; they share the sidecar connection pool).
#[derive(Debug, Clone)]
pub struct HuskMcp {
    sidecar: Sidecar,
    tools: std::sync::Arc<Vec<Tool>>,
}

impl HuskMcp {
    pub fn new(sidecar: Sidecar) -> HuskMcp {
        HuskMcp {
            sidecar,
            tools: std::sync::Arc::new(tools::list()),
        }
    }

    /// Runs a checked call against the sidecar.
    pub async fn run(&self, call: &Call) -> CallToolResult {
        let outcome = match (call.intent(), call) {
            (Some(intent), _) => self.sidecar.submit(&intent).await,
            (None, Call::ReadPeerMessages { since }) => self.sidecar.inbox(*since).await,
            (None, _) => self.sidecar.context().await,
        };
        match outcome {
            Ok(value) => CallToolResult::structured(value),
            Err(e) => error_result(failure_text(call, &e)),
        }
    }
}

fn error_result(text: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text)])
}

fn tool_name(call: &Call) -> &'static str {
    match call {
        Call::ReadSharedContext => tools::READ_SHARED_CONTEXT,
        Call::ReadPeerMessages { .. } => tools::READ_PEER_MESSAGES,
        Call::BroadcastObservation { .. } => tools::BROADCAST_OBSERVATION,
        Call::RecommendToLeader { .. } => tools::RECOMMEND_TO_LEADER,
    }
}

/// The text of a failed call: what the sidecar said (its code and message
/// verbatim) and what the model should do about it.
pub fn failure_text(call: &Call, e: &SidecarError) -> String {
    let tool = tool_name(call);
    let sends = call.intent().is_some();
    let advice = match e {
        SidecarError::Unreachable { .. } if sends => format!(
            "Calling {tool} again is safe (the same text to the same audience is accepted once per \
             iteration); if the sidecar stays unreachable, messaging is unavailable: carry on with \
             your task without it."
        ),
        SidecarError::Unreachable { .. } => format!(
            "Call {tool} again in a moment; if the sidecar stays unreachable, messaging is \
             unavailable: carry on with your task without it."
        ),
        SidecarError::Timeout { .. } => format!(
            "Call {tool} again once; if it times out again, carry on with your task without \
             messaging."
        ),
        SidecarError::Refused {
            code, retryable, ..
        } => match code.as_deref() {
            Some("TOO_MANY_REQUESTS") => format!(
                "Do not call it again now: at most {INTENTS_PER_ITERATION} intents are accepted \
                 per iteration. Keep working; send only what matters after the next iteration's \
                 inbox arrives (read_peer_messages shows a newer version)."
            ),
            Some("PAYLOAD_TOO_LARGE") => format!(
                "Shorten summary_text (the payload may be at most {INTENT_PAYLOAD_BYTES} bytes of \
                 JSON): summarise and point to files instead of pasting them, then call {tool} \
                 again."
            ),
            Some("SIDECAR_CLOSED") => {
                "The run is ending and takes no more messages: stop sending and finish your task."
                    .to_string()
            }
            Some("INVALID_PARAMS") => {
                format!("Check the arguments against {tool}'s input schema and call it again.")
            }
            _ if *retryable => format!(
                "Call {tool} again once; if it fails again, carry on with your task without \
                 messaging."
            ),
            _ => "Messaging cannot do this here: carry on with your task without it.".to_string(),
        },
        SidecarError::BadAnswer { .. } => {
            "The sidecar URL may not point at husk's messaging sidecar: carry on with your task \
             without messaging."
                .to_string()
        }
    };
    format!("{tool} failed: {e}. {advice}")
}

impl ServerHandler for HuskMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new(SERVER_NAME, env!("CARGO_PKG_VERSION"))
                    .with_title("husk messaging"),
            )
            .with_instructions(
                "Talk to the other agents of this run through its messaging sidecar: \
                 read_shared_context (who you and your peers are), read_peer_messages (your \
                 inbox), broadcast_observation (a signal to every peer) and recommend_to_leader \
                 (a proposal or evaluation for the leader). At most 3 intents per iteration, \
                 payloads at most 4 KiB.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools.as_ref().clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let call = match tools::parse(&request.name, request.arguments.as_ref()) {
            Ok(call) => call,
            Err(Ok(unknown)) => return Err(ErrorData::invalid_params(unknown.to_string(), None)),
            Err(Err(bad)) => return Ok(error_result(bad.to_string()).into()),
        };
        Ok(self.run(&call).await.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::{Disposition, Priority};
    use std::time::Duration;

    fn send() -> Call {
        Call::BroadcastObservation {
            summary_text: "x".into(),
            priority: Priority::Normal,
        }
    }

    fn refused(code: &str, retryable: bool) -> SidecarError {
        SidecarError::Refused {
            status: 400,
            code: Some(code.into()),
            message: format!("the sidecar's {code} text"),
            retryable,
        }
    }

    #[test]
    fn failures_quote_the_sidecar_and_say_what_to_do() {
        let cases = [
            (
                refused("TOO_MANY_REQUESTS", true),
                "Do not call it again now",
            ),
            (refused("PAYLOAD_TOO_LARGE", false), "Shorten summary_text"),
            (refused("SIDECAR_CLOSED", false), "stop sending"),
            (refused("INVALID_PARAMS", false), "input schema"),
            (refused("INTERNAL_ERROR", true), "again once"),
            (refused("NOT_FOUND", false), "without it"),
            (
                SidecarError::Timeout {
                    url: "http://127.0.0.1:9".into(),
                    after: Duration::from_secs(10),
                },
                "within 10 s",
            ),
            (
                SidecarError::Unreachable {
                    url: "http://127.0.0.1:9".into(),
                    reason: "Connection refused".into(),
                },
                "again is safe",
            ),
        ];
        for (e, needle) in cases {
            let text = failure_text(&send(), &e);
            assert!(text.starts_with("broadcast_observation failed: "), "{text}");
            assert!(text.contains(&e.to_string()), "{text}");
            assert!(text.contains(needle), "{needle}: {text}");
        }
        let read = failure_text(
            &Call::ReadSharedContext,
            &SidecarError::Unreachable {
                url: "u".into(),
                reason: "r".into(),
            },
        );
        assert!(read.starts_with("read_shared_context failed"), "{read}");
        assert!(!read.contains("same audience"), "{read}");
        let lead = failure_text(
            &Call::RecommendToLeader {
                summary_text: "s".into(),
                disposition: Disposition::Refine,
                priority: Priority::Low,
            },
            &refused("TOO_MANY_REQUESTS", true),
        );
        assert!(
            lead.contains("the sidecar's TOO_MANY_REQUESTS text"),
            "{lead}"
        );
    }

    #[test]
    fn quoted_limits_match_the_sidecar() {
        assert_eq!(
            INTENTS_PER_ITERATION,
            husk_sidecar::limits::MAX_INTENTS_PER_ITERATION
        );
        assert_eq!(
            INTENT_PAYLOAD_BYTES,
            husk_sidecar::limits::MAX_INTENT_PAYLOAD_BYTES
        );
    }
}
