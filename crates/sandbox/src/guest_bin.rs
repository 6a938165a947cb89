//! Finding the guest agent binary on the host.

use std::path::{Path, PathBuf};

use crate::error::{Result, SandboxError};

/// File name of the guest agent.
pub const GUEST_BIN: &str = "husk-guest";

/// Finds a helper binary shipped with husk: `$env_var`, then next to the
/// running executable, then one directory up (test binaries live in
/// `target/<profile>/deps/`).
pub fn locate_helper(name: &str, env_var: &str) -> std::result::Result<PathBuf, Vec<PathBuf>> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(p) } else { Err(vec![p]) };
    }
    let mut looked = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        let mut dir = exe.parent().map(Path::to_path_buf);
        for _ in 0..2 {
            let Some(d) = dir else { break };
            let candidate = d.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
            looked.push(candidate);
            dir = d.parent().map(Path::to_path_buf);
        }
    }
    Err(looked)
}

/// The guest agent binary: `$HUSK_GUEST_BIN` or next to the executable.
pub fn locate_guest() -> Result<PathBuf> {
    locate_helper(GUEST_BIN, "HUSK_GUEST_BIN")
        .map_err(|looked| SandboxError::GuestBinaryMissing { looked })
}
