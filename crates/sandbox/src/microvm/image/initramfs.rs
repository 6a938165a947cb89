//! Assembles the initramfs: the guest agent as `/init`, busybox and its
//! applets for a usable shell, the kernel modules with their load order,
//! husk's guest tools in `/opt/husk/bin`, and the few files a userland
//! expects (`/etc/passwd` with the `sandbox` user, `/dev/console`, …).

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::cpio::CpioWriter;
use crate::error::{Result, SandboxError};

/// Everything that goes into one initramfs.
pub struct Parts<'a> {
    pub guest: &'a Path,
    pub busybox: &'a Path,
    /// Applet paths relative to `/`, e.g. `bin/sh`, `usr/bin/env`.
    pub applets: &'a [String],
    /// Module files with their group, in load order.
    pub modules: &'a [(String, PathBuf)],
    pub extra_binaries: &'a [PathBuf],
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
sandbox:x:1000:1000:sandbox:/home/sandbox:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n";
/// Init of the benchmark's bare-boot floor: power off at once.
const FLOOR_INIT: &str = "#!/bin/sh\n/bin/busybox poweroff -f\n";

/// Writes the archive to `out` and returns its size in bytes.
pub fn write(out: &Path, parts: &Parts<'_>) -> Result<u64> {
    let file = std::fs::File::create(out)
        .map_err(|e| SandboxError::io(format!("creating {}", out.display()), e))?;
    let mut w = CpioWriter::new(BufWriter::new(file));
    let io = |e| SandboxError::io(format!("writing {}", out.display()), e);
    layout(&mut w, parts).map_err(io)?;
    let (_, size) = w.finish().map_err(io)?;
    Ok(size)
}

fn layout<W: std::io::Write>(w: &mut CpioWriter<W>, parts: &Parts<'_>) -> std::io::Result<()> {
    for dir in [
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "lib",
        "lib/modules",
        "lib/modules/husk",
        "etc",
        "dev",
        "proc",
        "sys",
        "run",
        "workspace",
        "home",
        "home/sandbox",
        "opt",
        "opt/husk",
        "opt/husk/bin",
        "var",
    ] {
        w.dir(dir, 0o755)?;
    }
    w.dir("root", 0o700)?;
    w.dir("tmp", 0o1777)?;
    w.dir("var/tmp", 0o1777)?;
    w.char_dev("dev/console", 0o600, 5, 1)?;
    w.char_dev("dev/null", 0o666, 1, 3)?;
    w.file("init", 0o755, &read(parts.guest)?)?;
    w.file("husk-floor", 0o755, FLOOR_INIT.as_bytes())?;
    w.file("bin/busybox", 0o755, &read(parts.busybox)?)?;
    for applet in parts.applets {
        let applet = applet.trim_start_matches('/');
        if applet != "bin/busybox" && !applet.is_empty() && !applet.contains("..") {
            w.symlink(applet, "/bin/busybox")?;
        }
    }
    let mut order = String::new();
    // `load-order`: one `group file` line per module, dependencies first.
    for (group, module) in parts.modules {
        let name = file_name(module);
        w.file(&format!("lib/modules/husk/{name}"), 0o644, &read(module)?)?;
        order.push_str(&format!("{group} {name}\n"));
    }
    w.file("lib/modules/husk/load-order", 0o644, order.as_bytes())?;
    for bin in parts.extra_binaries {
        w.file(
            &format!("opt/husk/bin/{}", file_name(bin)),
            0o755,
            &read(bin)?,
        )?;
    }
    w.file("etc/passwd", 0o644, PASSWD.as_bytes())?;
    w.file("etc/group", 0o644, GROUP.as_bytes())?;
    w.file("etc/hostname", 0o644, b"husk\n")?;
    w.file(
        "etc/hosts",
        0o644,
        b"127.0.0.1 localhost husk\n::1 localhost\n",
    )?;
    Ok(())
}

fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}
