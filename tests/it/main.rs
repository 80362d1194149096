//! Black-box tests of journeyd: each test starts a server with a database in a temp dir of its own
//! and talks to it over HTTP only. The server is the real binary as a child process
//! (`support::Server`) where the process is under test (kill -9, signals, the command line,
//! metrics), and otherwise `serve` in the test process on a manual clock (`support::Appliance`),
//! so that timers, holds and retries are driven by moving the clock rather than by waiting.
//!
//! One file per family; shared support lives in `support/`.

// Case tables are tuples and boxed closures by design: one row per case, read at a glance.
#![allow(clippy::type_complexity)]

mod support;

mod admin;
mod auth;
mod backup;
mod batch;
mod beyond;
mod cli;
mod console;
mod crash;
mod dedup;
mod delivery;
mod encoding;
mod errors;
mod examples;
mod hardening;
mod identity;
mod ingest_paths;
mod journeys_api;
mod merges;
mod operations;
mod operator_cli;
mod packaging;
mod process;
mod restart;
mod sdk_fixtures;
mod semantics;
mod skew;
mod upgrade;
