//! Load benchmark of `journeyd`: `cargo bench --bench load`.
//!
//! Six groups of phases, chosen with
//! `JOURNEYD_BENCH_PHASES=ingest,journeys,timers,delivery,storage,backtest` (comma-separated;
//! default `all`, which is all six). BENCHMARKS.md describes each phase and its targets.
//!
//! `ingest`, each phase run for `JOURNEYD_BENCH_SECS` seconds (default 5):
//!
//! 1. Machine ceiling: a plain loop of batched INSERTs into the `events` table of the product's
//!    schema, on a connection set up as the product's (WAL, `synchronous` as below), 100 rows per
//!    transaction. Followed, unless `JOURNEYD_BENCH_EXTRA=0`, by two shorter analysis runs: the
//!    same rows with the statements the product runs per message (dedup lookup, identity lookup,
//!    profile upsert, savepoint), and plain inserts at 800 rows per transaction (what group commit
//!    of 8 batch clients can reach).
//! 2. Durable ingest through `POST /v1/batch` of the real binary: `JOURNEYD_BENCH_CLIENTS` (8)
//!    keep-alive clients, each posting batches of `JOURNEYD_BENCH_BATCH` (100) track messages.
//! 3. Single `POST /v1/track` with `JOURNEYD_BENCH_TRACK_CLIENTS` (64) concurrent clients.
//! 4. RSS of the server: idle after start, and 1 s and 11 s after the load phases; RssAnon (heap and
//!    stacks) at the same moments.
//!
//! `journeys`, once per count of `JOURNEYD_BENCH_WAITING` (default 10,000 and 100,000;
//! `JOURNEYD_BENCH_BIG=1`: 10,000 and 1,000,000), each on a fresh database:
//!
//! 5. Waiting instances and flat costs: fill a hold (max_hold 7d) with that many instances through
//!    `POST /v1/batch` (entry rate), then measure the cost of an event (single `POST /v1/track` of a
//!    hold-branch event for random waiting users: one client, then 32) and of firing timers
//!    (`JOURNEYD_BENCH_TICK` timers due together in another journey: the writer's time in ticks
//!    per 1,000 fired, from `journeyd_timer_firing_seconds_total`), and compare the first and
//!    last count.
//! 7. Database bytes per waiting instance: SQLite's `dbstat` after a clean shutdown, without the
//!    stored events and profiles.
//! 8. Restart with that many pending timers: spawn to `listening on`, and to the first 200 from
//!    `/healthz`.
//!
//! `timers`:
//!
//! 6. Timers fired per second: `JOURNEYD_BENCH_TIMERS` (50,000) instances whose hold times out into
//!    a send step, all due at once after a restart, the rate read from `GET /metrics`; once with the
//!    deliveries held back (destination rate limit), once sent to the receiver at the same time.
//!    Then timer lateness below saturation: entries paced at half the measured rate into a 5 s hold.
//!
//! `delivery`:
//!
//! 9. A forwarding journey (entry, then send): the saturating rate of single `POST /v1/track`;
//!    event-to-delivery latency at half of it (open loop); delivery throughput from a backlog of
//!    `JOURNEYD_BENCH_DELIVERIES` (50,000), at the default destination concurrency and (unless
//!    `JOURNEYD_BENCH_EXTRA=0`) at 64.
//!
//! `storage`, once per count of `JOURNEYD_BENCH_STORAGE_WAITING` (default 10,000 and 1,000,000),
//! each on a fresh database:
//!
//! S. Storage per forwarded event. Fill a hold (max_hold 7d) with that many instances as phase 5
//!    does, wait for the WAL to be checkpointed, take a backup (`GET /v1/backup`); then a window:
//!    32 clients of single `POST /v1/track` of a forwarding event (the `delivery` group's journey:
//!    entry, then send to the receiver; about 460 bytes stored per event, `JOURNEYD_BENCH_USERS`
//!    users) for `JOURNEYD_BENCH_STORAGE_SECS` (20) seconds, after which the window stays open
//!    until the receiver has every delivery, no delivery is pending in the database and the WAL
//!    is checkpointed again. Then a second backup. Per acknowledged event: the bytes the server
//!    sent to storage in the window (`write_bytes` of /proc/<pid>/io), the WAL frames appended
//!    (counted from the `-shm` WAL index), the growth of the backup, and per table and index the
//!    entries, pages and bytes (`dbstat` on the backups). Also the event throughput at each count
//!    and its ratio from the smallest count to the largest.
//!
//! `backtest`, once per count of `JOURNEYD_BENCH_BACKTEST_EVENTS` (default 100,000 and 1,000,000),
//! each on a fresh database:
//!
//! B. Store that many track messages (phase 2's, five event names at random) through
//!    `POST /v1/batch`, then `POST /v1/journeys/backtest` of a draft journey (entry on one of the
//!    five names, a hold, a send) over `"since": "7d"`, twice: events per second by the server's
//!    `took_ms` and by the wall time of the HTTP call, while `/healthz` is called every 25 ms
//!    (its latency against 2 s of calls without a backtest).
//!
//! Journeys and destinations are set up through the admin API; webhooks go to a receiver inside
//! this process (hyper on 127.0.0.1), which answers 200 and records when each delivery arrived,
//! matched through properties of the event that come back in the payload's journey context.
//! Analysis aids: `JOURNEYD_BENCH_PERF=<dir>` records `perf` profiles of the server during the
//! measured windows (at 499 Hz, or `JOURNEYD_BENCH_PERF_HZ`), `JOURNEYD_BENCH_STDERR=<file>` keeps the server's log with the bench's clock,
//! `JOURNEYD_BENCH_SERVER_ARGS` adds `serve` flags, `JOURNEYD_BENCH_TIMERS_ONLY=held` (or `fast`) runs
//! only that backlog of the `timers` group.
//!
//! The server runs in a fresh directory under `JOURNEYD_BENCH_DIR` (default: cargo's target tmp dir),
//! removed at the end unless `JOURNEYD_BENCH_KEEP=1`. During the HTTP phases the report also shows
//! where the CPU went (per thread of the server, and the load generator itself): on a small machine
//! the clients compete with the server for the same cores, which the figures must be read with.
//! It also reads the writer's group-commit counters from `GET /metrics` when the server has them.
//!
//! Durability follows the product's default, `--sync normal` (SQLite `synchronous=NORMAL`: durable
//! against the process dying); `JOURNEYD_BENCH_SYNC=full` runs the server with `--sync full` and the
//! ceiling with `synchronous=FULL` (an fsync per commit: durable against power loss).
//!
//! Message ids are random UUIDs, as Segment's SDKs send them, in both the ceiling and the HTTP
//! phases; `JOURNEYD_BENCH_IDS=sequential` uses ordered ids instead (cheaper for the messageId
//! index, which then appends instead of touching a random page per row). Other settings:
//! `JOURNEYD_BENCH_USERS` (5000 distinct userIds), `JOURNEYD_BENCH_LOG` (the server's RUST_LOG, `warn`).
//!
//! Layout: this file holds the settings, the choice of phases and the summary; one module per
//! group of phases (`ingest`, `journeys`, `timers`, `delivery`, `storage`, `backtest`, and
//! `ceiling` for phase 1's plain SQLite loops); the rest is what several phases share.

