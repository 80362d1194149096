//! The command line and settings of journeyd (SPEC §1), with every default in one place.
//! Each setting of `serve` is a flag, an environment variable, or its default.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
pub const DEFAULT_DB: &str = "./journeyd.db";

/// journeyd: event-triggered customer journeys on one SQLite file.
///
/// Point Segment SDKs (or curl) at `journeyd serve`, upload journey JSON files, and back up one
/// database file.
#[derive(Debug, Parser)]
#[command(name = "journeyd", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the appliance: the HTTP API (ingest and admin), the scheduler and the delivery workers.
    Serve(ServeArgs),
    /// Validate journey files offline; prints every problem with its JSON path. Exit 0 when all
    /// are valid, 1 otherwise.
    Check(CheckArgs),
    /// Run a journey against timed events on a virtual clock and print the trace; writes and
    /// sends nothing.
    Simulate(SimulateArgs),
    /// Write a consistent copy of the database to DEST; safe while `serve` is running.
    Backup(BackupArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Journey JSON files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// The journey JSON file.
    pub file: PathBuf,
    /// Events, one JSON object per line: {"at": "+90m", "message": {...}}.
    #[arg(long)]
    pub events: PathBuf,
    /// Traits every simulated profile starts with, as a JSON object.
    #[arg(long)]
    pub traits: Option<String>,
    /// Most active instances per profile, as for `serve`.
    #[arg(long, env = "JOURNEYD_MAX_ACTIVE_PER_PROFILE", default_value_t = crate::engine::DEFAULT_MAX_ACTIVE)]
    pub max_active_per_profile: usize,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on. The default binds to loopback only; use 0.0.0.0:8787 to accept
    /// connections from other machines.
    #[arg(long, env = "JOURNEYD_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub db: DbArg,

    /// An admin token for the admin API (`Authorization: Bearer <token>`). Added to the tokens
    /// already stored; when none is stored or given, one is generated and printed once.
    #[arg(long, env = "JOURNEYD_ADMIN_TOKEN")]
    pub admin_token: Option<String>,

    /// A write key for the ingest API (repeatable; the environment variable is comma-separated).
    /// Added to the keys already stored; when none is stored or given, one is generated and
    /// printed once.
    #[arg(long = "write-key", env = "JOURNEYD_WRITE_KEY", value_delimiter = ',')]
    pub write_keys: Vec<String>,

    /// Most active journey instances per profile, across all journeys; further entries are
    /// skipped and counted.
    #[arg(long, env = "JOURNEYD_MAX_ACTIVE_PER_PROFILE", default_value_t = crate::engine::DEFAULT_MAX_ACTIVE)]
    pub max_active_per_profile: usize,
}

#[derive(Debug, Clone, Args)]
pub struct DbArg {
    /// The SQLite database file; created on first start.
    #[arg(long, env = "JOURNEYD_DB", default_value = DEFAULT_DB)]
    pub db: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// Where to write the copy (replaced if it exists).
    pub dest: PathBuf,
    #[command(flatten)]
    pub db: DbArg,
}
