//! Finding the guest agent binary on the host.

use std::path::{Path, PathBuf};

use crate::error::{Result, SandboxError};

/// File name of the guest agent.
pub const GUEST_BIN: &str = "husk-guest";

/// Finds a helper binary shipped with husk: `$env_var`, then next to the
/// running executable (see [`next_to_executable`]).
pub fn locate_helper(name: &str, env_var: &str) -> std::result::Result<PathBuf, Vec<PathBuf>> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(p) } else { Err(vec![p]) };
    }
    next_to_executable(name)
}

/// `name` next to the running executable, then one directory up (test
/// binaries live in `target/<profile>/deps/`); `Err` lists where it looked.
pub fn next_to_executable(name: &str) -> std::result::Result<PathBuf, Vec<PathBuf>> {
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

/// Where one of husk's helper binaries (`husk-message`, `husk-mcp`, …)
/// comes from for a sandbox: its static build when there is one (it runs
/// on every backend, micro-VMs included), else the build next to the
/// running executable (fine for namespace sandboxes, which share the
/// host's libc). `None` when neither exists.
pub fn helper_binary(name: &str) -> Option<PathBuf> {
    crate::microvm::image::locate_static_helper(name).or_else(|| next_to_executable(name).ok())
}

/// The guest agent binary: `$HUSK_GUEST_BIN`, next to the executable, or
/// a checkout's static build (`scripts/build-guest`).
pub fn locate_guest() -> Result<PathBuf> {
    locate_helper(GUEST_BIN, "HUSK_GUEST_BIN").or_else(|mut looked| {
        // In a checkout, `scripts/build-guest` puts the static build under
        // `target/x86_64-unknown-linux-gnu/`, not next to `target/release/husk`.
        if std::env::var_os("HUSK_GUEST_BIN").is_none() {
            if let Some(found) = crate::microvm::image::locate_static_helper(GUEST_BIN) {
                return Ok(found);
            }
            looked.push(PathBuf::from(format!(
                "target/x86_64-unknown-linux-gnu/{{release,debug}}/{GUEST_BIN}"
            )));
        }
        Err(SandboxError::GuestBinaryMissing { looked })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_are_found_next_to_the_executable_and_missing_ones_are_none() {
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_str().unwrap();
        assert_eq!(next_to_executable(name).unwrap(), exe);
        let looked = next_to_executable("husk-no-such-helper").unwrap_err();
        assert_eq!(looked[0], exe.parent().unwrap().join("husk-no-such-helper"));
        assert_eq!(helper_binary("husk-no-such-helper"), None);
    }
}