// The phases.
mod backtest;
mod ceiling;
mod delivery;
mod ingest;
mod journeys;
mod storage;
mod timers;

// What they share.
mod db;
mod http;
mod loadgen;
mod messages;
mod metrics;
mod perf;
mod receiver;
mod report;
mod server;
mod sys;
mod window;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use report::Row;

// ---------------------------------------------------------------------------------------------
// Settings

pub struct Settings {
    pub secs: f64,
    pub clients: usize,
    pub batch: usize,
    pub track_clients: usize,
    pub users: u64,
    pub extra: bool,
    /// Ordered message ids instead of random UUIDs (what Segment's SDKs send).
    pub sequential_ids: bool,
    /// The server's `--sync` (`normal` or `full`), and the ceiling's `synchronous` to match.
    pub sync: String,
    pub dir: PathBuf,
    pub keep: bool,
    /// Which groups of phases run (`JOURNEYD_BENCH_PHASES`).
    pub phases: Phases,
    /// Waiting-instance counts of the journeys group (`JOURNEYD_BENCH_WAITING`, or 10k and 1M
    /// with `JOURNEYD_BENCH_BIG=1`).
    pub waiting: Vec<u64>,
    /// Timers due at once in the firing-rate phase (`JOURNEYD_BENCH_TIMERS`).
    pub timers: u64,
    /// Timers due together in one tick measurement (`JOURNEYD_BENCH_TICK`).
    pub tick: u64,
    /// Single track calls of the fixed event-cost workload (`JOURNEYD_BENCH_EVENT_CALLS`).
    pub event_calls: u64,
    /// Deliveries in the delivery-throughput backlog (`JOURNEYD_BENCH_DELIVERIES`).
    pub deliveries: u64,
    /// The destination's `concurrency` in the delivery-latency phase
    /// (`JOURNEYD_BENCH_DELIVERY_CONCURRENCY`; default: the product's default).
    pub delivery_concurrency: Option<u32>,
    /// The paced rate of the delivery-latency phase (`JOURNEYD_BENCH_DELIVERY_RATE`; default: half
    /// the measured saturating rate), to compare configurations at one rate.
    pub delivery_rate: Option<f64>,
    /// Waiting-instance counts of the storage group (`JOURNEYD_BENCH_STORAGE_WAITING`).
    pub storage_waiting: Vec<u64>,
    /// Length of the storage group's forwarding window (`JOURNEYD_BENCH_STORAGE_SECS`).
    pub storage_secs: f64,
    /// Stored-event counts of the backtest group (`JOURNEYD_BENCH_BACKTEST_EVENTS`).
    pub backtest_events: Vec<u64>,
}

