//! Load benchmark of `journeyd`: `cargo bench --bench load`.
//!
//! Four groups of phases, chosen with `JOURNEYD_BENCH_PHASES=ingest,journeys,timers,delivery`
//! (comma-separated; default all). BENCHMARKS.md describes each phase and its targets.
//!
//! `ingest`, each phase run for `JOURNEYD_BENCH_SECS` seconds (default 5):
//!
//! 1. Machine ceiling: a plain loop of batched INSERTs into an `events`-shaped SQLite table with the
//!    product's pragmas (WAL, `synchronous` as below), 100 rows per transaction. Followed, unless
//!    `JOURNEYD_BENCH_EXTRA=0`, by two shorter analysis runs: the same rows with the statements the
//!    product runs per message (dedup lookup, identity lookup, profile upsert, savepoint), and plain
//!    inserts at 800 rows per transaction (what group commit of 8 batch clients can reach).
//! 2. Durable ingest through `POST /v1/batch` of the real binary: `JOURNEYD_BENCH_CLIENTS` (8)
//!    keep-alive clients, each posting batches of `JOURNEYD_BENCH_BATCH` (100) track messages.
//! 3. Single `POST /v1/track` with `JOURNEYD_BENCH_TRACK_CLIENTS` (64) concurrent clients.
//! 4. RSS of the server: idle after start, and after the load phases.
//!
//! `journeys`, once per count of `JOURNEYD_BENCH_WAITING` (default 10,000 and 100,000;
//! `JOURNEYD_BENCH_BIG=1`: 10,000 and 1,000,000), each on a fresh database:
//!
//! 5. Waiting instances and flat costs: fill a hold (max_hold 7d) with that many instances through
//!    `POST /v1/batch` (entry rate), then measure the cost of an event (single `POST /v1/track` of a
//!    hold-branch event for random waiting users: one client, then 32) and of a scheduler tick
//!    (`JOURNEYD_BENCH_TICK` timers due together in another journey), and compare the first and
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
//! Journeys and destinations are set up through the admin API; webhooks go to a receiver inside
//! this process (hyper on 127.0.0.1), which answers 200 and records when each delivery arrived,
//! matched through properties of the event that come back in the payload's journey context.
//! Analysis aids: `JOURNEYD_BENCH_PERF=<dir>` records `perf` profiles of the server during the
//! measured windows, `JOURNEYD_BENCH_STDERR=<file>` keeps the server's log with the bench's clock,
//! `JOURNEYD_BENCH_SERVER_ARGS` adds `serve` flags.
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

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

const ADMIN_TOKEN: &str = "bench-admin-token";
const WRITE_KEY: &str = "bench-write-key";

// Targets from the issue.
const BATCH_TARGET: f64 = 50_000.0;
const BATCH_FLOOR: f64 = 15_000.0;
const TRACK_TARGET: f64 = 20_000.0;
const TRACK_FLOOR: f64 = 5_000.0;
const IDLE_RSS_TARGET_MB: f64 = 20.0;

// ---------------------------------------------------------------------------------------------
// Settings

struct Settings {
    secs: f64,
    clients: usize,
    batch: usize,
    track_clients: usize,
    users: u64,
    extra: bool,
    /// Ordered message ids instead of random UUIDs (what Segment's SDKs send).
    sequential_ids: bool,
    /// The server's `--sync` (`normal` or `full`), and the ceiling's `synchronous` to match.
    sync: String,
    dir: PathBuf,
    keep: bool,
    /// Which groups of phases run (`JOURNEYD_BENCH_PHASES`).
    phases: Phases,
    /// Waiting-instance counts of the journeys group (`JOURNEYD_BENCH_WAITING`, or 10k and 1M
    /// with `JOURNEYD_BENCH_BIG=1`).
    waiting: Vec<u64>,
    /// Timers due at once in the firing-rate phase (`JOURNEYD_BENCH_TIMERS`).
    timers: u64,
    /// Timers due together in one tick measurement (`JOURNEYD_BENCH_TICK`).
    tick: u64,
    /// Single track calls of the fixed event-cost workload (`JOURNEYD_BENCH_EVENT_CALLS`).
    event_calls: u64,
    /// Deliveries in the delivery-throughput backlog (`JOURNEYD_BENCH_DELIVERIES`).
    deliveries: u64,
    /// The destination's `concurrency` in the delivery-latency phase
    /// (`JOURNEYD_BENCH_DELIVERY_CONCURRENCY`; default: the product's default).
    delivery_concurrency: Option<u32>,
    /// The paced rate of the delivery-latency phase (`JOURNEYD_BENCH_DELIVERY_RATE`; default: half
    /// the measured saturating rate), to compare configurations at one rate.
    delivery_rate: Option<f64>,
}

/// The groups of phases `JOURNEYD_BENCH_PHASES` selects (comma-separated; default all).
#[derive(Debug, Clone, Copy)]
struct Phases {
    ingest: bool,
    journeys: bool,
    timers: bool,
    delivery: bool,
}

impl Phases {
    fn from_env() -> Phases {
        let value = std::env::var("JOURNEYD_BENCH_PHASES").unwrap_or_else(|_| "all".into());
        let mut p = Phases {
            ingest: false,
            journeys: false,
            timers: false,
            delivery: false,
        };
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "all" => {
                    p = Phases {
                        ingest: true,
                        journeys: true,
                        timers: true,
                        delivery: true,
                    }
                }
                "ingest" => p.ingest = true,
                "journeys" => p.journeys = true,
                "timers" => p.timers = true,
                "delivery" => p.delivery = true,
                other => panic!(
                    "JOURNEYD_BENCH_PHASES: unknown group {other:?}; use ingest, journeys, timers, delivery or all"
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
        ] {
            if on {
                v.push(name);
            }
        }
        v.join(",")
    }
}

/// Time since the bench started (for stamping log lines and events).
fn bench_clock() -> Duration {
    bench_start().elapsed()
}

fn bench_start() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// `perf record` of one process while a measured window lasts, when `JOURNEYD_BENCH_PERF` names
/// a directory: `<dir>/<name>.data`, with DWARF call graphs (the release build has no frame
/// pointers), at 499 Hz. Read it with `perf report -i <file> --no-children`.
struct Profile(Option<(Child, PathBuf)>);

impl Profile {
    fn start(pid: u32, name: &str) -> Profile {
        let Some(dir) = std::env::var_os("JOURNEYD_BENCH_PERF").map(PathBuf::from) else {
            return Profile(None);
        };
        let _ = std::fs::create_dir_all(&dir);
        let out = dir.join(format!("{name}.data"));
        let child = Command::new("perf")
            .args(["record", "-F", "499", "--call-graph", "dwarf,16384", "-p"])
            .arg(pid.to_string())
            .arg("-o")
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(c) => {
                // perf needs a moment to attach.
                std::thread::sleep(Duration::from_millis(300));
                Profile(Some((c, out)))
            }
            Err(e) => {
                println!("  (perf record failed to start: {e})");
                Profile(None)
            }
        }
    }

    fn stop(self) {
        if let Some((mut child, out)) = self.0 {
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
            println!("  (perf profile: {})", out.display());
        }
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
            waiting: match std::env::var("JOURNEYD_BENCH_WAITING") {
                Ok(v) => v
                    .split(',')
                    .map(|n| {
                        n.trim().replace('_', "").parse().unwrap_or_else(|_| {
                            panic!("JOURNEYD_BENCH_WAITING={v:?}: a comma-separated list of counts")
                        })
                    })
                    .collect(),
                Err(_) if env_parse::<u8>("JOURNEYD_BENCH_BIG", 0) != 0 => vec![10_000, 1_000_000],
                Err(_) => vec![10_000, 100_000],
            },
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
        }
    }

    fn phase(&self) -> Duration {
        Duration::from_secs_f64(self.secs)
    }
}

// ---------------------------------------------------------------------------------------------
// Realistic messages

/// splitmix64: a tiny deterministic generator, enough to spread users and properties.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const EVENTS: [&str; 5] = [
    "Product Viewed",
    "Product Added",
    "Cart Modified",
    "Checkout Started",
    "Order Completed",
];
const PRODUCTS: [(&str, &str, &str); 4] = [
    ("Cotton T-Shirt", "Apparel", "24.99"),
    ("Water Bottle", "Outdoor", "18.50"),
    ("Headphones", "Electronics", "199.00"),
    ("Coffee Set", "Kitchen", "42.00"),
];

fn iso_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Appends one track message (about 330 bytes of JSON; about 410 once the server adds its fields) to `out`. `extra` is spliced in after the
/// type (used for the server fields of the phase-1 rows).
fn write_track(
    out: &mut String,
    rng: &mut Rng,
    users: u64,
    message_id: &str,
    timestamp: &str,
    extra: &str,
) -> u64 {
    use std::fmt::Write as _;
    let user = rng.below(users);
    let event = EVENTS[rng.below(EVENTS.len() as u64) as usize];
    let (name, category, price) = PRODUCTS[rng.below(PRODUCTS.len() as u64) as usize];
    let _ = write!(
        out,
        concat!(
            r#"{{"type":"track",{}"event":"{}","userId":"user-{:06}","messageId":"{}","timestamp":"{}","#,
            r#""properties":{{"product_id":"sku-{:05}","name":"{}","category":"{}","price":{},"quantity":{},"#,
            r#""cart_ID":"cart-{:08x}"}},"context":{{"library":{{"name":"analytics-node","version":"6.2.0"}}}}}}"#
        ),
        extra,
        event,
        user,
        message_id,
        timestamp,
        rng.below(100_000),
        name,
        category,
        price,
        1 + rng.below(4),
        user.wrapping_mul(2_654_435_761) & 0xffff_ffff,
    );
    user
}

// ---------------------------------------------------------------------------------------------
// Phase 1: the machine's ceiling for durable SQLite inserts

const EVENTS_DDL: &str = "
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY,
    profile_key TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    type        TEXT NOT NULL,
    event       TEXT,
    received_at INTEGER NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX events_by_profile ON events (profile_key, seq);
CREATE INDEX events_by_message_id ON events (message_id);
CREATE TABLE profiles (
    profile_key TEXT PRIMARY KEY,
    traits      TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE identities (
    id          TEXT PRIMARY KEY,
    profile_key TEXT NOT NULL,
    linked_at   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX identities_by_profile ON identities (profile_key);
";

/// The same pragmas as the product's `store::configure`; `sync` is SQLite's `synchronous`.
fn open_like_product(path: &Path, sync: &str) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).expect("opening the ceiling database");
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", sync).unwrap();
    conn.pragma_update(None, "foreign_keys", "OFF").unwrap();
    conn.pragma_update(None, "temp_store", "MEMORY").unwrap();
    conn.pragma_update(None, "cache_size", -16_384).unwrap();
    conn
}

struct CeilingResult {
    rows: u64,
    commits: u64,
    elapsed: Duration,
    commit_times: Vec<u32>,
    body_bytes: u64,
    /// What the loop wrote, as [`describe_io`] puts it.
    io: String,
}

impl CeilingResult {
    fn rows_per_sec(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64()
    }
}

/// Inserts rows in transactions of `per_tx` rows for `duration`. With `product_shaped`, each row
/// also runs the statements the product's ingest runs per message, each batch inside a savepoint.
fn ceiling(
    path: &Path,
    settings: &Settings,
    duration: Duration,
    per_tx: usize,
    product_shaped: bool,
) -> CeilingResult {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("db-wal"));
    let _ = std::fs::remove_file(path.with_extension("db-shm"));
    let mut conn = open_like_product(path, &settings.sync.to_ascii_uppercase());
    conn.execute_batch(EVENTS_DDL).unwrap();
    conn.set_prepared_statement_cache_capacity(64);

    let mut rng = Rng(0x5eed_0001);
    let ts = iso_now();
    let extra = format!(r#""receivedAt":"{ts}","originalTimestamp":"{ts}","#);
    let mut body = String::with_capacity(600);
    let mut message_id = String::with_capacity(64);
    let (mut rows, mut commits, mut seq, mut body_bytes) = (0u64, 0u64, 0i64, 0u64);
    let mut commit_times = Vec::new();
    let io_before = proc_io("self");
    let started = Instant::now();
    let deadline = started + duration;
    while Instant::now() < deadline {
        let t0 = Instant::now();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        {
            let c: &rusqlite::Connection = &tx;
            if product_shaped {
                // The writer runs each job inside its own savepoint.
                c.execute_batch("SAVEPOINT job").unwrap();
            }
            let mut insert = c
                .prepare_cached(
                    "INSERT INTO events (seq, profile_key, message_id, type, event, received_at, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .unwrap();
            for _ in 0..per_tx {
                seq += 1;
                body.clear();
                message_id.clear();
                use std::fmt::Write as _;
                if settings.sequential_ids {
                    let _ = write!(message_id, "ceiling-{seq:012}");
                } else {
                    let _ = write!(message_id, "{}", uuid::Uuid::new_v4());
                }
                let user = write_track(
                    &mut body,
                    &mut rng,
                    settings.users,
                    &message_id,
                    &ts,
                    &extra,
                );
                body_bytes += body.len() as u64;
                let profile_key = format!("user-{user:06}");
                let now = seq;
                if product_shaped {
                    let _: Option<i64> = c
                        .prepare_cached("SELECT max(received_at) FROM events WHERE message_id = ?1")
                        .unwrap()
                        .query_row([&message_id], |r| r.get(0))
                        .unwrap();
                    let _: Option<String> = rusqlite::OptionalExtension::optional(
                        c.prepare_cached("SELECT profile_key FROM identities WHERE id = ?1")
                            .unwrap()
                            .query_row([&profile_key], |r| r.get(0)),
                    )
                    .unwrap();
                    c.prepare_cached(
                        "INSERT INTO profiles (profile_key, traits, created_at, updated_at) VALUES (?1, '{}', ?2, ?2)
                         ON CONFLICT (profile_key) DO NOTHING",
                    )
                    .unwrap()
                    .execute(rusqlite::params![profile_key, now])
                    .unwrap();
                }
                insert
                    .execute(rusqlite::params![
                        seq,
                        profile_key,
                        message_id,
                        "track",
                        "Product Added",
                        now,
                        body
                    ])
                    .unwrap();
            }
            drop(insert);
            if product_shaped {
                c.execute_batch("RELEASE job").unwrap();
            }
        }
        tx.commit().unwrap();
        commit_times.push(t0.elapsed().as_micros() as u32);
        rows += per_tx as u64;
        commits += 1;
    }
    let elapsed = started.elapsed();
    let io = describe_io(io_before, proc_io("self"), elapsed.as_secs_f64(), rows);
    CeilingResult {
        rows,
        commits,
        elapsed,
        commit_times,
        body_bytes,
        io,
    }
}

/// Times bare WAL commits of one tiny row: the fsync cost of this disk.
fn fsync_probe(path: &Path, duration: Duration) -> Vec<u32> {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("db-wal"));
    let _ = std::fs::remove_file(path.with_extension("db-shm"));
    let conn = open_like_product(path, "FULL");
    conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
    let mut times = Vec::new();
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        let t0 = Instant::now();
        conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
        times.push(t0.elapsed().as_micros() as u32);
    }
    times
}

