//! Bearer tokens for TCP listeners: resolution (flag, env file, env value,
//! else a generated token stored 0600), refusal of token files others can
//! read, and a constant-time comparison.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
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
    let token = generate();
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

fn generate() -> String {
    let mut b = [0u8; 32];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `Authorization: Bearer <token>`, compared in constant time.
pub fn bearer_ok(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    given.as_bytes().ct_eq(token.as_bytes()).into()
}
