//! The command line and settings of journeyd (SPEC §1), with every default in one place.
//! Each setting of `serve` is a flag, an environment variable, or its default.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
pub const DEFAULT_DB: &str = "./journeyd.db";
/// Where the operator commands find the server unless told otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8787";

/// journeyd: event-triggered customer journeys on one SQLite file.
///
/// Point Segment SDKs (or curl) at `journeyd serve`, upload journey JSON files, and back up one
/// database file.
#[derive(Debug, Parser)]
#[command(name = "journeyd", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// How logs are written to stderr: `text` for people, `json` (one object per line) for log
    /// shippers.
    #[arg(long, env = "JOURNEYD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// The `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
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
    /// What a journey would have done over the events stored in a recent period: replays them
    /// through the journey on a virtual clock and prints the stats, deliveries per destination,
    /// sample payloads and the instances still active. Reads the database file (safe while
    /// `serve` is running); writes and sends nothing.
    Backtest(BacktestArgs),
    /// Upload destinations and journeys from files or directories (destinations first); prints
    /// created, updated or unchanged per file.
    Push(PushArgs),
    /// List journeys, show one as a diagram with its counts, pause, resume or archive one.
    #[command(subcommand)]
    Journeys(JourneysCommand),
    /// Show a profile, or forget a person (erasure).
    #[command(subcommand)]
    Profiles(ProfilesCommand),
    /// List deliveries, or retry one or every failed one.
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// Follow the server's committed transitions and delivery outcomes, one line each.
    Tail(TailArgs),
    /// Send the events of a script to the server at their offsets (divided by --speed).
    Replay(ReplayArgs),
    /// List, add or revoke admin tokens and write keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Replace the database file with a backup; refused while a server holds the file.
    Restore(RestoreArgs),
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
    /// The virtual clock's time at +0s, RFC 3339 (default the unix epoch): it matters for send
    /// windows and delay.until.
    #[arg(long)]
    pub start: Option<String>,
    /// Most active instances per profile, as for `serve`.
    #[arg(long, env = "JOURNEYD_MAX_ACTIVE_PER_PROFILE", default_value_t = crate::engine::DEFAULT_MAX_ACTIVE)]
    pub max_active_per_profile: usize,
    /// A destination document, as `journeyd push` reads it (its id is its "id" field, else the
    /// file name without .json); its frequency cap applies to the journey's sends to it, as the
    /// server's simulation applies the stored destinations' caps. Repeatable.
    #[arg(long = "destination", value_name = "FILE")]
    pub destinations: Vec<PathBuf>,
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

    /// When a commit is durable: `normal` survives the process being killed at any moment;
    /// `full` also survives power loss, with one fsync per group commit (slower ingest).
    #[arg(long, env = "JOURNEYD_SYNC", value_enum, default_value_t = SyncArg::Normal)]
    pub sync: SyncArg,

    /// Most active journey instances per profile, across all journeys; further entries are
    /// skipped and counted.
    #[arg(long, env = "JOURNEYD_MAX_ACTIVE_PER_PROFILE", default_value_t = crate::engine::DEFAULT_MAX_ACTIVE)]
    pub max_active_per_profile: usize,

    /// Most connections served at once; more wait in the kernel's accept queue.
    #[arg(long, env = "JOURNEYD_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Most bytes of ingest work received and waiting to be committed (a number of bytes, or
    /// with a unit: 64MiB, 512KiB, 1GiB); beyond it, ingest answers 503 with Retry-After.
    #[arg(long, env = "JOURNEYD_MAX_QUEUED_BYTES", default_value = "64MiB", value_parser = byte_size)]
    pub max_queued_bytes: u64,

    /// How long stored events are kept (a duration such as 30d; at least 1d, since messageId
    /// deduplication looks back 24 hours).
    #[arg(long, env = "JOURNEYD_EVENTS_RETENTION", default_value = "30d", value_parser = retention)]
    pub events_retention: u64,

    /// How long finished journey instances (with their history and succeeded deliveries) are kept.
    #[arg(long, env = "JOURNEYD_INSTANCES_RETENTION", default_value = "90d", value_parser = retention)]
    pub instances_retention: u64,

    /// When the retention purge runs (cron with seconds: sec min hour day month weekday).
    #[arg(
        long,
        env = "JOURNEYD_PURGE_SCHEDULE",
        default_value = "0 */10 * * * *"
    )]
    pub purge_schedule: String,

    /// When the WAL is checkpointed, keeping it about one interval of writes long under constant
    /// load (see `store/checkpoint.rs`).
    #[arg(
        long,
        env = "JOURNEYD_CHECKPOINT_SCHEDULE",
        default_value = "* * * * * *"
    )]
    pub checkpoint_schedule: String,

    /// A directory for scheduled backups; none are taken without it.
    #[arg(long, env = "JOURNEYD_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,

    /// When scheduled backups are taken.
    #[arg(long, env = "JOURNEYD_BACKUP_SCHEDULE", default_value = "0 0 3 * * *")]
    pub backup_schedule: String,

    /// How many scheduled backups to keep (the newest).
    #[arg(long, env = "JOURNEYD_BACKUP_KEEP", default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
    pub backup_keep: u32,
}

