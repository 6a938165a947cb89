//! Micro-VM mode: the guest agent is the kernel's `/init`. It mounts the
//! basic filesystems, loads the kernel modules the image lists (in the
//! dependency order computed when the image was built), finds its
//! virtio-serial control port by name, and serves the host on it.
//!
//! The session secret comes through QEMU's fw_cfg, read from its I/O ports
//! by PID 1 (see `fwcfg`), or, as a fallback, the kernel command line,
//! which is then hidden by mounting an empty file over `/proc/cmdline` so
//! sandboxed processes cannot read it.
//!
//! Only what the handshake needs is on the boot path: the balloon driver
//! (group `late` of the image's module list) loads on a thread of its own
//! once the control port is open.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use husk_protocol::Secret;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{MountFlags, mount, mount_bind};

/// Name of the control port (`virtserialport name=`).
pub const PORT_NAME: &str = "husk.control";
/// The fw_cfg file the host puts the secret in.
const FW_CFG_SECRET: &str = "opt/husk/secret";
/// A hex secret and a newline fit; anything larger is not ours.
const FW_CFG_SECRET_MAX: u32 = 256;
const MODULE_DIR: &str = "/lib/modules/husk";
/// The sandbox user.
pub const SANDBOX_UID: u32 = 1000;

/// One-time system setup as PID 1.
pub fn init_system() -> Result<(), String> {
    let nosuid = MountFlags::NOSUID | MountFlags::NODEV;
    mount_fs("proc", "/proc", "proc", nosuid | MountFlags::NOEXEC, "")?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let sizes = TmpfsSizes::from_cmdline(&cmdline);
    mount_fs("sysfs", "/sys", "sysfs", nosuid | MountFlags::NOEXEC, "")?;
    mount_fs(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MountFlags::NOSUID,
        "mode=0755",
    )?;
    for dir in ["/dev/pts", "/dev/shm"] {
        let _ = rustix::fs::mkdir(dir, Mode::from_raw_mode(0o755));
    }
    mount_fs(
        "devpts",
        "/dev/pts",
        "devpts",
        nosuid | MountFlags::NOEXEC,
        "mode=0620,ptmxmode=0666",
    )?;
    let tmpfs =
        |dir: &str, opts: &str| mount_fs("tmpfs", dir, "tmpfs", nosuid, &sizes.options(dir, opts));
    tmpfs("/dev/shm", "mode=1777")?;
    tmpfs("/tmp", "mode=1777")?;
    tmpfs("/run", "mode=0755")?;
    let owner = format!("mode=0755,uid={SANDBOX_UID},gid={SANDBOX_UID}");
    tmpfs("/workspace", &owner)?;
    tmpfs("/home/sandbox", &owner)?;
    // The initramfs root is an unsized, world-writable tmpfs (mode 1777):
    // keep the sandbox user to the sized mounts above. /var/tmp shares /tmp.
    rustix::fs::chmod("/", Mode::from_raw_mode(0o755)).map_err(|e| format!("chmod /: {e}"))?;
    if Path::new("/var/tmp").is_dir() {
        mount_bind("/tmp", "/var/tmp").map_err(|e| format!("binding /var/tmp: {e}"))?;
    }
    let _ = rustix::system::sethostname(b"husk");
    boot_mark("filesystems mounted");
    load_modules("core")?;
    boot_mark("core modules loaded");
    // Bringing `lo` up costs ~30–40 ms under TCG (IPv6 address setup). It
    // runs here, while the kernel adds the control port asynchronously
    // (~75 ms after virtio_console loads), so it costs the boot nothing; a
    // thread of its own made the port appear later (one vCPU). A VM
    // without lo still serves; its processes just have no 127.0.0.1.
    match crate::net::loopback_up() {
        Ok(()) => boot_mark("loopback up"),
        Err(e) => eprintln!("husk-guest: {e}"),
    }
    if let Some(dev) = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("husk.root="))
    {
        load_modules("root")?;
        switch_to_rootfs(&format!("/dev/{dev}"), &sizes)?;
    }
    Ok(())
}

/// Sizes of the tmpfs mounts, from `husk.tmpfs=/dir:MiB,…` on the kernel
/// command line (the host's split of `disk_mb`). A mount it does not name
/// gets the kernel's default (half of the guest's RAM).
#[derive(Debug, Default, PartialEq)]
struct TmpfsSizes(Vec<(String, u32)>);

