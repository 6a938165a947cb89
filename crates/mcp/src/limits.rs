//! Every limit husk-mcp enforces or states to the model, in one place
//! (documented in docs/collaboration.md). The sidecar's own limits are
//! repeated here only to be quoted in tool descriptions; the sidecar is
//! the one that enforces them, and its answer is passed on as is.

use std::time::Duration;

/// Largest JSON-RPC message husk-mcp reads: one stdio line (newline
/// excluded) or one HTTP request body. A tool call is a few hundred bytes;
/// anything near this is a client bug, answered with an error.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// One sidecar call, connect to last body byte. The sidecar answers in
/// well under a millisecond; a call this slow means it is stuck, and the
/// model is told so instead of waiting with it.
pub const SIDECAR_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest sidecar answer read (an inbox holds at most 1000 entries of at
/// most 4 KiB each, plus envelope).
pub const MAX_SIDECAR_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// The sidecar's limit on an intent's payload (compact JSON), quoted to
/// the model.
pub const INTENT_PAYLOAD_BYTES: usize = 4096;

/// The sidecar's limit on accepted intents per iteration, quoted to the
/// model.
pub const INTENTS_PER_ITERATION: usize = 3;