// ---------------------------------------------------------------------------------------------
// The server under test

struct Server {
    child: Child,
    addr: String,
    stderr_tail: Arc<std::sync::Mutex<Vec<String>>>,
    /// Just before the process was spawned.
    spawned: Instant,
    /// When its `listening on` line was read.
    listening: Instant,
}

impl Server {
    fn start(db: &Path, sync: &str) -> Server {
        let spawned = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_journeyd"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-token",
                ADMIN_TOKEN,
                "--write-key",
                WRITE_KEY,
                "--sync",
                sync,
            ])
            .arg("--db")
            .arg(db)
            // JOURNEYD_BENCH_SERVER_ARGS: extra `serve` flags (whitespace-separated) for analysis
            // runs. Values with spaces (cron schedules) go through the server's own environment
            // variables instead (JOURNEYD_CHECKPOINT_SCHEDULE=...), which the child inherits.
            .args(
                std::env::var("JOURNEYD_BENCH_SERVER_ARGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .env(
                "RUST_LOG",
                std::env::var("JOURNEYD_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting journeyd");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let stderr_tail = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tail = stderr_tail.clone();
        let pid = child.id();
        std::thread::spawn(move || {
            // JOURNEYD_BENCH_STDERR=<file>: every line of the server's log, stamped with the
            // seconds since the bench started (to line log events up with the bench's output).
            let mut copy = std::env::var_os("JOURNEYD_BENCH_STDERR").and_then(|p| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .ok()
            });
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = copy.as_mut() {
                    use std::io::Write as _;
                    let _ = writeln!(f, "{:10.3} [{pid}] {line}", bench_clock().as_secs_f64());
                }
                let mut tail = tail.lock().unwrap();
                if tail.len() >= 200 {
                    tail.remove(0);
                }
                tail.push(line);
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send((addr.trim().to_string(), Instant::now()));
                }
            }
        });
        let (addr, listening) = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(got) => got,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "journeyd did not print its `listening on` line; stderr:\n{}",
                    stderr_tail.lock().unwrap().join("\n")
                );
            }
        };
        Server {
            child,
            addr,
            stderr_tail,
            spawned,
            listening,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rss(&self) -> (f64, f64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<f64>().ok())
                .map(|kb| kb / 1024.0)
                .unwrap_or(f64::NAN)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// SIGTERM, then waits up to 30 s; returns the exit code and how long the exit took.
    fn stop(mut self) -> (Option<i32>, Duration) {
        let t0 = Instant::now();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), t0.elapsed());
            }
            if t0.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return (None, t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CPU accounting from /proc

fn clock_ticks() -> f64 {
    // CLK_TCK is 100 on every Linux configuration this runs on; `getconf` confirms when present.
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime+stime ticks of one /proc stat line, and its comm.
fn parse_stat(stat: &str) -> Option<(String, u64, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let utime = fields.get(11)?.parse().ok()?;
    let stime = fields.get(12)?.parse().ok()?;
    Some((comm, utime, stime))
}

/// CPU ticks per thread name of process `pid` (threads of one name summed).
fn thread_cpu(pid: u32) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(stat) = std::fs::read_to_string(task.path().join("stat"))
            && let Some((comm, u, s)) = parse_stat(&stat)
        {
            let e = out.entry(comm).or_default();
            e.0 += u;
            e.1 += s;
        }
    }
    out
}

fn self_cpu() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_stat(&s))
        .map(|(_, u, s)| u + s)
        .unwrap_or(0)
}

/// Bytes process `pid` ("self" for this one) passed to write calls (`wchar`) and caused to be
/// sent to storage (`write_bytes`), from /proc/<pid>/io.
fn proc_io(pid: &str) -> (u64, u64) {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let field = |name: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("wchar:"), field("write_bytes:"))
}

/// Describes the bytes written between two [`proc_io`] readings, per `rows` rows.
fn describe_io(before: (u64, u64), after: (u64, u64), secs: f64, rows: u64) -> String {
    let wchar = after.0.saturating_sub(before.0) as f64;
    let storage = after.1.saturating_sub(before.1) as f64;
    let rows = rows.max(1) as f64;
    format!(
        "{:.0} MB/s through write calls ({:.1} KB per event), {:.0} MB/s to storage ({:.1} KB per event)",
        wchar / secs / 1048576.0,
        wchar / rows / 1024.0,
        storage / secs / 1048576.0,
        storage / rows / 1024.0
    )
}

/// Busy and steal ticks of the whole machine, from the `cpu` line of /proc/stat.
fn machine_cpu() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    (get(0) + get(1) + get(2) + get(5) + get(6), get(7))
}

struct CpuWindow {
    pid: u32,
    server: BTreeMap<String, (u64, u64)>,
    client: u64,
    machine: (u64, u64),
    started: Instant,
}

impl CpuWindow {
    fn start(pid: u32) -> CpuWindow {
        CpuWindow {
            pid,
            server: thread_cpu(pid),
            client: self_cpu(),
            machine: machine_cpu(),
            started: Instant::now(),
        }
    }

    /// The server's CPU use since `start`, in percent of one core.
    fn server_total(&self) -> f64 {
        let wall = self.started.elapsed().as_secs_f64();
        let hz = clock_ticks();
        let mut total = 0u64;
        for (name, (u, s)) in thread_cpu(self.pid) {
            let (u0, s0) = self.server.get(&name).copied().unwrap_or((0, 0));
            total += (u + s).saturating_sub(u0 + s0);
        }
        total as f64 / hz / wall * 100.0
    }

    /// Lines describing CPU use since `start`, as a share of one core.
    fn report(&self) -> Vec<String> {
        let wall = self.started.elapsed().as_secs_f64();
        let hz = clock_ticks();
        let now = thread_cpu(self.pid);
        let mut lines = Vec::new();
        let mut total = 0.0;
        for (name, (u, s)) in &now {
            let (u0, s0) = self.server.get(name).copied().unwrap_or((0, 0));
            let user = (u - u0) as f64 / hz / wall * 100.0;
            let sys = (s - s0) as f64 / hz / wall * 100.0;
            total += user + sys;
            if user + sys >= 1.0 {
                lines.push(format!(
                    "    server {name:<18} {:>5.0}% of a core ({user:.0}% user, {sys:.0}% sys)",
                    user + sys
                ));
            }
        }
        lines.push(format!(
            "    server total              {total:>5.0}% of a core"
        ));
        let client = (self_cpu() - self.client) as f64 / hz / wall * 100.0;
        lines.push(format!(
            "    load generator (bench)    {client:>5.0}% of a core"
        ));
        let (busy, steal) = machine_cpu();
        let busy = (busy - self.machine.0) as f64 / hz / wall * 100.0;
        let steal = (steal - self.machine.1) as f64 / hz / wall * 100.0;
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        lines.push(format!(
            "    whole machine             {busy:>5.0}% of {cores} cores; other processes {:.0}%, hypervisor steal {steal:.0}%",
            (busy - total - client).max(0.0)
        ));
        lines
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP load

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Writes the body of request `n` of client task `task` into the buffer.
type MakeBody = Arc<dyn Fn(usize, u64, &mut Rng, &mut String) + Send + Sync>;

fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4)
        .build(connector)
}

#[derive(Default)]
struct Counters {
    ok_requests: AtomicU64,
    ok_messages: AtomicU64,
    rejected_messages: AtomicU64,
    busy: AtomicU64,
    busy_without_retry_after: AtomicU64,
    other_status: AtomicU64,
    transport_errors: AtomicU64,
    requests: AtomicU64,
    request_bytes: AtomicU64,
}

struct LoadResult {
    elapsed: Duration,
    latencies_us: Vec<u32>,
    counters: Arc<Counters>,
    statuses: BTreeMap<u16, u64>,
    sample_error: Option<String>,
}

/// Runs `clients` tasks that each POST what `make_body` builds to `path` until `duration` has passed.
async fn http_load(
    addr: &str,
    path: &str,
    clients: usize,
    duration: Duration,
    messages_per_request: u64,
    make_body: MakeBody,
) -> LoadResult {
    let uri: hyper::Uri = format!("http://{addr}{path}").parse().unwrap();
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:"))
    );
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + duration;
    let mut tasks = Vec::new();
    for task in 0..clients {
        let (uri, auth, counters, make_body) = (
            uri.clone(),
            auth.clone(),
            counters.clone(),
            make_body.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let client = http_client();
            let mut rng = Rng(0xc0ffee ^ (task as u64) << 32);
            let mut latencies = Vec::with_capacity(1 << 16);
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            let mut sample_error = None;
            let mut body = String::with_capacity(64 * 1024);
            let mut n = 0u64;
            while tokio::time::Instant::now() < deadline {
                body.clear();
                make_body(task, n, &mut rng, &mut body);
                n += 1;
                counters.requests.fetch_add(1, Ordering::Relaxed);
                counters
                    .request_bytes
                    .fetch_add(body.len() as u64, Ordering::Relaxed);
                let req = Request::builder()
                    .method(Method::POST)
                    .uri(uri.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .header(AUTHORIZATION, auth.as_str())
                    .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
                    .unwrap();
                let t0 = Instant::now();
                let resp = match tokio::time::timeout(Duration::from_secs(30), client.request(req))
                    .await
                {
                    Ok(Ok(resp)) => resp,
                    Ok(Err(e)) => {
                        counters.transport_errors.fetch_add(1, Ordering::Relaxed);
                        sample_error.get_or_insert_with(|| format!("transport: {e:?}"));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    Err(_) => {
                        counters.transport_errors.fetch_add(1, Ordering::Relaxed);
                        sample_error.get_or_insert_with(|| "request timed out after 30 s".into());
                        continue;
                    }
                };
                let status = resp.status();
                let retry_after = resp.headers().contains_key(RETRY_AFTER);
                let bytes = match resp.into_body().collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => {
                        counters.transport_errors.fetch_add(1, Ordering::Relaxed);
                        sample_error.get_or_insert_with(|| format!("reading body: {e}"));
                        continue;
                    }
                };
                let us = t0.elapsed().as_micros() as u32;
                *statuses.entry(status.as_u16()).or_default() += 1;
                if status == StatusCode::OK {
                    latencies.push(us);
                    let mut stored = messages_per_request;
                    if bytes.windows(10).any(|w| w == b"\"rejected\"") {
                        // Count what the server says it rejected; the rest was stored.
                        let rejected = serde_json::from_slice::<serde_json::Value>(&bytes)
                            .ok()
                            .and_then(|v| v["rejected"].as_array().map(|a| a.len() as u64))
                            .unwrap_or(0);
                        counters
                            .rejected_messages
                            .fetch_add(rejected, Ordering::Relaxed);
                        stored = stored.saturating_sub(rejected);
                        sample_error.get_or_insert_with(|| {
                            format!("200 with rejections: {}", String::from_utf8_lossy(&bytes))
                        });
                    }
                    counters.ok_requests.fetch_add(1, Ordering::Relaxed);
                    counters.ok_messages.fetch_add(stored, Ordering::Relaxed);
                } else if status == StatusCode::SERVICE_UNAVAILABLE
                    || status == StatusCode::TOO_MANY_REQUESTS
                {
                    counters.busy.fetch_add(1, Ordering::Relaxed);
                    if !retry_after {
                        counters
                            .busy_without_retry_after
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                } else {
                    counters.other_status.fetch_add(1, Ordering::Relaxed);
                    sample_error.get_or_insert_with(|| {
                        format!(
                            "HTTP {status}: {}",
                            String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
                        )
                    });
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            (latencies, statuses, sample_error)
        }));
    }
    let mut latencies_us = Vec::new();
    let mut statuses = BTreeMap::new();
    let mut sample_error = None;
    for t in tasks {
        let (l, s, e) = t.await.expect("client task panicked");
        latencies_us.extend(l);
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
        sample_error = sample_error.or(e);
    }
    let elapsed = started.elapsed();
    latencies_us.sort_unstable();
    LoadResult {
        elapsed,
        latencies_us,
        counters,
        statuses,
        sample_error,
    }
}

/// The writer's counters from `GET /metrics`: commits, and the sum and count of jobs per commit.
/// `None` when the server has no metrics endpoint or it does not answer.
async fn writer_metrics(addr: &str) -> Option<(f64, f64, f64)> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let req = Request::builder()
        .method(Method::GET)
        .uri(format!("http://{addr}/metrics"))
        .header(AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
        .body(Full::new(Bytes::new()))
        .ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .ok()?
        .ok()?;
    if resp.status() != StatusCode::OK {
        return None;
    }
    let text = resp.into_body().collect().await.ok()?.to_bytes();
    let text = String::from_utf8_lossy(&text);
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some((
        value("journeyd_writer_commits_total")?,
        value("journeyd_writer_batch_jobs_sum")?,
        value("journeyd_writer_batch_jobs_count")?,
    ))
}

/// Describes the group commits between two scrapes of [`writer_metrics`].
fn describe_commits(
    before: Option<(f64, f64, f64)>,
    after: Option<(f64, f64, f64)>,
    secs: f64,
    events_per_job: f64,
) -> String {
    match (before, after) {
        (Some(b), Some(a)) if a.2 > b.2 => {
            let commits = a.0 - b.0;
            let jobs_per_commit = (a.1 - b.1) / (a.2 - b.2);
            format!(
                "{commits:.0} commits ({:.0}/s), {jobs_per_commit:.1} requests per commit on average (about {:.0} events per transaction)",
                commits / secs,
                jobs_per_commit * events_per_job
            )
        }
        _ => "not available (no GET /metrics with writer_commits and writer_batch_jobs)".into(),
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn print_load(result: &LoadResult, unit: &str) {
    let c = &result.counters;
    let secs = result.elapsed.as_secs_f64();
    println!(
        "  {} OK requests ({:.0} req/s), {} {unit} stored, in {:.2} s",
        c.ok_requests.load(Ordering::Relaxed),
        c.ok_requests.load(Ordering::Relaxed) as f64 / secs,
        c.ok_messages.load(Ordering::Relaxed),
        secs
    );
    println!(
        "  latency of 200s: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&result.latencies_us, 0.50),
        percentile(&result.latencies_us, 0.90),
        percentile(&result.latencies_us, 0.99),
        percentile(&result.latencies_us, 1.0),
    );
    println!(
        "  request body {:.0} bytes on average",
        c.request_bytes.load(Ordering::Relaxed) as f64
            / c.requests.load(Ordering::Relaxed).max(1) as f64
    );
    let statuses: Vec<String> = result
        .statuses
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    println!("  statuses: {}", statuses.join(", "));
    let busy = c.busy.load(Ordering::Relaxed);
    if busy > 0 {
        println!(
            "  503/429 (write queue full): {busy}, of which without Retry-After: {}",
            c.busy_without_retry_after.load(Ordering::Relaxed)
        );
    }
    let other = c.other_status.load(Ordering::Relaxed);
    let transport = c.transport_errors.load(Ordering::Relaxed);
    let rejected = c.rejected_messages.load(Ordering::Relaxed);
    if other + transport + rejected > 0 {
        println!(
            "  PROBLEMS: other statuses {other}, transport errors {transport}, rejected messages {rejected}"
        );
    }
    if let Some(e) = &result.sample_error {
        println!("  first problem seen: {e}");
    }
}

fn verdict(value: f64, target: f64, floor: f64) -> &'static str {
    if value >= target {
        "meets target"
    } else if value >= floor {
        "above floor, below target"
    } else {
        "BELOW FLOOR"
    }
}

// ---------------------------------------------------------------------------------------------

struct Row {
    name: String,
    value: String,
    goal: String,
    verdict: String,
}

// ---------------------------------------------------------------------------------------------
// Journeys, timers, delivery: shared plumbing

// Targets from the issue.
const TIMERS_TARGET: f64 = 40_000.0;
const TIMERS_FLOOR: f64 = 10_000.0;
const LATENESS_P99_TARGET_MS: f64 = 100.0;
const BYTES_PER_INSTANCE_TARGET: f64 = 300.0;
const BYTES_PER_INSTANCE_FLOOR: f64 = 1_000.0;
const RESTART_TARGET_S: f64 = 2.0;
const DELIVERY_P50_TARGET_MS: f64 = 10.0;
const DELIVERY_P99_TARGET_MS: f64 = 50.0;
const DELIVERY_P99_FLOOR_MS: f64 = 250.0;
const DELIVERY_RATE_TARGET: f64 = 5_000.0;
/// "Roughly flat": the larger database's figure within this factor of the smaller one's.
const FLAT_FACTOR: f64 = 1.5;

/// Messages per `POST /v1/batch` when filling journeys (about 70 KB per request).
const FILL_BATCH: u64 = 200;
/// Concurrent batch clients when filling.
const FILL_CLIENTS: usize = 8;

/// A verdict for figures where lower is better.
fn verdict_lower(value: f64, target: f64, floor: f64) -> &'static str {
    if value <= target {
        "meets target"
    } else if value <= floor {
        "above floor, below target"
    } else {
        "BELOW FLOOR"
    }
}

fn verdict_flat(ratio: f64) -> &'static str {
    if ratio <= FLAT_FACTOR {
        "flat"
    } else {
        "NOT FLAT"
    }
}

