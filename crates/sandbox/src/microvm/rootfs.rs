//! Larger userlands for micro-VMs: a directory turned into a read-only ext4
//! image (`mkfs.ext4 -d`, no root needed), attached on virtio-blk. The guest
//! mounts it under a tmpfs overlay and makes that its root, so the sandbox
//! can write anywhere while the image stays untouched and shareable.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::cache::{self, Hold, Shape};
use crate::error::{Result, SandboxError};
use crate::host;

/// Spare room added to the image beyond the directory's contents.
const SLACK_BYTES: u64 = 64 * 1024 * 1024;

/// Builds (or reuses) an ext4 image of `dir` under `cache/rootfs/`.
/// Returns the image and, when it could be taken, a hold on it in the
/// cache (the VM keeps it while it runs).
pub fn build_ext4(
    dir: &Path,
    cache: &Path,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(PathBuf, Option<Hold>)> {
    let mkfs = host::which("mkfs.ext4")
        .or_else(|| {
            ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
        })
        .ok_or_else(|| SandboxError::MissingTool {
            tool: "mkfs.ext4",
            hint: "install it with `apt-get install e2fsprogs`".into(),
        })?;
    if !dir.is_dir() {
        return Err(SandboxError::Config(format!(
            "rootfs {} is not a directory",
            dir.display()
        )));
    }
    let (key, bytes) = fingerprint(dir)?;
    let out_dir = cache.join("rootfs");
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| SandboxError::io(format!("creating {}", out_dir.display()), e))?;
    let image = out_dir.join(format!("{key:016x}.ext4"));
    // Held before it is used, so a prune cannot take it before the boot;
    // one gone or being pruned is built again.
    match cache::hold(&image, Shape::File) {
        Err(cache::HoldError::Gone(_) | cache::HoldError::Pruning(_)) => {}
        hold => {
            progress(&format!("rootfs: cached {}", image.display()));
            return Ok((image, hold.ok()));
        }
    }
    let size_mb = (bytes + bytes / 4 + SLACK_BYTES) / (1024 * 1024);
    progress(&format!(
        "rootfs: building a {size_mb} MiB ext4 image of {} …",
        dir.display()
    ));
    let tmp = out_dir.join(format!(".{key:016x}.{}.tmp", std::process::id()));
    let out = Command::new(&mkfs)
        .args(["-q", "-F", "-L", "husk-root", "-E", "root_owner=0:0", "-d"])
        .arg(dir)
        .arg(&tmp)
        .arg(format!("{size_mb}M"))
        .output()
        .map_err(|e| SandboxError::io(format!("running {}", mkfs.display()), e))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(SandboxError::Config(format!(
            "mkfs.ext4 failed for {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    std::fs::rename(&tmp, &image)
        .map_err(|e| SandboxError::io(format!("storing {}", image.display()), e))?;
    progress(&format!("rootfs: ready {}", image.display()));
    let held = cache::hold_in(cache, &image, Shape::File);
    Ok((image, held))
}

/// A cheap content key of a tree (paths, sizes, modes, mtimes) and its size.
fn fingerprint(dir: &Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)
            .map_err(|e| SandboxError::io(format!("reading {}", d.display()), e))?
            .filter_map(|e| e.ok())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            e.path().strip_prefix(dir).unwrap_or(&e.path()).hash(&mut h);
            (
                m.len(),
                m.mode(),
                m.mtime(),
                m.mtime_nsec(),
                m.uid(),
                m.gid(),
            )
                .hash(&mut h);
            total += m.len().max(4096);
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok((h.finish(), total))
}
