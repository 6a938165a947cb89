//! Which kernel modules the guest loads, and in what order.
//!
//! Debian's cloud kernel ships virtio, virtio-mmio, the virtio console and
//! friends as modules. The package carries no `modules.dep` (depmod runs at
//! install time), so the order comes from the package's own module data:
//! `modules.builtin` says what needs no loading, and each module's
//! `.modinfo` section lists its `depends=` (and `softdep=pre:`). A module is
//! loaded after everything it depends on.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};
use sha2::Digest;

use crate::error::{Result, SandboxError};

/// What the guest loads, by group: `core` at every boot, before the
/// handshake (the virtio-mmio transport — the `microvm` machine has no PCI
/// — and the control port); `late` at every boot on a thread of its own
/// once the control port is open (the balloon, whose free page reporting
/// gives freed guest RAM back to the host); `root` only when a rootfs disk
/// is attached (block device, overlay, ext4); `vsock` on demand, for port
/// tunnels. Fewer modules before the handshake is a faster boot: each one
/// costs ~10–20 ms of loading and relocation under emulation. The session
/// secret needs no fw_cfg module: the guest reads the device's I/O ports.
/// ext4 is built into Debian's cloud kernel; a kernel that has it as a
/// module gets it loaded. Entropy needs no module: the vCPU offers RDRAND,
/// so the kernel's RNG is ready at once.
pub const GUEST_MODULES: &[(&str, &[&str])] = &[
    ("core", &["virtio_mmio", "virtio_console"]),
    ("late", &["virtio_balloon"]),
    ("root", &["virtio_blk", "overlay", "ext4"]),
    ("vsock", &["vmw_vsock_virtio_transport"]),
];

/// Part of a cached plan's key with husk's version, so a plan cached by
/// another husk is not reused; bump it when [`ModuleTree::plan`]'s rules
/// change between releases.
const PLAN_RULES: &str = "plan-1";

/// [`ModuleTree::plan`] of the module tree at `moddir` for `groups`,
/// cached in a file beside the tree. Reading the tree (a walk of ~1,300
/// entries and each chosen module's ELF) costs 7–15 ms per process; the
/// tree of an unpacked kernel package never changes, and `kernel_sha`
/// (the package's digest) names it. A cached plan whose files are gone is
/// planned again.
pub fn plan_cached(
    moddir: &Path,
    kernel_sha: &str,
    groups: &[(&str, &[&str])],
) -> Result<Vec<(String, PathBuf)>> {
    let key = super::hex(&sha2::Sha256::digest(
        format!(
            "{PLAN_RULES}\n{}\n{kernel_sha}\n{groups:?}",
            env!("CARGO_PKG_VERSION")
        )
        .as_bytes(),
    ));
    let file = moddir.join(format!("husk-plan-{}", &key[..16]));
    if let Some(plan) = read_plan(moddir, &file) {
        return Ok(plan);
    }
    let plan = ModuleTree::open(moddir)?.plan(groups)?;
    let mut text = String::new();
    for (group, path) in &plan {
        let Some(rel) = path.strip_prefix(moddir).ok().and_then(|r| r.to_str()) else {
            return Ok(plan);
        };
        text.push_str(&format!("{group}\t{rel}\n"));
    }
    // A plan that cannot be stored is planned again next time.
    let _ = super::kernel::write_atomic(&file, text.as_bytes());
    Ok(plan)
}

/// A stored plan, if every line is well formed and names a module file.
fn read_plan(moddir: &Path, file: &Path) -> Option<Vec<(String, PathBuf)>> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .map(|line| {
            let (group, rel) = line.split_once('\t')?;
            let path = moddir.join(rel);
            (module_name(&path).is_some() && path.is_file()).then(|| (group.to_string(), path))
        })
        .collect()
}

/// Module names treat `-` and `_` alike.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The modules of a kernel's module tree, indexed by name.
pub struct ModuleTree {
    files: BTreeMap<String, PathBuf>,
    builtin: HashSet<String>,
}

impl ModuleTree {
    /// Reads `lib/modules/<version>` of an unpacked kernel package.
    pub fn open(moddir: &Path) -> Result<Self> {
        let builtin_list = moddir.join("modules.builtin");
        let builtin = std::fs::read_to_string(&builtin_list)
            .map_err(|e| SandboxError::io(format!("reading {}", builtin_list.display()), e))?
            .lines()
            .filter_map(|l| module_name(Path::new(l.trim())))
            .collect();
        let mut files = BTreeMap::new();
        let mut stack = vec![moddir.join("kernel")];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| SandboxError::io(format!("reading {}", dir.display()), e))?;
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Some(name) = module_name(&path) {
                    files.insert(name, path);
                }
            }
        }
        Ok(ModuleTree { files, builtin })
    }

    /// The module files to load, group by group, dependencies first. A
    /// module that an earlier group already loads is not repeated; roots
    /// built into the kernel need nothing.
    pub fn plan(&self, groups: &[(&str, &[&str])]) -> Result<Vec<(String, PathBuf)>> {
        let mut state = Walk::default();
        let mut out = Vec::new();
        for (group, roots) in groups {
            for root in *roots {
                self.visit(&normalize(root), &mut state, &mut Vec::new(), true)?;
            }
            out.extend(state.order.drain(..).map(|p| (group.to_string(), p)));
        }
        Ok(out)
    }

    fn visit(
        &self,
        name: &str,
        st: &mut Walk,
        chain: &mut Vec<String>,
        required: bool,
    ) -> Result<()> {
        if st.done.contains(name) || self.builtin.contains(name) {
            return Ok(());
        }
        if chain.iter().any(|c| c == name) {
            chain.push(name.to_string());
            return Err(SandboxError::Config(format!(
                "kernel module dependency cycle: {}",
                chain.join(" -> ")
            )));
        }
        let Some(path) = self.files.get(name) else {
            if !required {
                return Ok(());
            }
            let via = if chain.is_empty() {
                String::new()
            } else {
                format!(" (needed by {})", chain.join(" -> "))
            };
            return Err(SandboxError::Config(format!(
                "kernel module {name}{via} is neither built in nor shipped as an uncompressed .ko in the kernel package"
            )));
        };
        let info = modinfo(path)?;
        chain.push(name.to_string());
        for dep in &info.depends {
            self.visit(dep, st, chain, true)?;
        }
        for dep in &info.soft_pre {
            self.visit(dep, st, chain, false)?;
        }
        chain.pop();
        st.done.insert(name.to_string());
        st.order.push(path.clone());
        Ok(())
    }
}