fn thousands(n: f64) -> String {
    let n = n.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn section(rows: &mut Vec<Row>, name: &str) {
    rows.push(Row {
        name: name.into(),
        value: String::new(),
        goal: String::new(),
        verdict: String::new(),
    });
}

fn row(
    rows: &mut Vec<Row>,
    name: impl Into<String>,
    value: impl Into<String>,
    goal: impl Into<String>,
    verdict: impl Into<String>,
) {
    rows.push(Row {
        name: name.into(),
        value: value.into(),
        goal: goal.into(),
        verdict: verdict.into(),
    });
}

/// Product-like properties (about 120 bytes of JSON) for journey events; they become the
/// instance's journey context.
fn write_props(out: &mut String, rng: &mut Rng) {
    use std::fmt::Write as _;
    let (name, category, price) = PRODUCTS[rng.below(PRODUCTS.len() as u64) as usize];
    let _ = write!(
        out,
        r#""product_id":"sku-{:05}","name":"{}","category":"{}","price":{},"quantity":{},"cart_ID":"cart-{:08x}""#,
        rng.below(100_000),
        name,
        category,
        price,
        1 + rng.below(4),
        rng.next() & 0xffff_ffff
    );
}

/// One track message for the journey phases: `event` for `user`, with `props` (without braces).
fn write_journey_event(out: &mut String, event: &str, user: &str, ts: &str, props: &str) {
    use std::fmt::Write as _;
    let _ = write!(
        out,
        r#"{{"type":"track","event":"{event}","userId":"{user}","messageId":"{}","timestamp":"{ts}","properties":{{{props}}},"context":{{"library":{{"name":"analytics-node","version":"6.2.0"}}}}}}"#,
        uuid::Uuid::new_v4()
    );
}

/// Builds request body number `job` into the buffer and returns how many messages it holds.
type MakeJob = Arc<dyn Fn(u64, &mut String) -> u64 + Send + Sync>;

/// A batch job that enters users `first..first+count` with `event`, `per` messages a request.
/// `props` writes each message's properties given the user number.
fn batch_jobs(
    event: &'static str,
    prefix: String,
    first: u64,
    count: u64,
    per: u64,
    props: Arc<dyn Fn(u64, &mut Rng, &mut String) + Send + Sync>,
) -> (u64, MakeJob) {
    let jobs = count.div_ceil(per);
    let make: MakeJob = Arc::new(move |job, out| {
        let ts = iso_now();
        let mut rng = Rng(0x7a11_0000 ^ job);
        out.push_str(r#"{"batch":["#);
        let from = first + job * per;
        let to = (from + per).min(first + count);
        let mut p = String::with_capacity(256);
        for u in from..to {
            if u > from {
                out.push(',');
            }
            p.clear();
            props(u, &mut rng, &mut p);
            write_journey_event(out, event, &format!("{prefix}{u:07}"), &ts, &p);
        }
        let _ = std::fmt::Write::write_fmt(out, format_args!(r#"],"sentAt":"{ts}"}}"#));
        to - from
    });
    (jobs, make)
}

fn auth_header() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:"))
    )
}

/// Sends one POST with the write key; the status and body, or a transport error.
async fn post_once(
    client: &HttpClient,
    uri: &hyper::Uri,
    auth: &str,
    body: Bytes,
) -> Result<(StatusCode, Bytes), String> {
    let req = Request::builder()
        .method(Method::POST)
        .uri(uri.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, auth)
        .body(Full::new(body))
        .unwrap();
    let resp = match tokio::time::timeout(Duration::from_secs(60), client.request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(format!("transport: {e:?}")),
        Err(_) => return Err("request timed out after 60 s".into()),
    };
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading body: {e}"))?
        .to_bytes();
    Ok((status, bytes))
}

/// What a fixed amount of work came to.
struct WorkResult {
    elapsed: Duration,
    /// Latency of each accepted request, sorted.
    latencies_us: Vec<u32>,
    ok_requests: u64,
    ok_messages: u64,
    busy: u64,
    failed: u64,
    first_error: Option<String>,
    /// (seconds since start, messages accepted so far), about once a second.
    progress: Vec<(f64, u64)>,
}

impl WorkResult {
    fn rate(&self) -> f64 {
        self.ok_messages as f64 / self.elapsed.as_secs_f64()
    }

    /// Messages per second over the last `secs` seconds of the run (from the progress samples).
    fn tail_rate(&self, secs: f64) -> Option<f64> {
        let end = (self.elapsed.as_secs_f64(), self.ok_messages);
        let start = self
            .progress
            .iter()
            .rev()
            .find(|(t, _)| end.0 - t >= secs)?;
        Some((end.1 - start.1) as f64 / (end.0 - start.0))
    }
}

/// POSTs `jobs` request bodies to `path` with `clients` keep-alive clients, each taking the next
/// job; a 503/429 or a transport error is retried (after 10 ms), another status counts as failed.
/// With `progress`, prints the count every 10 s.
async fn post_jobs(
    addr: &str,
    path: &str,
    clients: usize,
    jobs: u64,
    make: MakeJob,
    progress: Option<String>,
) -> WorkResult {
    let uri: hyper::Uri = format!("http://{addr}{path}").parse().unwrap();
    let auth = auth_header();
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let samples: Arc<std::sync::Mutex<Vec<(f64, u64)>>> =
        Arc::new(std::sync::Mutex::new(vec![(0.0, 0)]));
    let sampler = {
        let (done, samples) = (done.clone(), samples.clone());
        tokio::spawn(async move {
            let mut last_print = (0.0, 0u64);
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let t = started.elapsed().as_secs_f64();
                let n = done.load(Ordering::Relaxed);
                samples.lock().unwrap().push((t, n));
                if let Some(label) = &progress
                    && t - last_print.0 >= 10.0
                {
                    println!(
                        "    {label}: {} after {t:.0} s, {:.0}/s over the last {:.0} s",
                        thousands(n as f64),
                        (n - last_print.1) as f64 / (t - last_print.0),
                        t - last_print.0
                    );
                    last_print = (t, n);
                }
            }
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (uri, auth, next, done, make) = (
            uri.clone(),
            auth.clone(),
            next.clone(),
            done.clone(),
            make.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let client = http_client();
            let mut lat = Vec::new();
            let (mut ok_req, mut ok_msg, mut busy, mut failed) = (0u64, 0u64, 0u64, 0u64);
            let mut first_error = None;
            let mut body = String::with_capacity(128 * 1024);
            loop {
                let job = next.fetch_add(1, Ordering::Relaxed);
                if job >= jobs {
                    break;
                }
                body.clear();
                let messages = make(job, &mut body);
                let bytes = Bytes::copy_from_slice(body.as_bytes());
                let mut transport_errors = 0;
                loop {
                    let t0 = Instant::now();
                    match post_once(&client, &uri, &auth, bytes.clone()).await {
                        Ok((StatusCode::OK, resp)) => {
                            lat.push(t0.elapsed().as_micros() as u32);
                            let mut stored = messages;
                            if resp.windows(10).any(|w| w == b"\"rejected\"") {
                                let rejected = serde_json::from_slice::<serde_json::Value>(&resp)
                                    .ok()
                                    .and_then(|v| v["rejected"].as_array().map(|a| a.len() as u64))
                                    .unwrap_or(0);
                                stored = stored.saturating_sub(rejected);
                                failed += rejected;
                                first_error.get_or_insert_with(|| {
                                    format!(
                                        "200 with rejections: {}",
                                        String::from_utf8_lossy(&resp)
                                    )
                                });
                            }
                            ok_req += 1;
                            ok_msg += stored;
                            done.fetch_add(stored, Ordering::Relaxed);
                            break;
                        }
                        Ok((
                            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS,
                            _,
                        )) => {
                            busy += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        Ok((status, resp)) => {
                            failed += messages;
                            first_error.get_or_insert_with(|| {
                                format!(
                                    "HTTP {status}: {}",
                                    String::from_utf8_lossy(&resp[..resp.len().min(300)])
                                )
                            });
                            break;
                        }
                        Err(e) => {
                            transport_errors += 1;
                            first_error.get_or_insert(e);
                            if transport_errors >= 5 {
                                failed += messages;
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
            (lat, ok_req, ok_msg, busy, failed, first_error)
        }));
    }
    let mut r = WorkResult {
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
        ok_requests: 0,
        ok_messages: 0,
        busy: 0,
        failed: 0,
        first_error: None,
        progress: Vec::new(),
    };
    for t in tasks {
        let (lat, ok_req, ok_msg, busy, failed, e) = t.await.expect("client task panicked");
        r.latencies_us.extend(lat);
        r.ok_requests += ok_req;
        r.ok_messages += ok_msg;
        r.busy += busy;
        r.failed += failed;
        r.first_error = r.first_error.or(e);
    }
    r.elapsed = started.elapsed();
    sampler.abort();
    r.progress = samples.lock().unwrap().clone();
    r.latencies_us.sort_unstable();
    r
}

/// One request of an open-loop run.
struct Sent {
    n: u64,
    /// Just before the request was handed to the client.
    at: Instant,
    status: u16,
    messages: u64,
    latency_us: u32,
}

/// Sends request `n` at `start + n / rate` for `duration`, each on its own task (open loop: a
/// slow answer does not delay the next request), over a shared pool of keep-alive connections.
async fn paced(addr: &str, path: &str, rate: f64, duration: Duration, make: MakeJob) -> Vec<Sent> {
    let uri: hyper::Uri = format!("http://{addr}{path}").parse().unwrap();
    let auth: Arc<str> = auth_header().into();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);
    let start = tokio::time::Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let mut out = Vec::new();
    let mut n = 0u64;
    loop {
        let offset = Duration::from_secs_f64(n as f64 / rate);
        if offset >= duration {
            break;
        }
        tokio::time::sleep_until(start + offset).await;
        let mut body = String::with_capacity(1024);
        let messages = make(n, &mut body);
        let (client, uri, auth) = (client.clone(), uri.clone(), auth.clone());
        set.spawn(async move {
            let at = Instant::now();
            let status = match post_once(&client, &uri, &auth, Bytes::from(body)).await {
                Ok((s, _)) => s.as_u16(),
                Err(_) => 0,
            };
            Sent {
                n,
                at,
                status,
                messages,
                latency_us: at.elapsed().as_micros() as u32,
            }
        });
        n += 1;
        while let Some(Ok(s)) = set.try_join_next() {
            out.push(s);
        }
    }
    while let Some(r) = set.join_next().await {
        if let Ok(s) = r {
            out.push(s);
        }
    }
    out.sort_by_key(|s| s.n);
    out
}

/// Admin, health and metrics calls to one running server.
#[derive(Clone)]
struct Api {
    client: HttpClient,
    base: String,
}

impl Api {
    fn new(addr: &str) -> Api {
        Api {
            client: http_client(),
            base: format!("http://{addr}"),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(StatusCode, Bytes), String> {
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(60), self.client.request(req))
            .await
            .map_err(|_| format!("{path}: timed out"))?
            .map_err(|e| format!("{path}: {e}"))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, bytes))
    }

    /// PUT of an admin document; panics unless it is accepted (the bench cannot go on without it).
    async fn put(&self, path: &str, doc: serde_json::Value) {
        match self.call(Method::PUT, path, Some(doc.to_string())).await {
            Ok((s, _)) if s.is_success() => {}
            Ok((s, b)) => panic!("PUT {path}: {s} {}", String::from_utf8_lossy(&b)),
            Err(e) => panic!("PUT {path}: {e}"),
        }
    }

    async fn healthz(&self) -> bool {
        matches!(
            self.call(Method::GET, "/healthz", None).await,
            Ok((StatusCode::OK, _))
        )
    }

    async fn scrape(&self) -> Option<Scrape> {
        match self.call(Method::GET, "/metrics", None).await {
            Ok((StatusCode::OK, b)) => Some(Scrape::parse(&String::from_utf8_lossy(&b))),
            _ => None,
        }
    }

    /// (entered, active) of a journey, from its stats.
    async fn journey_counts(&self, id: &str) -> Option<(i64, i64)> {
        let (status, body) = self
            .call(Method::GET, &format!("/v1/journeys/{id}/stats"), None)
            .await
            .ok()?;
        if status != StatusCode::OK {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        Some((v["entered"].as_i64()?, v["active"].as_i64()?))
    }

    /// Polls a journey's stats every `every` until `done(entered, active)`; the time it became
    /// true, or `None` after `timeout`.
    async fn wait_journey(
        &self,
        id: &str,
        every: Duration,
        timeout: Duration,
        done: impl Fn(i64, i64) -> bool,
    ) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((entered, active)) = self.journey_counts(id).await
                && done(entered, active)
            {
                return Some(Instant::now());
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// One scrape of `GET /metrics`: every series by its full name (labels included).
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut m = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            if let Some((name, value)) = line.rsplit_once(' ') {
                let v = match value.trim() {
                    "+Inf" => f64::INFINITY,
                    v => match v.parse() {
                        Ok(v) => v,
                        Err(_) => continue,
                    },
                };
                m.insert(name.trim().to_string(), v);
            }
        }
        Scrape(m)
    }

    fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }

    /// A histogram's cumulative buckets (upper bound, count).
    fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let prefix = format!("{name}_bucket{{le=\"");
        let mut out: Vec<(f64, f64)> = self
            .0
            .iter()
            .filter_map(|(k, v)| {
                let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, *v))
            })
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }

    /// (commits, jobs-per-commit sum, count) as [`describe_commits`] takes them.
    fn writer(&self) -> Option<(f64, f64, f64)> {
        Some((
            *self.0.get("journeyd_writer_commits_total")?,
            *self.0.get("journeyd_writer_batch_jobs_sum")?,
            *self.0.get("journeyd_writer_batch_jobs_count")?,
        ))
    }
}

/// A histogram between two scrapes: its cumulative buckets, observation count and sum.
struct HistDelta {
    buckets: Vec<(f64, f64)>,
    count: f64,
    sum: f64,
}

impl HistDelta {
    fn between(before: &Scrape, after: &Scrape, name: &str) -> HistDelta {
        let b = before.buckets(name);
        let a = after.buckets(name);
        let buckets = a
            .iter()
            .map(|(le, n)| {
                let prev = b.iter().find(|(l, _)| l == le).map(|x| x.1).unwrap_or(0.0);
                (*le, n - prev)
            })
            .collect();
        HistDelta {
            buckets,
            count: after.get(&format!("{name}_count")) - before.get(&format!("{name}_count")),
            sum: after.get(&format!("{name}_sum")) - before.get(&format!("{name}_sum")),
        }
    }

    /// The `q` quantile, interpolated linearly inside its bucket (as Prometheus'
    /// `histogram_quantile`), with the bucket's bounds.
    fn quantile(&self, q: f64) -> Option<(f64, f64, f64)> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = 0.0;
        let mut below = 0.0;
        for &(le, n) in &self.buckets {
            if n >= rank {
                if le.is_infinite() {
                    return Some((lower, lower, le));
                }
                let within = if n > below {
                    (rank - below) / (n - below)
                } else {
                    1.0
                };
                return Some((lower + (le - lower) * within, lower, le));
            }
            lower = le;
            below = n;
        }
        None
    }

    /// "p50 1.2 ms (1-5 ms bucket)" style, from seconds.
    fn describe(&self, q: f64) -> String {
        match self.quantile(q) {
            Some((v, lo, hi)) => format!(
                "p{:.0} {:.1} ms ({}-{} ms bucket)",
                q * 100.0,
                v * 1000.0,
                lo * 1000.0,
                if hi.is_infinite() {
                    "inf".into()
                } else {
                    format!("{}", hi * 1000.0)
                }
            ),
            None => format!("p{:.0} -", q * 100.0),
        }
    }
}

