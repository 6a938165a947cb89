//! The launch plan of a namespace sandbox: what the host asks the guest
//! binary's launcher (`husk-guest launch`) to build before it becomes the
//! guest agent.
//!
//! The host decides the whole layout (which host directories appear, which
//! tmpfs mounts and their sizes, the user's mounts); the launcher only
//! carries it out, in order, and refuses a plan it cannot follow exactly.
//! The same steps are rendered as bubblewrap arguments when bubblewrap is
//! the launcher, so the two cannot drift apart.
//!
//! The plan travels postcard-encoded on a descriptor. It is not part of the
//! session protocol; [`LAUNCH_VERSION`] versions its layout, and host and
//! launcher always come from the same build.

use serde::{Deserialize, Serialize};

/// Version of the plan's layout.
pub const LAUNCH_VERSION: u16 = 1;
/// Largest encoded plan accepted.
pub const MAX_PLAN_BYTES: usize = 1 << 20;
/// Most steps a plan may have.
pub const MAX_STEPS: usize = 4096;

/// The bytes of the message that hands the launcher its descriptors on
/// stdin (`husk-guest launch --fds-on-stdin`), so stray input is not
/// taken for it.
pub const HANDOVER_TAG: &[u8] = b"husk-launch-fds";
/// Most descriptors that message carries (the kernel's `SCM_MAX_FD`).
pub const MAX_HANDOVER_FDS: usize = 253;

/// Everything the launcher needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchPlan {
    /// [`LAUNCH_VERSION`] of the host that wrote it.
    pub version: u16,
    /// The uid and gid the sandbox's processes have inside it; the
    /// launcher's host uid and gid map to them.
    pub sandbox_uid: u32,
    /// husk's pid: the launcher's parent, whose death must take the
    /// sandbox with it (checked once the death signal is armed).
    pub parent_pid: u32,
    /// When husk runs as root: the host uid and gid the launcher becomes
    /// first (with no supplementary groups).
    pub host_id: Option<u32>,
    /// Also run in a new network namespace (no network at all).
    pub unshare_net: bool,
    /// The sandbox's host name.
    pub hostname: String,
    /// The filesystem, built in this order on an empty root.
    pub steps: Vec<Step>,
    /// Limits applied to the launcher before anything starts, inherited by
    /// every process in the sandbox.
    pub limits: Limits,
    /// What becomes PID 1.
    pub exec: Exec,
    /// Descriptors (besides 0–2) the command keeps, at these numbers; every
    /// other descriptor is closed before it starts.
    pub keep_fds: Vec<i32>,
}

/// What the launcher's child becomes once the sandbox is built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exec {
    /// Exec this command line (its program by its path inside), with an
    /// empty environment.
    Command(Vec<String>),
    /// Serve as the guest agent in the same process (no second exec): its
    /// control channel and secret are on these descriptors.
    Guest {
        /// The control channel.
        control_fd: i32,
        /// The session secret.
        secret_fd: i32,
    },
}

/// rlimits and CPU affinity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// `RLIMIT_DATA` in bytes (per process).
    pub data_bytes: u64,
    /// `RLIMIT_NPROC` (per host uid).
    pub nproc: u64,
    /// CPUs the sandbox may run on (empty: all).
    pub cpus: Vec<u32>,
}

/// One step of the filesystem layout. Destinations are absolute paths
/// inside the sandbox; missing parent directories are made (mode 0755).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Bind-mount a host path (and everything mounted under it); always
    /// nosuid and nodev, read-only unless `writable`.
    Bind {
        /// Host path.
        src: String,
        /// Path inside.
        dst: String,
        /// Writable rather than read-only.
        writable: bool,
    },
    /// A symbolic link.
    Symlink {
        /// What the link points to.
        target: String,
        /// Path inside.
        dst: String,
    },
    /// An empty directory.
    Dir {
        /// Path inside.
        dst: String,
    },
    /// A tmpfs of at most `size_bytes`, mode 0755, owned by the sandbox
    /// user, nosuid and nodev.
    Tmpfs {
        /// Path inside.
        dst: String,
        /// Size limit.
        size_bytes: u64,
    },
    /// A minimal `/dev`: a tmpfs with the host's null, zero, full, random,
    /// urandom and tty bound in, the standard symlinks, a private devpts
    /// and an empty `shm`.
    Dev {
        /// Path inside (`/dev`).
        dst: String,
    },
    /// The sandbox's own procfs.
    Proc {
        /// Path inside (`/proc`).
        dst: String,
    },
    /// A read-only file with the contents read from descriptor `fd`.
    Data {
        /// The descriptor to read (then closed).
        fd: i32,
        /// Path inside.
        dst: String,
        /// Permission bits of the file.
        mode: u32,
    },
    /// Make an already-built mount read-only (not its sub-mounts).
    RemountRo {
        /// Path inside.
        dst: String,
    },
}

