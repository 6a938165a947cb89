//! What this host can do: tools, user namespaces, cgroups, KVM. Used by the
//! backends to pick limits and by `husk doctor` to explain them.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Finds an executable in `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// How the namespace backend can limit resources here.
#[derive(Debug, Clone, Serialize)]
pub struct CgroupSupport {
    /// A delegated cgroup v2 subtree with memory, pids and cpu controllers.
    pub delegated_v2: bool,
    /// Why not, in words (empty when delegated).
    pub reason: String,
}

/// Looks for a writable cgroup v2 subtree with the controllers we need.
pub fn cgroup_support() -> CgroupSupport {
    let no = |reason: String| CgroupSupport {
        delegated_v2: false,
        reason,
    };
    let text = match std::fs::read_to_string("/proc/self/cgroup") {
        Ok(t) => t,
        Err(e) => return no(format!("cannot read /proc/self/cgroup: {e}")),
    };
    let Some(own) = text.lines().find_map(|l| l.strip_prefix("0::")) else {
        return no("no cgroup v2 hierarchy for this process".into());
    };
    let mount = Path::new("/sys/fs/cgroup");
    let is_v2 = mount.join("cgroup.controllers").exists();
    if !is_v2 {
        return no("/sys/fs/cgroup is not a cgroup v2 mount (cgroup v1 or hybrid host)".into());
    }
    let dir = mount.join(own.trim_start_matches('/'));
    let controllers = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let missing: Vec<_> = ["memory", "pids", "cpu"]
        .into_iter()
        .filter(|c| !controllers.split_whitespace().any(|x| x == *c))
        .collect();
    if !missing.is_empty() {
        return no(format!(
            "cgroup {} lacks controllers: {}",
            dir.display(),
            missing.join(", ")
        ));
    }
    if rustix::fs::access(&dir, rustix::fs::Access::WRITE_OK).is_err() {
        return no(format!(
            "cgroup {} is not writable (not delegated to this user)",
            dir.display()
        ));
    }
    // Delegated and writable; husk does not yet create sub-cgroups itself.
    no(format!(
        "cgroup {} is delegated, but husk does not manage cgroups yet",
        dir.display()
    ))
}

/// `/dev/kvm` presence and access (not whether a guest actually boots: that
/// takes a probe VM, which the micro-VM backend runs).
#[derive(Debug, Clone, Serialize)]
pub struct KvmDevice {
    pub present: bool,
    pub accessible: bool,
}

pub fn kvm_device() -> KvmDevice {
    let p = Path::new("/dev/kvm");
    KvmDevice {
        present: p.exists(),
        accessible: rustix::fs::access(
            p,
            rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK,
        )
        .is_ok(),
    }
}

/// Number of CPUs this process may run on.
pub fn usable_cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&i| set.is_set(i))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1))
            .collect(),
    }
}
