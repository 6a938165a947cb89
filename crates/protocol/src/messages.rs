//! Message types. Host-to-guest messages are [`HostMsg`], guest-to-host
//! messages are [`GuestMsg`]; both travel inside an [`Envelope`] that carries
//! the request id.
//!
//! New variants are only ever appended (postcard encodes the variant index),
//! and a peer only sends what the agreed protocol version allows.

use serde::{Deserialize, Serialize};

use crate::Secret;

/// A frame's content: the request id and one message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<M> {
    /// Chosen by the host per call; the guest echoes it in every reply.
    pub id: u64,
    pub msg: M,
}

/// Host to guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HostMsg {
    /// First message on a connection.
    Hello(Hello),
    /// Start a process. Replies: `Started`, then (streamed mode) `Output`*,
    /// then `Exited`; or a single `Error`.
    Exec(ExecRequest),
    /// Write bytes to a running process's stdin. Reply: `Done`.
    Stdin {
        process: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Close a running process's stdin. Reply: `Done`.
    CloseStdin { process: u64 },
    /// Return output credit for a streamed process. No reply.
    OutputAck { process: u64, bytes: u32 },
    /// Send a signal to a running process's process group. Reply: `Done`.
    Signal { process: u64, signal: i32 },
    /// Wait for a process (typically a detached one) to end. Reply: `Exited`.
    Wait { process: u64 },
    /// Read up to `len` bytes at `offset`. Reply: `FileData`.
    ReadFile { path: String, offset: u64, len: u32 },
    /// Write a chunk. Reply: `Done`.
    WriteFile(WriteFile),
    /// Reply: `Stat`.
    Stat { path: String, follow_symlinks: bool },
    /// Create a directory and its parents (`mkdir -p`). Reply: `Done`.
    MakeDir { path: String, mode: u32 },
    /// Reply: `Entries`.
    ListDir { path: String },
    /// Reply: `Pong`. Used for liveness and round-trip measurement.
    Ping,
    /// Kill every process in the sandbox and end the guest. Reply: `Done`.
    Shutdown,
    /// Listen on `127.0.0.1:port` inside the sandbox and forward each
    /// connection over this channel (protocol 3). Replies under this
    /// request id, for as long as the session lives: `Listening`, then per
    /// connection `Accepted`, `ConnData`*, `ConnClosed`; or one `Error`.
    Listen { port: u16 },
    /// Bytes for a forwarded connection (protocol 3). No reply; a
    /// connection that cannot take them is closed (`ConnClosed`).
    ConnSend {
        conn: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Close a forwarded connection (protocol 3). No reply.
    ConnClose { conn: u64 },
}

/// Opens a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub min_version: u16,
    pub max_version: u16,
    pub secret: Secret,
    /// Directories, beyond the built-in roots, that file RPCs may touch
    /// (for example the guest side of a configured mount).
    pub extra_roots: Vec<String>,
}

/// Everything needed to start one process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Program and arguments; the program is looked up in `PATH`.
    pub argv: Vec<String>,
    /// Added to (and overriding) the guest's base environment.
    pub env: Vec<(String, String)>,
    /// Working directory; `/workspace` when `None`.
    pub cwd: Option<String>,
    /// Run as this uid (and the same gid); the sandbox user when `None`.
    pub user: Option<u32>,
    /// Pipe stdin (written with `Stdin`); `/dev/null` otherwise.
    pub stdin: bool,
    /// Kill the whole process group after this many milliseconds.
    pub timeout_ms: Option<u64>,
    pub output: OutputMode,
}

impl ExecRequest {
    /// A streamed exec of `argv` with defaults everywhere else.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ExecRequest {
            argv: argv.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            cwd: None,
            user: None,
            stdin: false,
            timeout_ms: None,
            output: OutputMode::Stream,
        }
    }
}

/// Where a process's output goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OutputMode {
    /// Streamed back as `Output` messages under the exec's id.
    Stream,
    /// Detached: the exec replies `Started` only; output goes to these files
    /// inside the sandbox (`None` discards it); `Wait` collects the status.
    Detached {
        stdout: Option<String>,
        stderr: Option<String>,
    },
}