impl Step {
    /// The path inside the sandbox this step acts on.
    pub fn dst(&self) -> &str {
        match self {
            Step::Bind { dst, .. }
            | Step::Symlink { dst, .. }
            | Step::Dir { dst }
            | Step::Tmpfs { dst, .. }
            | Step::Dev { dst }
            | Step::Proc { dst }
            | Step::Data { dst, .. }
            | Step::RemountRo { dst } => dst,
        }
    }
}

/// Why a plan was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// The bytes are not a plan.
    #[error("the launch plan does not decode: {0}")]
    Decode(String),
    /// Too large.
    #[error("the launch plan is {0} bytes; at most {MAX_PLAN_BYTES} are accepted")]
    TooLarge(usize),
    /// Another layout version.
    #[error("the launch plan has layout version {found}; this launcher reads {LAUNCH_VERSION}")]
    Version {
        /// The plan's version.
        found: u16,
    },
    /// A field that cannot be right.
    #[error("the launch plan is invalid: {0}")]
    Invalid(String),
}

impl LaunchPlan {
    /// The plan as bytes.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a plan always encodes")
    }

    /// A plan from bytes, checked (see [`LaunchPlan::validate`]).
    pub fn decode(bytes: &[u8]) -> Result<LaunchPlan, PlanError> {
        if bytes.len() > MAX_PLAN_BYTES {
            return Err(PlanError::TooLarge(bytes.len()));
        }
        // The version leads the encoding, so another layout is named as
        // such rather than as garbage.
        let version: u16 = postcard::take_from_bytes::<u16>(bytes)
            .map_err(|e| PlanError::Decode(e.to_string()))?
            .0;
        if version != LAUNCH_VERSION {
            return Err(PlanError::Version { found: version });
        }
        let plan: LaunchPlan =
            postcard::from_bytes(bytes).map_err(|e| PlanError::Decode(e.to_string()))?;
        plan.validate()?;
        Ok(plan)
    }

    /// Checks what the launcher relies on: absolute destinations without
    /// `..` or NUL, no NUL in any string, a command to run, bounded sizes.
    pub fn validate(&self) -> Result<(), PlanError> {
        let bad = |m: String| Err(PlanError::Invalid(m));
        if self.steps.len() > MAX_STEPS {
            return bad(format!("{} steps; at most {MAX_STEPS}", self.steps.len()));
        }
        let no_args = Vec::new();
        let args = match &self.exec {
            Exec::Command(argv) if argv.first().is_none_or(|p| !p.starts_with('/')) => {
                return bad("the command must be an absolute path".into());
            }
            Exec::Command(argv) => argv,
            Exec::Guest {
                control_fd,
                secret_fd,
            } => {
                for fd in [control_fd, secret_fd] {
                    if !self.keep_fds.contains(fd) {
                        return bad(format!("the guest's descriptor {fd} is not kept"));
                    }
                }
                &no_args
            }
        };
        let strings = args
            .iter()
            .chain(std::iter::once(&self.hostname))
            .chain(self.steps.iter().flat_map(step_strings));
        if let Some(s) = strings.into_iter().find(|s| s.contains('\0')) {
            return bad(format!("{s:?} contains a NUL byte"));
        }
        for step in &self.steps {
            let dst = step.dst();
            let parts_ok = !dst.split('/').any(|p| p == ".." || p == ".");
            if !dst.starts_with('/') || !parts_ok {
                return bad(format!(
                    "destination {dst:?} must be absolute, without . or .."
                ));
            }
            if let Step::Bind { src, .. } = step
                && !src.starts_with('/')
            {
                return bad(format!("bind source {src:?} must be absolute"));
            }
            if let Step::Data { fd, .. } = step
                && *fd < 3
            {
                return bad(format!("data descriptor {fd} is a standard stream"));
            }
            // size=0 would mean "no limit" to the kernel.
            if let Step::Tmpfs { size_bytes: 0, dst } = step {
                return bad(format!("tmpfs {dst} has size 0"));
            }
        }
        if self.keep_fds.iter().any(|&fd| fd < 3) {
            return bad("kept descriptors start at 3".into());
        }
        Ok(())
    }
}

