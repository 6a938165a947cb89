//! Micro-VMs restored from snapshots: the whole conformance suite on
//! restored sandboxes (every start must really be a restore), fresh
//! identities, a changed guest agent, and broken snapshot files.
//!
//! Snapshots go to a directory of this test binary's own, so nothing here
//! touches the user's snapshots (the guest image cache is shared).

mod conformance;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use husk_sandbox::microvm::{AccelChoice, MicrovmBackend};
use husk_sandbox::{
    Backend, BackendKind, BootPath, Sandbox, SandboxConfig, SandboxError, ToolDelivery,
};

/// Configurations the suite starts sandboxes with (its default and the
/// `disk_mb` case's): each gets a snapshot.
fn suite_configs() -> Vec<SandboxConfig> {
    vec![
        SandboxConfig::default(),
        SandboxConfig {
            disk_mb: 16,
            ..SandboxConfig::default()
        },
    ]
}

/// A snapshot directory of this test process. The suite's snapshots live
/// as long as the process (a static cannot clean up after itself), so the
/// directories of earlier, finished runs are removed here.
fn snapshot_root(name: &str) -> PathBuf {
    let tmp = std::env::temp_dir();
    for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let pid = file
            .strip_prefix("husk-restore-test-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let dir = tmp.join(format!("husk-restore-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

static BACKEND: OnceLock<Result<Arc<MicrovmBackend>, String>> = OnceLock::new();

/// One backend with snapshots of the suite's configurations.
fn restoring_backend() -> Result<Arc<MicrovmBackend>, String> {
    BACKEND
        .get_or_init(|| {
            let progress = |line: &str| eprintln!("microvm: {line}");
            let b =
                match conformance::RT.block_on(MicrovmBackend::new(AccelChoice::Auto, &progress)) {
                    Ok(b) => b.with_snapshot_dir(snapshot_root("suite")),
                    Err(SandboxError::MissingTool { tool, hint }) => {
                        return Err(format!("{tool}: {hint}"));
                    }
                    Err(e) => panic!("micro-VM backend: {e}"),
                };
            for config in suite_configs() {
                conformance::RT
                    .block_on(b.build_snapshot(&config, &progress))
                    .expect("build a snapshot");
            }
            Ok(Arc::new(b))
        })
        .clone()
}

/// The micro-VM backend, refusing every start that was not a restore.
struct RestoredOnly(Arc<MicrovmBackend>);

#[async_trait]
impl Backend for RestoredOnly {
    fn kind(&self) -> BackendKind {
        self.0.kind()
    }

    fn tool_delivery(&self) -> ToolDelivery {
        self.0.tool_delivery()
    }

    async fn start(&self, config: &SandboxConfig) -> husk_sandbox::Result<Sandbox> {
        let sb = self.0.start(config).await?;
        assert!(
            matches!(sb.info().boot, BootPath::Restored { .. }),
            "not restored: {:?}",
            sb.info().boot
        );
        Ok(sb)
    }
}

struct Restored;

static HARNESS: Restored = Restored;

impl conformance::Harness for Restored {
    fn backend(&self) -> Result<Arc<dyn Backend>, String> {
        restoring_backend().map(|b| Arc::new(RestoredOnly(b)) as Arc<dyn Backend>)
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

async fn sh_text(sb: &Sandbox, script: &str) -> String {
    let out = conformance::sh(sb, script).await;
    assert!(out.status.success(), "{script}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two sandboxes restored from one snapshot share nothing that makes them
/// one: secrets (each refuses the other's, and the template had none to
/// accept), kernel RNG output, boot ids and sandbox ids; and both have
/// the host's time, not the template's.
#[test]
fn restored_sandboxes_get_fresh_identities() {
    conformance::run_case(&HARNESS, |_, backend| async move {
        let config = SandboxConfig::default();
        let a = backend.start(&config).await.expect("restore a");
        let b = backend.start(&config).await.expect("restore b");
        let probe = "tr ' ' '\\n' < /proc/cmdline | grep '^husk.id='; \
                     cat /proc/sys/kernel/random/boot_id; \
                     head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s; \
                     grep -c husk.template /proc/cmdline; stat -c %u:%a /run/.husk-cmdline; \
                     for f in /run/.husk-cmdline /proc/cmdline; do \
                       (echo husk.id=forged > $f) 2>/dev/null && echo writable || echo locked; \
                     done";
        let (ta, tb) = (sh_text(&a, probe).await, sh_text(&b, probe).await);
        let (la, lb): (Vec<&str>, Vec<&str>) = (ta.lines().collect(), tb.lines().collect());
        assert_eq!((la.len(), lb.len()), (8, 8), "{ta}\n{tb}");
        // The file the template mounted over /proc/cmdline shows each
        // copy's own line, without the template's mark; it is root's,
        // read-only, and the sandbox user can rewrite neither it nor
        // /proc/cmdline.
        for l in [&la, &lb] {
            assert_eq!(l[4..], ["0", "0:444", "locked", "locked"], "{ta}\n{tb}");
        }
        assert_ne!(la[0], lb[0], "same sandbox id");
        assert_ne!(la[1], lb[1], "same boot id");
        assert_ne!(la[2], lb[2], "same RNG output");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        for (name, l) in [("a", &la), ("b", &lb)] {
            let t: i64 = l[3].parse().unwrap();
            assert!((t - now).abs() < 60, "{name}: guest clock {t}, host {now}");
        }
        a.stop().await.unwrap();
        b.stop().await.unwrap();

        // Each restored guest accepts only its own secret. A start that
        // presents another secret (here the all-zero one; the template
        // never had any) is refused by the restored guest itself, not
        // turned into a cold boot.
        let other = SandboxConfig {
            present_secret: Some(husk_sandbox::protocol::Secret([0; 32])),
            ..SandboxConfig::default()
        };
        let err = backend.start(&other).await.unwrap_err();
        assert!(matches!(err, SandboxError::Rejected(_)), "{err}");
    });
}

/// Fan-out: several sandboxes restored from one snapshot at the same time
/// all come up as real restores (the harness refuses anything else), each
/// with its own run directory, secret and identity, and all answer.
#[test]
fn parallel_restores_from_one_snapshot_are_distinct() {
    conformance::run_case(&HARNESS, |_, backend| async move {
        let config = SandboxConfig::default();
        let starts: Vec<_> = (0..3)
            .map(|_| {
                let (b, c) = (backend.clone(), config.clone());
                tokio::spawn(async move { b.start(&c).await })
            })
            .collect();
        let mut sandboxes = Vec::new();
        for s in starts {
            sandboxes.push(s.await.unwrap().expect("a restore among several at once"));
        }
        let probe = "tr ' ' '\\n' < /proc/cmdline | grep '^husk.id='; \
                     cat /proc/sys/kernel/random/boot_id";
        let (mut ids, mut boots) = (Vec::new(), Vec::new());
        for sb in &sandboxes {
            let text = sh_text(sb, probe).await;
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 2, "{text}");
            ids.push(lines[0].to_string());
            boots.push(lines[1].to_string());
        }
        for list in [&mut ids, &mut boots] {
            let all = list.clone();
            list.sort();
            list.dedup();
            assert_eq!(list.len(), 3, "not distinct: {all:?}");
        }
        for sb in sandboxes {
            sb.stop().await.unwrap();
        }
    });
}

/// A snapshot belongs to one guest image: another guest agent (another
/// image key) never finds it, and the sandbox boots cold.
#[test]
fn a_changed_guest_agent_never_uses_the_old_snapshot() {
    conformance::run_case(&HARNESS, |_, _| async move {
        let suite = restoring_backend().unwrap();
        // The same host and snapshots, but a guest image with another
        // agent: build an image from a copy of the agent with one more
        // byte at the end (an ELF ignores it; the image key changes).
        let agent = husk_sandbox::microvm::image::locate_static_guest().unwrap();
        let dir = snapshot_root("agent");
        std::fs::create_dir_all(&dir).unwrap();
        let changed = dir.join("husk-guest");
        let mut bytes = std::fs::read(&agent).unwrap();
        bytes.push(0);
        std::fs::write(&changed, bytes).unwrap();
        std::fs::set_permissions(
            &changed,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let progress = |line: &str| eprintln!("microvm: {line}");
        let other = husk_sandbox::microvm::MicrovmBackend::with_guest(
            AccelChoice::Auto,
            changed,
            &progress,
        )
        .await
        .unwrap()
        .with_snapshot_dir(suite.snapshot_dir().to_path_buf());
        assert_ne!(other.image().key, suite.image().key);
        let config = SandboxConfig::default();
        assert!(suite.snapshot_path(&config).join("meta.json").is_file());
        assert!(!other.snapshot_path(&config).exists());
        let sb = other.start(&config).await.expect("cold boot");
        assert_eq!(sb.info().boot, BootPath::Fresh);
        sb.stop().await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// The suite's backend pointed at a snapshot directory of a test's own,
/// into which the suite's snapshot (default size) can be copied afresh.
struct PrivateSnapshot {
    backend: MicrovmBackend,
    /// The suite's snapshot, the source of each copy.
    good: PathBuf,
    /// Where the private backend looks for the default size's snapshot.
    slot: PathBuf,
}

impl PrivateSnapshot {
    fn new(dir: PathBuf) -> Self {
        let suite = restoring_backend().unwrap();
        let config = SandboxConfig::default();
        let backend = MicrovmBackend::clone(&suite).with_snapshot_dir(dir);
        PrivateSnapshot {
            good: suite.snapshot_path(&config),
            slot: backend.snapshot_path(&config),
            backend,
        }
    }

    /// Copies the suite's snapshot into the private slot (over a broken one).
    fn copy(&self) {
        std::fs::create_dir_all(&self.slot).unwrap();
        for f in ["meta.json", "state", "ram"] {
            std::fs::copy(self.good.join(f), self.slot.join(f)).unwrap();
        }
    }
}

/// A corrupt or truncated snapshot is reported (what is wrong, and that
/// the sandbox booted cold) and the sandbox works; no QEMU is left over.
#[test]
fn broken_snapshots_fall_back_to_a_cold_boot() {
    conformance::run_case(&HARNESS, |_, _| async move {
        let config = SandboxConfig::default();
        let root = snapshot_root("broken");
        let private = PrivateSnapshot::new(root.clone());
        let (backend, slot) = (&private.backend, &private.slot);
        type Break = fn(&std::path::Path);
        let cases: [(&str, Break, &str); 3] = [
            (
                "truncated state",
                |d| {
                    let s = std::fs::read(d.join("state")).unwrap();
                    std::fs::write(d.join("state"), &s[..s.len() / 2]).unwrap();
                },
                "truncated",
            ),
            (
                "corrupt state",
                |d| {
                    let mut s = std::fs::read(d.join("state")).unwrap();
                    let n = s.len();
                    s[n / 2] ^= 0xff;
                    std::fs::write(d.join("state"), s).unwrap();
                },
                "corrupt",
            ),
            (
                "truncated RAM",
                |d| {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(d.join("ram"))
                        .unwrap();
                    f.set_len(4096).unwrap();
                },
                "truncated",
            ),
        ];
        for (name, break_it, says) in cases {
            private.copy();
            break_it(slot);
            let sb = backend.start(&config).await.expect(name);
            let BootPath::ColdFallback { reason } = &sb.info().boot else {
                panic!("{name}: {:?}", sb.info().boot);
            };
            assert!(reason.contains(says), "{name}: {reason}");
            assert!(reason.contains("booting cold"), "{name}: {reason}");
            let out = conformance::sh(&sb, "echo ok").await;
            assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n", "{name}");
            sb.stop().await.unwrap();
            assert_eq!(
                holders(&root),
                0,
                "{name}: a process still holds the snapshot"
            );
        }
        // A state that passes the checks but that QEMU cannot load (as
        // from another QEMU build): the restore fails, QEMU is gone, the
        // sandbox boots cold.
        private.copy();
        let meta_path = slot.join("meta.json");
        let mut meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
        let junk = b"QEVM\0\0\0\x03not a device state".to_vec();
        std::fs::write(slot.join("state"), &junk).unwrap();
        meta["state_bytes"] = junk.len().into();
        meta["state_sha256"] = sha256_hex(&junk).into();
        std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
        let sb = backend.start(&config).await.expect("unloadable state");
        let BootPath::ColdFallback { reason } = &sb.info().boot else {
            panic!("unloadable: {:?}", sb.info().boot);
        };
        assert!(reason.contains("restoring snapshot"), "{reason}");
        sb.stop().await.unwrap();
        assert_eq!(
            holders(&root),
            0,
            "the failed restore's QEMU is still there"
        );
        let _ = std::fs::remove_dir_all(&root);
    });
}

/// `husk image prune` never removes the snapshot of a running restored
/// sandbox (it holds the snapshot's lock), and removes it once the
/// sandbox has stopped; the next start then boots cold.
#[test]
fn a_prune_skips_the_snapshot_of_a_running_sandbox() {
    use husk_sandbox::microvm::cache::{self, Decision, PruneOptions};
    conformance::run_case(&HARNESS, |_, _| async move {
        let config = SandboxConfig::default();
        let root = snapshot_root("prune");
        let private = PrivateSnapshot::new(root.join("snapshots"));
        private.copy();
        let (backend, slot) = (&private.backend, &private.slot);
        let opts = PruneOptions {
            cache: root.clone(),
            unused_for: std::time::Duration::ZERO,
            current_images: Vec::new(),
            dry_run: false,
        };
        let decision = |report: &cache::PruneReport| {
            report
                .entries
                .iter()
                .find(|e| &e.path == slot)
                .map(|e| e.decision.clone())
        };
        // As if the snapshot had last been used a day ago (a prune keeps
        // what was used within `MIN_AGE`, whatever `unused_for` says).
        let age_back = || {
            let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86400);
            for p in [slot.join(".in-use"), slot.clone()] {
                if let Ok(f) = std::fs::File::open(&p) {
                    f.set_modified(day_ago).unwrap();
                }
            }
        };
        let sb = backend.start(&config).await.expect("restore");
        assert!(
            matches!(sb.info().boot, BootPath::Restored { .. }),
            "{:?}",
            sb.info().boot
        );
        age_back();
        let report = cache::prune(&opts);
        assert_eq!(decision(&report), Some(Decision::KeptInUse), "{report:#?}");
        let out = conformance::sh(&sb, "echo ok").await;
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
        sb.stop().await.unwrap();
        age_back();
        let report = cache::prune(&opts);
        assert_eq!(decision(&report), Some(Decision::Removed), "{report:#?}");
        assert!(!slot.exists());
        let sb = backend.start(&config).await.expect("cold start");
        assert_eq!(sb.info().boot, BootPath::Fresh);
        sb.stop().await.unwrap();
        let _ = std::fs::remove_dir_all(&root);
    });
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    husk_sandbox::microvm::image::hex(&sha2::Sha256::digest(bytes))
}

/// Processes that hold a file under `dir` open (a restore's QEMU holds its
/// RAM file).
fn holders(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|p| {
            std::fs::read_dir(p.path().join("fd")).is_ok_and(|fds| {
                fds.filter_map(Result::ok)
                    .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                    .any(|target| target.starts_with(dir))
            })
        })
        .count()
}

/// `cold_boot` (`husk exec --cold`) boots the kernel although a snapshot
/// for the configuration exists.
#[test]
fn cold_boot_skips_the_snapshot() {
    conformance::run_case(&HARNESS, |_, _| async move {
        let suite = restoring_backend().unwrap();
        let config = SandboxConfig {
            cold_boot: true,
            ..SandboxConfig::default()
        };
        assert!(suite.snapshot_path(&config).join("meta.json").is_file());
        let sb = suite.start(&config).await.expect("cold boot");
        assert_eq!(sb.info().boot, BootPath::Fresh);
        sb.stop().await.unwrap();
    });
}

/// A restored VM maps the snapshot's RAM file privately, and QEMU discards
/// a page of a file-backed RAM block (a free page report, a balloon
/// inflation) by punching a hole in the file: a restored guest with a
/// balloon could zero pages of the shared snapshot. So snapshot VMs have
/// no balloon device at all (its root cannot bind a driver to one), and
/// memory a restored guest frees leaves the RAM file exactly as it was.
#[test]
fn restored_guests_never_report_into_the_snapshot() {
    use husk_sandbox::protocol::ExecRequest;
    use std::os::unix::fs::MetadataExt;
    conformance::run_case(&HARNESS, |_, _| async move {
        let suite = restoring_backend().unwrap();
        let config = SandboxConfig::default();
        let ram = suite.snapshot_path(&config).join("ram");
        // A punched hole changes the content and the modification time
        // (not necessarily the block count: writeback of the fresh
        // snapshot still allocates extent blocks).
        let fingerprint = || {
            let meta = std::fs::metadata(&ram).unwrap();
            let content = sha256_hex(&std::fs::read(&ram).unwrap());
            (meta.mtime(), meta.mtime_nsec(), content)
        };
        let before = fingerprint();
        let sb = suite.start(&config).await.expect("restore");
        assert!(matches!(sb.info().boot, BootPath::Restored { .. }));
        let mut req = ExecRequest::new(["sh", "-c", conformance::BALLOON_PROBE]);
        req.user = Some(0);
        let out = sb.client().run(&req, 1 << 16).await.unwrap();
        assert!(out.status.success(), "{out:?}");
        let probe = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(probe.is_empty(), "a restored guest has a balloon: {probe}");
        // Touch and free 64 MiB, then give a reporting pass (2 s after the
        // frees) the time it would need, before the file is compared.
        let churn = "dd if=/dev/urandom of=/tmp/churn bs=1M count=64 2>/dev/null && \
                     rm /tmp/churn && sleep 4";
        let out = conformance::sh(&sb, churn).await;
        assert!(out.status.success(), "{out:?}");
        sb.stop().await.unwrap();
        assert_eq!(fingerprint(), before, "the snapshot's RAM file changed");
    });
}
