//! Guest images for the micro-VM backend: a Debian cloud kernel and an
//! initramfs that husk assembles itself, cached by content.
//!
//! The image key is a SHA-256 over every input (the kernel package's
//! checksum, the guest agent, busybox, the module list, the extra tools and
//! the layout version), so an image is rebuilt exactly when an input
//! changes, and images built from the same inputs are byte-identical.

pub(super) mod cpio;
mod initramfs;
mod kernel;
mod modules;
mod pvh;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::cache::{self, Hold, Shape};
use crate::error::{Result, SandboxError};
pub use kernel::hex;
pub use pvh::KernelBoot;

/// Bump when the initramfs layout changes without any input changing.
const LAYOUT_VERSION: &str = "husk-initramfs-2";

/// Where a guest image's parts are.
#[derive(Debug, Clone, Serialize)]
pub struct GuestImage {
    /// The kernel QEMU boots: the unpacked ELF for [`KernelBoot::Pvh`],
    /// else the bzImage.
    pub kernel: PathBuf,
    /// How the kernel boots, and why not PVH when it does not.
    pub boot: KernelBoot,
    pub boot_note: String,
    /// The package's bzImage (what the bare-boot floor boots).
    pub bzimage: PathBuf,
    /// The initramfs (uncompressed newc cpio: TCG unpacks it faster than
    /// it would decompress it).
    pub initramfs: PathBuf,
    /// `uname -r` of the kernel.
    pub kernel_version: String,
    /// Debian package and version the kernel came from.
    pub kernel_package: String,
    /// Content key of the image (hex SHA-256).
    pub key: String,
    /// Size of the initramfs in bytes.
    pub initramfs_bytes: u64,
    /// Modules in the image as `group:file`, in load order.
    pub modules: Vec<String>,
    /// Whether this call built the initramfs (false: it was cached).
    pub built: bool,
    /// The kernel's and the image's cache entries, held while any copy of
    /// this lives, so no `husk image prune` removes them (see `cache`).
    #[serde(skip)]
    pub held: std::sync::Arc<Vec<super::cache::Hold>>,
}

/// What goes into an image.
pub struct ImageOptions<'a> {
    /// The static guest agent binary (becomes `/init`).
    pub guest_binary: PathBuf,
    /// Extra static binaries put in `/opt/husk/bin/<name>`.
    pub extra_binaries: Vec<PathBuf>,
    /// Ask apt for the newest kernel even when one is cached.
    pub refresh_kernel: bool,
    /// Called with one human-readable line per step.
    pub progress: &'a (dyn Fn(&str) + Sync),
}

/// The cache root: `$HUSK_CACHE_DIR`, else `$XDG_CACHE_HOME/husk`, else
/// `~/.cache/husk`.
pub fn cache_dir() -> PathBuf {
    super::probe_cache_dir()
}

