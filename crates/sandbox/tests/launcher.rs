//! husk's own namespace launcher (`husk-guest launch`) on its own: a plan
//! it cannot follow is refused with a message that names the problem, and
//! a host that refuses it user namespaces, or the new mount calls by a
//! seccomp policy, gets bubblewrap instead (or a clear error when
//! bubblewrap is missing too).

use std::io::Write;
use std::process::Command;

use husk_sandbox::protocol::launch::{Exec, LAUNCH_VERSION, LaunchPlan, Limits, Step};
use husk_sandbox::{Backend, SandboxConfig, SandboxError};

fn guest() -> Option<std::path::PathBuf> {
    husk_sandbox::guest_bin::locate_guest().ok()
}

/// The host's /usr and its merged-/usr links (enough to run /bin/true).
fn system_steps() -> Vec<Step> {
    let mut steps = Vec::new();
    for name in ["usr", "bin", "lib", "lib64"] {
        let host = format!("/{name}");
        match std::fs::read_link(&host) {
            Ok(target) => steps.push(Step::Symlink {
                target: target.to_string_lossy().into_owned(),
                dst: host,
            }),
            Err(_) if std::path::Path::new(&host).is_dir() => steps.push(Step::Bind {
                src: host.clone(),
                dst: host,
                writable: false,
            }),
            Err(_) => {}
        }
    }
    steps
}

fn plan() -> LaunchPlan {
    LaunchPlan {
        version: LAUNCH_VERSION,
        sandbox_uid: 1000,
        parent_pid: std::process::id(),
        host_id: None,
        unshare_net: true,
        hostname: "husk".into(),
        steps: system_steps(),
        limits: Limits {
            data_bytes: 1 << 30,
            nproc: 1024,
            cpus: vec![],
        },
        exec: Exec::Command(vec!["/bin/true".into()]),
        keep_fds: vec![],
    }
}

/// Runs the launcher with `bytes` as its plan on descriptor 3; its exit
/// code and stderr.
fn launch_with(bytes: &[u8]) -> (Option<i32>, String) {
    let guest = guest().expect("the guest agent (HUSK_GUEST_BIN)");
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(bytes).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg("exec \"$0\" launch --plan-fd 3 3<\"$1\"")
        .arg(&guest)
        .arg(file.path())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plans_it_cannot_follow_are_refused_by_name() {
    if guest().is_none() {
        eprintln!("SKIP: no guest agent built (scripts/build-guest)");
        return;
    }
    let (code, err) = launch_with(b"\x01garbage");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("husk-guest launch: the launch plan"), "{err}");
    let mut p = plan();
    p.version = LAUNCH_VERSION + 1;
    let (code, err) = launch_with(&p.encode());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("layout version"), "{err}");
    // A bind source that does not exist is named, and nothing starts.
    let mut p = plan();
    p.steps.push(Step::Bind {
        src: "/nonexistent-husk-source".into(),
        dst: "/x".into(),
        writable: false,
    });
    let (code, err) = launch_with(&p.encode());
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("bind source /oldroot/nonexistent-husk-source")
            && err.contains("No such file"),
        "{err}"
    );
    // A well-formed plan runs its command.
    let (code, err) = launch_with(&plan().encode());
    assert_eq!(code, Some(0), "{err}");
    let usage = Command::new(guest().unwrap())
        .arg("launch")
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&usage.stderr)
            .contains("usage: husk-guest launch [--fds-on-stdin] --plan-fd N")
    );
}