/// One chunk of a file write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteFile {
    pub path: String,
    pub offset: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Permission bits when the file is created.
    pub mode: u32,
    /// Truncate the file to `offset + data.len()` after writing (set on the
    /// last chunk of a whole-file write).
    pub truncate: bool,
}

/// Guest to host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GuestMsg {
    Welcome(Welcome),
    Rejected {
        reason: String,
    },
    /// The process runs with this pid (guest pid namespace).
    Started {
        pid: u32,
    },
    Output {
        stream: Stream,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// A process ended (protocol version 1 form, without the cause; a
    /// version 2 guest sends [`GuestMsg::Finished`] instead).
    Exited(ExitStatusV1),
    FileData {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        eof: bool,
    },
    Stat(FileStat),
    Entries(Vec<DirEntry>),
    Done,
    Pong,
    Error(ErrorReply),
    /// A process ended, with what is known of why. Protocol version 2 and
    /// later; replaces `Exited` (the reply to a streamed `Exec` and to
    /// `Wait`).
    Finished(ExitStatus),
    /// A `Listen` is bound (protocol 3).
    Listening {
        port: u16,
    },
    /// A client connected to a forwarded port (protocol 3).
    Accepted {
        conn: u64,
    },
    /// Bytes a forwarded connection's client sent (protocol 3).
    ConnData {
        conn: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// A forwarded connection ended (protocol 3).
    ConnClosed {
        conn: u64,
    },
}

/// Accepted session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub version: u16,
    /// The guest agent's crate version.
    pub agent_version: String,
    /// `uname -r` of the kernel the guest runs on.
    pub kernel: String,
    /// The uid the guest agent itself runs as.
    pub uid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How a process ended.
///
/// postcard is not self-describing: a field added here changes the bytes of
/// every message that carries it, so this struct travels only in
/// [`GuestMsg::Finished`] (protocol version 2); version 1's
/// [`GuestMsg::Exited`] keeps its own frozen layout, [`ExitStatusV1`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code when the process exited normally.
    pub code: Option<i32>,
    /// Signal number when it was killed by a signal.
    pub signal: Option<i32>,
    /// The guest killed it because its timeout passed.
    pub timed_out: bool,
    pub duration_ms: u64,
    /// Why it ended, as far as the guest can tell.
    pub cause: ExitCause,
}

/// The protocol version 1 layout of [`ExitStatus`] (no cause). Frozen:
/// never change it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatusV1 {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
}

impl From<ExitStatusV1> for ExitStatus {
    fn from(s: ExitStatusV1) -> ExitStatus {
        ExitStatus {
            code: s.code,
            signal: s.signal,
            timed_out: s.timed_out,
            duration_ms: s.duration_ms,
            cause: ExitCause::Unknown,
        }
    }
}

impl From<ExitStatus> for ExitStatusV1 {
    fn from(s: ExitStatus) -> ExitStatusV1 {
        ExitStatusV1 {
            code: s.code,
            signal: s.signal,
            timed_out: s.timed_out,
            duration_ms: s.duration_ms,
        }
    }
}

/// Why a process ended, beyond its code or signal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitCause {
    /// Nothing more is known (including: the peer speaks protocol 1).
    #[default]
    Unknown,
    /// The kernel's OOM killer killed it, or a process of its group
    /// (micro-VM: the guest kernel's `oom_kill` count rose while it ran and
    /// it ended by SIGKILL, or with 137 from a shell whose child was).
    OutOfMemory {
        /// The memory it ran under (micro-VM: guest RAM), when known.
        limit_mb: Option<u32>,
    },
    /// It failed and said on stderr what programs say when an allocation
    /// fails ("Cannot allocate memory", "memory exhausted", "out of
    /// memory", …): likely, not certain, the memory limit (namespace: a
    /// per-process data limit).
    PossiblyOutOfMemory { limit_mb: Option<u32> },
}

