//! The husk runtime: specs become runs, runs become stages in sandboxes.
//!
//! - [`run::run`] takes a parsed spec and runs it to a terminal state,
//!   emitting [`events`] and returning a [`record::RunRecord`].
//! - An agent stage ([`stage`]) gets a fresh sandbox, its skills and input
//!   ([`provision`]), the agent launched by a launcher ([`agents`]), its
//!   timeout, and its structured output checked ([`output`], [`collect`]).
//! - Service mode ([`service`]) keeps an agent running and publishes its
//!   output file whenever it changes.
//! - The run's state lives in one [`live::LiveRun`] record, changed only by
//!   typed transitions; resource samples go to [`telemetry`].
//! - Workflows ([`workflow`]) run steps in one sandbox in dependency order;
//!   pipelines ([`pipeline`]) run boxes stage by stage with fan-out.
//!
//! - [`testing`] (feature `testing`) is an in-memory sandbox backend with
//!   scripted processes, for fast tests of the runtime and the daemon.
//!
//! The runtime never prints: the CLI renders events for people, the
//! daemon stores and streams them.

pub mod agents;
pub mod collect;
pub mod context;
pub mod error;
pub mod events;
pub mod lines;
pub mod live;
pub mod messaging;
pub mod network;
pub mod output;
pub mod pipeline;
pub mod preflight;
pub mod process;
pub mod prompt;
pub mod provision;
pub mod record;
pub mod run;
pub mod sandboxes;
pub mod service;
pub mod stage;
pub mod store;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod workflow;

pub use error::RunError;
pub use events::{Event, EventSink, Level};
/// The sandbox crate, for callers that hand the runtime a backend
/// ([`RunOptions::backend`]).
pub use husk_sandbox as sandbox;
pub use record::{RunPolicy, RunRecord, RunStatus};
pub use run::{RunOptions, run};