impl TmpfsSizes {
    fn from_cmdline(cmdline: &str) -> TmpfsSizes {
        let Some(list) = cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix("husk.tmpfs="))
        else {
            return TmpfsSizes::default();
        };
        let sizes = list
            .split(',')
            .filter_map(|item| {
                let (dir, mb) = item.split_once(':')?;
                Some((dir.to_string(), mb.parse().ok().filter(|&m| m > 0)?))
            })
            .collect();
        TmpfsSizes(sizes)
    }

    /// Mount options for the tmpfs on `dir`: `opts` plus its size.
    fn options(&self, dir: &str, opts: &str) -> String {
        match self.0.iter().find(|(d, _)| d == dir) {
            Some((_, mb)) if opts.is_empty() => format!("size={mb}m"),
            Some((_, mb)) => format!("{opts},size={mb}m"),
            None => opts.to_string(),
        }
    }
}

type LateLoad = std::thread::JoinHandle<Result<(), String>>;
static LATE_MODULES: std::sync::Mutex<Option<LateLoad>> = std::sync::Mutex::new(None);

/// Starts loading the `late` module group (the balloon) on its own thread:
/// nothing the handshake or a first command needs waits for it.
pub fn load_late_modules() {
    let handle = std::thread::spawn(|| {
        // Idle priority: the handshake and the first commands go first; the
        // module loads in the gaps while the guest waits for the host.
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler reads the parameter we pass; pid 0 is
        // this thread.
        let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        let r = load_modules("late");
        match &r {
            Ok(()) => boot_mark("late modules loaded"),
            // The VM serves without them (no free page reporting); the
            // console says why.
            Err(e) => eprintln!("husk-guest: {e}"),
        }
        r
    });
    *LATE_MODULES.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
}

/// Waits for [`load_late_modules`] (at once if it never ran).
pub fn late_modules_loaded() -> Result<(), String> {
    let handle = LATE_MODULES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    match handle.map(|h| h.join()) {
        None | Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(e))) => Err(e),
        Some(Err(_)) => Err("loading the late modules panicked".into()),
    }
}

/// Notes a boot phase in the kernel log (`dmesg` in the sandbox shows
/// where boot time goes; the console stays quiet).
pub fn boot_mark(phase: &str) {
    use std::io::Write;
    if let Ok(mut kmsg) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        // One write is one log record.
        let _ = kmsg.write_all(format!("<6>husk-guest: {phase}\n").as_bytes());
    }
}

