//! Session secret and version agreement.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// A per-sandbox random secret. The host proves it started the sandbox by
/// presenting it in [`crate::HostMsg::Hello`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret(pub [u8; 32]);

impl Secret {
    /// Constant-time comparison, so a guest never leaks how much of a
    /// guessed secret was right.
    pub fn matches(&self, other: &Secret) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// Lower-case hex, 64 characters: how the secret travels out of band.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
        }
        s
    }

    /// Parses the 64-character hex form written by [`Secret::to_hex`].
    pub fn from_hex(text: &str) -> Result<Self, SecretParseError> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(SecretParseError::Length(text.len()));
        }
        let mut out = [0u8; 32];
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or(SecretParseError::NotHex)?;
            let lo = hex_val(pair[1]).ok_or(SecretParseError::NotHex)?;
            out[i] = (hi << 4) | lo;
        }
        Ok(Secret(out))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Why a textual secret was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretParseError {
    #[error("session secret must be 64 hex characters, got {0}")]
    Length(usize),
    #[error("session secret is not hexadecimal")]
    NotHex,
}

/// Picks the highest version both sides speak, or `None`.
pub fn negotiate_version(ours: (u16, u16), theirs: (u16, u16)) -> Option<u16> {
    let low = ours.0.max(theirs.0);
    let high = ours.1.min(theirs.1);
    (low <= high).then_some(high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let s = Secret([0xab; 32]);
        assert_eq!(Secret::from_hex(&s.to_hex()).unwrap(), s);
        assert_eq!(Secret::from_hex("ab"), Err(SecretParseError::Length(2)));
        assert_eq!(
            Secret::from_hex(&"zz".repeat(32)),
            Err(SecretParseError::NotHex)
        );
    }

    #[test]
    fn matching_is_exact() {
        let a = Secret([1; 32]);
        let mut b = a.clone();
        assert!(a.matches(&b));
        b.0[31] ^= 1;
        assert!(!a.matches(&b));
    }

    #[test]
    fn debug_does_not_leak() {
        assert_eq!(format!("{:?}", Secret([7; 32])), "Secret(<redacted>)");
    }

    #[test]
    fn versions() {
        assert_eq!(negotiate_version((1, 3), (2, 5)), Some(3));
        assert_eq!(negotiate_version((1, 1), (2, 2)), None);
    }
}
