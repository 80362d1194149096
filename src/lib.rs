//! journeyd: event-triggered customer journeys on one SQLite file.
//!
//! A tour of the layout, in the order data flows through it:
//!
//! - [`api`] is the only module that knows HTTP: routes, auth, request and response shapes, error mapping.
//! - [`ingest`] turns Segment messages into normalised, validated messages (pure, no IO, no clock).
//! - [`store`] is the only module that knows SQL: the schema, the single writer thread that group-commits
//!   queued work, the read connections, backups.
//! - [`journey`] holds journey definitions: types, parsing and validation with JSON paths (pure).
//! - [`clock`] is the only source of time.
//! - [`config`] holds the settings of `journeyd serve` and their defaults, in one place.
//! - [`engine`] decides what an event or a due timer does to a profile's journey instances (pure).
//! - [`scheduler`] sleeps until the next due timer and fires due timers through the store.
//! - [`sim`] runs a journey against timed events on a virtual clock, through the same engine.
//! - [`delivery`] holds destinations and (with the delivery issue) the outbox workers.
//! - [`housekeeping`] runs retention purges, WAL checkpoints and scheduled backups on cron schedules.
//! - [`metrics`] holds the process's counters and histograms for `GET /metrics`.
//! - [`server`] wires the pieces together: `run(app, listener, shutdown)`.

pub mod api;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod engine;
pub mod housekeeping;
pub mod ingest;
pub mod journey;
pub mod metrics;
pub mod scheduler;
pub mod server;
pub mod sim;
pub mod store;