/// The `--sync` values (SQLite's `synchronous` in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncArg {
    Normal,
    Full,
}

/// A setting that clap could not check itself is wrong: `journeyd` exits with 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ServeArgs {
    /// Checks what clap cannot: the cron schedules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (flag, expr) in [
            ("--purge-schedule", &self.purge_schedule),
            ("--checkpoint-schedule", &self.checkpoint_schedule),
            ("--backup-schedule", &self.backup_schedule),
        ] {
            crate::housekeeping::validate_schedule(expr)
                .map_err(|e| ConfigError(format!("{flag}: {e}")))?;
        }
        Ok(())
    }

    pub(crate) fn housekeeping(&self) -> crate::housekeeping::Settings {
        crate::housekeeping::Settings {
            purge_schedule: self.purge_schedule.clone(),
            events_retention_ms: self.events_retention as i64,
            instances_retention_ms: self.instances_retention as i64,
            checkpoint_schedule: self.checkpoint_schedule.clone(),
            backup_dir: self.backup_dir.clone(),
            backup_schedule: self.backup_schedule.clone(),
            backup_keep: self.backup_keep as usize,
        }
    }
}

/// A size in bytes: a whole number, optionally with a unit (KiB, MiB, GiB; KB, MB, GB are taken
/// as the same powers of 1024; B for bytes). At least 1 MiB, so one request of the largest
/// size always fits.
fn byte_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = t.split_at(digits);
    let unit_bytes: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("\"{s}\" is not a size such as 64MiB")),
    };
    let bytes = n
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_bytes))
        .ok_or_else(|| format!("\"{s}\" is not a size such as 64MiB"))?;
    if bytes < 1 << 20 {
        return Err(format!("\"{s}\" is smaller than 1MiB"));
    }
    Ok(bytes)
}

/// A retention period: a journey-style duration of at least one day.
fn retention(s: &str) -> Result<u64, String> {
    match crate::journey::parse_duration(s) {
        Some(ms) if ms >= 86_400_000 => Ok(ms),
        Some(_) => Err(format!("\"{s}\" is shorter than 1d")),
        None => Err(format!("\"{s}\" is not a duration such as 30d")),
    }
}

#[derive(Debug, Clone, Args)]
pub struct DbArg {
    /// The SQLite database file; created on first start.
    #[arg(long, env = "JOURNEYD_DB", default_value = DEFAULT_DB)]
    pub db: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct BacktestArgs {
    /// The journey JSON file (a draft: it need not be published).
    pub file: PathBuf,
    /// The period to replay, ending now: a duration such as 7d, 12h or 90m.
    #[arg(long)]
    pub since: String,
    #[command(flatten)]
    pub db: DbArg,
    /// Most active instances per profile, as for `serve`.
    #[arg(long, env = "JOURNEYD_MAX_ACTIVE_PER_PROFILE", default_value_t = crate::engine::DEFAULT_MAX_ACTIVE)]
    pub max_active_per_profile: usize,
}

#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// Where to write the copy. An existing journeyd backup there is replaced; any other file
    /// only with --force; the live database and its files never.
    pub dest: PathBuf,
    /// Replace DEST even when it is not a journeyd backup.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub db: DbArg,
}

