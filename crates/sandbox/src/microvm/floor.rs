//! The bare-boot floor that micro-VM start times are judged against
//! (issue 14): QEMU's `microvm` machine booting the *same kernel* with the
//! *same machine, accelerator and TSC arguments* as a husk VM, but with an
//! initramfs of nothing but the static busybox, whose `/init` powers off at
//! once. No guest agent, no modules, no virtio devices, no sockets: what
//! any VM on this host must pay before husk adds anything.
//!
//! The floor issue 14 names boots the package's bzImage, as any QEMU user
//! would. Husk itself boots the kernel's ELF at its PVH entry when it can
//! (see `image::pvh`), which skips the bzImage's in-guest decompression;
//! [`FloorKernel::Husks`] is the same bare boot with husk's kernel file, so
//! husk's own share can be told apart from what the boot method saves.
//!
//! The initramfs is written to a private temporary directory (removed when
//! the [`BareFloor`] is dropped), so the floor needs nothing but busybox.

use std::path::{Path, PathBuf};

use super::image::GuestImage;
use super::{Accel, clock};
use crate::backend::SandboxConfig;
use crate::error::{Result, SandboxError};

/// `/init` of the floor: a busybox shell that powers the VM off.
const INIT: &str = "#!/bin/busybox sh\n/bin/busybox poweroff -f\n";

/// The machine and its options, as a cold husk VM gets them.
const MACHINE: &[&str] = &[
    "-M",
    "microvm,x-option-roms=off",
    "-nodefaults",
    "-no-user-config",
    "-nographic",
    "-no-reboot",
];

/// Which kernel file the bare boot loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloorKernel {
    /// The package's bzImage (the floor issue 14 defines).
    BzImage,
    /// The file a cold husk VM boots (the PVH ELF where husk uses it).
    Husks,
}

/// A ready-to-run bare boot: its busybox-only initramfs and QEMU's
/// arguments. Each [`BareFloor::command`] is one boot that exits when the
/// guest has powered off.
#[derive(Debug)]
pub struct BareFloor {
    qemu: PathBuf,
    dir: PathBuf,
    args: Vec<String>,
    initramfs_bytes: u64,
}

