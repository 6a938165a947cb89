//! The filesystem of a namespace sandbox, decided once as a list of
//! [`Step`]s and then either sent to husk's own launcher as a plan or
//! rendered as bubblewrap arguments: the two launchers build the same
//! sandbox because they read the same list.

use std::path::{Path, PathBuf};

use husk_protocol::launch::{Exec, LAUNCH_VERSION, LaunchPlan, Limits, Step};

use crate::backend::SandboxConfig;

/// System directories of the host root bound read-only into the sandbox.
/// Home directories, `/root`, `/run`, `/mnt` and anything unusual (project
/// checkouts) are deliberately absent.
const SYSTEM_DIRS: [&str; 10] = [
    "usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "opt", "var",
];
/// Where the guest binary appears inside the sandbox.
pub const GUEST_PATH: &str = "/run/husk/husk-guest";
/// The uid and gid everything in the sandbox runs as.
pub const SANDBOX_UID: u32 = 1000;
/// The descriptors of the passwd and group files.
pub const PASSWD_FD: i32 = 5;
pub const GROUP_FD: i32 = 6;
/// The descriptor of the first copied mount (see `copied_mounts`); 3 to 6
/// are the control channel, the secret, passwd and group.
pub const FIRST_COPY_FD: usize = 7;
/// The guest agent's command line inside the sandbox.
const GUEST_ARGS: [&str; 5] = [GUEST_PATH, "--control-fd", "3", "--secret-fd", "4"];

/// The layout of `config`'s sandbox, with `guest` bound in when the
/// launcher execs it by path (bubblewrap). `copied` lists the
/// mounts (by index) whose contents come from a descriptor instead of a
/// bind mount. `with_data`: include the passwd/group and copied files
/// (the benchmark floor has no descriptors to read them from).
pub fn steps(
    config: &SandboxConfig,
    guest: Option<&Path>,
    copied: &[usize],
    with_data: bool,
) -> Vec<Step> {
    let mut out = Vec::with_capacity(32);
    let root = config.rootfs.clone().unwrap_or_else(|| PathBuf::from("/"));
    for entry in root_entries(&root) {
        match entry {
            RootEntry::Dir(name) => out.push(bind(&root.join(&name), &format!("/{name}"), false)),
            RootEntry::Link(name, target) => out.push(Step::Symlink {
                target,
                dst: format!("/{name}"),
            }),
        }
    }
    out.push(Step::Dev { dst: "/dev".into() });
    out.push(Step::Proc {
        dst: "/proc".into(),
    });
    out.push(Step::Dir {
        dst: "/home".into(),
    });
    // Every writable filesystem is a tmpfs, whose pages are host RAM:
    // each gets its share of disk_mb (plus room for the host files copied
    // onto it), and the ones that cannot be sized (the root and /dev) are
    // made read-only once set up.
    let split = config.disk_split();
    let copied_bytes = |dir: &str| -> u64 {
        copied
            .iter()
            .filter_map(|&i| config.mounts.get(i))
            .filter(|m| m.guest.starts_with(&format!("{dir}/")))
            .map(|m| std::fs::metadata(&m.host).map_or(0, |md| md.len()))
            .sum()
    };
    for (dir, mb) in [
        ("/tmp", split.tmp_mb),
        ("/run", split.run_mb),
        ("/workspace", split.workspace_mb),
        ("/home/sandbox", split.home_mb),
        ("/dev/shm", split.shm_mb),
    ] {
        let size_bytes = u64::from(mb) * 1024 * 1024 + copied_bytes(dir);
        out.push(Step::Tmpfs {
            dst: dir.into(),
            size_bytes,
        });
    }
    if with_data && root.join("etc").is_dir() {
        for (fd, dst) in [(PASSWD_FD, "/etc/passwd"), (GROUP_FD, "/etc/group")] {
            out.push(Step::Data {
                fd,
                dst: dst.into(),
                mode: 0o444,
            });
        }
    }
    for (i, m) in config.mounts.iter().enumerate() {
        match copied.iter().position(|&c| c == i) {
            Some(pos) if with_data => out.push(Step::Data {
                fd: (FIRST_COPY_FD + pos) as i32,
                dst: m.guest.clone(),
                mode: super::source_mode(&m.host) & 0o555,
            }),
            Some(_) => {}
            None => out.push(bind(&m.host, &m.guest, m.writable)),
        }
    }
    if let Some(guest) = guest {
        out.push(bind(guest, GUEST_PATH, false));
    }
    out.push(Step::RemountRo { dst: "/dev".into() });
    out.push(Step::RemountRo { dst: "/".into() });
    out
}

