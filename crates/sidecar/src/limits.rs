//! Every limit the sidecar enforces, in one place (documented in
//! docs/messaging.md). They keep one agent from growing the host's memory
//! without bound and keep the orchestrator's view small.

/// Largest intent payload, serialized as compact JSON.
pub const MAX_INTENT_PAYLOAD_BYTES: usize = 4096;
/// Intents accepted per iteration (replays of accepted ones do not count).
pub const MAX_INTENTS_PER_ITERATION: usize = 3;
/// Intents waiting for a drain; more are refused with 429 until one.
pub const MAX_BUFFERED_INTENTS: usize = 1000;
/// Largest agent request body (`POST /v1/intents`).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// `ttl_iterations` when the intent gives none.
pub const DEFAULT_TTL_ITERATIONS: u32 = 1;
/// Largest `ttl_iterations` (the smallest is 1).
pub const MAX_TTL_ITERATIONS: u32 = 4;
/// Entries one inbox may hold (loaded or pushed).
pub const MAX_INBOX_ENTRIES: usize = 1000;
/// Longest `Idempotency-Key` header value.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;