fn step_strings(step: &Step) -> Vec<&String> {
    match step {
        Step::Bind { src, dst, .. } => vec![src, dst],
        Step::Symlink { target, dst } => vec![target, dst],
        Step::Dir { dst }
        | Step::Tmpfs { dst, .. }
        | Step::Dev { dst }
        | Step::Proc { dst }
        | Step::Data { dst, .. }
        | Step::RemountRo { dst } => vec![dst],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> LaunchPlan {
        LaunchPlan {
            version: LAUNCH_VERSION,
            sandbox_uid: 1000,
            parent_pid: 1,
            host_id: None,
            unshare_net: true,
            hostname: "husk".into(),
            steps: vec![
                Step::Bind {
                    src: "/usr".into(),
                    dst: "/usr".into(),
                    writable: false,
                },
                Step::Tmpfs {
                    dst: "/tmp".into(),
                    size_bytes: 1 << 20,
                },
                Step::Data {
                    fd: 5,
                    dst: "/etc/passwd".into(),
                    mode: 0o444,
                },
            ],
            limits: Limits {
                data_bytes: 1 << 30,
                nproc: 256,
                cpus: vec![0],
            },
            exec: Exec::Guest {
                control_fd: 3,
                secret_fd: 4,
            },
            keep_fds: vec![3, 4],
        }
    }

    #[test]
    fn a_plan_round_trips() {
        let p = plan();
        assert_eq!(LaunchPlan::decode(&p.encode()).unwrap(), p);
    }

    #[test]
    fn bad_plans_are_named() {
        let mut p = plan();
        p.version = 9;
        assert_eq!(
            LaunchPlan::decode(&p.encode()),
            Err(PlanError::Version { found: 9 })
        );
        let bytes = plan().encode();
        let cut = LaunchPlan::decode(&bytes[..bytes.len() / 2]).unwrap_err();
        assert!(matches!(cut, PlanError::Decode(_)), "{cut}");
        let huge = vec![0u8; MAX_PLAN_BYTES + 1];
        assert_eq!(
            LaunchPlan::decode(&huge),
            Err(PlanError::TooLarge(MAX_PLAN_BYTES + 1))
        );
        type Change = fn(&mut LaunchPlan);
        let cases: Vec<(Change, &str)> = vec![
            (|p| p.exec = Exec::Command(vec![]), "absolute path"),
            (
                |p| p.exec = Exec::Command(vec!["guest".into()]),
                "absolute path",
            ),
            (|p| p.keep_fds = vec![3], "descriptor 4 is not kept"),
            (|p| p.hostname = "a\0b".into(), "NUL"),
            (
                |p| {
                    p.steps.push(Step::Dir {
                        dst: "/tmp/../etc".into(),
                    })
                },
                "without . or ..",
            ),
            (
                |p| p.steps.push(Step::Dir { dst: "tmp".into() }),
                "absolute",
            ),
            (
                |p| {
                    p.steps.push(Step::Bind {
                        src: "usr".into(),
                        dst: "/x".into(),
                        writable: true,
                    })
                },
                "bind source",
            ),
            (
                |p| {
                    p.steps.push(Step::Data {
                        fd: 1,
                        dst: "/x".into(),
                        mode: 0o444,
                    })
                },
                "standard stream",
            ),
            (|p| p.keep_fds.push(2), "start at 3"),
            (
                |p| {
                    p.steps.push(Step::Tmpfs {
                        dst: "/x".into(),
                        size_bytes: 0,
                    })
                },
                "size 0",
            ),
        ];
        for (change, expect) in cases {
            let mut p = plan();
            change(&mut p);
            let e = LaunchPlan::decode(&p.encode()).unwrap_err().to_string();
            assert!(e.contains(expect), "{e} (expected {expect:?})");
        }
    }
}
