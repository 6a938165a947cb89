//! husk's messaging sidecar (runtime contract §5): one per run with
//! `messaging.enabled`, living on the host. Agents in the sandbox read
//! their context and inbox and submit intents over HTTP ([`router`]); the
//! orchestrator loads inboxes, pushes messages and drains intents through
//! the typed methods of [`Sidecar`], which the daemon's routes call.
//!
//! The state is in memory and bounded (see [`limits`]); nothing accepted
//! is dropped except by a drain or handed back by [`Sidecar::close`].
//! docs/messaging.md describes the rules and the decisions behind them.

mod handle;
pub mod http;
pub mod identity;
mod intake;
pub mod limits;
mod state;
pub mod types;

pub use handle::{Sidecar, SubmitError};
pub use http::error::{ApiError, Code};
pub use http::{router, serve_connection, serve_on};
pub use identity::{Identity, IdentityError};
pub use intake::{ParamError, inbox_entry as parse_inbox_entry, inbox_load as parse_inbox_load};
pub use state::{Accepted, InboxError, InboxLoaded, Rejection};
pub use types::*;

/// The sidecar's version, as `sidecar_version` reports it.
pub const SIDECAR_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The messaging skill given to agents when messaging is on (Claude Code
/// layout: `skills/husk-messaging/SKILL.md`).
pub const SKILL: &str = include_str!("../skill/SKILL.md");

/// The skill's directory name (its front matter `name`).
pub const SKILL_NAME: &str = "husk-messaging";

#[cfg(test)]
mod skill_tests {
    use super::*;

    #[test]
    fn skill_has_front_matter_and_covers_the_commands() {
        let rest = SKILL.strip_prefix("---\n").expect("front matter first");
        let (front, body) = rest.split_once("\n---\n").expect("front matter closed");
        assert!(
            front.lines().any(|l| l == format!("name: {SKILL_NAME}")),
            "{front}"
        );
        assert!(
            front
                .lines()
                .any(|l| l.starts_with("description: ") && l.len() > 40)
        );
        for needle in [
            "husk-message context",
            "husk-message inbox",
            "husk-message send",
            "husk-message health",
            "4 KiB",
            "read_shared_context",
            "read_peer_messages",
            "broadcast_observation",
            "recommend_to_leader",
        ] {
            assert!(body.contains(needle), "skill lacks {needle}");
        }
        for k in Kind::ALL {
            assert!(body.contains(k.as_str()), "skill lacks kind {}", k.as_str());
        }
        for a in Audience::ALL {
            assert!(
                body.contains(a.as_str()),
                "skill lacks audience {}",
                a.as_str()
            );
        }
        for p in Priority::ALL {
            assert!(
                body.contains(p.as_str()),
                "skill lacks priority {}",
                p.as_str()
            );
        }
        assert!(body.contains(&format!("{} intents", limits::MAX_INTENTS_PER_ITERATION)));
    }
}