impl ExitCause {
    /// In words, for people: `None` when nothing is known.
    pub fn describe(&self) -> Option<String> {
        let limit = |l: &Option<u32>| match l {
            Some(mb) => format!(" (limit {mb} MiB)"),
            None => String::new(),
        };
        match self {
            ExitCause::Unknown => None,
            ExitCause::OutOfMemory { limit_mb } => {
                Some(format!("killed: out of memory{}", limit(limit_mb)))
            }
            ExitCause::PossiblyOutOfMemory { limit_mb } => {
                Some(format!("possibly out of memory{}", limit(limit_mb)))
            }
        }
    }
}

impl ExitStatus {
    /// The conventional shell exit code: the code, or 128 + signal.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 255,
        }
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
}

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The request itself is malformed (empty argv, bad field).
    InvalidRequest,
    /// A path is not absolute, contains `..`, or is too long.
    InvalidPath,
    /// A path (or a symlink in it) leads outside the allowed roots.
    OutsideRoots,
    NotFound,
    PermissionDenied,
    AlreadyExists,
    NotADirectory,
    IsADirectory,
    /// A size or count limit was hit.
    TooLarge,
    /// The named process does not exist (or has been collected).
    NoSuchProcess,
    /// The program could not be started.
    SpawnFailed,
    /// Sent before a successful handshake, or not allowed by the agreed
    /// protocol version.
    Unsupported,
    /// Any other I/O error.
    Io,
    /// A file RPC met something that is not a regular file (a FIFO, a
    /// socket, a device) where it reads or writes file contents. Protocol
    /// version 2 and later; a version 1 peer is sent `Io` instead.
    NotRegularFile,
}

impl ErrorKind {
    /// The kind to send to a peer that agreed on protocol `version`: kinds
    /// newer than the version become [`ErrorKind::Io`] (the message still
    /// says what happened).
    pub fn for_version(self, version: u16) -> ErrorKind {
        match self {
            ErrorKind::NotRegularFile if version < 2 => ErrorKind::Io,
            other => other,
        }
    }
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The version 1 `Exited` frame, byte for byte as protocol 1 peers
    /// send and expect it: adding the cause must not have changed it.
    #[test]
    fn version_1_exit_layout_is_unchanged() {
        let msg = GuestMsg::Exited(ExitStatusV1 {
            code: Some(3),
            signal: None,
            timed_out: true,
            duration_ms: 300,
        });
        let bytes = postcard::to_allocvec(&msg).unwrap();
        // variant 4, Some(zigzag 3 = 6), None, true, varint 300.
        assert_eq!(bytes, [4, 1, 6, 0, 1, 0xac, 0x02]);
        let v2 = GuestMsg::Finished(ExitStatus {
            cause: ExitCause::OutOfMemory {
                limit_mb: Some(256),
            },
            ..ExitStatus::default()
        });
        let back: GuestMsg = postcard::from_bytes(&postcard::to_allocvec(&v2).unwrap()).unwrap();
        assert_eq!(back, v2);
    }

    #[test]
    fn causes_in_words() {
        let oom = ExitCause::OutOfMemory {
            limit_mb: Some(256),
        };
        assert_eq!(
            oom.describe().unwrap(),
            "killed: out of memory (limit 256 MiB)"
        );
        let maybe = ExitCause::PossiblyOutOfMemory { limit_mb: None };
        assert_eq!(maybe.describe().unwrap(), "possibly out of memory");
        assert_eq!(ExitCause::Unknown.describe(), None);
    }

    #[test]
    fn newer_error_kinds_are_downgraded_for_older_peers() {
        assert_eq!(ErrorKind::NotRegularFile.for_version(1), ErrorKind::Io);
        assert_eq!(
            ErrorKind::NotRegularFile.for_version(2),
            ErrorKind::NotRegularFile
        );
        assert_eq!(ErrorKind::NotFound.for_version(1), ErrorKind::NotFound);
    }
}