/// The groups of phases `JOURNEYD_BENCH_PHASES` selects (comma-separated; default all).
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    ingest: bool,
    journeys: bool,
    timers: bool,
    delivery: bool,
    storage: bool,
    backtest: bool,
}

impl Phases {
    fn from_env() -> Phases {
        let value = std::env::var("JOURNEYD_BENCH_PHASES").unwrap_or_else(|_| "all".into());
        let mut p = Phases {
            ingest: false,
            journeys: false,
            timers: false,
            delivery: false,
            storage: false,
            backtest: false,
        };
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "all" => {
                    p = Phases {
                        ingest: true,
                        journeys: true,
                        timers: true,
                        delivery: true,
                        storage: true,
                        backtest: true,
                    }
                }
                "ingest" => p.ingest = true,
                "journeys" => p.journeys = true,
                "timers" => p.timers = true,
                "delivery" => p.delivery = true,
                "storage" => p.storage = true,
                "backtest" => p.backtest = true,
                other => panic!(
                    "JOURNEYD_BENCH_PHASES: unknown group {other:?}; use ingest, journeys, timers, delivery, storage, backtest or all"
                ),
            }
        }
        p
    }

    fn names(&self) -> String {
        let mut v = Vec::new();
        for (on, name) in [
            (self.ingest, "ingest"),
            (self.journeys, "journeys"),
            (self.timers, "timers"),
            (self.delivery, "delivery"),
            (self.storage, "storage"),
            (self.backtest, "backtest"),
        ] {
            if on {
                v.push(name);
            }
        }
        v.join(",")
    }
}

