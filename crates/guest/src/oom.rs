//! Why a process died, when memory is the likely reason.
//!
//! A process the kernel's OOM killer ends just gets SIGKILL (a shell above it
//! exits 137), which says nothing; a process whose allocation fails under a
//! limit prints something and exits. The guest gathers what evidence it
//! honestly has and reports it as an [`ExitCause`]:
//!
//! - micro-VM: the guest kernel is private to the sandbox, so its
//!   `/proc/vmstat` `oom_kill` count rising while the process ran, with the
//!   process ending by SIGKILL (or 137), means the OOM killer took it or its
//!   child: `OutOfMemory`. (A concurrent exec whose child the killer chose
//!   can be blamed too; only if it also ended by SIGKILL.)
//! - both backends: an exit that failed after stderr said what programs say
//!   when an allocation fails: `PossiblyOutOfMemory`. In a namespace
//!   sandbox this is the only evidence: its memory limit is a per-process
//!   `RLIMIT_DATA`, which fails allocations instead of killing, and the
//!   host's OOM counter is shared with every host process.

use husk_protocol::ExitCause;
use rustix::process::Resource;

use crate::reaper::ChildExit;

/// What stderr says when an allocation failed (lower case): libc's
/// strerror(ENOMEM), coreutils, bash, mawk/Go/Node ("out of memory"),
/// Python, C++, Rust.
const MARKERS: [&str; 6] = [
    "cannot allocate",
    "memory exhausted",
    "out of memory",
    "memoryerror",
    "bad_alloc",
    "memory allocation of",
];
/// Longest marker: how much of a chunk is kept to match across chunks.
const KEEP: usize = 24;

/// The guest's memory facts, settled once per session.
#[derive(Debug, Clone, Copy)]
pub struct MemoryFacts {
    /// The memory limit processes run under, when known.
    pub limit_mb: Option<u32>,
    /// Whether the `oom_kill` counter is this sandbox's own (micro-VM).
    pub private_kernel: bool,
}

impl MemoryFacts {
    /// Micro-VM: the limit is the guest RAM the host asked for
    /// (`husk.memory_mb=` on the kernel command line, given as read at
    /// boot).
    pub fn micro_vm(cmdline: &str) -> MemoryFacts {
        let limit_mb = cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix("husk.memory_mb="))
            .and_then(|v| v.parse().ok());
        MemoryFacts {
            limit_mb,
            private_kernel: true,
        }
    }

    /// Namespace: the limit is the per-process data limit the host set on
    /// bubblewrap (inherited by the guest).
    pub fn namespace() -> MemoryFacts {
        let lim = rustix::process::getrlimit(Resource::Data);
        MemoryFacts {
            limit_mb: lim.current.map(|b| (b / (1024 * 1024)) as u32),
            private_kernel: false,
        }
    }

    /// The OOM kill count now, where it is this sandbox's own.
    pub fn oom_kills(&self) -> Option<u64> {
        if !self.private_kernel {
            return None;
        }
        let text = std::fs::read_to_string("/proc/vmstat").ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// The cause of an exit, from the evidence gathered while it ran.
    pub fn cause(&self, ev: &Evidence) -> ExitCause {
        let killed = match ev.exit {
            ChildExit::Signal(s) => s == libc::SIGKILL,
            ChildExit::Code(c) => c == 128 + libc::SIGKILL,
        };
        let oom_rose = matches!((ev.kills_before, ev.kills_after), (Some(a), Some(b)) if b > a);
        if killed && oom_rose && !ev.timed_out && !ev.killed_on_request {
            return ExitCause::OutOfMemory {
                limit_mb: self.limit_mb,
            };
        }
        let failed = !matches!(ev.exit, ChildExit::Code(0));
        if failed && ev.alloc_failure_said && !ev.timed_out {
            return ExitCause::PossiblyOutOfMemory {
                limit_mb: self.limit_mb,
            };
        }
        ExitCause::Unknown
    }
}

