//! The wire protocol spoken between the husk host and the husk guest agent.
//!
//! This crate is the only code the host and the guest share. It is small on
//! purpose: message types, a frame codec, the handshake rules and limits.
//!
//! # Shape of the wire
//!
//! One reliable byte stream (a unix socket for namespace sandboxes, a
//! virtio-serial port for micro-VMs) carries *frames*:
//!
//! ```text
//! +----------------+---------------+------------------------------------+
//! | len: u32 (BE)  | wire ver: u8  | postcard(Envelope), len - 1 bytes   |
//! +----------------+---------------+------------------------------------+
//! ```
//!
//! Every envelope carries a request id chosen by the host, so many calls
//! (execs, file transfers, stats) share the stream concurrently; the guest
//! tags every reply with the id of the request it answers. Long-running calls
//! (an exec) produce a stream of replies under one id; messages that act on a
//! running process (stdin, signals, output credit) name that process by the
//! id of the exec that started it.
//!
//! # Handshake
//!
//! The host speaks first with [`HostMsg::Hello`], carrying the range of
//! protocol versions it speaks and the per-sandbox session secret. The guest
//! compares the secret in constant time ([`Secret::matches`]) and answers
//! [`GuestMsg::Welcome`] with the agreed version, or [`GuestMsg::Rejected`]
//! and closes the stream. Nothing else is served before a welcome.
//!
//! # Flow control
//!
//! Exec output is credit based: the guest may have at most
//! [`OUTPUT_WINDOW`] bytes of a process's output unacknowledged; the host
//! returns credit with [`HostMsg::OutputAck`] as its consumer takes data. A
//! slow reader of one process therefore never stalls the others. File
//! transfers are chunked request/response and need no extra credit.

mod frame;
mod handshake;
#[cfg(feature = "tokio")]
mod io;
pub mod launch;
mod messages;
pub mod restore;

pub use frame::{FrameError, decode_frame, encode_frame};
pub use handshake::{Secret, SecretParseError, negotiate_version};
#[cfg(feature = "tokio")]
pub use io::{FrameReader, ReadError, write_frame};
pub use messages::*;

/// Version byte carried in every frame header (the framing format itself).
pub const WIRE_VERSION: u8 = 1;
/// Oldest protocol version (message set) this build speaks.
pub const PROTOCOL_VERSION_MIN: u16 = 1;
/// Newest protocol version (message set) this build speaks. Version 2 adds
/// [`ErrorKind::NotRegularFile`] and [`GuestMsg::Finished`] (an exit status
/// with its [`ExitCause`]); version 3 adds port forwarding
/// ([`HostMsg::Listen`]); see `docs/protocol.md`.
pub const PROTOCOL_VERSION_MAX: u16 = 3;
/// Largest frame body (version byte + envelope) accepted by either side.
pub const MAX_FRAME_LEN: usize = 1024 * 1024;
/// Largest data chunk in one file read/write or stdin message.
pub const MAX_DATA_CHUNK: usize = 256 * 1024;
/// Largest chunk of process output the guest puts in one frame.
pub const MAX_OUTPUT_CHUNK: usize = 64 * 1024;
/// Bytes of one process's output the guest may send before it needs credit.
pub const OUTPUT_WINDOW: u32 = 1024 * 1024;
/// Longest path accepted in a file RPC.
pub const MAX_PATH_LEN: usize = 4096;
