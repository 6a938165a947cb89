//! The restore phase of a micro-VM snapshot: what a *template* guest and
//! the host say to each other before any session exists.
//!
//! A template guest (booted with `husk.template` on its kernel command
//! line) sets itself up, sends [`Parked`] and then waits for exactly one
//! [`Identity`] frame. The host saves the VM while it waits. Every VM
//! restored from that save resumes in the same wait and gets its own
//! identity (session secret, randomness, wall-clock time, id) as the first
//! bytes on its control port, a channel only the host can write to. Only
//! then does the guest serve, and the normal handshake ([`crate::Hello`])
//! follows with the new secret.
//!
//! The template itself holds no secret: nothing authenticates to it, and a
//! `Hello` where an [`Identity`] is expected is refused.
//!
//! These frames are not part of the versioned session message set. Their
//! layout has its own version, [`RESTORE_VERSION`], which the template
//! reports in [`Parked`] and which is part of every snapshot's key: a host
//! never restores a snapshot whose guest speaks another restore layout.

use serde::{Deserialize, Serialize};

use crate::Secret;

/// Version of the [`Parked`]/[`Identity`] layout. Bump on any change.
pub const RESTORE_VERSION: u16 = 1;
/// Bytes of host randomness in an [`Identity`] (mixed into the guest's
/// kernel RNG and credited).
pub const IDENTITY_ENTROPY_LEN: usize = 64;
/// Longest sandbox id an [`Identity`] may carry.
pub const MAX_SANDBOX_ID_LEN: usize = 64;

/// Template guest to host, once: set up and waiting for an identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    /// [`RESTORE_VERSION`] of the guest.
    pub restore_version: u16,
    /// The guest agent's version.
    pub agent_version: String,
}

/// Host to restored guest, once, before anything else.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The session secret the following `Hello` must present.
    pub secret: Secret,
    /// Host randomness for the guest's kernel RNG
    /// ([`IDENTITY_ENTROPY_LEN`] bytes).
    #[serde(with = "serde_bytes")]
    pub entropy: Vec<u8>,
    /// The host's wall-clock time when it sent this, since the Unix epoch.
    pub unix_secs: u64,
    pub unix_nanos: u32,
    /// The sandbox's id (shown as `husk.id=` in the guest's
    /// `/proc/cmdline`, as on a cold boot).
    pub sandbox_id: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("secret", &self.secret)
            .field("entropy", &format_args!("<{} bytes>", self.entropy.len()))
            .field("unix_secs", &self.unix_secs)
            .field("sandbox_id", &self.sandbox_id)
            .finish()
    }
}

/// Why an [`Identity`] cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("identity carries {0} bytes of entropy, expected {IDENTITY_ENTROPY_LEN}")]
    Entropy(usize),
    #[error("identity's nanoseconds {0} are not below one second")]
    Nanos(u32),
    #[error("sandbox id {0:?} is empty, longer than {MAX_SANDBOX_ID_LEN} or not [0-9a-z-]")]
    SandboxId(String),
}

impl Identity {
    /// Checks the fields a guest relies on.
    pub fn validate(&self) -> Result<(), IdentityError> {
        if self.entropy.len() != IDENTITY_ENTROPY_LEN {
            return Err(IdentityError::Entropy(self.entropy.len()));
        }
        if self.unix_nanos >= 1_000_000_000 {
            return Err(IdentityError::Nanos(self.unix_nanos));
        }
        let id = &self.sandbox_id;
        let ok = !id.is_empty()
            && id.len() <= MAX_SANDBOX_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-');
        if !ok {
            return Err(IdentityError::SandboxId(id.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Envelope, decode_frame, encode_frame};

    fn identity() -> Identity {
        Identity {
            secret: Secret([9; 32]),
            entropy: vec![1; IDENTITY_ENTROPY_LEN],
            unix_secs: 1_700_000_000,
            unix_nanos: 5,
            sandbox_id: "0a1b2c3d4e5f6071".into(),
        }
    }

    #[test]
    fn identity_round_trips_in_a_frame() {
        let mut buf = Vec::new();
        let env = Envelope {
            id: 0,
            msg: identity(),
        };
        encode_frame(&env, &mut buf).unwrap();
        let (back, used) = decode_frame::<Identity>(&buf).unwrap().unwrap();
        assert_eq!(used, buf.len());
        assert_eq!(back, env);
        assert!(back.msg.validate().is_ok());
    }

    #[test]
    fn bad_identities_are_named() {
        let mut i = identity();
        i.entropy.pop();
        assert_eq!(i.validate(), Err(IdentityError::Entropy(63)));
        let mut i = identity();
        i.unix_nanos = 1_000_000_000;
        assert!(matches!(i.validate(), Err(IdentityError::Nanos(_))));
        for bad in ["", "UPPER", "a b", &"x".repeat(65)] {
            let mut i = identity();
            i.sandbox_id = bad.into();
            assert!(
                matches!(i.validate(), Err(IdentityError::SandboxId(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_does_not_leak() {
        let text = format!("{:?}", identity());
        assert!(!text.contains("9, 9"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    /// The layout is frozen per [`RESTORE_VERSION`]: a change here must
    /// bump it (snapshots made with the old layout are then never used).
    #[test]
    fn parked_layout_is_pinned() {
        let mut buf = Vec::new();
        let env = Envelope {
            id: 0,
            msg: Parked {
                restore_version: RESTORE_VERSION,
                agent_version: "1".into(),
            },
        };
        encode_frame(&env, &mut buf).unwrap();
        assert_eq!(buf, [0, 0, 0, 5, 1, 0, 1, 1, b'1']);
    }
}