/// A comma-separated list of counts (`1000000` or `1_000_000`) from `name`, or `default`.
fn env_counts(name: &str, default: &[u64]) -> Vec<u64> {
    match std::env::var(name) {
        Ok(v) => {
            v.split(',')
                .map(|n| {
                    n.trim().replace('_', "").parse().unwrap_or_else(|_| {
                        panic!("{name}={v:?}: a comma-separated list of counts")
                    })
                })
                .collect()
        }
        Err(_) => default.to_vec(),
    }
}

fn env_parse<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

impl Settings {
    fn from_env() -> Settings {
        let base = std::env::var_os("JOURNEYD_BENCH_DIR")
            .map(PathBuf::from)
            .or_else(|| option_env!("CARGO_TARGET_TMPDIR").map(PathBuf::from))
            .unwrap_or_else(std::env::temp_dir);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = base.join(format!("journeyd-bench-{}-{nanos:x}", std::process::id()));
        Settings {
            secs: env_parse("JOURNEYD_BENCH_SECS", 5.0),
            clients: env_parse("JOURNEYD_BENCH_CLIENTS", 8),
            batch: env_parse("JOURNEYD_BENCH_BATCH", 100),
            track_clients: env_parse("JOURNEYD_BENCH_TRACK_CLIENTS", 64),
            users: env_parse("JOURNEYD_BENCH_USERS", 5000),
            extra: env_parse::<u8>("JOURNEYD_BENCH_EXTRA", 1) != 0,
            sync: match std::env::var("JOURNEYD_BENCH_SYNC").as_deref() {
                Ok("full") => "full".into(),
                Ok("normal") | Err(_) => "normal".into(),
                Ok(other) => panic!("JOURNEYD_BENCH_SYNC={other:?}: use normal or full"),
            },
            sequential_ids: match std::env::var("JOURNEYD_BENCH_IDS").as_deref() {
                Ok("sequential") => true,
                Ok("uuid") | Err(_) => false,
                Ok(other) => panic!("JOURNEYD_BENCH_IDS={other:?}: use uuid or sequential"),
            },
            dir,
            keep: env_parse::<u8>("JOURNEYD_BENCH_KEEP", 0) != 0,
            phases: Phases::from_env(),
            waiting: env_counts(
                "JOURNEYD_BENCH_WAITING",
                if env_parse::<u8>("JOURNEYD_BENCH_BIG", 0) != 0 {
                    &[10_000, 1_000_000]
                } else {
                    &[10_000, 100_000]
                },
            ),
            timers: env_parse("JOURNEYD_BENCH_TIMERS", 50_000),
            tick: env_parse("JOURNEYD_BENCH_TICK", 5_000),
            event_calls: env_parse("JOURNEYD_BENCH_EVENT_CALLS", 10_000),
            deliveries: env_parse("JOURNEYD_BENCH_DELIVERIES", 50_000),
            delivery_concurrency: std::env::var("JOURNEYD_BENCH_DELIVERY_CONCURRENCY")
                .ok()
                .map(|v| {
                    v.parse()
                        .expect("JOURNEYD_BENCH_DELIVERY_CONCURRENCY: a number")
                }),
            delivery_rate: std::env::var("JOURNEYD_BENCH_DELIVERY_RATE").ok().map(|v| {
                v.parse()
                    .expect("JOURNEYD_BENCH_DELIVERY_RATE: requests per second")
            }),
            storage_waiting: env_counts("JOURNEYD_BENCH_STORAGE_WAITING", &[10_000, 1_000_000]),
            storage_secs: env_parse("JOURNEYD_BENCH_STORAGE_SECS", 20.0),
            backtest_events: env_counts("JOURNEYD_BENCH_BACKTEST_EVENTS", &[100_000, 1_000_000]),
        }
    }

    /// The length of one timed phase (`JOURNEYD_BENCH_SECS`).
    pub fn phase(&self) -> Duration {
        Duration::from_secs_f64(self.secs)
    }

    /// The product's durability setting that `sync` names, for the ceiling's connections.
    pub fn sqlite_sync(&self) -> journeyd::bench_support::Sync {
        match self.sync.as_str() {
            "full" => journeyd::bench_support::Sync::Full,
            _ => journeyd::bench_support::Sync::Normal,
        }
    }
}