#[derive(Default)]
struct Walk {
    done: HashSet<String>,
    order: Vec<PathBuf>,
}

/// `foo-bar.ko` → `foo_bar`; `None` for anything else.
fn module_name(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    file.strip_suffix(".ko").map(normalize)
}

/// What a module's `.modinfo` says about its dependencies.
#[derive(Debug, Default, PartialEq)]
pub struct ModInfo {
    pub depends: Vec<String>,
    /// `softdep=pre: a b` — loaded first when present, skipped when not.
    pub soft_pre: Vec<String>,
}

fn modinfo(path: &Path) -> Result<ModInfo> {
    let bytes = std::fs::read(path)
        .map_err(|e| SandboxError::io(format!("reading {}", path.display()), e))?;
    let bad =
        |why: String| SandboxError::Config(format!("kernel module {}: {why}", path.display()));
    let file = object::File::parse(&*bytes).map_err(|e| bad(format!("not an ELF object: {e}")))?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or_else(|| bad("no .modinfo section".into()))?;
    let data = section
        .data()
        .map_err(|e| bad(format!("unreadable .modinfo: {e}")))?;
    Ok(parse_modinfo(data))
}

/// `.modinfo` is a run of NUL-terminated `key=value` strings.
pub fn parse_modinfo(data: &[u8]) -> ModInfo {
    let mut info = ModInfo::default();
    for entry in data.split(|b| *b == 0) {
        let Ok(text) = std::str::from_utf8(entry) else {
            continue;
        };
        if let Some(list) = text.strip_prefix("depends=") {
            info.depends
                .extend(list.split(',').filter(|s| !s.is_empty()).map(normalize));
        } else if let Some(soft) = text.strip_prefix("softdep=") {
            info.soft_pre.extend(softdep_pre(soft));
        }
    }
    info
}

/// `pre: a b post: c` → `[a, b]`.
fn softdep_pre(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_pre = false;
    for word in text.split_whitespace() {
        match word {
            "pre:" => in_pre = true,
            "post:" => in_pre = false,
            w if in_pre => out.push(normalize(w)),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_fields() {
        let data = b"license=GPL\0depends=virtio,virtio_ring\0softdep=pre: crc32c post: foo\0name=virtio_mmio\0";
        let info = parse_modinfo(data);
        assert_eq!(info.depends, ["virtio", "virtio_ring"]);
        assert_eq!(info.soft_pre, ["crc32c"]);
        assert_eq!(parse_modinfo(b"depends=\0").depends, Vec::<String>::new());
    }

    #[test]
    fn names_normalize() {
        assert_eq!(
            module_name(Path::new("a/virtio-rng.ko")).as_deref(),
            Some("virtio_rng")
        );
        assert_eq!(module_name(Path::new("a/x.ko.xz")), None);
    }

    #[test]
    fn a_stored_plan_is_used_only_while_its_files_exist() {
        let tmp = tempfile::tempdir().unwrap();
        let moddir = tmp.path();
        std::fs::create_dir_all(moddir.join("kernel/drivers")).unwrap();
        std::fs::write(moddir.join("kernel/drivers/virtio_x.ko"), b"").unwrap();
        let plan = moddir.join("husk-plan-test");
        std::fs::write(&plan, "core\tkernel/drivers/virtio_x.ko\n").unwrap();
        assert_eq!(
            read_plan(moddir, &plan),
            Some(vec![(
                "core".to_string(),
                moddir.join("kernel/drivers/virtio_x.ko")
            )])
        );
        std::fs::write(&plan, "core\tkernel/drivers/gone.ko\n").unwrap();
        assert_eq!(read_plan(moddir, &plan), None);
        std::fs::write(&plan, "core kernel/drivers/virtio_x.ko\n").unwrap();
        assert_eq!(read_plan(moddir, &plan), None);
    }

    #[test]
    fn built_in_roots_plan_to_nothing_and_the_plan_is_stored() {
        let tmp = tempfile::tempdir().unwrap();
        let moddir = tmp.path();
        std::fs::create_dir_all(moddir.join("kernel")).unwrap();
        std::fs::write(moddir.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
        let groups: &[(&str, &[&str])] = &[("root", &["ext4"])];
        assert!(plan_cached(moddir, "sha", groups).unwrap().is_empty());
        let stored: Vec<_> = std::fs::read_dir(moddir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("husk-plan-"))
            .collect();
        assert_eq!(stored.len(), 1);
        // Another kernel (digest) or other groups get a plan of their own.
        plan_cached(moddir, "other", groups).unwrap();
        plan_cached(moddir, "sha", &[("core", &["ext4"])]).unwrap();
        let count = std::fs::read_dir(moddir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("husk-plan-"))
            .count();
        assert_eq!(count, 3);
    }
}
