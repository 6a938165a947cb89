//! The sidecar's state and its rules, free of HTTP and locking so each
//! rule is tested directly: the inbox and its versions, the intent buffer,
//! and the per-iteration memory (count, dedup, idempotency keys).
//!
//! The per-iteration memory holds the intents accepted in the current
//! iteration (at most [`MAX_INTENTS_PER_ITERATION`]), independent of the
//! buffer: a drain empties the buffer but a retried submission still gets
//! its original back instead of becoming a second intent.

use thiserror::Error;

use crate::identity::Identity;
use crate::intake::Intent;
use crate::limits::{
    MAX_BUFFERED_INTENTS, MAX_INBOX_ENTRIES, MAX_INTENT_PAYLOAD_BYTES, MAX_INTENTS_PER_ITERATION,
};
use crate::types::{InboxEntry, InboxLoad, InboxSnapshot, StampedIntent, Status};

/// Why an agent's intent was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejection {
    #[error(
        "intent payload is {size} bytes serialized, over the limit of {MAX_INTENT_PAYLOAD_BYTES}"
    )]
    PayloadTooLarge { size: usize },
    #[error(
        "{MAX_INTENTS_PER_ITERATION} intents were already accepted in iteration {iteration}; \
         more are accepted after the next inbox iteration"
    )]
    IterationLimit { iteration: u32 },
    #[error(
        "{MAX_BUFFERED_INTENTS} intents are waiting for the orchestrator to collect them; \
         retry after it does"
    )]
    BufferFull,
    #[error("the sidecar is closed: the run is ending and takes no more intents")]
    Closed,
}

/// Why the orchestrator's inbox write was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InboxError {
    #[error("inbox version must be at least 1 (version 0 means no inbox)")]
    ZeroVersion,
    #[error("inbox version {given} is older than the loaded version {current}")]
    StaleVersion { given: u64, current: u64 },
    #[error(
        "inbox version {version} is already loaded with different content; \
         send a higher version, or omit it to get the next one"
    )]
    VersionConflict { version: u64 },
    #[error("inbox iteration {given} is older than the current iteration {current}")]
    IterationWentBack { given: u32, current: u32 },
    #[error("an inbox holds at most {MAX_INBOX_ENTRIES} entries; this one would hold {count}")]
    TooManyEntries { count: usize },
    #[error("message_id {0:?} is already in the inbox with different content")]
    DuplicateMessageId(String),
    #[error("the sidecar is closed")]
    Closed,
}

/// A replay returns what was accepted before; `Stamped` is a new intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    Stamped,
    /// Rule 1: the `Idempotency-Key` was seen in this iteration.
    SameKey,
    /// Rule 2: same payload and audience as an intent of this iteration.
    SameContent,
}

/// What a successful inbox load did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxLoaded {
    pub version: u64,
    pub iteration: u32,
    /// The same version with the same content was loaded already.
    pub unchanged: bool,
}

/// An `Idempotency-Key` and the intent's place in its request (0 for a
/// single intent), so each intent of a retried batch maps to its original.
pub type IdemKey = (String, usize);

#[derive(Debug)]
struct Record {
    intent: StampedIntent,
    key: Option<IdemKey>,
}

#[derive(Debug)]
pub struct State {
    identity: Identity,
    status: Status,
    iteration: u32,
    inbox: Option<InboxSnapshot>,
    buffer: Vec<StampedIntent>,
    this_iteration: Vec<Record>,
    seq: u64,
}