/// Makes a read-only ext4 disk, under a tmpfs overlay, the root: the
/// sandbox may write anywhere, the image stays untouched. The already
/// mounted filesystems move along; the guest keeps running from memory.
fn switch_to_rootfs(dev: &str, sizes: &TmpfsSizes) -> Result<(), String> {
    let start = Instant::now();
    while !Path::new(dev).exists() {
        if start.elapsed() > Duration::from_secs(10) {
            return Err(format!("root disk {dev} did not appear"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    mount_fs(dev, "/.lower", "ext4", MountFlags::RDONLY, "")?;
    let rw = sizes.options("/.rw", "mode=0755");
    mount_fs("tmpfs", "/.rw", "tmpfs", MountFlags::empty(), &rw)?;
    for d in ["/.rw/upper", "/.rw/work"] {
        rustix::fs::mkdir(d, Mode::from_raw_mode(0o755)).map_err(|e| format!("mkdir {d}: {e}"))?;
    }
    let opts = "lowerdir=/.lower,upperdir=/.rw/upper,workdir=/.rw/work";
    mount_fs("overlay", "/.root", "overlay", MountFlags::empty(), opts)?;
    for m in [
        "/proc",
        "/sys",
        "/dev",
        "/tmp",
        "/run",
        "/workspace",
        "/home/sandbox",
    ] {
        let target = format!("/.root{m}");
        std::fs::create_dir_all(&target).map_err(|e| format!("mkdir {target}: {e}"))?;
        rustix::mount::mount_move(m, target.as_str()).map_err(|e| format!("moving {m}: {e}"))?;
    }
    if Path::new("/opt/husk/bin").is_dir() {
        std::fs::create_dir_all("/.root/opt/husk/bin")
            .map_err(|e| format!("mkdir /opt/husk/bin: {e}"))?;
        mount_bind("/opt/husk/bin", "/.root/opt/husk/bin")
            .map_err(|e| format!("binding /opt/husk/bin: {e}"))?;
    }
    std::env::set_current_dir("/.root").map_err(|e| format!("chdir /.root: {e}"))?;
    rustix::mount::mount_move(".", "/").map_err(|e| format!("moving the new root: {e}"))?;
    rustix::process::chroot(".").map_err(|e| format!("chroot: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(())
}

fn mount_fs(
    src: &str,
    target: &str,
    fstype: &str,
    flags: MountFlags,
    data: &str,
) -> Result<(), String> {
    let _ = rustix::fs::mkdir(target, Mode::from_raw_mode(0o755));
    let data = std::ffi::CString::new(data)
        .map_err(|_| format!("mount options for {target} contain NUL"))?;
    mount(src, target, fstype, flags, data.as_c_str())
        .map_err(|e| format!("mounting {fstype} on {target}: {e}"))
}

/// Loads the modules of `group` from `/lib/modules/husk`, in the order of
/// `load-order` (lines `group file`; a bare `file` belongs to `core`).
pub fn load_modules(group: &str) -> Result<(), String> {
    let list = match std::fs::read_to_string(format!("{MODULE_DIR}/load-order")) {
        Ok(l) => l,
        Err(_) => return Ok(()), // an image without modules (built-in drivers)
    };
    for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (g, name) = line.split_once(' ').unwrap_or(("core", line));
        if g != group {
            continue;
        }
        let path = format!("{MODULE_DIR}/{name}");
        let fd = rustix::fs::open(&path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| format!("opening module {path}: {e}"))?;
        match finit_module(&fd) {
            Ok(()) | Err(Errno::EXIST) => {
                if name.starts_with("virtio_balloon.") {
                    crate::balloon::loaded();
                }
                boot_mark(name)
            }
            Err(e) => return Err(format!("loading module {name}: {e}")),
        }
    }
    Ok(())
}

fn finit_module(fd: &OwnedFd) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    let params = c"";
    // SAFETY: finit_module reads the module from an open descriptor we own
    // and a NUL-terminated parameter string that outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, fd.as_raw_fd(), params.as_ptr(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ))
    }
}

/// Reads the session secret and hides its sources from sandbox processes.
pub fn take_secret() -> Result<Secret, String> {
    if let Some(bytes) = crate::fwcfg::read_file(FW_CFG_SECRET, FW_CFG_SECRET_MAX)? {
        let text = String::from_utf8(bytes).map_err(|_| "fw_cfg secret is not text")?;
        return Secret::from_hex(&text).map_err(|e| format!("fw_cfg secret: {e}"));
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| format!("reading /proc/cmdline: {e}"))?;
    let hex = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("husk.secret="))
        .ok_or("no session secret (neither fw_cfg opt/husk/secret nor husk.secret= on the kernel command line)")?;
    let secret = Secret::from_hex(hex).map_err(|e| format!("kernel command line secret: {e}"))?;
    std::fs::write("/run/.husk-empty", b"").map_err(|e| format!("hiding /proc/cmdline: {e}"))?;
    mount_bind("/run/.husk-empty", "/proc/cmdline")
        .map_err(|e| format!("hiding /proc/cmdline: {e}"))?;
    Ok(secret)
}

/// Finds the control port's device node, waiting for the driver to probe.
pub fn find_port(deadline: Duration) -> Result<String, String> {
    let start = Instant::now();
    loop {
        if let Ok(dir) = std::fs::read_dir("/sys/class/virtio-ports") {
            for entry in dir.filter_map(Result::ok) {
                let name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
                if name.trim() == PORT_NAME {
                    let dev = format!("/dev/{}", entry.file_name().to_string_lossy());
                    if Path::new(&dev).exists() {
                        return Ok(dev);
                    }
                }
            }
        }
        if start.elapsed() > deadline {
            return Err(format!(
                "no virtio-serial port named {PORT_NAME} after {deadline:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Opens the port, retrying while the host side is not connected (ENXIO).
pub fn open_port(dev: &str, deadline: Duration) -> Result<OwnedFd, String> {
    let start = Instant::now();
    loop {
        match rustix::fs::open(
            dev,
            OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NXIO) | Err(Errno::BUSY) if start.elapsed() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("opening {dev}: {e}")),
        }
    }
}

/// Ends the VM: kill everything, flush, power off (QEMU runs -no-reboot).
pub fn power_off() -> ! {
    crate::kill_everything();
    rustix::fs::sync();
    let _ = rustix::system::reboot(rustix::system::RebootCommand::PowerOff);
    std::process::exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpfs_sizes_from_the_kernel_command_line() {
        let sizes = TmpfsSizes::from_cmdline(
            "console=ttyS0 husk.tmpfs=/workspace:16,/tmp:8,/bad,/run:x,/.rw:0 quiet",
        );
        assert_eq!(
            sizes.options("/workspace", "mode=0755"),
            "mode=0755,size=16m"
        );
        assert_eq!(sizes.options("/tmp", ""), "size=8m");
        // Unnamed, malformed or zero: the kernel's default.
        assert_eq!(sizes.options("/run", "mode=0755"), "mode=0755");
        assert_eq!(sizes.options("/.rw", "mode=0755"), "mode=0755");
        assert_eq!(sizes.options("/home/sandbox", "m"), "m");
        assert_eq!(TmpfsSizes::from_cmdline("quiet"), TmpfsSizes::default());
    }
}
