//! Bearer tokens for TCP listeners: resolution (flag, env file, env value,
//! else a generated token stored 0600), refusal of token files others can
//! read and of tokens under [`MIN_TOKEN_BYTES`], and a constant-time
//! comparison. A token is generated only from the OS's randomness: if it
//! fails, the daemon does not start (no predictable fallback).

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

/// Shortest token accepted (bytes, after trimming whitespace).
pub const MIN_TOKEN_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "the bearer token from {0} is {1} bytes; use at least {MIN_TOKEN_BYTES} \
         (e.g. `openssl rand -hex 32`)"
    )]
    TooShort(String, usize),
    #[error(
        "generating a bearer token: the OS gave no randomness ({0}); set HUSK_DAEMON_TOKEN_FILE"
    )]
    Random(String),
    #[error("token file {0} is readable by group or others (mode {1:o}); run `chmod 600 {0}`")]
    TooOpen(PathBuf, u32),
    #[error("token file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("token file {0} is empty")]
    Empty(PathBuf),
}

/// `--token-file`, `HUSK_DAEMON_TOKEN_FILE`, `HUSK_DAEMON_TOKEN`, else a
/// generated 32-byte hex token in `$XDG_CONFIG_HOME/husk/daemon-token`.
pub fn resolve(flag: Option<&Path>) -> Result<(String, String), TokenError> {
    let (token, source) = resolve_unchecked(flag)?;
    check_len(&token, &source)?;
    Ok((token, source))
}

fn check_len(token: &str, source: &str) -> Result<(), TokenError> {
    if token.len() < MIN_TOKEN_BYTES {
        return Err(TokenError::TooShort(source.into(), token.len()));
    }
    Ok(())
}

fn resolve_unchecked(flag: Option<&Path>) -> Result<(String, String), TokenError> {
    if let Some(p) = flag {
        return read_file(p).map(|t| (t, format!("--token-file {}", p.display())));
    }
    if let Some(p) = std::env::var_os("HUSK_DAEMON_TOKEN_FILE") {
        let p = PathBuf::from(p);
        return read_file(&p).map(|t| (t, format!("HUSK_DAEMON_TOKEN_FILE {}", p.display())));
    }
    if let Ok(t) = std::env::var("HUSK_DAEMON_TOKEN")
        && !t.trim().is_empty()
    {
        return Ok((t.trim().to_string(), "HUSK_DAEMON_TOKEN".into()));
    }
    let path = default_token_path();
    if path.exists() {
        return read_file(&path).map(|t| (t, path.display().to_string()));
    }
    let token = generate(|b| getrandom::fill(b).map_err(|e| e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| TokenError::Io(path.clone(), e))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| TokenError::Io(path.clone(), e))?;
    std::io::Write::write_all(&mut f, token.as_bytes())
        .map_err(|e| TokenError::Io(path.clone(), e))?;
    Ok((token, format!("generated into {}", path.display())))
}

pub fn default_token_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("husk").join("daemon-token")
}

fn read_file(p: &Path) -> Result<String, TokenError> {
    let meta = std::fs::metadata(p).map_err(|e| TokenError::Io(p.into(), e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TokenError::TooOpen(p.into(), mode));
    }
    let t = std::fs::read_to_string(p).map_err(|e| TokenError::Io(p.into(), e))?;
    let t = t.trim().to_string();
    if t.is_empty() {
        return Err(TokenError::Empty(p.into()));
    }
    Ok(t)
}

/// 32 random bytes as hex, from `fill` (the OS's randomness).
fn generate(fill: impl FnOnce(&mut [u8]) -> Result<(), String>) -> Result<String, TokenError> {
    let mut b = [0u8; 32];
    fill(&mut b).map_err(TokenError::Random)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// `Authorization: Bearer <token>` (the scheme in any case, RFC 9110),
/// compared in constant time.
pub fn bearer_ok(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, given)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    given.trim().as_bytes().ct_eq(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    const T: &str = "0123456789abcdef-token";

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for ok in [
            "Bearer 0123456789abcdef-token",
            "bearer 0123456789abcdef-token",
            "BEARER  0123456789abcdef-token",
        ] {
            assert!(bearer_ok(&auth(ok), T), "{ok}");
        }
        for bad in [
            "Bearer wrong",
            "Basic 0123456789abcdef-token",
            "0123456789abcdef-token",
            "Bearer",
            "Bearer 0123456789abcdef-toke",
        ] {
            assert!(!bearer_ok(&auth(bad), T), "{bad}");
        }
        assert!(!bearer_ok(&HeaderMap::new(), T));
    }

    #[test]
    fn failing_randomness_is_an_error_not_a_zero_token() {
        let e = generate(|_| Err("no entropy".into())).unwrap_err();
        assert!(matches!(e, TokenError::Random(_)), "{e}");
        let t = generate(|b| {
            b.fill(0xab);
            Ok(())
        })
        .unwrap();
        assert_eq!(t, "ab".repeat(32));
    }

    #[test]
    fn short_tokens_are_refused_naming_the_source() {
        let dir = std::env::temp_dir().join(format!("husk-auth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("token");
        std::fs::write(&f, "short-token\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = resolve(Some(&f)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("11 bytes") && msg.contains("at least 16") && msg.contains("--token-file"),
            "{msg}"
        );
        std::fs::write(&f, "0123456789abcdef\n").unwrap();
        assert_eq!(resolve(Some(&f)).unwrap().0, "0123456789abcdef");
        assert!(check_len("x".repeat(15).as_str(), "HUSK_DAEMON_TOKEN").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
