//! journeyd: event-triggered customer journeys on one SQLite file.
//!
//! A tour of the layout, in the order data flows through it:
//!
//! - [`api`] is the only module that knows HTTP: routes, auth, request and response shapes
//!   (`api::views`), the one mapping from errors to status codes.
//! - [`ingest`] turns Segment messages into normalised, validated messages (pure, no IO, no clock).
//! - [`store`] is the only module that knows SQL: the schema, the single writer thread that
//!   group-commits queued work, the engine seam, read connections, checkpoints, backups.
//! - [`journey`] holds journey definitions: types, parsing and validation with JSON paths (pure).
//! - [`engine`] decides what an event or a due timer does to a profile's journey instances, and
//!   how that moves the stats counters (pure).
//! - [`scheduler`] sleeps until the next due timer and fires due timers through the store.
//! - [`delivery`] holds destinations, the retry policy, signatures and the outbox dispatcher.
//! - [`sim`] runs a journey against timed events on a virtual clock, through the same engine.
//! - [`housekeeping`] runs retention purges, WAL checkpoints, scheduled backups, dictionary
//!   training and memory release on cron schedules.
//! - [`memory`] sets up glibc's allocator and gives freed memory back (housekeeping, every 10 s).
//! - [`metrics`] holds the process's counters and histograms for `GET /metrics`.
//! - [`validate`] is the toolkit every validator uses: problems with JSON paths.
//! - [`clock`] is the only source of time, and the one timestamp type.
//! - [`config`] holds every command, flag and default; [`cli`] runs the commands.
//! - [`server`] wires the pieces together: `serve(settings, clock, listener, shutdown)`.
//!
//! Only what the binary, the tests and the benchmark need is public: the CLI, the server seam
//! and the clock. Everything else is crate-private, so the compiler reports dead code.

mod api;
pub mod cli;
pub mod clock;
pub mod config;
mod delivery;
mod engine;
mod housekeeping;
mod ingest;
mod journey;
pub mod memory;
mod metrics;
mod scheduler;
pub mod server;
mod sim;
mod store;
mod validate;

#[doc(hidden)]
pub mod fuzz_support;

/// What the benchmark (`benches/load`) shares with the product: the schema and the connection
/// set-up, so that its plain-SQLite ceiling runs on what the product runs on; and, for it and the
/// tests, a read-only connection that reads stored (compressed) JSON with `jd_text()`.
#[doc(hidden)]
pub mod bench_support {
    pub use crate::store::{SCHEMA, Sync, connect, inspect};
}