/// What was seen of one process.
#[derive(Debug, Clone, Copy)]
pub struct Evidence {
    pub exit: ChildExit,
    pub timed_out: bool,
    /// The host sent it SIGKILL itself (a cancel, not the OOM killer).
    pub killed_on_request: bool,
    pub kills_before: Option<u64>,
    pub kills_after: Option<u64>,
    /// Its stderr said an allocation failed.
    pub alloc_failure_said: bool,
}

/// Looks for allocation-failure messages in a stream, across chunk edges.
#[derive(Debug, Default)]
pub struct StderrScan {
    tail: Vec<u8>,
    found: bool,
}

impl StderrScan {
    pub fn feed(&mut self, data: &[u8]) {
        if self.found {
            return;
        }
        let mut window = std::mem::take(&mut self.tail);
        window.extend(data.iter().map(u8::to_ascii_lowercase));
        let text = String::from_utf8_lossy(&window);
        self.found = MARKERS.iter().any(|m| text.contains(m));
        let keep = window.len().saturating_sub(KEEP);
        self.tail = window.split_off(keep);
    }

    pub fn found(&self) -> bool {
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(exit: ChildExit) -> Evidence {
        Evidence {
            exit,
            timed_out: false,
            killed_on_request: false,
            kills_before: Some(4),
            kills_after: Some(4),
            alloc_failure_said: false,
        }
    }

    const VM: MemoryFacts = MemoryFacts {
        limit_mb: Some(256),
        private_kernel: true,
    };

    #[test]
    fn oom_kills_need_a_kill_and_a_rising_counter() {
        let oom = ExitCause::OutOfMemory {
            limit_mb: Some(256),
        };
        let mut e = ev(ChildExit::Signal(libc::SIGKILL));
        assert_eq!(VM.cause(&e), ExitCause::Unknown, "counter did not rise");
        e.kills_after = Some(5);
        assert_eq!(VM.cause(&e), oom);
        assert_eq!(
            VM.cause(&Evidence {
                exit: ChildExit::Code(137),
                ..e
            }),
            oom
        );
        assert_eq!(
            VM.cause(&Evidence {
                exit: ChildExit::Code(1),
                ..e
            }),
            ExitCause::Unknown
        );
        assert_eq!(
            VM.cause(&Evidence {
                timed_out: true,
                ..e
            }),
            ExitCause::Unknown
        );
        assert_eq!(
            VM.cause(&Evidence {
                killed_on_request: true,
                ..e
            }),
            ExitCause::Unknown
        );
        // No private counter (namespace): never a certain OOM kill.
        let ns = MemoryFacts {
            limit_mb: Some(64),
            private_kernel: false,
        };
        let e = Evidence {
            kills_before: None,
            kills_after: None,
            ..e
        };
        assert_eq!(ns.cause(&e), ExitCause::Unknown);
    }

    #[test]
    fn allocation_failures_on_stderr_are_possible_ooms() {
        let ns = MemoryFacts {
            limit_mb: Some(64),
            private_kernel: false,
        };
        let said = Evidence {
            alloc_failure_said: true,
            ..ev(ChildExit::Code(1))
        };
        assert_eq!(
            ns.cause(&said),
            ExitCause::PossiblyOutOfMemory { limit_mb: Some(64) }
        );
        // Said so, but succeeded: nothing to explain.
        let ok = Evidence {
            exit: ChildExit::Code(0),
            ..said
        };
        assert_eq!(ns.cause(&ok), ExitCause::Unknown);
    }

    #[test]
    fn markers_are_found_across_chunks_and_case() {
        let mut s = StderrScan::default();
        s.feed(b"tail: memory exh");
        assert!(!s.found());
        s.feed(b"austed\n");
        assert!(s.found());
        let mut s = StderrScan::default();
        s.feed(b"Traceback ...\nMemoryError\n");
        assert!(s.found());
        let mut s = StderrScan::default();
        s.feed(b"error: no such file\n");
        s.feed(&[b'x'; 100_000]);
        assert!(!s.found());
    }
}
