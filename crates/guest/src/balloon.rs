//! The virtio balloon, used only for free page reporting: the guest kernel
//! tells QEMU which 2 MiB blocks of its RAM are free, and QEMU gives those
//! pages back to the host. Without it QEMU keeps every page the guest ever
//! touched (the unpacked initramfs, boot allocations freed later).
//!
//! Only cold-booted VMs have a balloon (the host gives snapshot VMs none,
//! see `husk_sandbox::microvm::qemu::BALLOON_DEVICE`): a restored VM maps
//! the snapshot's RAM file privately, and QEMU 7.2 discards a page of a
//! file-backed RAM block by punching a hole in the file, which would zero
//! pages of the *shared* snapshot under every later restore. As a guard,
//! a template still unbinds any balloon driver before it parks (after the
//! first reporting pass) and refuses to be saved if one stays bound.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where the kernel lists the devices the balloon driver is bound to.
const DRIVER_DIR: &str = "/sys/bus/virtio/drivers/virtio_balloon";
/// The kernel starts its first reporting pass 2 s after the driver
/// registers (`PAGE_REPORTING_DELAY`); this leaves the pass time to finish
/// under TCG before a template stops reporting.
const FIRST_PASS: Duration = Duration::from_millis(3500);

/// When the balloon driver was loaded (boot), if it was.
static LOADED: OnceLock<Instant> = OnceLock::new();

/// Notes that the balloon driver was just loaded.
pub fn loaded() {
    let _ = LOADED.set(Instant::now());
}

/// The `virtioN` devices the balloon driver is bound to.
pub fn bound_devices(driver_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(driver_dir) else {
        return Vec::new();
    };
    let mut devices: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name.strip_prefix("virtio")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    devices.sort();
    devices
}

/// For a template, before it parks: waits out the first reporting pass,
/// then unbinds the driver from every balloon device. Fails (and the
/// template is not saved) if a device stays bound.
pub fn stop_reporting_for_snapshot() -> Result<(), String> {
    let dir = Path::new(DRIVER_DIR);
    let devices = bound_devices(dir);
    if devices.is_empty() {
        return Ok(());
    }
    if let Some(at) = LOADED.get() {
        std::thread::sleep(FIRST_PASS.saturating_sub(at.elapsed()));
    }
    for dev in &devices {
        std::fs::write(dir.join("unbind"), dev)
            .map_err(|e| format!("unbinding the balloon driver from {dev}: {e}"))?;
    }
    let left = bound_devices(dir);
    if !left.is_empty() {
        return Err(format!(
            "the balloon driver is still bound to {} (a restored copy would punch holes in the snapshot)",
            left.join(", ")
        ));
    }
    crate::vm::boot_mark("balloon unbound");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_devices_are_the_virtio_links() {
        let dir = std::env::temp_dir().join(format!("husk-balloon-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for name in [
            "virtio3", "virtio1", "bind", "unbind", "uevent", "module", "virtio",
        ] {
            std::fs::write(dir.join(name), "").unwrap();
        }
        assert_eq!(bound_devices(&dir), ["virtio1", "virtio3"]);
        assert!(bound_devices(&dir.join("missing")).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