/// A symlink in a bound host directory, as an earlier sandbox could leave
/// it, is resolved inside the new root while the layout is built: it never
/// reaches the host's root (which the launcher keeps under `/oldroot` until
/// its last pivot), and a mount through it lands where the sandbox itself
/// would see that path.
#[test]
fn destinations_resolve_inside_the_new_root() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    if guest().is_none() {
        eprintln!("SKIP: no guest agent built (scripts/build-guest)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Reachable by the unprivileged uid the launcher becomes under root.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let marker = dir.path().join("marker");
    std::fs::write(&marker, "husk-marker").unwrap();
    std::fs::set_permissions(&marker, std::fs::Permissions::from_mode(0o644)).unwrap();
    let name = format!("husk-escape-{}", std::process::id());
    let escape = format!("/tmp/{name}");
    let _ = std::fs::remove_dir_all(&escape);
    symlink("/oldroot/tmp", work.join("out")).unwrap();
    symlink("/inside", work.join("in")).unwrap();
    let bind = |src: &std::path::Path, dst: &str| Step::Bind {
        src: src.to_string_lossy().into_owned(),
        dst: dst.into(),
        writable: false,
    };
    // Through a symlink to where the host's /tmp is during the build:
    // nothing is made on the host; the missing target inside the new root
    // is named.
    let mut p = plan();
    p.steps.push(bind(&work, "/work"));
    p.steps.push(bind(&marker, &format!("/work/out/{name}/x")));
    let (code, err) = launch_with(&p.encode());
    assert!(
        !std::path::Path::new(&escape).exists(),
        "the launcher made {escape} on the host ({err})"
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("mount destination /work/out: it exists but leads to no directory"),
        "{err}"
    );
    // Through a symlink to a directory of the sandbox: the mount is where
    // the sandbox sees /work/in, that is /inside.
    let mut p = plan();
    p.steps.push(Step::Dir {
        dst: "/inside".into(),
    });
    p.steps.push(bind(&work, "/work"));
    p.steps.push(bind(&marker, "/work/in/x"));
    p.exec = Exec::Command(vec![
        "/bin/sh".into(),
        "-c".into(),
        "test \"$(cat /inside/x)\" = husk-marker && test \"$(cat /work/in/x)\" = husk-marker"
            .into(),
    ]);
    let (code, err) = launch_with(&p.encode());
    assert_eq!(code, Some(0), "{err}");
    let _ = std::fs::remove_dir_all(&escape);
}

/// Set in the child process that runs [`refused_user_namespaces_inner`].
const INNER: &str = "HUSK_TEST_USERNS_REFUSED";

/// Runs the inner test in a user namespace whose own limit of nested user
/// namespaces is 0, as on a host that refuses them: the native launcher
/// must say so and husk must turn to bubblewrap (which fails there too,
/// with its own error), or name bubblewrap as the way out when absent.
#[test]
fn refused_user_namespaces_fall_back_to_bubblewrap() {
    if guest().is_none() || husk_sandbox::host::which("bwrap").is_none() {
        eprintln!("SKIP: needs the guest agent and bubblewrap");
        return;
    }
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().unwrap();
    // The child waits on stdin until its maps are written, then execs
    // again to gain its capabilities as root of its namespace.
    let script = "read go && exec sh -c 'echo 0 > /proc/sys/user/max_user_namespaces && \
                  exec \"$@\"' sh \"$@\"";
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .arg("sh")
        .arg(&exe)
        .args(["--exact", "refused_user_namespaces_inner", "--nocapture"])
        .env(INNER, "1")
        .env(
            "HUSK_SANDBOX_HOST_UID",
            if rustix::process::getuid().is_root() {
                "65534"
            } else {
                "0"
            },
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: unshare is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let (uid, gid) = (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    let (uid_map, gid_map) = if uid == 0 {
        // The launcher runs as uid 65534, which must exist in there.
        ("0 0 65536".to_string(), "0 0 65536".to_string())
    } else {
        // Root in there is this user, and the launcher stays root.
        std::fs::write(format!("/proc/{pid}/setgroups"), "deny").unwrap();
        (format!("0 {uid} 1"), format!("0 {gid} 1"))
    };
    std::fs::write(format!("/proc/{pid}/uid_map"), uid_map).unwrap();
    std::fs::write(format!("/proc/{pid}/gid_map"), gid_map).unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
    eprintln!("{text}");
}

#[test]
fn refused_user_namespaces_inner() {
    if std::env::var_os(INNER).is_none() {
        return; // only meaningful inside the namespace set up above
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = husk_sandbox::namespace::NamespaceBackend::new().unwrap();
    let Err(err) = rt.block_on(backend.start(&SandboxConfig::default())) else {
        panic!("no sandbox can start without user namespaces");
    };
    let text = err.to_string();
    // bubblewrap was tried: its own failure is what is left to report.
    assert!(text.contains("bwrap"), "{text}");
    println!("with bubblewrap: {text}");
    // Without bubblewrap, the native launcher's reason and the way out.
    let reason = reason_without_bubblewrap(&rt);
    assert!(
        reason.contains("native launcher unavailable: unshare (user namespace)"),
        "{reason}"
    );
}

/// With bubblewrap off `PATH`, a start must fail as `Unavailable`, and its
/// reason must name the way out; returns the reason for the caller's own
/// check of the cause. Only for the inner halves: each runs alone in its
/// own process.
fn reason_without_bubblewrap(rt: &tokio::runtime::Runtime) -> String {
    // SAFETY: this process runs this one test, and nothing else reads the
    // environment while it changes.
    unsafe { std::env::set_var("PATH", "/nonexistent") };
    let backend = husk_sandbox::namespace::NamespaceBackend::new().unwrap();
    let Err(err) = rt.block_on(backend.start(&SandboxConfig::default())) else {
        panic!("the native launcher was refused, yet a sandbox started");
    };
    let SandboxError::Unavailable { reason, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(reason.contains("install bubblewrap"), "{reason}");
    println!("without bubblewrap: {err}");
    reason.clone()
}

const SECCOMP_INNER: &str = "HUSK_TEST_OPEN_TREE_REFUSED";

/// A seccomp filter that answers `open_tree` with EPERM and allows the
/// rest, as a container runtime's policy might: the native launcher must
/// say so and husk must turn to bubblewrap, which mounts with mount(2).
/// (The filter is written for x86-64.)
#[cfg(target_arch = "x86_64")]
#[test]
fn a_seccomp_refused_mount_call_falls_back_to_bubblewrap() {
    if guest().is_none() || husk_sandbox::host::which("bwrap").is_none() {
        eprintln!("SKIP: needs the guest agent and bubblewrap");
        return;
    }
    use std::os::unix::process::CommandExt;
    // BPF: a foreign architecture or any other call is allowed; open_tree
    // on x86-64 returns EPERM.
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let filter = [
        insn(LD_W_ABS, 0, 0, 4),
        insn(JEQ_K, 0, 3, AUDIT_ARCH_X86_64),
        insn(LD_W_ABS, 0, 0, 0),
        insn(JEQ_K, 0, 1, libc::SYS_open_tree as u32),
        insn(RET_K, 0, 0, RET_ERRNO | libc::EPERM as u32),
        insn(RET_K, 0, 0, RET_ALLOW),
    ];
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(&exe);
    cmd.args(["--exact", "seccomp_refused_inner", "--nocapture"])
        .env(SECCOMP_INNER, "1");
    // SAFETY: prctl is async-signal-safe; the filter program points at an
    // array the closure owns, alive across the call.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
    eprintln!("{text}");
}

#[cfg(target_arch = "x86_64")]
#[test]
fn seccomp_refused_inner() {
    if std::env::var_os(SECCOMP_INNER).is_none() {
        return; // only meaningful under the filter set up above
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    // bubblewrap takes over, and its sandbox works.
    let backend = husk_sandbox::namespace::NamespaceBackend::new().unwrap();
    let sandbox = rt
        .block_on(backend.start(&SandboxConfig::default()))
        .expect("bubblewrap starts the sandbox");
    let isolation = &sandbox.info().isolation;
    assert!(isolation.contains("bubblewrap"), "{isolation}");
    let req = husk_sandbox::protocol::ExecRequest::new(["sh", "-c", "echo fine"]);
    let out = rt.block_on(sandbox.client().run(&req, 1 << 16)).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "fine");
    rt.block_on(sandbox.stop()).unwrap();
    // Without bubblewrap, the native launcher's reason and the way out.
    let reason = reason_without_bubblewrap(&rt);
    assert!(
        reason.contains("open_tree(2) is refused by this host's seccomp or security policy"),
        "{reason}"
    );
}