/// Returns the cached image for these inputs, building what is missing.
pub fn build_or_get(opts: &ImageOptions<'_>) -> Result<GuestImage> {
    let progress = opts.progress;
    let cache = cache_dir();
    let kernel = kernel::get(&cache, opts.refresh_kernel, progress)?;
    let mut held: Vec<Hold> = kernel
        .vmlinuz
        .parent()
        .and_then(|dir| cache::hold_in(&cache, dir, Shape::Dir))
        .into_iter()
        .collect();
    let boot = pvh::settle(&kernel.vmlinuz, pvh::BootChoice::from_env()?, progress);
    let Keyed {
        busybox,
        modules,
        key,
    } = keyed(&cache, &kernel, opts)?;
    let dir = cache.join("images").join(&key[..32]);
    let initramfs = dir.join("initramfs.cpio");
    let module_names = modules
        .iter()
        .map(|(g, m)| {
            format!(
                "{g}:{}",
                m.file_name().unwrap_or_default().to_string_lossy()
            )
        })
        .collect();
    let mut image = GuestImage {
        kernel: boot.kernel,
        boot: boot.boot,
        boot_note: boot.note,
        bzimage: kernel.vmlinuz.clone(),
        initramfs: initramfs.clone(),
        kernel_version: kernel.release.clone(),
        kernel_package: format!("{} {}", kernel.package, kernel.package_version),
        key,
        initramfs_bytes: 0,
        modules: module_names,
        built: false,
        held: Default::default(),
    };
    // Held before it is looked at, so a prune cannot take it between the
    // look and the boot; one gone or being pruned is built again.
    match cache::hold(&dir, Shape::Dir) {
        Err(cache::HoldError::Gone(_) | cache::HoldError::Pruning(_)) => {}
        hold => {
            if let Ok(meta) = std::fs::metadata(&initramfs) {
                held.extend(hold.ok());
                image.initramfs_bytes = meta.len();
                image.held = std::sync::Arc::new(held);
                return Ok(image);
            }
        }
    }
    progress(&format!(
        "initramfs: assembling ({} modules, busybox, guest agent) …",
        modules.len()
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| SandboxError::io(format!("creating {}", dir.display()), e))?;
    let applets = busybox_applets(&busybox)?;
    let parts = initramfs::Parts {
        guest: &opts.guest_binary,
        busybox: &busybox,
        applets: &applets,
        modules: &modules,
        extra_binaries: &opts.extra_binaries,
    };
    let tmp = dir.join(format!(".initramfs.{}.tmp", std::process::id()));
    let written = initramfs::write(&tmp, &parts);
    let size = match written {
        Ok(size) => size,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, &initramfs)
        .map_err(|e| SandboxError::io(format!("storing {}", initramfs.display()), e))?;
    image.initramfs_bytes = size;
    image.built = true;
    held.extend(cache::hold_in(&cache, &dir, Shape::Dir));
    image.held = std::sync::Arc::new(held);
    progress(&format!(
        "initramfs: {} MiB at {}",
        size / (1024 * 1024),
        initramfs.display()
    ));
    Ok(image)
}

/// The key of the image `opts` would build, from what is cached, without
/// building or fetching anything: `None` when no kernel is cached yet.
/// What `husk image prune` keeps as current.
pub fn current_key(opts: &ImageOptions<'_>) -> Result<Option<String>> {
    let cache = cache_dir();
    let Some(kernel) = kernel::cached(&cache) else {
        return Ok(None);
    };
    Ok(Some(keyed(&cache, &kernel, opts)?.key))
}

/// An image's parts besides the kernel, and its key.
struct Keyed {
    busybox: PathBuf,
    modules: Vec<(String, PathBuf)>,
    key: String,
}

fn keyed(cache: &Path, kernel: &kernel::Kernel, opts: &ImageOptions<'_>) -> Result<Keyed> {
    let busybox = find_busybox()?;
    let modules = modules::plan_cached(&kernel.moddir, &kernel.sha256, modules::GUEST_MODULES)?;
    let key = image_key(
        cache,
        kernel,
        &opts.guest_binary,
        &busybox,
        &modules,
        &opts.extra_binaries,
    )?;
    Ok(Keyed {
        busybox,
        modules,
        key,
    })
}

fn image_key(
    cache: &Path,
    kernel: &kernel::Kernel,
    guest: &Path,
    busybox: &Path,
    modules: &[(String, PathBuf)],
    extra: &[PathBuf],
) -> Result<String> {
    let mut h = Sha256::new();
    let mut field = |tag: &str, bytes: &[u8]| {
        h.update(tag.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field("layout", LAYOUT_VERSION.as_bytes());
    field("kernel", kernel.sha256.as_bytes());
    field("guest", super::derived::sha256(cache, guest)?.as_bytes());
    field(
        "busybox",
        super::derived::sha256(cache, busybox)?.as_bytes(),
    );
    for (group, m) in modules {
        field("module-group", group.as_bytes());
        field(
            "module",
            m.strip_prefix(&kernel.moddir)
                .unwrap_or(m)
                .to_string_lossy()
                .as_bytes(),
        );
    }
    for x in extra {
        field(
            "extra-name",
            x.file_name().unwrap_or_default().as_encoded_bytes(),
        );
        field("extra", super::derived::sha256(cache, x)?.as_bytes());
    }
    Ok(hex(&h.finalize()))
}

/// The static busybox (Debian package `busybox-static`).
pub(super) fn find_busybox() -> Result<PathBuf> {
    let candidates = [
        std::env::var_os("HUSK_BUSYBOX").map(PathBuf::from),
        Some(PathBuf::from("/bin/busybox")),
    ];
    for path in candidates.into_iter().flatten() {
        if path.is_file() {
            return match is_static(&path) {
                Ok(true) => Ok(path),
                Ok(false) => Err(SandboxError::MissingTool {
                    tool: "static busybox",
                    hint: format!(
                        "{} is dynamically linked; install `busybox-static`",
                        path.display()
                    ),
                }),
                Err(e) => Err(e),
            };
        }
    }
    Err(SandboxError::MissingTool {
        tool: "busybox",
        hint: "install it with `apt-get install busybox-static`".into(),
    })
}

fn busybox_applets(busybox: &Path) -> Result<Vec<String>> {
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| SandboxError::io(format!("running {} --list-full", busybox.display()), e))?;
    if !out.status.success() {
        return Err(SandboxError::Config(format!(
            "{} --list-full failed",
            busybox.display()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

/// True when an ELF executable has no program interpreter (static or
/// static-pie), i.e. it can run as `/init` with no libc in the image.
///
/// Reads only the ELF header and the program headers (a few hundred
/// bytes), not the binary: a namespace start in a checkout asks this of
/// the guest agent (2+ MiB) on every `husk exec`.
pub fn is_static(path: &Path) -> Result<bool> {
    use object::read::elf::{FileHeader, ProgramHeader};
    let file = std::fs::File::open(path)
        .map_err(|e| SandboxError::io(format!("reading {}", path.display()), e))?;
    let data = object::ReadCache::new(file);
    let not_elf = |e: object::Error| {
        SandboxError::Config(format!(
            "{} is not a 64-bit ELF executable: {e}",
            path.display()
        ))
    };
    let header = object::elf::FileHeader64::<object::Endianness>::parse(&data).map_err(not_elf)?;
    let endian = header.endian().map_err(not_elf)?;
    let phdrs = header.program_headers(endian, &data).map_err(not_elf)?;
    Ok(!phdrs
        .iter()
        .any(|ph| ph.p_type(endian) == object::elf::PT_INTERP))
}

/// The guest agent, checked to be static (micro-VMs boot it as `/init`).
/// When the usual lookup finds a dynamic build, the static build that
/// `scripts/build-guest` leaves under `target/<triple>/` is used instead.
pub fn locate_static_guest() -> Result<PathBuf> {
    let guest = crate::guest_bin::locate_guest()?;
    if is_static(&guest)? {
        return Ok(guest);
    }
    if std::env::var_os("HUSK_GUEST_BIN").is_none()
        && let Some(found) = static_build_nearby()
    {
        return Ok(found);
    }
    Err(SandboxError::Config(format!(
        "guest agent {} is dynamically linked, but a micro-VM boots it as /init with no libc; \
         build it with `scripts/build-guest` and point HUSK_GUEST_BIN at the result",
        guest.display()
    )))
}

/// `target/x86_64-unknown-linux-gnu/{debug,release}/husk-guest` next to
/// the running executable's `target/` directory.
fn static_build_nearby() -> Option<PathBuf> {
    locate_static_helper(crate::guest_bin::GUEST_BIN)
}

/// A static build of a husk helper binary (`scripts/build-guest` builds
/// them under `target/x86_64-unknown-linux-gnu/<profile>/`), found from
/// the running executable: micro-VMs need static binaries.
pub fn locate_static_helper(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile = if cfg!(debug_assertions) {
        ["debug", "release"]
    } else {
        ["release", "debug"]
    };
    exe.ancestors().skip(1).take(3).find_map(|dir| {
        profile
            .iter()
            .map(|p| dir.join("x86_64-unknown-linux-gnu").join(p).join(name))
            .find(|p| is_static(p).unwrap_or(false))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_static_tells_static_from_dynamic_and_refuses_non_elf() {
        // This test binary is linked dynamically (it has an interpreter).
        let me = std::env::current_exe().unwrap();
        assert!(!is_static(&me).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("script");
        std::fs::write(&text, "#!/bin/sh\ntrue\n").unwrap();
        let err = is_static(&text).unwrap_err().to_string();
        assert!(err.contains("not a 64-bit ELF executable"), "{err}");
        // A truncated ELF: the header promises program headers past the end.
        let bytes = std::fs::read(&me).unwrap();
        let cut = dir.path().join("cut");
        std::fs::write(&cut, &bytes[..40]).unwrap();
        assert!(is_static(&cut).is_err());
        // The static busybox the micro-VM image needs, when it is here.
        if Path::new("/bin/busybox").is_file() {
            let busybox_static = std::process::Command::new("ldd")
                .arg("/bin/busybox")
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(false);
            assert_eq!(
                is_static(Path::new("/bin/busybox")).unwrap(),
                busybox_static
            );
        }
    }
}