/// A bind step; the source is resolved on the host (a symlink anywhere in
/// it is followed here, not inside the launcher's half-built view).
fn bind(src: &Path, dst: &str, writable: bool) -> Step {
    let src = src.canonicalize().unwrap_or_else(|_| src.to_path_buf());
    Step::Bind {
        src: src.to_string_lossy().into_owned(),
        dst: dst.into(),
        writable,
    }
}

/// The plan for husk's launcher, whose child serves as the guest agent
/// itself (it is the guest binary).
pub fn plan(
    config: &SandboxConfig,
    steps: Vec<Step>,
    limits: Limits,
    host_id: Option<u32>,
) -> LaunchPlan {
    LaunchPlan {
        version: LAUNCH_VERSION,
        sandbox_uid: SANDBOX_UID,
        parent_pid: std::process::id(),
        host_id,
        unshare_net: !config.network,
        hostname: "husk".into(),
        steps,
        limits,
        exec: Exec::Guest {
            control_fd: 3,
            secret_fd: 4,
        },
        keep_fds: vec![3, 4],
    }
}

/// bubblewrap's arguments for the same sandbox, running `command`.
pub fn bwrap_args(config: &SandboxConfig, steps: &[Step], command: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = Vec::with_capacity(96);
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    let uid = SANDBOX_UID.to_string();
    push(&["--unshare-user", "--uid", &uid, "--gid", &uid]);
    push(&[
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
    ]);
    if !config.network {
        push(&["--unshare-net"]);
    }
    push(&[
        "--hostname",
        "husk",
        "--die-with-parent",
        "--new-session",
        "--as-pid-1",
    ]);
    for step in steps {
        match step {
            Step::Bind { src, dst, writable } => {
                push(&[if *writable { "--bind" } else { "--ro-bind" }, src, dst])
            }
            Step::Symlink { target, dst } => push(&["--symlink", target, dst]),
            Step::Dir { dst } => push(&["--dir", dst]),
            Step::Tmpfs { dst, size_bytes } => {
                push(&["--size", &size_bytes.to_string(), "--tmpfs", dst])
            }
            Step::Dev { dst } => push(&["--dev", dst]),
            Step::Proc { dst } => push(&["--proc", dst]),
            Step::Data { fd, dst, mode } => push(&[
                "--perms",
                &format!("{mode:04o}"),
                "--ro-bind-data",
                &fd.to_string(),
                dst,
            ]),
            Step::RemountRo { dst } => push(&["--remount-ro", dst]),
        }
    }
    push(&["--"]);
    push(command);
    a
}

/// The guest's command line inside the sandbox.
pub fn guest_command() -> &'static [&'static str] {
    &GUEST_ARGS
}

enum RootEntry {
    Dir(String),
    Link(String, String),
}

/// The system directories present in `root` (symlinks such as merged-/usr
/// `/bin -> usr/bin` are recreated as symlinks).
fn root_entries(root: &Path) -> Vec<RootEntry> {
    let mut out = Vec::new();
    for name in SYSTEM_DIRS {
        let p = root.join(name);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(t) = std::fs::read_link(&p) {
                    out.push(RootEntry::Link(
                        name.into(),
                        t.to_string_lossy().into_owned(),
                    ));
                }
            }
            Ok(m) if m.is_dir() => out.push(RootEntry::Dir(name.into())),
            _ => {}
        }
    }
    out
}
