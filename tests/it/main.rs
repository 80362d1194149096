//! Black-box tests of the `journeyd` binary: each test starts the real binary on a loopback port with a
//! database in a temp dir of its own (see `harness`) and talks to it over HTTP only.
//!
//! One file per family; each family runs its cases through one `check` function.

// Case tables are tuples and boxed closures by design: one row per case, read at a glance.
#![allow(clippy::type_complexity)]

mod harness;
mod load;
mod receiver;

mod admin;
mod auth;
mod backup;
mod batch;
mod cli;
mod crash;
mod dedup;
mod delivery;
mod encoding;
mod errors;
mod examples;
mod identity;
mod ingest_paths;
mod journeys_api;
mod operations;
mod packaging;
mod process;
mod restart;
mod sdk_fixtures;
mod skew;
