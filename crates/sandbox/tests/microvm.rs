//! The conformance suite on the micro-VM backend (TCG on hosts where KVM
//! does not boot guests, which includes this project's machines).

mod conformance;

use std::sync::{Arc, OnceLock};

use husk_sandbox::microvm::{AccelChoice, MicrovmBackend};
use husk_sandbox::{Backend, SandboxError};

struct Microvm;

static HARNESS: Microvm = Microvm;
static BACKEND: OnceLock<Result<Arc<MicrovmBackend>, String>> = OnceLock::new();

impl conformance::Harness for Microvm {
    fn backend(&self) -> Result<Arc<dyn Backend>, String> {
        let b = BACKEND.get_or_init(|| {
            let progress = |line: &str| eprintln!("microvm: {line}");
            match conformance::RT.block_on(MicrovmBackend::new(AccelChoice::Auto, &progress)) {
                Ok(b) => Ok(Arc::new(b)),
                // Only a missing host tool is an honest skip.
                Err(SandboxError::MissingTool { tool, hint }) => Err(format!("{tool}: {hint}")),
                Err(e) => panic!("micro-VM backend: {e}"),
            }
        });
        b.clone().map(|b| b as Arc<dyn Backend>)
    }

    fn identity_command(&self) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            "tr ' ' '\\n' < /proc/cmdline | grep '^husk.id='".into(),
        ]
    }

    /// QEMU processes of this VM, plus its run directory if still there.
    fn leftovers(&self, identity: &str) -> usize {
        let id = identity.trim_start_matches("husk.id=");
        let procs = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| contains(&c, identity.as_bytes()))
            })
            .count();
        let dirs = std::fs::read_dir(husk_sandbox::microvm::run_base_dir())
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(id))
                    .count()
            })
            .unwrap_or(0);
        procs + dirs
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

suite!(HARNESS);

/// A directory becomes a read-only ext4 root with a writable overlay: the
/// sandbox sees the directory's files, can write (to the overlay), and the
/// image itself stays unchanged for the next sandbox.
#[test]
fn rootfs_directory_as_root() {
    conformance::run_case(&HARNESS, |_, backend| async move {
        let dir = std::env::temp_dir().join(format!("husk-rootfs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", dir.join("bin/sh")).unwrap();
        std::fs::write(dir.join("data/marker"), "from the image\n").unwrap();
        let config = husk_sandbox::SandboxConfig {
            rootfs: Some(dir.clone()),
            ..Default::default()
        };
        let script = "cat /data/marker; test -e /init && echo initramfs-visible; \
                      /bin/busybox echo changed > /workspace/w && cat /workspace/w";
        for round in 0..2 {
            let sb = backend.start(&config).await.expect("boot with a rootfs");
            let out = conformance::sh(&sb, script).await;
            sb.stop().await.unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "round {round}: {out:?}");
            assert_eq!(stdout, "from the image\nchanged\n", "round {round}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// A process the guest kernel's OOM killer ends is reported as such, with
/// the guest's memory; a plain SIGKILL is not.
#[test]
fn oom_kills_are_reported() {
    use husk_sandbox::protocol::{ExecRequest, ExitCause};
    conformance::run_case(&HARNESS, |_, backend| async move {
        let config = husk_sandbox::SandboxConfig {
            memory_mb: 256,
            ..Default::default()
        };
        let sb = backend.start(&config).await.expect("boot");
        // Many 200 KB strings: no single allocation is refused, so memory
        // runs out for real and the OOM killer picks awk.
        let hog = "awk 'BEGIN { for (i = 0; ; i++) a[i] = sprintf(\"%200000s\", i) }'";
        let mut req = ExecRequest::new(["sh", "-c", hog]);
        req.timeout_ms = Some(120_000);
        let out = sb.client().run(&req, 1 << 20).await.unwrap();
        let st = &out.status;
        let detail = format!("{st:?} {}", String::from_utf8_lossy(&out.stderr));
        assert!(!st.timed_out, "{detail}");
        assert_eq!(st.shell_code(), 137, "{detail}");
        assert_eq!(
            st.cause,
            ExitCause::OutOfMemory {
                limit_mb: Some(256)
            },
            "{detail}"
        );
        assert_eq!(
            st.cause.describe().unwrap(),
            "killed: out of memory (limit 256 MiB)"
        );
        // A SIGKILL with no OOM kill behind it says nothing more.
        let out = conformance::sh(&sb, "kill -9 $$").await;
        assert_eq!(out.status.signal, Some(9));
        assert_eq!(out.status.cause, ExitCause::Unknown);
        sb.stop().await.unwrap();
    });
}

/// A cold-booted guest has a virtio balloon with free page reporting
/// negotiated (feature bit 5) and bound to its driver, and its kernel
/// enabled reporting: freed guest RAM goes back to the host.
#[test]
fn cold_guests_report_free_pages() {
    conformance::run_case(&HARNESS, |_, backend| async move {
        let stdout = cold_root_script(&*backend, conformance::BALLOON_PROBE).await;
        assert_eq!(stdout, "device virtio_balloon 1\nreporting\n");
    });
}

/// Boots a cold VM, runs `script` as root in it, stops it; the script must
/// succeed, and its stdout is returned.
async fn cold_root_script(backend: &dyn Backend, script: &str) -> String {
    use husk_sandbox::protocol::ExecRequest;
    let config = husk_sandbox::SandboxConfig {
        cold_boot: true,
        ..Default::default()
    };
    let sb = backend.start(&config).await.expect("boot");
    let mut req = ExecRequest::new(["sh", "-c", script]);
    req.user = Some(0);
    let out = sb.client().run(&req, 1 << 16).await.unwrap();
    sb.stop().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Debian's cloud kernel boots at its PVH entry (no bzImage decompression
/// in the guest): the backend says so, and the guest kernel runs at its
/// link address, which only the ELF path gives (the bzImage's
/// decompressor randomises it).
#[test]
fn the_debian_kernel_boots_at_its_pvh_entry() {
    use husk_sandbox::microvm::KernelBoot;
    if std::env::var_os("HUSK_KERNEL_BOOT").is_some() {
        eprintln!("SKIP: HUSK_KERNEL_BOOT chooses the boot method");
        return;
    }
    conformance::run_case(&HARNESS, |_, backend| async move {
        let vm = BACKEND.get().unwrap().as_ref().unwrap();
        let image = vm.image();
        assert_eq!(image.boot, KernelBoot::Pvh, "{}", image.boot_note);
        let name = image.kernel.file_name().unwrap().to_string_lossy();
        assert!(name.starts_with("vmlinux"), "{image:?}");
        let stdout = cold_root_script(&*backend, "grep ' T _text$' /proc/kallsyms").await;
        assert_eq!(stdout, "ffffffff81000000 T _text\n");
    });
}