/// How an operator command reaches the server (SPEC §8).
#[derive(Debug, Clone, Args)]
pub struct ServerArg {
    /// The server's base URL.
    #[arg(long, env = "JOURNEYD_URL", default_value = DEFAULT_URL)]
    pub url: String,
}

/// The settings every admin command shares: the server, the admin token, the output format.
#[derive(Debug, Clone, Args)]
pub struct RemoteArgs {
    #[command(flatten)]
    pub server: ServerArg,
    /// An admin token of the server (`Authorization: Bearer`).
    #[arg(long, env = "JOURNEYD_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the server's JSON instead of tables, for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PushArgs {
    /// Journey and destination files (`*.json`), or directories searched for them recursively.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Validate everything and show what would change, without writing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// An admin command that names one thing by id.
#[derive(Debug, Clone, Args)]
pub struct IdArgs {
    pub id: String,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// An admin command without arguments of its own.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum JourneysCommand {
    /// Every journey with its status, version and counts.
    List(ListArgs),
    /// One journey: its steps as a diagram with reached, active and branch counts.
    Show(ShowJourneyArgs),
    /// Stop new entries; instances in flight go on.
    Pause(IdArgs),
    /// Take new entries again.
    Resume(IdArgs),
    /// Stop new entries and end the active instances (no further sends).
    Archive(IdArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ShowJourneyArgs {
    pub id: String,
    /// Show this version's steps and counts (default: the newest version's steps, with the
    /// counts of all versions together).
    #[arg(long)]
    pub version: Option<i64>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ProfilesCommand {
    /// A profile's traits, linked ids, instances and latest timeline entries.
    Show(ShowProfileArgs),
    /// Forget a person: their events, traits, linked ids, instances and deliveries are deleted.
    Forget(IdArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ShowProfileArgs {
    /// A userId, anonymousId or any id linked to the profile.
    pub id: String,
    /// How many of the latest timeline entries to show.
    #[arg(long, default_value_t = 20)]
    pub last: usize,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum DeliveriesCommand {
    /// The outbox and dead letters, newest first.
    List(ListDeliveriesArgs),
    /// Retry one delivery, or with --failed every failed one.
    Retry(RetryArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ListDeliveriesArgs {
    /// pending, succeeded, failed or capped.
    #[arg(long)]
    pub status: Option<String>,
    /// Only deliveries to this destination.
    #[arg(long)]
    pub destination: Option<String>,
    /// How many to show (at most 1000 per page).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Where to go on from: the cursor a previous page printed.
    #[arg(long)]
    pub cursor: Option<String>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "failed"])))]
pub struct RetryArgs {
    /// The delivery to retry.
    pub id: Option<String>,
    /// Retry every failed delivery (dead letter).
    #[arg(long, conflicts_with = "id")]
    pub failed: bool,
    /// With --failed: only those to this destination.
    #[arg(long, requires = "failed")]
    pub destination: Option<String>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// Only this journey's transitions and deliveries.
    #[arg(long)]
    pub journey: Option<String>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Events, one JSON object per line: {"at": "+90m", "message": {...}}, as for `simulate`.
    pub events: PathBuf,
    /// How many times faster than the script: 60 plays an hour in a minute.
    #[arg(long, default_value_t = 1.0, value_parser = speed)]
    pub speed: f64,
    /// A write key of the server (the environment variable may list several: the first is used).
    #[arg(long, env = "JOURNEYD_WRITE_KEY", hide_env_values = true)]
    pub write_key: Option<String>,
    /// Print the server's answer to each message as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

/// A replay speed: a positive number.
fn speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err(format!("\"{s}\" is not a positive number such as 60")),
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Every admin token and write key: id, kind and creation time (never the key).
    List(ListArgs),
    /// Add a key and print it, this once.
    Add(AddKeyArgs),
    /// Revoke a key by id; it is refused at once. The last admin token cannot be revoked.
    Revoke(IdArgs),
}

#[derive(Debug, Clone, Args)]
pub struct AddKeyArgs {
    /// What the key is for.
    #[arg(value_enum)]
    pub kind: KeyKind,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// The kinds of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyKind {
    /// A write key for the ingest API.
    Write,
    /// An admin token for the admin API.
    Admin,
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The backup file (from `journeyd backup`, `GET /v1/backup` or a scheduled backup).
    pub backup: PathBuf,
    #[command(flatten)]
    pub db: DbArg,
}
