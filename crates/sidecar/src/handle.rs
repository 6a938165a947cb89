//! [`Sidecar`]: the cloneable handle to one run's messaging state. The
//! agent side reaches it over HTTP ([`crate::router`]); the orchestrator
//! side (the daemon's `/v1/runs/{id}/inbox|intents|messages` routes, the
//! run record) calls these methods directly.
//!
//! The state sits behind a plain mutex: every operation is short and
//! never awaits while holding it.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::SIDECAR_VERSION;
use crate::identity::Identity;
use crate::intake::{self, ParamError};
use crate::state::{Accepted, InboxError, InboxLoaded, Rejection, State};
use crate::types::{
    InboxEntry, InboxLoad, InboxSnapshot, SidecarContext, SidecarHealth, SidecarStatus,
    StampedIntent, SubmittedIntent,
};

/// One run's sidecar. Clones share the same state.
#[derive(Clone)]
pub struct Sidecar {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    started: Instant,
    /// Outside the mutex, so `Debug` never waits on (or deadlocks with) it.
    run_id: String,
}

/// Why [`Sidecar::submit_intent`] refused an intent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("invalid intent: {0}")]
    Invalid(ParamError),
    #[error(transparent)]
    Rejected(#[from] Rejection),
}

impl std::fmt::Debug for Sidecar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sidecar")
            .field("run_id", &self.inner.run_id)
            .finish_non_exhaustive()
    }
}

impl Sidecar {
    pub fn new(identity: Identity) -> Sidecar {
        Sidecar {
            inner: Arc::new(Inner {
                run_id: identity.run_id.clone(),
                state: Mutex::new(State::new(identity)),
                started: Instant::now(),
            }),
        }
    }

    /// The state; a panic elsewhere while it was held cannot have left it
    /// half-changed (no method panics between two writes), so poisoning
    /// is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn identity(&self) -> Identity {
        self.lock().identity().clone()
    }

    /// `PUT /v1/runs/{id}/inbox`. Parse the body with
    /// [`crate::parse_inbox_load`] for field-naming errors.
    pub fn load_inbox(&self, load: InboxLoad) -> Result<InboxLoaded, InboxError> {
        self.lock().load_inbox(load)
    }

    /// `POST /v1/runs/{id}/messages`: appends one entry, returns the new
    /// inbox version. Parse the body with [`crate::parse_inbox_entry`].
    pub fn push_message(&self, entry: InboxEntry) -> Result<u64, InboxError> {
        self.lock().push_message(entry)
    }

    /// `GET /v1/runs/{id}/intents`: returns and clears the buffer.
    pub fn drain_intents(&self) -> Vec<StampedIntent> {
        self.lock().drain()
    }

    /// The run record's `sidecar` field.
    pub fn status(&self) -> SidecarStatus {
        let s = self.lock();
        SidecarStatus {
            status: s.status(),
            buffer_depth: s.buffer_depth(),
            inbox_version: s.inbox_version(),
        }
    }

    pub fn health(&self) -> SidecarHealth {
        let uptime_ms = u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let s = self.lock();
        SidecarHealth {
            status: s.status(),
            sidecar_version: SIDECAR_VERSION.to_string(),
            run_id: s.identity().run_id.clone(),
            buffer_depth: s.buffer_depth(),
            inbox_version: s.inbox_version(),
            uptime_ms,
        }
    }

    pub fn context(&self) -> SidecarContext {
        let s = self.lock();
        let id = s.identity();
        SidecarContext {
            execution_id: id.execution_id.clone(),
            candidate_id: id.candidate_id.clone(),
            iteration: s.iteration(),
            role: id.role.clone(),
            peers: id.peers.clone(),
            sidecar_version: SIDECAR_VERSION.to_string(),
        }
    }

    pub fn inbox(&self, since: Option<u64>) -> InboxSnapshot {
        self.lock().inbox(since)
    }

    /// One intent, as `POST /v1/intents` takes it (same rules and order).
    pub fn submit_intent(
        &self,
        intent: SubmittedIntent,
        idempotency_key: Option<&str>,
    ) -> Result<(StampedIntent, Accepted), SubmitError> {
        let intent = intake::Intent::try_from(intent).map_err(SubmitError::Invalid)?;
        let key = idempotency_key.map(|k| (k.to_string(), 0));
        Ok(self.lock().submit(intent, key)?)
    }

    /// Ends the sidecar: intents and orchestrator writes are refused from
    /// now on (reads still answer), and what is still buffered is returned
    /// so the run can report it. A second call returns nothing.
    pub fn close(&self) -> Vec<StampedIntent> {
        self.lock().close()
    }
}
