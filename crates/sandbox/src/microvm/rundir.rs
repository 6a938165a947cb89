//! Per-VM runtime directories (console log, secret; the control and QMP
//! channels are socketpairs, not files here). They exist only while a VM
//! boots: once the guest answered, every
//! file is unlinked and the directory removed, so even a husk killed by
//! SIGKILL leaves nothing behind. Directories of dead husk processes (killed
//! during a boot) are swept at the next start.

use std::path::{Path, PathBuf};

use crate::error::{Result, SandboxError};

/// The parent of all run directories: `$XDG_RUNTIME_DIR/husk`, else
/// `/tmp/husk-<uid>`.
pub fn base_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("husk"),
        _ => PathBuf::from(format!("/tmp/husk-{}", rustix::process::getuid().as_raw())),
    }
}

/// Creates `base/vm-<pid>-<id>` (mode 0700).
pub fn create(id: &str) -> Result<PathBuf> {
    let base = base_dir();
    make_private_dir(&base)?;
    sweep_stale(&base);
    let dir = base.join(format!("vm-{}-{id}", std::process::id()));
    make_private_dir(&dir)?;
    Ok(dir)
}

fn make_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::symlink_metadata(dir)
                .map_err(|e| SandboxError::io(dir.display().to_string(), e))?;
            if !meta.is_dir()
                || meta.uid() != rustix::process::getuid().as_raw()
                || meta.mode() & 0o077 != 0
            {
                return Err(SandboxError::Config(format!(
                    "{} must be a directory owned by this user with mode 0700",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) => Err(SandboxError::io(format!("creating {}", dir.display()), e)),
    }
}

/// Removes run directories whose husk process no longer exists.
fn sweep_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("vm-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