impl BareFloor {
    /// Writes the busybox-only initramfs and settles the arguments.
    pub(super) fn new(
        qemu: &Path,
        image: &GuestImage,
        accel: Accel,
        config: &SandboxConfig,
        kernel: FloorKernel,
    ) -> Result<Self> {
        let busybox = super::image::find_busybox()?;
        let dir = std::env::temp_dir().join(format!(
            "husk-floor-{}-{}",
            std::process::id(),
            super::new_id()?
        ));
        std::fs::create_dir(&dir)
            .map_err(|e| SandboxError::io(format!("creating {}", dir.display()), e))?;
        let initrd = dir.join("busybox-only.cpio");
        let initramfs_bytes = match write_initramfs(&initrd, &busybox) {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let args = floor_args(image, accel, config, &initrd, kernel);
        Ok(BareFloor {
            qemu: qemu.to_path_buf(),
            dir,
            args,
            initramfs_bytes,
        })
    }

    /// One bare boot, ready to spawn (stdin, stdout and the serial console
    /// go nowhere).
    pub fn command(&self) -> std::process::Command {
        let mut c = std::process::Command::new(&self.qemu);
        c.args(&self.args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        c
    }

    /// QEMU's arguments (for printing with the results).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Size of the busybox-only initramfs.
    pub fn initramfs_bytes(&self) -> u64 {
        self.initramfs_bytes
    }
}

impl Drop for BareFloor {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `/bin/busybox`, `/dev/console` and `/init`; nothing else.
fn write_initramfs(out: &Path, busybox: &Path) -> Result<u64> {
    use super::image::cpio::CpioWriter;
    let io = |e| SandboxError::io(format!("writing {}", out.display()), e);
    let bytes = std::fs::read(busybox)
        .map_err(|e| SandboxError::io(format!("reading {}", busybox.display()), e))?;
    let file = std::fs::File::create(out).map_err(io)?;
    let mut w = CpioWriter::new(std::io::BufWriter::new(file));
    let entries = |w: &mut CpioWriter<_>| -> std::io::Result<()> {
        w.dir("bin", 0o755)?;
        w.dir("dev", 0o755)?;
        w.char_dev("dev/console", 0o600, 5, 1)?;
        w.file("bin/busybox", 0o755, &bytes)?;
        w.file("init", 0o755, INIT.as_bytes())
    };
    entries(&mut w).map_err(io)?;
    let (_, size) = w.finish().map_err(io)?;
    Ok(size)
}

/// The cold VM's machine, accelerator, memory, vCPUs, kernel and console
/// arguments (TSC pinning included under TCG), with the busybox initramfs.
fn floor_args(
    image: &GuestImage,
    accel: Accel,
    config: &SandboxConfig,
    initrd: &Path,
    kernel: FloorKernel,
) -> Vec<String> {
    let kernel = match kernel {
        FloorKernel::BzImage => &image.bzimage,
        FloorKernel::Husks => &image.kernel,
    };
    let mut a: Vec<String> = MACHINE.iter().map(|s| s.to_string()).collect();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&super::qemu::accel_args(accel));
    let mem = format!("{}M", config.memory_mb);
    let smp = config.vcpus.to_string();
    push(&["-m", &mem, "-smp", &smp]);
    let mut append = "console=ttyS0 quiet panic=-1 rdinit=/init".to_string();
    if accel == Accel::Tcg {
        append.push_str(&clock::tcg_kernel_args());
    }
    push(&[
        "-kernel",
        &kernel.to_string_lossy(),
        "-initrd",
        &initrd.to_string_lossy(),
        "-append",
        &append,
        "-serial",
        "null",
    ]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> GuestImage {
        GuestImage {
            held: Default::default(),
            kernel: "/k/vmlinux".into(),
            boot: super::super::image::KernelBoot::Pvh,
            boot_note: String::new(),
            bzimage: "/k/vmlinuz".into(),
            initramfs: "/k/initramfs.cpio".into(),
            kernel_version: String::new(),
            kernel_package: String::new(),
            key: String::new(),
            initramfs_bytes: 0,
            modules: Vec::new(),
            built: false,
        }
    }

    /// The floor boots what a cold husk VM boots, on the same machine: the
    /// arguments husk's own command line shares with it are the same.
    #[test]
    fn floor_matches_the_cold_vm_machine() {
        let config = SandboxConfig::default();
        let image = image();
        let secret = husk_protocol::Secret([1; 32]);
        let spec = super::super::qemu::VmSpec {
            qemu: Path::new("/q"),
            image: &image,
            accel: Accel::Tcg,
            config: &config,
            secret: &secret,
            present: &secret,
            boot_timeout: std::time::Duration::from_secs(1),
            rdinit: None,
            rootfs: None,
            mode: super::super::qemu::VmMode::Cold,
        };
        let husk = super::super::qemu::qemu_args(&spec, Path::new("/run/x"), "id");
        let at = |k| floor_args(&image, Accel::Tcg, &config, Path::new("/f/i.cpio"), k);
        let (floor, bz) = (at(FloorKernel::Husks), at(FloorKernel::BzImage));
        let value = |args: &[String], flag: &str| {
            let i = args.iter().position(|a| a == flag).expect(flag);
            args[i + 1].clone()
        };
        for flag in ["-M", "-accel", "-cpu", "-m", "-smp", "-kernel"] {
            assert_eq!(value(&husk, flag), value(&floor, flag), "{flag}");
        }
        for flag in ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"] {
            assert!(husk.contains(&flag.to_string()), "husk lacks {flag}");
            assert!(floor.contains(&flag.to_string()), "floor lacks {flag}");
        }
        assert_eq!(value(&floor, "-initrd"), "/f/i.cpio");
        // The floor differs in the kernel file alone.
        assert_eq!(value(&husk, "-kernel"), "/k/vmlinux");
        assert_eq!(value(&bz, "-kernel"), "/k/vmlinuz");
        let without_kernel = |a: &[String]| {
            let i = a.iter().position(|x| x == "-kernel").unwrap();
            [&a[..i], &a[i + 2..]].concat()
        };
        assert_eq!(without_kernel(&floor), without_kernel(&bz));
        let (h, f) = (value(&husk, "-append"), value(&floor, "-append"));
        let tsc = clock::tcg_kernel_args();
        assert!(
            !tsc.is_empty() && h.contains(&tsc) && f.contains(&tsc),
            "{h}\n{f}"
        );
        assert!(f.contains("rdinit=/init"), "{f}");
    }

    #[test]
    fn initramfs_holds_busybox_and_an_init_that_powers_off() {
        let dir = std::env::temp_dir().join(format!("husk-floor-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("busybox");
        std::fs::write(&fake, b"BUSYBOX-BYTES").unwrap();
        let out = dir.join("i.cpio");
        let n = write_initramfs(&out, &fake).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(n, bytes.len() as u64);
        let has = |s: &[u8]| bytes.windows(s.len()).any(|w| w == s);
        for needle in [
            &b"bin/busybox\0"[..],
            b"BUSYBOX-BYTES",
            b"poweroff -f",
            b"dev/console\0",
            b"init\0",
            b"TRAILER!!!",
        ] {
            assert!(has(needle), "{}", String::from_utf8_lossy(needle));
        }
    }
}