/// Time since the bench started (for stamping log lines and events).
pub fn bench_clock() -> Duration {
    bench_start().elapsed()
}

pub fn bench_start() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

// ---------------------------------------------------------------------------------------------

fn main() {
    bench_clock();
    let settings = Settings::from_env();
    std::fs::create_dir_all(&settings.dir).expect("creating the bench directory");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows: Vec<Row> = Vec::new();
    let mut problems: Vec<String> = Vec::new();

    println!("journeyd load benchmark");
    println!(
        "  phase length {:.1} s, {} batch clients x {} messages, {} track clients, {} distinct users",
        settings.secs, settings.clients, settings.batch, settings.track_clients, settings.users
    );
    println!(
        "  message ids: {}",
        if settings.sequential_ids {
            "ordered (JOURNEYD_BENCH_IDS=sequential)"
        } else {
            "random UUIDs, as Segment SDKs send"
        }
    );
    println!(
        "  durability: journeyd serve --sync {} (SQLite synchronous={}{})",
        settings.sync,
        settings.sync.to_ascii_uppercase(),
        if settings.sync == "full" {
            ": an fsync per commit, survives power loss"
        } else {
            ", the product default: survives kill -9, fsync only at checkpoints"
        }
    );
    println!(
        "  groups: {} (JOURNEYD_BENCH_PHASES)",
        settings.phases.names()
    );
    println!("  binary {}", server::binary().display());
    // Which source the figures belong to: the commit, and whether src/ had uncommitted changes.
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if let Some(commit) = git(&["rev-parse", "--short", "HEAD"]) {
        let dirty = git(&[
            "status",
            "--porcelain",
            "--",
            "src",
            "Cargo.toml",
            "Cargo.lock",
        ])
        .map(|s| s.lines().count())
        .unwrap_or(0);
        println!(
            "  commit {commit}{}",
            if dirty > 0 {
                format!(" with {dirty} uncommitted changes under src/ or Cargo.*")
            } else {
                String::new()
            }
        );
    }
    println!("  data dir {}", settings.dir.display());
    println!();

    if settings.phases.ingest {
        ingest::run(&settings, &runtime, &mut rows, &mut problems);
    }
    if settings.phases.journeys {
        journeys::run(&settings, &runtime, &mut rows, &mut problems);
    }
    if settings.phases.timers || settings.phases.delivery || settings.phases.storage {
        let receiver = runtime.block_on(receiver::Receiver::start());
        println!("== Webhook receiver (in this process) on {}", receiver.url);
        println!();
        if settings.phases.timers {
            timers::run(&settings, &runtime, &receiver, &mut rows, &mut problems);
        }
        if settings.phases.delivery {
            delivery::run(&settings, &runtime, &receiver, &mut rows, &mut problems);
        }
        if settings.phases.storage {
            storage::run(&settings, &runtime, &receiver, &mut rows, &mut problems);
        }
    }
    if settings.phases.backtest {
        backtest::run(&settings, &runtime, &mut rows, &mut problems);
    }

    // Summary ------------------------------------------------------------------------------
    println!("== Summary");
    let w0 = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.value.len()).max().unwrap_or(0);
    let w2 = rows.iter().map(|r| r.goal.len()).max().unwrap_or(0);
    for r in &rows {
        if r.value.is_empty() && r.goal.is_empty() {
            println!("  {}", r.name);
            continue;
        }
        println!(
            "  {:<w0$}  {:<w1$}  {:<w2$}  {}",
            r.name, r.value, r.goal, r.verdict
        );
    }

    if settings.keep {
        println!("\n(data kept in {})", settings.dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&settings.dir);
    }
    if !problems.is_empty() {
        println!("\n== Problems");
        for p in &problems {
            println!("  {p}");
        }
        std::process::exit(1);
    }
}