/// The webhook receiver inside the bench: answers 200 at once (or when its gate opens) and keeps
/// the arrival time of every delivery, matched by the `bench_tag`/`bench_seq` properties that the
/// payload carries back in its journey context.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
}

struct ReceiverState {
    log: std::sync::Mutex<ReceiverLog>,
    /// While false, requests wait before being answered (to build a backlog).
    gate: tokio::sync::watch::Sender<bool>,
}

#[derive(Default)]
struct ReceiverLog {
    /// (tag, seq, answered at) of each first arrival that carried a sequence number.
    arrivals: Vec<(String, u64, Instant)>,
    ids: std::collections::HashSet<String>,
    duplicates: u64,
    by_journey: BTreeMap<String, u64>,
    by_tag: BTreeMap<String, u64>,
    last_by_tag: BTreeMap<String, Instant>,
}

impl Receiver {
    async fn start() -> Receiver {
        use hyper::server::conn::http1;
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the receiver");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ReceiverState {
            log: Default::default(),
            gate: tokio::sync::watch::Sender::new(true),
        });
        let accept_state = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = accept_state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(state.handle(req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            state,
        }
    }

    fn set_gate(&self, open: bool) {
        self.state.gate.send_replace(open);
    }

    fn count_tag(&self, tag: &str) -> u64 {
        self.state
            .log
            .lock()
            .unwrap()
            .by_tag
            .get(tag)
            .copied()
            .unwrap_or(0)
    }

    fn count_journey(&self, journey: &str) -> u64 {
        self.state
            .log
            .lock()
            .unwrap()
            .by_journey
            .get(journey)
            .copied()
            .unwrap_or(0)
    }

    fn duplicates(&self) -> u64 {
        self.state.log.lock().unwrap().duplicates
    }

    fn last_arrival(&self, tag: &str) -> Option<Instant> {
        self.state.log.lock().unwrap().last_by_tag.get(tag).copied()
    }

    /// Arrival time by sequence number of one tag.
    fn arrivals(&self, tag: &str) -> std::collections::HashMap<u64, Instant> {
        self.state
            .log
            .lock()
            .unwrap()
            .arrivals
            .iter()
            .filter(|(t, _, _)| t == tag)
            .map(|(_, s, at)| (*s, *at))
            .collect()
    }

    /// Waits until `count()` reaches `n`; whether it did within `timeout`.
    async fn wait(&self, n: u64, timeout: Duration, count: impl Fn(&Receiver) -> u64) -> bool {
        let deadline = Instant::now() + timeout;
        while count(self) < n {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

impl ReceiverState {
    async fn handle(&self, req: Request<hyper::body::Incoming>) -> hyper::Response<Full<Bytes>> {
        let id = req
            .headers()
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut gate = self.gate.subscribe();
        loop {
            let open = *gate.borrow_and_update();
            if open || gate.changed().await.is_err() {
                break;
            }
        }
        let at = Instant::now();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let props = &v["properties"];
        let journey = props["journey_metadata"]["journey_id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let (mut tag, mut seq) = (None, None);
        if let Some(ctx) = props["journey_context"].as_object() {
            for p in ctx.values() {
                if let Some(t) = p["bench_tag"].as_str() {
                    tag = Some(t.to_string());
                    seq = p["bench_seq"].as_u64();
                    break;
                }
            }
        }
        {
            let mut log = self.log.lock().unwrap();
            let fresh = match id {
                Some(id) => log.ids.insert(id),
                None => true,
            };
            if fresh {
                *log.by_journey.entry(journey).or_default() += 1;
                if let Some(tag) = tag {
                    *log.by_tag.entry(tag.clone()).or_default() += 1;
                    log.last_by_tag.insert(tag.clone(), at);
                    if let Some(seq) = seq {
                        log.arrivals.push((tag, seq, at));
                    }
                }
            } else {
                log.duplicates += 1;
            }
        }
        hyper::Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")))
    }
}

/// The size of each b-tree of a database (from SQLite's `dbstat`), by name, with its table.
struct DbSize {
    btrees: Vec<(String, String, u64)>,
    file_bytes: u64,
    free_bytes: u64,
}

fn db_size(db: &Path) -> Result<DbSize, String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| e.to_string())?;
    let mut tables: BTreeMap<String, String> = BTreeMap::new();
    {
        let mut stmt = conn
            .prepare("SELECT name, tbl_name FROM sqlite_schema WHERE type IN ('table', 'index')")
            .map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| e.to_string())?;
        for r in rows.flatten() {
            tables.insert(r.0, r.1);
        }
    }
    let mut btrees = Vec::new();
    {
        let mut stmt = conn
            .prepare("SELECT name, sum(pgsize) FROM dbstat GROUP BY name")
            .map_err(|e| format!("dbstat: {e}"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(|e| e.to_string())?;
        for r in rows.flatten() {
            let table = tables.get(&r.0).cloned().unwrap_or_else(|| r.0.clone());
            btrees.push((r.0, table, r.1 as u64));
        }
    }
    let page: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    let free: i64 = conn
        .query_row("PRAGMA freelist_count", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    btrees.sort_by(|a, b| b.2.cmp(&a.2));
    Ok(DbSize {
        btrees,
        file_bytes: (page * pages) as u64,
        free_bytes: (page * free) as u64,
    })
}

/// Tables whose rows are the user's data rather than journey state: stored events, profiles,
/// identity links, keys.
const USER_DATA_TABLES: [&str; 4] = ["events", "profiles", "identities", "api_keys"];

/// Timer firings of one journey as the database recorded them. The timeout transition carries
/// the timer's due time, not the firing time; the firing transaction's time is the `updated_at`
/// of the instance, which ends in that transaction (every journey timed this way completes when
/// its timer fires). So: each tick's time and how many timers it fired, and each timer's
/// lateness (firing time minus entry time minus the hold).
struct TickLog {
    ticks: Vec<(i64, u64)>,
    lateness_ms: Vec<i64>,
}

impl TickLog {
    fn read(db: &Path, journey: &str, hold_ms: i64) -> Result<TickLog, String> {
        let conn =
            rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(|e| e.to_string())?;
        conn.busy_timeout(Duration::from_secs(5)).ok();
        let mut ticks = Vec::new();
        let mut stmt = conn
            .prepare(
                "SELECT updated_at, count(*) FROM instances WHERE journey_id = ?1 AND state = 'completed'
                 GROUP BY updated_at ORDER BY updated_at",
            )
            .map_err(|e| e.to_string())?;
        for r in stmt
            .query_map([journey], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(|e| e.to_string())?
        {
            ticks.push(r.map_err(|e| e.to_string())?);
        }
        let mut lateness_ms = Vec::new();
        let mut stmt = conn
            .prepare(
                "SELECT updated_at - entered_at - ?2 FROM instances WHERE journey_id = ?1 AND state = 'completed'",
            )
            .map_err(|e| e.to_string())?;
        for r in stmt
            .query_map(rusqlite::params![journey, hold_ms], |r| r.get::<_, i64>(0))
            .map_err(|e| e.to_string())?
        {
            lateness_ms.push(r.map_err(|e| e.to_string())?);
        }
        lateness_ms.sort_unstable();
        Ok(TickLog { ticks, lateness_ms })
    }

    /// Timers fired, summed over the ticks that fired a full batch (the scheduler starts the next
    /// tick at once after those), divided by the time from their start to the next tick's start:
    /// (timers per second, ms per full tick, timers per full tick). `None` without two ticks.
    fn full_tick_rate(&self) -> Option<(f64, f64, u64)> {
        let full = self.ticks.iter().map(|t| t.1).max()?;
        let (mut n, mut ms, mut count) = (0u64, 0i64, 0u64);
        for w in self.ticks.windows(2) {
            if w[0].1 == full {
                n += w[0].1;
                ms += w[1].0 - w[0].0;
                count += 1;
            }
        }
        (count > 0 && ms > 0).then(|| {
            (
                n as f64 / (ms as f64 / 1000.0),
                ms as f64 / count as f64,
                full,
            )
        })
    }

    fn lateness(&self, q: f64) -> f64 {
        if self.lateness_ms.is_empty() {
            return f64::NAN;
        }
        let i = ((self.lateness_ms.len() as f64 - 1.0) * q).round() as usize;
        self.lateness_ms[i] as f64
    }
}

/// Starts the server again on `db` and times it: (server, spawn to `listening on`, spawn to the
/// first 200 from `/healthz`).
fn restart(
    runtime: &tokio::runtime::Runtime,
    db: &Path,
    sync: &str,
) -> (Server, Duration, Duration) {
    let server = Server::start(db, sync);
    let listen = server.listening - server.spawned;
    let api = Api::new(&server.addr);
    let healthy = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if api.healthz().await {
                return Instant::now();
            }
            if Instant::now() > deadline {
                panic!("no 200 from /healthz within 120 s of the restart");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let health = healthy - server.spawned;
    (server, listen, health)
}

/// Stops a server with SIGTERM and records a problem unless it exits 0.
fn stop_checked(server: Server, what: &str, problems: &mut Vec<String>) -> Duration {
    let tail = server.stderr_tail.clone();
    let (code, took) = server.stop();
    if code != Some(0) {
        println!(
            "  SIGTERM: exit code {code:?}; server stderr (last lines):\n{}",
            tail.lock().unwrap().join("\n")
        );
        problems.push(format!("{what}: server exited with {code:?} on SIGTERM"));
    }
    took
}

fn remove_db(settings: &Settings, db: &Path) {
    if settings.keep {
        return;
    }
    for ext in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(ext);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

fn print_work(w: &WorkResult, unit: &str) {
    println!(
        "  {} {unit} in {} requests in {:.2} s: {:.0} {unit}/s; request latency p50 {:.1} ms, p99 {:.1} ms",
        thousands(w.ok_messages as f64),
        thousands(w.ok_requests as f64),
        w.elapsed.as_secs_f64(),
        w.rate(),
        percentile(&w.latencies_us, 0.5),
        percentile(&w.latencies_us, 0.99)
    );
    if w.busy + w.failed > 0 {
        println!(
            "  503/429 answers (retried): {}; messages lost to other errors: {}",
            w.busy, w.failed
        );
    }
    if let Some(e) = &w.first_error {
        println!("  first problem seen: {e}");
    }
}

/// The accepted requests of an open-loop run that took over 100 ms, grouped into bursts (a gap
/// of over 250 ms between their send times starts a new one): when each burst began (seconds
/// since the run's first request) and its slowest answer. Shows whether slow answers come from
/// the server stalling now and then.
fn slowest(sent: &[Sent]) -> String {
    let Some(first) = sent.iter().map(|s| s.at).min() else {
        return "-".into();
    };
    let mut slow: Vec<(f64, f64)> = sent
        .iter()
        .filter(|s| s.status == 200 && s.latency_us > 100_000)
        .map(|s| ((s.at - first).as_secs_f64(), s.latency_us as f64 / 1000.0))
        .collect();
    if slow.is_empty() {
        return "none over 100 ms".into();
    }
    slow.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut bursts: Vec<(f64, f64, f64, usize)> = Vec::new(); // start, last, max ms, count
    for (t, ms) in &slow {
        match bursts.last_mut() {
            Some(b) if t - b.1 <= 0.25 => {
                b.1 = *t;
                b.2 = b.2.max(*ms);
                b.3 += 1;
            }
            _ => bursts.push((*t, *t, *ms, 1)),
        }
    }
    format!(
        "{} over 100 ms, in {} bursts: {} (run started at bench clock {:.1} s)",
        slow.len(),
        bursts.len(),
        bursts
            .iter()
            .map(|b| format!("+{:.1} s (up to {:.0} ms)", b.0, b.2))
            .collect::<Vec<_>>()
            .join(", "),
        (first - bench_start()).as_secs_f64()
    )
}

fn print_cpu(lines: Vec<String>) {
    println!("  CPU:");
    for l in lines {
        println!("{l}");
    }
}

// ---------------------------------------------------------------------------------------------
// Journeys group: waiting instances and flat costs (5), bytes per waiting instance (7), restart
// with pending timers (8)

/// Clients of the fixed single-track workload.
const EVENT_CLIENTS: usize = 32;
/// The hold of the tick journey.
const TICK_HOLD_MS: i64 = 2_000;

fn wait_journey() -> serde_json::Value {
    serde_json::json!({
        "id": "bench-wait", "name": "bench: waiting in a hold",
        "entry": {"event": "Bench_Wait_Enter"},
        "steps": [{"id": "wait", "type": "hold_until", "max_hold": "7d",
                   "branches": [{"name": "nudge", "event": "Bench_Wait_Nudge", "reset_timer": true},
                                {"name": "done", "event": "Bench_Wait_Done", "next": null}],
                   "on_timeout": null}]
    })
}

fn tick_journey() -> serde_json::Value {
    serde_json::json!({
        "id": "bench-tick", "name": "bench: timers due together",
        "entry": {"event": "Bench_Tick_Enter"},
        "steps": [{"id": "wait", "type": "hold_until", "max_hold": "2s",
                   "branches": [{"event": "Bench_Tick_Never", "next": null}],
                   "on_timeout": null}]
    })
}

/// What one waiting-instance count measured, for the flatness comparison.
struct ScaleResult {
    n: u64,
    fill_rate: f64,
    serial_p50: f64,
    serial_p99: f64,
    event_rate: f64,
    /// ms per full tick, timers per full tick.
    tick: Option<(f64, u64)>,
    idle_cpu: f64,
}

fn run_journeys(
    settings: &Settings,
    runtime: &tokio::runtime::Runtime,
    rows: &mut Vec<Row>,
    problems: &mut Vec<String>,
) {
    section(rows, "-- journeys: waiting instances (hold, max_hold 7d)");
    let mut results = Vec::new();
    for &n in &settings.waiting {
        results.push(waiting_scale(settings, runtime, n, rows, problems));
    }
    if results.len() >= 2 {
        let (a, b) = (&results[0], &results[results.len() - 1]);
        let (la, lb) = (thousands(a.n as f64), thousands(b.n as f64));
        println!("== 5. Flat costs: {la} against {lb} waiting instances");
        let pairs: Vec<(String, String, f64)> = {
            let mut v = vec![
                (
                    format!("event cost, {EVENT_CLIENTS} clients (req/s)"),
                    format!("{:.0} -> {:.0} req/s", a.event_rate, b.event_rate),
                    a.event_rate / b.event_rate,
                ),
                (
                    "event cost, one client (p50)".to_string(),
                    format!("{:.2} -> {:.2} ms", a.serial_p50, b.serial_p50),
                    b.serial_p50 / a.serial_p50,
                ),
                (
                    "event cost, one client (p99)".to_string(),
                    format!("{:.2} -> {:.2} ms", a.serial_p99, b.serial_p99),
                    b.serial_p99 / a.serial_p99,
                ),
            ];
            if let (Some(ta), Some(tb)) = (a.tick, b.tick) {
                v.push((
                    format!("scheduler tick of {} due timers", ta.1),
                    format!("{:.1} -> {:.1} ms", ta.0, tb.0),
                    tb.0 / ta.0,
                ));
            }
            v
        };
        for (name, value, ratio) in pairs {
            println!("  {name}: {value}: {ratio:.2}x ({})", verdict_flat(ratio));
            row(
                rows,
                format!("flat {la} -> {lb}: {name}"),
                format!("{value} ({ratio:.2}x)"),
                format!("within {FLAT_FACTOR}x"),
                verdict_flat(ratio),
            );
        }
        println!(
            "  entry rate while filling: {:.0} -> {:.0} entries/s; idle server CPU {:.1}% -> {:.1}% of a core",
            a.fill_rate, b.fill_rate, a.idle_cpu, b.idle_cpu
        );
        println!();
    }
}

fn waiting_scale(
    settings: &Settings,
    runtime: &tokio::runtime::Runtime,
    n: u64,
    rows: &mut Vec<Row>,
    problems: &mut Vec<String>,
) -> ScaleResult {
    let label = thousands(n as f64);
    println!(
        "== 5. {label} waiting instances: a hold_until with max_hold 7d, one instance per userId"
    );
    let db = settings.dir.join(format!("waiting-{n}.db"));
    let server = Server::start(&db, &settings.sync);
    let api = Api::new(&server.addr);
    runtime.block_on(async {
        api.put("/v1/journeys/bench-wait", wait_journey()).await;
        api.put("/v1/journeys/bench-tick", tick_journey()).await;
    });

    // Fill --------------------------------------------------------------------------------
    println!(
        "  -- filling: POST /v1/batch, {FILL_CLIENTS} clients x {FILL_BATCH} entry events (distinct userIds, about 120 bytes of properties each)"
    );
    let props: Arc<dyn Fn(u64, &mut Rng, &mut String) + Send + Sync> =
        Arc::new(|_, rng, out| write_props(out, rng));
    let (jobs, make) = batch_jobs("Bench_Wait_Enter", "user-".into(), 0, n, FILL_BATCH, props);
    let pid = server.pid().to_string();
    let before = runtime.block_on(api.scrape());
    let io0 = proc_io(&pid);
    let cpu = CpuWindow::start(server.pid());
    // (Not for the 1M fill: minutes of DWARF call graphs come to gigabytes.)
    let profile = if n <= 200_000 {
        Profile::start(server.pid(), &format!("fill-{n}"))
    } else {
        Profile(None)
    };
    let fill = runtime.block_on(post_jobs(
        &server.addr,
        "/v1/batch",
        FILL_CLIENTS,
        jobs,
        make,
        Some(format!("filling to {label}")),
    ));
    profile.stop();
    let cpu_lines = cpu.report();
    let io1 = proc_io(&pid);
    let after = runtime.block_on(api.scrape());
    print_work(&fill, "entries");
    let tail = fill.tail_rate(10.0);
    if let Some(r) = tail {
        println!("  entries/s over the last 10 s of the fill: {r:.0}");
    }
    println!(
        "  group commit: {}",
        describe_commits(
            before.as_ref().and_then(Scrape::writer),
            after.as_ref().and_then(Scrape::writer),
            fill.elapsed.as_secs_f64(),
            FILL_BATCH as f64
        )
    );
    println!(
        "  server wrote: {}",
        describe_io(io0, io1, fill.elapsed.as_secs_f64(), fill.ok_messages)
    );
    print_cpu(cpu_lines);
    match runtime.block_on(api.journey_counts("bench-wait")) {
        Some((_, active)) if active as u64 == n => {
            println!(
                "  journey stats: {} active instances",
                thousands(active as f64)
            )
        }
        other => {
            println!("  journey stats: {other:?}, expected {n} active");
            problems.push(format!("after filling {n}: bench-wait stats {other:?}"));
        }
    }
    row(
        rows,
        format!("entries while filling to {label} ({FILL_CLIENTS}x{FILL_BATCH} batches)"),
        format!(
            "{:.0} entries/s{}",
            fill.rate(),
            tail.map(|r| format!(" (last 10 s: {r:.0})"))
                .unwrap_or_default()
        ),
        "-",
        "reference",
    );

    // Idle ---------------------------------------------------------------------------------
    let before = runtime.block_on(api.scrape());
    let cpu = CpuWindow::start(server.pid());
    std::thread::sleep(Duration::from_secs(2));
    let idle_cpu = cpu.server_total();
    let after = runtime.block_on(api.scrape());
    let idle_commits = match (&before, &after) {
        (Some(b), Some(a)) => {
            a.get("journeyd_writer_commits_total") - b.get("journeyd_writer_commits_total")
        }
        _ => f64::NAN,
    };
    println!(
        "  -- idle for 2 s with {label} waiting: server {idle_cpu:.1}% of a core, {idle_commits:.0} writer commits"
    );

    // Stop, size, restart ------------------------------------------------------------------
    let took = stop_checked(server, &format!("{label} waiting"), problems);
    let wal_mb = std::fs::metadata(settings.dir.join(format!("waiting-{n}.db-wal")))
        .map(|m| m.len() as f64 / 1048576.0)
        .unwrap_or(0.0);
    println!(
        "  -- SIGTERM with {label} waiting: exited after {:.2} s (WAL left: {wal_mb:.1} MB)",
        took.as_secs_f64()
    );
    println!(
        "  -- 7. Database bytes per waiting instance (SQLite dbstat after the clean shutdown)"
    );
    let t0 = Instant::now();
    match db_size(&db) {
        Ok(size) => {
            let (mut journey, mut user) = (0u64, 0u64);
            for (name, table, bytes) in &size.btrees {
                let per = *bytes as f64 / n as f64;
                let kind = if USER_DATA_TABLES.contains(&table.as_str()) {
                    user += bytes;
                    "user data (excluded)"
                } else if name == "sqlite_schema" {
                    "schema"
                } else {
                    journey += bytes;
                    "journey state"
                };
                if per >= 1.0 {
                    println!(
                        "    {name:<28} {:>10.1} MB  {per:>7.1} bytes/instance  {kind}",
                        *bytes as f64 / 1048576.0
                    );
                }
            }
            let per = journey as f64 / n as f64;
            println!(
                "  journey state: {per:.0} bytes per waiting instance; user data (events, profiles): {:.0} bytes per user; file {:.1} MB, {:.1} MB free pages (dbstat took {:.1} s)",
                user as f64 / n as f64,
                size.file_bytes as f64 / 1048576.0,
                size.free_bytes as f64 / 1048576.0,
                t0.elapsed().as_secs_f64()
            );
            row(
                rows,
                format!("bytes per waiting instance ({label}), events excluded"),
                format!(
                    "{per:.0} B (events+profiles {:.0} B/user)",
                    user as f64 / n as f64
                ),
                format!(
                    "target {BYTES_PER_INSTANCE_TARGET:.0}, floor {BYTES_PER_INSTANCE_FLOOR:.0}"
                ),
                verdict_lower(per, BYTES_PER_INSTANCE_TARGET, BYTES_PER_INSTANCE_FLOOR),
            );
        }
        Err(e) => println!("  dbstat not available: {e}"),
    }
    let (server, listen, health) = restart(runtime, &db, &settings.sync);
    println!(
        "  -- 8. Restart with {label} pending timers: `listening on` after {:.0} ms, first 200 from /healthz after {:.0} ms (from spawn)",
        listen.as_secs_f64() * 1000.0,
        health.as_secs_f64() * 1000.0
    );
    let health_s = health.as_secs_f64();
    row(
        rows,
        format!("restart with {label} pending timers: listening / healthz"),
        format!(
            "{:.0} ms / {:.0} ms",
            listen.as_secs_f64() * 1000.0,
            health_s * 1000.0
        ),
        format!("target {RESTART_TARGET_S:.0} s"),
        if health_s <= RESTART_TARGET_S {
            "meets target"
        } else {
            "MISSES TARGET"
        },
    );
    let api = Api::new(&server.addr);

    // Tick ---------------------------------------------------------------------------------
    let k = settings.tick;
    println!(
        "  -- 5b. Scheduler tick: {} timers due together (another journey, hold 2s), among {label} far-future timers",
        thousands(k as f64)
    );
    let before = runtime.block_on(api.scrape());
    let per = 2_000u64.min(k.max(1));
    let props: Arc<dyn Fn(u64, &mut Rng, &mut String) + Send + Sync> = Arc::new(|u, _, out| {
        use std::fmt::Write as _;
        let _ = write!(out, r#""n":{u}"#);
    });
    let (jobs, make) = batch_jobs("Bench_Tick_Enter", "tick-".into(), 0, k, per, props);
    let entered = runtime.block_on(post_jobs(
        &server.addr,
        "/v1/batch",
        jobs as usize,
        jobs,
        make,
        None,
    ));
    if entered.ok_messages != k {
        problems.push(format!(
            "tick phase at {label}: {} of {k} entries accepted",
            entered.ok_messages
        ));
    }
    let fired = runtime.block_on(api.wait_journey(
        "bench-tick",
        Duration::from_millis(20),
        Duration::from_secs(60),
        |e, a| e as u64 >= k && a == 0,
    ));
    if fired.is_none() {
        problems.push(format!(
            "tick phase at {label}: timers not all fired within 60 s"
        ));
    }
    let after = runtime.block_on(api.scrape());
    let hist = match (&before, &after) {
        (Some(b), Some(a)) => Some(HistDelta::between(b, a, "journeyd_timer_lateness_seconds")),
        _ => None,
    };
    let mut tick = None;
    match TickLog::read(&db, "bench-tick", TICK_HOLD_MS) {
        Ok(log) => {
            let ticks: Vec<String> = log.ticks.iter().map(|(_, c)| c.to_string()).collect();
            print!(
                "  fired in {} ticks ({})",
                log.ticks.len(),
                ticks.join(", ")
            );
            if let Some((rate, ms, full)) = log.full_tick_rate() {
                println!("; a full tick of {full} timers took {ms:.1} ms: {rate:.0} timers/s");
                tick = Some((ms, full));
            } else {
                println!("; fewer than two ticks, no tick duration");
            }
            println!(
                "  lateness (firing transaction time - due time, from the instance rows): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                log.lateness(0.5),
                log.lateness(0.99),
                log.lateness(1.0)
            );
        }
        Err(e) => {
            println!("  tick log not readable from the database ({e}); lateness histogram only")
        }
    }
    if let Some(h) = &hist {
        println!(
            "  journeyd_timer_lateness_seconds for these {:.0} timers: {}, {}, mean {:.1} ms",
            h.count,
            h.describe(0.5),
            h.describe(0.99),
            h.sum / h.count.max(1.0) * 1000.0
        );
    }
    row(
        rows,
        format!(
            "tick with {label} waiting: {} timers due now",
            thousands(k as f64)
        ),
        match tick {
            Some((ms, full)) => format!(
                "{ms:.1} ms per tick of {full} ({:.0} timers/s)",
                full as f64 / ms * 1000.0
            ),
            None => "-".into(),
        },
        "flat",
        "see flat rows",
    );

    // Event cost ---------------------------------------------------------------------------
    println!(
        "  -- 5a. Event cost: single POST /v1/track of a hold-branch event (reset_timer) for a random waiting user"
    );
    let nudge = |seed: u64| -> MakeJob {
        Arc::new(move |job, out| {
            let mut rng = Rng(seed ^ job.wrapping_mul(0x2545_F491_4F6C_DD1D));
            let u = rng.below(n);
            let mut p = String::with_capacity(160);
            write_props(&mut p, &mut rng);
            write_journey_event(
                out,
                "Bench_Wait_Nudge",
                &format!("user-{u:07}"),
                &iso_now(),
                &p,
            );
            1
        })
    };
    let serial_n = (settings.event_calls / 5).max(200);
    let serial = runtime.block_on(post_jobs(
        &server.addr,
        "/v1/track",
        1,
        serial_n,
        nudge(0xa5a5),
        None,
    ));
    let (sp50, sp99) = (
        percentile(&serial.latencies_us, 0.5),
        percentile(&serial.latencies_us, 0.99),
    );
    println!(
        "  one client, {serial_n} calls: {:.0} req/s, latency p50 {sp50:.2} ms, p99 {sp99:.2} ms",
        serial.rate()
    );
    let pid = server.pid().to_string();
    let before = runtime.block_on(api.scrape());
    let io0 = proc_io(&pid);
    let cpu = CpuWindow::start(server.pid());
    let profile = Profile::start(server.pid(), &format!("events-{n}"));
    let conc = runtime.block_on(post_jobs(
        &server.addr,
        "/v1/track",
        EVENT_CLIENTS,
        settings.event_calls,
        nudge(0x5a5a),
        None,
    ));
    profile.stop();
    let cpu_lines = cpu.report();
    let io1 = proc_io(&pid);
    let after = runtime.block_on(api.scrape());
    let (cp50, cp99) = (
        percentile(&conc.latencies_us, 0.5),
        percentile(&conc.latencies_us, 0.99),
    );
    println!(
        "  {EVENT_CLIENTS} clients, {} calls: {:.0} req/s, latency p50 {cp50:.2} ms, p99 {cp99:.2} ms",
        settings.event_calls,
        conc.rate()
    );
    println!(
        "  group commit: {}",
        describe_commits(
            before.as_ref().and_then(Scrape::writer),
            after.as_ref().and_then(Scrape::writer),
            conc.elapsed.as_secs_f64(),
            1.0
        )
    );
    println!(
        "  server wrote: {}",
        describe_io(io0, io1, conc.elapsed.as_secs_f64(), conc.ok_messages)
    );
    print_cpu(cpu_lines);
    for w in [&serial, &conc] {
        if w.failed > 0 {
            problems.push(format!(
                "event cost at {label}: {} calls failed ({:?})",
                w.failed, w.first_error
            ));
        }
    }
    row(
        rows,
        format!("event cost with {label} waiting: {EVENT_CLIENTS} clients"),
        format!(
            "{:.0} req/s, p50 {cp50:.1} ms, p99 {cp99:.1} ms",
            conc.rate()
        ),
        "flat",
        "see flat rows",
    );
    row(
        rows,
        format!("event cost with {label} waiting: one client"),
        format!("p50 {sp50:.2} ms, p99 {sp99:.2} ms"),
        "flat",
        "see flat rows",
    );

    stop_checked(server, &format!("{label} waiting, after restart"), problems);
    remove_db(settings, &db);
    println!();
    ScaleResult {
        n,
        fill_rate: fill.rate(),
        serial_p50: sp50,
        serial_p99: sp99,
        event_rate: conc.rate(),
        tick,
        idle_cpu,
    }
}

// ---------------------------------------------------------------------------------------------
// Timers group (6): timers fired per second from a backlog, lateness below saturation

/// A journey whose hold times out into a send step: each firing writes its transitions and a
/// delivery row in one transaction.
fn fire_journey(id: &str, event: &str, hold: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id, "name": format!("bench: {id}"),
        "entry": {"event": event},
        "steps": [{"id": "wait", "type": "hold_until", "max_hold": hold,
                   "branches": [{"event": "Bench_Never", "next": null}],
                   "on_timeout": "send"},
                  {"id": "send", "type": "send", "destination": "bench-sink", "next": null}]
    })
}

fn run_timers(
    settings: &Settings,
    runtime: &tokio::runtime::Runtime,
    receiver: &Receiver,
    rows: &mut Vec<Row>,
    problems: &mut Vec<String>,
) {
    section(rows, "-- timers: hold times out into a send step");
    for held in [true, false] {
        timers_backlog(settings, runtime, receiver, held, rows, problems);
    }
}

fn timers_backlog(
    settings: &Settings,
    runtime: &tokio::runtime::Runtime,
    receiver: &Receiver,
    held: bool,
    rows: &mut Vec<Row>,
    problems: &mut Vec<String>,
) {
    let n = settings.timers;
    let label = thousands(n as f64);
    let tag = if held { "held" } else { "fast" };
    println!(
        "== 6. Timers fired per second: {label} timers due at once (after a restart), each firing a send step; deliveries {}",
        if held {
            "held back (destination rate_limit 1/s), so that only the firing is measured"
        } else {
            "sent to the fast receiver at the same time"
        }
    );
    let db = settings.dir.join(format!("timers-{tag}.db"));
    let server = Server::start(&db, &settings.sync);
    let api = Api::new(&server.addr);
    let dest = if held {
        serde_json::json!({"type": "webhook", "url": receiver.url, "rate_limit": 1, "timeout": "5m"})
    } else {
        serde_json::json!({"type": "webhook", "url": receiver.url, "timeout": "30s"})
    };
    runtime.block_on(async {
        api.put("/v1/destinations/bench-sink", dest).await;
        api.put(
            "/v1/journeys/bench-cal",
            fire_journey("bench-cal", "Bench_Cal_Enter", "7d"),
        )
        .await;
    });
    let props: Arc<dyn Fn(u64, &mut Rng, &mut String) + Send + Sync> =
        Arc::new(|_, rng, out| write_props(out, rng));

    // The hold must outlast the fill, or timers would fire while it runs: time a short fill first.
    let cal_n = (n / 10).clamp(1_000, 5_000);
    let (jobs, make) = batch_jobs(
        "Bench_Cal_Enter",
        "cal-".into(),
        0,
        cal_n,
        FILL_BATCH,
        props.clone(),
    );
    let cal = runtime.block_on(post_jobs(
        &server.addr,
        "/v1/batch",
        FILL_CLIENTS,
        jobs,
        make,
        None,
    ));
    let entry_rate = cal.rate();
    let estimate = n as f64 / entry_rate;
    let hold_s = (estimate * 1.5 + 3.0).ceil().max(5.0) as u64;
    println!(
        "  calibration: {cal_n} entries at {entry_rate:.0}/s; filling {label} should take {estimate:.1} s, so the hold is {hold_s}s"
    );
    runtime.block_on(api.put(
        "/v1/journeys/bench-fire",
        fire_journey("bench-fire", "Bench_Fire_Enter", &format!("{hold_s}s")),
    ));
    let (jobs, make) = batch_jobs(
        "Bench_Fire_Enter",
        "fire-".into(),
        0,
        n,
        FILL_BATCH,
        props.clone(),
    );
    let fill = runtime.block_on(post_jobs(
        &server.addr,
        "/v1/batch",
        FILL_CLIENTS,
        jobs,
        make,
        None,
    ));
    let filled = Instant::now();
    print_work(&fill, "entries");
    let early = runtime
        .block_on(api.scrape())
        .map(|s| s.get("journeyd_timers_fired_total"))
        .unwrap_or(0.0) as u64;
    if early > 0 {
        println!(
            "  the fill outlasted the hold: {early} timers fired during it; the rate below is for the rest"
        );
    }
    stop_checked(
        server,
        &format!("timers ({tag}), before the restart"),
        problems,
    );
    let due = filled + Duration::from_secs(hold_s) + Duration::from_millis(300);
    let wait = due.saturating_duration_since(Instant::now());
    println!(
        "  stopped; waiting {:.1} s until every timer is due, then starting again",
        wait.as_secs_f64()
    );
    std::thread::sleep(wait);

    let target = n - early;
    let server = Server::start(&db, &settings.sync);
    let api = Api::new(&server.addr);
    let cpu = CpuWindow::start(server.pid());
    let pid = server.pid().to_string();
    let io0 = proc_io(&pid);
    let profile = Profile::start(server.pid(), &format!("timers-{tag}"));
    let listening = server.listening;
    println!(
        "  restart with {} due timers: `listening on` after {:.0} ms",
        thousands(target as f64),
        (server.listening - server.spawned).as_secs_f64() * 1000.0
    );
    // (time, fired, delivered), every 100 ms until all have fired.
    let (samples, first, last) = runtime.block_on(async {
        let mut samples: Vec<(Instant, u64, u64)> = Vec::new();
        let (mut first, mut last) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if let Some(s) = api.scrape().await {
                let t = Instant::now();
                let fired = s.get("journeyd_timers_fired_total") as u64;
                let delivered =
                    s.get("journeyd_delivery_attempts_total{outcome=\"delivered\"}") as u64;
                samples.push((t, fired, delivered));
                if first.is_none() {
                    first = Some(s);
                } else {
                    last = Some(s);
                }
                if fired >= target {
                    break;
                }
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (samples, first, last)
    });
    profile.stop();
    let cpu_lines = cpu.report();
    let io1 = proc_io(&pid);
    let fired_all = samples.last().map(|s| s.1).unwrap_or(0);
    if fired_all < target {
        problems.push(format!(
            "timers ({tag}): only {fired_all} of {target} fired within 600 s"
        ));
    }
    // When the count crossed the target, interpolated between the two samples around it.
    let done = match samples.iter().position(|s| s.1 >= target) {
        Some(0) | None => samples.last().map(|s| s.0).unwrap_or(listening),
        Some(i) => {
            let (a, b) = (samples[i - 1], samples[i]);
            let frac = (target - a.1) as f64 / (b.1 - a.1).max(1) as f64;
            a.0 + (b.0 - a.0).mul_f64(frac)
        }
    };
    let secs = (done - listening).as_secs_f64();
    let rate = fired_all.min(target) as f64 / secs;
    let mut per_second = Vec::new();
    let mut mark = 1.0;
    let mut prev = 0u64;
    for s in &samples {
        let t = (s.0 - listening).as_secs_f64();
        if t >= mark {
            per_second.push(thousands((s.1 - prev) as f64 / (t - (mark - 1.0)).max(0.1)));
            prev = s.1;
            mark = t.floor() + 1.0;
        }
    }
    println!(
        "  {} timers fired {secs:.2} s after `listening on`: {rate:.0} timers/s; target {TIMERS_TARGET:.0}, floor {TIMERS_FLOOR:.0}: {}",
        thousands(fired_all as f64),
        verdict(rate, TIMERS_TARGET, TIMERS_FLOOR)
    );
    println!(
        "  fired per second, second by second: {}",
        per_second.join(", ")
    );
    println!(
        "  delivered meanwhile: {}",
        thousands(samples.last().map(|s| s.2).unwrap_or(0) as f64)
    );
    if let (Some(a), Some(b)) = (&first, &last) {
        println!(
            "  group commit: {}",
            describe_commits(a.writer(), b.writer(), secs, 1.0)
        );
    }
    println!(
        "  server wrote (per timer): {}",
        describe_io(io0, io1, secs, fired_all.max(1))
    );
    print_cpu(cpu_lines);
    row(
        rows,
        format!(
            "timers fired/s, {label} due, deliveries {}",
            if held { "held back" } else { "to the receiver" }
        ),
        format!("{rate:.0} timers/s"),
        format!("target {TIMERS_TARGET:.0}, floor {TIMERS_FLOOR:.0}"),
        verdict(rate, TIMERS_TARGET, TIMERS_FLOOR),
    );

    if !held {
        let t0 = Instant::now();
        let arrived = runtime.block_on(receiver.wait(n, Duration::from_secs(600), |r| {
            r.count_journey("bench-fire")
        }));
        println!(
            "  all {label} deliveries at the receiver {:.1} s after the last timer fired{}",
            t0.elapsed().as_secs_f64(),
            if arrived { "" } else { " (TIMED OUT)" }
        );
        if !arrived {
            problems.push(format!("timers (fast): not all {n} deliveries arrived"));
        }
        // In steady use every timer was an entry first: the writer does both, so the rate it can
        // sustain is the harmonic combination of the entry and firing rates.
        let capacity = 1.0 / (1.0 / rate + 1.0 / entry_rate);
        timer_lateness(
            settings, runtime, receiver, &server, &db, capacity, rows, problems,
        );
    }
    stop_checked(server, &format!("timers ({tag})"), problems);
    remove_db(settings, &db);
    println!();
}

/// Timers due spread over time at half of `capacity` per second (the rate at which the writer can
/// both enter and fire instances): entries paced at that rate into a journey with a 5 s hold, so
/// that entries and firings overlap as in steady use.
#[allow(clippy::too_many_arguments)]
fn timer_lateness(
    settings: &Settings,
    runtime: &tokio::runtime::Runtime,
    receiver: &Receiver,
    server: &Server,
    db: &Path,
    capacity: f64,
    rows: &mut Vec<Row>,
    problems: &mut Vec<String>,
) {
    let rate = capacity / 2.0;
    let per = 10u64;
    let duration = Duration::from_secs_f64((settings.secs * 2.0).max(4.0));
    println!(
        "  -- timer lateness below saturation: entries at {rate:.0}/s for {:.0} s, in batches of {per}, into a journey with a 5s hold and a send step (half of {capacity:.0}/s, which entering and firing together would saturate: 1/(1/firing rate + 1/entry rate))",
        duration.as_secs_f64()
    );
    let api = Api::new(&server.addr);
    runtime.block_on(api.put(
        "/v1/journeys/bench-pace",
        fire_journey("bench-pace", "Bench_Pace_Enter", "5s"),
    ));
    let before = runtime.block_on(api.scrape());
    let props: Arc<dyn Fn(u64, &mut Rng, &mut String) + Send + Sync> =
        Arc::new(|_, rng, out| write_props(out, rng));
    let (_, make) = batch_jobs("Bench_Pace_Enter", "pace-".into(), 0, 1 << 40, per, props);
    let cpu = CpuWindow::start(server.pid());
    let profile = Profile::start(server.pid(), "timers-pace");
    let sent = runtime.block_on(paced(
        &server.addr,
        "/v1/batch",
        rate / per as f64,
        duration,
        make,
    ));
    let ok: u64 = sent
        .iter()
        .filter(|s| s.status == 200)
        .map(|s| s.messages)
        .sum();
    let mut acks: Vec<u32> = sent
        .iter()
        .filter(|s| s.status == 200)
        .map(|s| s.latency_us)
        .collect();
    acks.sort_unstable();
    let fired = runtime.block_on(api.wait_journey(
        "bench-pace",
        Duration::from_millis(100),
        Duration::from_secs(120),
        |e, a| e as u64 >= ok && a == 0,
    ));
    profile.stop();
    let cpu_lines = cpu.report();
    if fired.is_none() {
        problems.push("timer lateness: not all paced timers fired within 120 s".into());
    }
    let after = runtime.block_on(api.scrape());
    println!(
        "  {} entries accepted ({} requests, {} not 200); batch latency p50 {:.1} ms, p99 {:.1} ms",
        thousands(ok as f64),
        sent.len(),
        sent.iter().filter(|s| s.status != 200).count(),
        percentile(&acks, 0.5),
        percentile(&acks, 0.99)
    );
    println!("  slowest answers: {}", slowest(&sent));
    let mut p99_hist = None;
    if let (Some(b), Some(a)) = (&before, &after) {
        let h = HistDelta::between(b, a, "journeyd_timer_lateness_seconds");
        println!(
            "  journeyd_timer_lateness_seconds over the run ({:.0} timers): {}, {}, mean {:.1} ms",
            h.count,
            h.describe(0.5),
            h.describe(0.99),
            h.sum / h.count.max(1.0) * 1000.0
        );
        p99_hist = h.quantile(0.99);
    }
    let exact = TickLog::read(db, "bench-pace", 5_000);
    match &exact {
        Ok(log) => println!(
            "  lateness from the instance rows (firing transaction time - due time): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms, in {} ticks ({:.0} timers per tick on average)",
            log.lateness(0.5),
            log.lateness(0.99),
            log.lateness(1.0),
            log.ticks.len(),
            log.lateness_ms.len() as f64 / log.ticks.len().max(1) as f64
        ),
        Err(e) => println!("  lateness from the instance rows not available: {e}"),
    }
    print_cpu(cpu_lines);
    let arrived = runtime.block_on(receiver.wait(ok, Duration::from_secs(120), |r| {
        r.count_journey("bench-pace")
    }));
    if !arrived {
        problems.push("timer lateness: not all deliveries arrived".into());
    }
    let (value, p99_ms) = match (&exact, p99_hist) {
        (Ok(log), Some((v, lo, hi))) => (
            format!(
                "p99 {:.0} ms exact ({:.1} ms in histogram bucket {}-{} ms), at {rate:.0} timers/s",
                log.lateness(0.99),
                v * 1000.0,
                lo * 1000.0,
                hi * 1000.0
            ),
            log.lateness(0.99),
        ),
        (Ok(log), None) => (
            format!("p99 {:.0} ms, at {rate:.0} timers/s", log.lateness(0.99)),
            log.lateness(0.99),
        ),
        (Err(_), Some((v, _, hi))) => (
            format!(
                "p99 {:.1} ms (histogram, bucket up to {} ms), at {rate:.0}/s",
                v * 1000.0,
                hi * 1000.0
            ),
            v * 1000.0,
        ),
        (Err(_), None) => ("-".into(), f64::NAN),
    };
    row(
        rows,
        "timer lateness below saturation",
        value,
        format!("p99 target < {LATENESS_P99_TARGET_MS:.0} ms"),
        if p99_ms < LATENESS_P99_TARGET_MS {
            "meets target"
        } else {
            "MISSES TARGET"
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Delivery group (9): event-to-delivery latency at half the saturating rate, and throughput

fn forward_journey() -> serde_json::Value {
    serde_json::json!({
        "id": "bench-forward", "name": "bench: forward each event",
        "entry": {"event": "Bench_Forward"},
        "steps": [{"id": "send", "type": "send", "destination": "bench-sink", "next": null}]
    })
}

/// Properties of a forwarded event: the tag and sequence number the receiver matches on, and
/// product-like fields.
fn forward_props(out: &mut String, tag: &str, seq: Option<u64>, rng: &mut Rng) {
    use std::fmt::Write as _;
    let _ = write!(out, r#""bench_tag":"{tag}","#);
    if let Some(seq) = seq {
        let _ = write!(out, r#""bench_seq":{seq},"#);
    }
    write_props(out, rng);
}

fn run_delivery(
    settings: &Settings,
    runtime: &tokio::runtime::Runtime,
    receiver: &Receiver,
    rows: &mut Vec<Row>,
    problems: &mut Vec<String>,
) {
    section(
        rows,
        "-- delivery: forwarding journey (entry, then send) to the receiver",
    );
    println!(
        "== 9. Delivery: a forwarding journey (entry event -> send step -> webhook to the receiver in this process)"
    );
    let db = settings.dir.join("delivery.db");
    let server = Server::start(&db, &settings.sync);
    let api = Api::new(&server.addr);
    runtime.block_on(async {
        let mut dest = serde_json::json!({"type": "webhook", "url": receiver.url, "timeout": "5m"});
        if let Some(c) = settings.delivery_concurrency {
            dest["concurrency"] = c.into();
        }
        api.put("/v1/destinations/bench-sink", dest).await;
        api.put("/v1/journeys/bench-forward", forward_journey())
            .await;
    });
    let users = settings.users;

    // 9a: the saturating rate -------------------------------------------------------------
    let sat_secs = (settings.secs * 0.6).max(2.0);
    let make: MakeBody = Arc::new(move |_, _, rng, out| {
        let mut p = String::with_capacity(200);
        forward_props(&mut p, "sat", None, rng);
        let user = format!("fwd-{:06}", rng.below(users));
        write_journey_event(out, "Bench_Forward", &user, &iso_now(), &p);
    });
    let sat = runtime.block_on(http_load(
        &server.addr,
        "/v1/track",
        settings.track_clients,
        Duration::from_secs_f64(sat_secs),
        1,
        make,
    ));
    let sat_ok = sat.counters.ok_requests.load(Ordering::Relaxed);
    let sat_rate = sat_ok as f64 / sat.elapsed.as_secs_f64();
    println!(
        "  -- 9a. saturating rate: {} clients of single POST /v1/track for {sat_secs:.1} s: {sat_rate:.0} req/s, latency p50 {:.1} ms, p99 {:.1} ms",
        settings.track_clients,
        percentile(&sat.latencies_us, 0.5),
        percentile(&sat.latencies_us, 0.99)
    );
    let t0 = Instant::now();
    let all =
        runtime.block_on(receiver.wait(sat_ok, Duration::from_secs(300), |r| r.count_tag("sat")));
    println!(
        "  its {} deliveries were all at the receiver {:.2} s after the load ended{}",
        thousands(sat_ok as f64),
        t0.elapsed().as_secs_f64(),
        if all { "" } else { " (TIMED OUT)" }
    );
    if !all {
        problems.push("delivery: the saturation run's deliveries did not all arrive".into());
    }
    row(
        rows,
        format!(
            "single track, {} clients, with forwarding",
            settings.track_clients
        ),
        format!("{sat_rate:.0} req/s (saturating rate)"),
        "-",
        "reference",
    );

    // 9a: latency at half of it -------------------------------------------------------------
    let rate = settings.delivery_rate.unwrap_or(sat_rate / 2.0);
    let duration = settings.phase();
    println!(
        "  -- 9a. event -> first delivery attempt: single POST /v1/track at {rate:.0}/s ({}), open loop, for {:.0} s",
        if settings.delivery_rate.is_some() {
            "JOURNEYD_BENCH_DELIVERY_RATE"
        } else {
            "half the saturating rate"
        },
        duration.as_secs_f64()
    );
    let make: MakeJob = Arc::new(move |n, out| {
        let mut rng = Rng(0xf0f0 ^ n);
        let mut p = String::with_capacity(200);
        forward_props(&mut p, "lat", Some(n), &mut rng);
        let user = format!("fwd-{:06}", rng.below(users));
        write_journey_event(out, "Bench_Forward", &user, &iso_now(), &p);
        1
    });
    let before = runtime.block_on(api.scrape());
    let cpu = CpuWindow::start(server.pid());
    // The outbox and the writer queue, every 250 ms while the run lasts.
    let backlog: Arc<std::sync::Mutex<Vec<(u64, u64)>>> = Arc::default();
    let sampler = {
        let (api, backlog) = (api.clone(), backlog.clone());
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Some(s) = api.scrape().await {
                    backlog.lock().unwrap().push((
                        s.get("journeyd_deliveries_pending") as u64,
                        s.get("journeyd_writer_queue_depth") as u64,
                    ));
                }
            }
        })
    };
    let profile = Profile::start(server.pid(), "delivery-latency");
    let sent = runtime.block_on(paced(&server.addr, "/v1/track", rate, duration, make));
    profile.stop();
    sampler.abort();
    {
        let b = backlog.lock().unwrap();
        let pending: Vec<String> = b.iter().map(|x| x.0.to_string()).collect();
        let queue = b.iter().map(|x| x.1).max().unwrap_or(0);
        println!(
            "  deliveries pending every 250 ms during the run: {}; writer queue depth at most {queue}",
            pending.join(" ")
        );
    }
    let ok: Vec<&Sent> = sent.iter().filter(|s| s.status == 200).collect();
    let all = runtime.block_on(
        receiver.wait(ok.len() as u64, Duration::from_secs(120), |r| {
            r.count_tag("lat")
        }),
    );
    let cpu_lines = cpu.report();
    let after = runtime.block_on(api.scrape());
    let arrivals = receiver.arrivals("lat");
    let mut e2e: Vec<u32> = Vec::with_capacity(ok.len());
    let mut missing = 0;
    for s in &ok {
        match arrivals.get(&s.n) {
            Some(at) => e2e.push(at.saturating_duration_since(s.at).as_micros() as u32),
            None => missing += 1,
        }
    }
    // Per second of the run (by send time): p50 and max of event -> delivery.
    if let Some(first) = ok.iter().map(|s| s.at).min() {
        let mut windows: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        for s in &ok {
            if let Some(at) = arrivals.get(&s.n) {
                windows
                    .entry((s.at - first).as_secs())
                    .or_default()
                    .push(at.saturating_duration_since(s.at).as_micros() as u32);
            }
        }
        let parts: Vec<String> = windows
            .values_mut()
            .map(|v| {
                v.sort_unstable();
                format!("{:.0}/{:.0}", percentile(v, 0.5), percentile(v, 1.0))
            })
            .collect();
        println!(
            "  event -> delivery p50/max in ms, second by second: {}",
            parts.join(", ")
        );
    }
    e2e.sort_unstable();
    let mut acks: Vec<u32> = ok.iter().map(|s| s.latency_us).collect();
    acks.sort_unstable();
    let (p50, p90, p99, max) = (
        percentile(&e2e, 0.5),
        percentile(&e2e, 0.9),
        percentile(&e2e, 0.99),
        percentile(&e2e, 1.0),
    );
    println!(
        "  {} sent, {} answered 200, {} deliveries matched{}",
        sent.len(),
        ok.len(),
        e2e.len(),
        if all {
            String::new()
        } else {
            format!(" ({missing} MISSING)")
        }
    );
    println!(
        "  event -> delivery: p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms, max {max:.2} ms"
    );
    println!(
        "  (the 200 answer to the track call alone: p50 {:.2} ms, p99 {:.2} ms)",
        percentile(&acks, 0.5),
        percentile(&acks, 0.99)
    );
    println!("  slowest answers: {}", slowest(&sent));
    println!(
        "  group commit: {}",
        describe_commits(
            before.as_ref().and_then(Scrape::writer),
            after.as_ref().and_then(Scrape::writer),
            duration.as_secs_f64(),
            1.0
        )
    );
    print_cpu(cpu_lines);
    if missing > 0 {
        problems.push(format!(
            "delivery latency: {missing} deliveries never arrived"
        ));
    }
    row(
        rows,
        format!("event -> delivery at {rate:.0}/s: p50"),
        format!("{p50:.2} ms (ack alone {:.2} ms)", percentile(&acks, 0.5)),
        format!("target {DELIVERY_P50_TARGET_MS:.0} ms"),
        if p50 <= DELIVERY_P50_TARGET_MS {
            "meets target"
        } else {
            "MISSES TARGET"
        },
    );
    row(
        rows,
        format!("event -> delivery at {rate:.0}/s: p99"),
        format!("{p99:.2} ms (ack alone {:.2} ms)", percentile(&acks, 0.99)),
        format!("target {DELIVERY_P99_TARGET_MS:.0} ms, floor {DELIVERY_P99_FLOOR_MS:.0} ms"),
        verdict_lower(p99, DELIVERY_P99_TARGET_MS, DELIVERY_P99_FLOOR_MS),
    );

    // 9b: throughput ---------------------------------------------------------------------------
    delivery_throughput(
        settings, runtime, receiver, &server, "thr", None, rows, problems,
    );
    if settings.extra {
        delivery_throughput(
            settings,
            runtime,
            receiver,
            &server,
            "thr64",
            Some(64),
            rows,
            problems,
        );
    }
    let dups = receiver.duplicates();
    println!("  duplicate deliveries seen by the receiver (same webhook-id twice): {dups}");
    stop_checked(server, "delivery", problems);
    remove_db(settings, &db);
    println!();
}

/// Builds a backlog of deliveries while the receiver holds its answers, then opens it and times
/// how fast the dispatcher empties the outbox.
#[allow(clippy::too_many_arguments)]
fn delivery_throughput(
    settings: &Settings,
    runtime: &tokio::runtime::Runtime,
    receiver: &Receiver,
    server: &Server,
    tag: &'static str,
    concurrency: Option<u32>,
    rows: &mut Vec<Row>,
    problems: &mut Vec<String>,
) {
    let m = settings.deliveries;
    let api = Api::new(&server.addr);
    let mut dest = serde_json::json!({"type": "webhook", "url": receiver.url, "timeout": "5m"});
    if let Some(c) = concurrency {
        dest["concurrency"] = c.into();
    }
    runtime.block_on(api.put("/v1/destinations/bench-sink", dest));
    let conc = concurrency
        .map(|c| c.to_string())
        .unwrap_or_else(|| "8 (default)".into());
    println!(
        "  -- 9b. delivery throughput, destination concurrency {conc}: {} forwarding events through POST /v1/batch while the receiver holds its answers, then the receiver opens",
        thousands(m as f64)
    );
    receiver.set_gate(false);
    let props: Arc<dyn Fn(u64, &mut Rng, &mut String) + Send + Sync> =
        Arc::new(move |u, rng, out| forward_props(out, tag, Some(u), rng));
    let (jobs, make) = batch_jobs("Bench_Forward", format!("{tag}-"), 0, m, FILL_BATCH, props);
    let fill = runtime.block_on(post_jobs(
        &server.addr,
        "/v1/batch",
        FILL_CLIENTS,
        jobs,
        make,
        None,
    ));
    println!(
        "  ingested: {} events (each an entry, a send step and a delivery row) at {:.0}/s",
        thousands(fill.ok_messages as f64),
        fill.rate()
    );
    std::thread::sleep(Duration::from_millis(300));
    let before = runtime.block_on(api.scrape());
    let pending = before
        .as_ref()
        .map(|s| s.get("journeyd_deliveries_pending"))
        .unwrap_or(f64::NAN);
    let pid = server.pid().to_string();
    let io0 = proc_io(&pid);
    let cpu = CpuWindow::start(server.pid());
    let profile = Profile::start(server.pid(), &format!("delivery-drain-{tag}"));
    let opened = Instant::now();
    receiver.set_gate(true);
    let all = runtime.block_on(
        receiver.wait(fill.ok_messages, Duration::from_secs(900), |r| {
            r.count_tag(tag)
        }),
    );
    profile.stop();
    let last = receiver.last_arrival(tag).unwrap_or_else(Instant::now);
    let secs = (last - opened).as_secs_f64();
    let cpu_lines = cpu.report();
    let io1 = proc_io(&pid);
    let after = runtime.block_on(api.scrape());
    let got = receiver.count_tag(tag);
    let rate = got as f64 / secs;
    println!(
        "  {} pending when the receiver opened; {} delivered in {secs:.2} s: {rate:.0} deliveries/s; target {DELIVERY_RATE_TARGET:.0}: {}",
        thousands(pending),
        thousands(got as f64),
        verdict(rate, DELIVERY_RATE_TARGET, DELIVERY_RATE_TARGET)
    );
    println!(
        "  group commit: {}",
        describe_commits(
            before.as_ref().and_then(Scrape::writer),
            after.as_ref().and_then(Scrape::writer),
            secs,
            1.0
        )
    );
    println!("  server wrote: {}", describe_io(io0, io1, secs, got));
    print_cpu(cpu_lines);
    if !all {
        problems.push(format!(
            "delivery throughput ({tag}): {got} of {} delivered",
            fill.ok_messages
        ));
    }
    row(
        rows,
        format!(
            "delivery throughput, backlog {}, concurrency {conc}",
            thousands(m as f64)
        ),
        format!("{rate:.0} deliveries/s"),
        format!("target {DELIVERY_RATE_TARGET:.0}"),
        verdict(rate, DELIVERY_RATE_TARGET, DELIVERY_RATE_TARGET),
    );
}

/// Phases 1-4: the SQLite ceiling, batch and single ingest, memory, and the consistency check.
fn run_ingest(
    settings: &Settings,
    runtime: &tokio::runtime::Runtime,
    rows: &mut Vec<Row>,
    problems: &mut Vec<String>,
) {
    // Phase 1 ------------------------------------------------------------------------------
    println!(
        "== 1. Machine ceiling: plain batched INSERTs, WAL + synchronous={}, 100 rows/transaction",
        settings.sync.to_ascii_uppercase()
    );
    let probe = {
        let mut t = fsync_probe(
            &settings.dir.join("probe.db"),
            Duration::from_secs_f64((settings.secs / 5.0).max(0.5)),
        );
        t.sort_unstable();
        t
    };
    println!(
        "  one-row commit (fsync cost of this disk): p50 {:.2} ms, p99 {:.2} ms ({} commits)",
        percentile(&probe, 0.5),
        percentile(&probe, 0.99),
        probe.len()
    );
    let ceiling_db = settings.dir.join("ceiling.db");
    let mut c100 = ceiling(&ceiling_db, &settings, settings.phase(), 100, false);
    c100.commit_times.sort_unstable();
    let ceiling_rate = c100.rows_per_sec();
    println!(
        "  {} rows in {} commits in {:.2} s: {:.0} rows/s; commit of 100 rows p50 {:.2} ms, p99 {:.2} ms; body {:.0} bytes on average",
        c100.rows,
        c100.commits,
        c100.elapsed.as_secs_f64(),
        ceiling_rate,
        percentile(&c100.commit_times, 0.5),
        percentile(&c100.commit_times, 0.99),
        c100.body_bytes as f64 / c100.rows.max(1) as f64
    );
    println!("  written: {}", c100.io);
    rows.push(Row {
        name: "SQLite ceiling, 100 rows/tx".into(),
        value: format!("{ceiling_rate:.0} rows/s"),
        goal: "-".into(),
        verdict: "reference".into(),
    });
    if settings.extra {
        let short = Duration::from_secs_f64((settings.secs / 2.0).max(1.0));
        let mut shaped = ceiling(&ceiling_db, &settings, short, 100, true);
        shaped.commit_times.sort_unstable();
        println!(
            "  (analysis) same rows plus the product's per-message statements (dedup select, identity select, \
             profile upsert, savepoint): {:.0} rows/s, commit p50 {:.2} ms",
            shaped.rows_per_sec(),
            percentile(&shaped.commit_times, 0.5)
        );
        let mut big = ceiling(&ceiling_db, &settings, short, 800, false);
        big.commit_times.sort_unstable();
        println!(
            "  (analysis) plain inserts at 800 rows/transaction: {:.0} rows/s, commit p50 {:.2} ms",
            big.rows_per_sec(),
            percentile(&big.commit_times, 0.5)
        );
        println!("  (analysis) written at 800 rows/transaction: {}", big.io);
        rows.push(Row {
            name: "SQLite, 100 rows/tx, product statements".into(),
            value: format!("{:.0} rows/s", shaped.rows_per_sec()),
            goal: "-".into(),
            verdict: "analysis".into(),
        });
        rows.push(Row {
            name: "SQLite ceiling, 800 rows/tx".into(),
            value: format!("{:.0} rows/s", big.rows_per_sec()),
            goal: "-".into(),
            verdict: "analysis".into(),
        });
    }
    for f in [
        "ceiling.db",
        "ceiling.db-wal",
        "ceiling.db-shm",
        "probe.db",
        "probe.db-wal",
        "probe.db-shm",
    ] {
        let _ = std::fs::remove_file(settings.dir.join(f));
    }
    println!();

    // Server start and idle RSS ------------------------------------------------------------
    let db = settings.dir.join("bench.db");
    let server = Server::start(&db, &settings.sync);
    std::thread::sleep(Duration::from_secs(1));
    let (idle_rss, _) = server.rss();
    println!(
        "== journeyd started on {} (pid {}); idle RSS after 1 s: {idle_rss:.1} MB",
        server.addr,
        server.pid()
    );
    println!();

    // Phase 2 ------------------------------------------------------------------------------
    println!(
        "== 2. Durable ingest: POST /v1/batch, {} keep-alive clients x {} track messages per request",
        settings.clients, settings.batch
    );
    let nonce = format!(
        "{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let batch_size = settings.batch;
    let users = settings.users;
    let batch_nonce = nonce.clone();
    let sequential_ids = settings.sequential_ids;
    let make_batch: MakeBody = Arc::new(move |task, n, rng, out| {
        let ts = iso_now();
        out.push_str(r#"{"batch":["#);
        let mut id = String::with_capacity(64);
        for i in 0..batch_size {
            if i > 0 {
                out.push(',');
            }
            id.clear();
            use std::fmt::Write as _;
            if sequential_ids {
                let _ = write!(id, "b-{batch_nonce}-{task:02}-{n:09}-{i:04}");
            } else {
                let _ = write!(id, "{}", uuid::Uuid::new_v4());
            }
            write_track(out, rng, users, &id, &ts, "");
        }
        let _ = std::fmt::Write::write_fmt(out, format_args!(r#"],"sentAt":"{ts}"}}"#));
    });
    let metrics_before = runtime.block_on(writer_metrics(&server.addr));
    let io_before = proc_io(&server.pid().to_string());
    let cpu = CpuWindow::start(server.pid());
    let batch = runtime.block_on(http_load(
        &server.addr,
        "/v1/batch",
        settings.clients,
        settings.phase(),
        settings.batch as u64,
        make_batch.clone(),
    ));
    let cpu_lines = cpu.report();
    let io_after = proc_io(&server.pid().to_string());
    let metrics_after = runtime.block_on(writer_metrics(&server.addr));
    print_load(&batch, "events");
    let batch_rate =
        batch.counters.ok_messages.load(Ordering::Relaxed) as f64 / batch.elapsed.as_secs_f64();
    println!(
        "  => {batch_rate:.0} events/s = {:.1}% of the SQLite ceiling ({ceiling_rate:.0} rows/s); target {BATCH_TARGET:.0}, floor {BATCH_FLOOR:.0}: {}",
        batch_rate / ceiling_rate * 100.0,
        verdict(batch_rate, BATCH_TARGET, BATCH_FLOOR)
    );
    println!(
        "  group commit: {}",
        describe_commits(
            metrics_before,
            metrics_after,
            batch.elapsed.as_secs_f64(),
            settings.batch as f64
        )
    );
    println!(
        "  server wrote: {}",
        describe_io(
            io_before,
            io_after,
            batch.elapsed.as_secs_f64(),
            batch.counters.ok_messages.load(Ordering::Relaxed)
        )
    );
    println!("  CPU during the phase:");
    for l in cpu_lines {
        println!("{l}");
    }
    rows.push(Row {
        name: format!(
            "POST /v1/batch, {} clients x {}",
            settings.clients, settings.batch
        ),
        value: format!(
            "{batch_rate:.0} events/s ({:.0}% of ceiling), p50 {:.1} ms, p99 {:.1} ms",
            batch_rate / ceiling_rate * 100.0,
            percentile(&batch.latencies_us, 0.5),
            percentile(&batch.latencies_us, 0.99)
        ),
        goal: format!("target {BATCH_TARGET:.0}, floor {BATCH_FLOOR:.0}"),
        verdict: verdict(batch_rate, BATCH_TARGET, BATCH_FLOOR).into(),
    });
    rows.push(Row {
        name: "  503 busy during batch phase".into(),
        value: batch.counters.busy.load(Ordering::Relaxed).to_string(),
        goal: "-".into(),
        verdict: "-".into(),
    });
    println!();

    // Phase 3 ------------------------------------------------------------------------------
    println!(
        "== 3. Single POST /v1/track, {} concurrent keep-alive clients",
        settings.track_clients
    );
    let track_nonce = nonce.clone();
    let make_track: MakeBody = Arc::new(move |task, n, rng, out| {
        let ts = iso_now();
        let id = if sequential_ids {
            format!("t-{track_nonce}-{task:02}-{n:09}")
        } else {
            uuid::Uuid::new_v4().to_string()
        };
        write_track(out, rng, users, &id, &ts, "");
    });
    let metrics_before = runtime.block_on(writer_metrics(&server.addr));
    let io_before = proc_io(&server.pid().to_string());
    let cpu = CpuWindow::start(server.pid());
    let track = runtime.block_on(http_load(
        &server.addr,
        "/v1/track",
        settings.track_clients,
        settings.phase(),
        1,
        make_track,
    ));
    let cpu_lines = cpu.report();
    let io_after = proc_io(&server.pid().to_string());
    let metrics_after = runtime.block_on(writer_metrics(&server.addr));
    print_load(&track, "events");
    let track_rate =
        track.counters.ok_requests.load(Ordering::Relaxed) as f64 / track.elapsed.as_secs_f64();
    println!(
        "  => {track_rate:.0} req/s; target {TRACK_TARGET:.0}, floor {TRACK_FLOOR:.0}: {}",
        verdict(track_rate, TRACK_TARGET, TRACK_FLOOR)
    );
    println!(
        "  group commit: {}",
        describe_commits(
            metrics_before,
            metrics_after,
            track.elapsed.as_secs_f64(),
            1.0
        )
    );
    println!(
        "  server wrote: {}",
        describe_io(
            io_before,
            io_after,
            track.elapsed.as_secs_f64(),
            track.counters.ok_messages.load(Ordering::Relaxed)
        )
    );
    println!("  CPU during the phase:");
    for l in cpu_lines {
        println!("{l}");
    }
    rows.push(Row {
        name: format!("POST /v1/track, {} clients", settings.track_clients),
        value: format!(
            "{track_rate:.0} req/s, p50 {:.1} ms, p99 {:.1} ms",
            percentile(&track.latencies_us, 0.5),
            percentile(&track.latencies_us, 0.99)
        ),
        goal: format!("target {TRACK_TARGET:.0}, floor {TRACK_FLOOR:.0}"),
        verdict: verdict(track_rate, TRACK_TARGET, TRACK_FLOOR).into(),
    });
    rows.push(Row {
        name: "  503 busy during track phase".into(),
        value: track.counters.busy.load(Ordering::Relaxed).to_string(),
        goal: "-".into(),
        verdict: "-".into(),
    });
    println!();

    // Phase 4 ------------------------------------------------------------------------------
    std::thread::sleep(Duration::from_secs(1));
    let (loaded_rss, peak_rss) = server.rss();
    let file_mb = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len() as f64 / 1048576.0)
            .unwrap_or(0.0)
    };
    println!(
        "== Files after the load: database {:.1} MB, WAL {:.1} MB",
        file_mb(&db),
        file_mb(&settings.dir.join("bench.db-wal"))
    );
    println!();
    println!("== 4. Memory");
    println!("  idle RSS after start: {idle_rss:.1} MB (target under {IDLE_RSS_TARGET_MB:.0} MB)");
    println!(
        "  RSS after the load phases (1 s idle): {loaded_rss:.1} MB, peak (VmHWM) {peak_rss:.1} MB"
    );
    rows.push(Row {
        name: "idle RSS after start".into(),
        value: format!("{idle_rss:.1} MB"),
        goal: format!("under {IDLE_RSS_TARGET_MB:.0} MB"),
        verdict: if idle_rss < IDLE_RSS_TARGET_MB {
            "meets target"
        } else {
            "ABOVE TARGET"
        }
        .into(),
    });
    rows.push(Row {
        name: "RSS after load (peak)".into(),
        value: format!("{loaded_rss:.1} MB ({peak_rss:.1} MB)"),
        goal: "-".into(),
        verdict: "-".into(),
    });
    println!();

    // Shutdown and consistency -------------------------------------------------------------
    let tail = server.stderr_tail.clone();
    let (code, took) = server.stop();
    println!(
        "== Shutdown: SIGTERM -> exit code {code:?} after {:.2} s",
        took.as_secs_f64()
    );
    let exit_ok = code == Some(0);
    if !exit_ok {
        println!(
            "  server stderr (last lines):\n{}",
            tail.lock().unwrap().join("\n")
        );
    }
    let acknowledged = batch.counters.ok_messages.load(Ordering::Relaxed)
        + track.counters.ok_messages.load(Ordering::Relaxed);
    let stored: i64 =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("SELECT count(*) FROM events", [], |r| r.get(0)))
            .unwrap_or(-1);
    let db_mb = std::fs::metadata(&db)
        .map(|m| m.len() as f64 / 1048576.0)
        .unwrap_or(f64::NAN);
    println!(
        "  events in the database: {stored}; acknowledged with 200: {acknowledged} ({}); database {db_mb:.1} MB",
        if stored >= acknowledged as i64 {
            "none lost"
        } else {
            "ACKNOWLEDGED EVENTS MISSING"
        }
    );
    rows.push(Row {
        name: "SIGTERM exit code".into(),
        value: format!("{code:?}"),
        goal: "Some(0)".into(),
        verdict: if exit_ok { "ok" } else { "FAILED" }.into(),
    });
    if !exit_ok {
        problems.push(format!("ingest server exited with {code:?} on SIGTERM"));
    }
    if stored < acknowledged as i64 {
        problems.push(format!(
            "{stored} events stored, {acknowledged} acknowledged: acknowledged events missing"
        ));
    }
    println!();
}

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
    println!("  binary {}", env!("CARGO_BIN_EXE_journeyd"));
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
        run_ingest(&settings, &runtime, &mut rows, &mut problems);
    }
    if settings.phases.journeys {
        run_journeys(&settings, &runtime, &mut rows, &mut problems);
    }
    if settings.phases.timers || settings.phases.delivery {
        let receiver = runtime.block_on(Receiver::start());
        println!("== Webhook receiver (in this process) on {}", receiver.url);
        println!();
        if settings.phases.timers {
            run_timers(&settings, &runtime, &receiver, &mut rows, &mut problems);
        }
        if settings.phases.delivery {
            run_delivery(&settings, &runtime, &receiver, &mut rows, &mut problems);
        }
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