impl State {
    pub fn new(identity: Identity) -> State {
        State {
            iteration: identity.iteration,
            identity,
            status: Status::Ok,
            inbox: None,
            buffer: Vec::new(),
            this_iteration: Vec::new(),
            seq: 0,
        }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn status(&self) -> Status {
        self.status
    }

    pub fn iteration(&self) -> u32 {
        self.iteration
    }

    pub fn buffer_depth(&self) -> usize {
        self.buffer.len()
    }

    pub fn inbox_version(&self) -> u64 {
        self.inbox.as_ref().map_or(0, |i| i.version)
    }

    /// The inbox for `GET /v1/inbox?since=N`: entries only when `since` is
    /// absent or older than the current version.
    pub fn inbox(&self, since: Option<u64>) -> InboxSnapshot {
        match &self.inbox {
            None => InboxSnapshot {
                version: 0,
                execution_id: self.identity.execution_id.clone(),
                candidate_id: self.identity.candidate_id.clone(),
                iteration: self.iteration,
                entries: Vec::new(),
            },
            Some(inbox) if since.is_some_and(|s| s >= inbox.version) => InboxSnapshot {
                entries: Vec::new(),
                ..inbox.clone()
            },
            Some(inbox) => inbox.clone(),
        }
    }

    /// Applies the acceptance rules in the contract's order.
    pub fn submit(
        &mut self,
        intent: Intent,
        key: Option<IdemKey>,
    ) -> Result<(StampedIntent, Accepted), Rejection> {
        if self.status == Status::Closed {
            return Err(Rejection::Closed);
        }
        if let Some(k) = &key
            && let Some(r) = self
                .this_iteration
                .iter()
                .find(|r| r.key.as_ref() == Some(k))
        {
            return Ok((r.intent.clone(), Accepted::SameKey));
        }
        if let Some(r) = self
            .this_iteration
            .iter()
            .find(|r| r.intent.audience == intent.audience && r.intent.payload == intent.payload)
        {
            return Ok((r.intent.clone(), Accepted::SameContent));
        }
        let size = serde_json::to_vec(&intent.payload).map_or(usize::MAX, |v| v.len());
        if size > MAX_INTENT_PAYLOAD_BYTES {
            return Err(Rejection::PayloadTooLarge { size });
        }
        if self.this_iteration.len() >= MAX_INTENTS_PER_ITERATION {
            return Err(Rejection::IterationLimit {
                iteration: self.iteration,
            });
        }
        if self.buffer.len() >= MAX_BUFFERED_INTENTS {
            return Err(Rejection::BufferFull);
        }
        self.seq += 1;
        let stamped = StampedIntent {
            intent_id: intent_id(self.seq),
            from_candidate_id: self.identity.candidate_id.clone(),
            iteration: self.iteration,
            kind: intent.kind,
            audience: intent.audience,
            payload: intent.payload,
            priority: intent.priority,
            ttl_iterations: intent.ttl_iterations,
        };
        self.buffer.push(stamped.clone());
        self.this_iteration.push(Record {
            intent: stamped.clone(),
            key,
        });
        Ok((stamped, Accepted::Stamped))
    }

    /// Loads an orchestrator snapshot (version rules in docs/messaging.md).
    pub fn load_inbox(&mut self, load: InboxLoad) -> Result<InboxLoaded, InboxError> {
        if self.status == Status::Closed {
            return Err(InboxError::Closed);
        }
        if load.entries.len() > MAX_INBOX_ENTRIES {
            return Err(InboxError::TooManyEntries {
                count: load.entries.len(),
            });
        }
        for (i, e) in load.entries.iter().enumerate() {
            if load.entries[..i]
                .iter()
                .any(|p| p.message_id == e.message_id)
            {
                return Err(InboxError::DuplicateMessageId(e.message_id.clone()));
            }
        }
        let iteration = load.iteration.unwrap_or(self.iteration);
        if iteration < self.iteration {
            return Err(InboxError::IterationWentBack {
                given: iteration,
                current: self.iteration,
            });
        }
        let current = self.inbox_version();
        let version = match load.version {
            None => current + 1,
            Some(0) => return Err(InboxError::ZeroVersion),
            Some(v) if v < current => {
                return Err(InboxError::StaleVersion { given: v, current });
            }
            Some(v) => v,
        };
        let snapshot = InboxSnapshot {
            version,
            execution_id: load
                .execution_id
                .unwrap_or_else(|| self.identity.execution_id.clone()),
            candidate_id: load
                .candidate_id
                .unwrap_or_else(|| self.identity.candidate_id.clone()),
            iteration,
            entries: load.entries,
        };
        if version == current {
            return match &self.inbox {
                Some(old) if *old == snapshot => Ok(InboxLoaded {
                    version,
                    iteration,
                    unchanged: true,
                }),
                _ => Err(InboxError::VersionConflict { version }),
            };
        }
        if iteration != self.iteration {
            self.this_iteration.clear();
            self.iteration = iteration;
        }
        self.inbox = Some(snapshot);
        Ok(InboxLoaded {
            version,
            iteration,
            unchanged: false,
        })
    }

    /// Appends one entry and bumps the version; returns the new version.
    /// The same entry again (a retry) changes nothing.
    pub fn push_message(&mut self, entry: InboxEntry) -> Result<u64, InboxError> {
        if self.status == Status::Closed {
            return Err(InboxError::Closed);
        }
        let inbox = self.inbox.get_or_insert_with(|| InboxSnapshot {
            version: 0,
            execution_id: self.identity.execution_id.clone(),
            candidate_id: self.identity.candidate_id.clone(),
            iteration: self.iteration,
            entries: Vec::new(),
        });
        if let Some(old) = inbox
            .entries
            .iter()
            .find(|e| e.message_id == entry.message_id)
        {
            if *old == entry {
                return Ok(inbox.version);
            }
            return Err(InboxError::DuplicateMessageId(entry.message_id));
        }
        if inbox.entries.len() >= MAX_INBOX_ENTRIES {
            return Err(InboxError::TooManyEntries {
                count: inbox.entries.len() + 1,
            });
        }
        inbox.entries.push(entry);
        inbox.version += 1;
        Ok(inbox.version)
    }

    /// Returns and clears the buffer.
    pub fn drain(&mut self) -> Vec<StampedIntent> {
        std::mem::take(&mut self.buffer)
    }

    /// Stops taking writes; returns what was still buffered.
    pub fn close(&mut self) -> Vec<StampedIntent> {
        self.status = Status::Closed;
        self.drain()
    }
}

/// `int-<64 random bits>-<sequence>`: the sequence makes ids unique within
/// the sidecar even if the random source failed.
fn intent_id(seq: u64) -> String {
    let mut bytes = [0u8; 8];
    // A failed random source leaves zeros; the sequence keeps ids unique.
    let _ = getrandom::fill(&mut bytes);
    format!("int-{:016x}-{seq}", u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests;
