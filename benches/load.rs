//! Load benchmark of `journeyd`: `cargo bench --bench load`.
//!
//! Phases, each run for `JOURNEYD_BENCH_SECS` seconds (default 5):
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
}

impl Server {
    fn start(db: &Path, sync: &str) -> Server {
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
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
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
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
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

fn main() {
    let settings = Settings::from_env();
    std::fs::create_dir_all(&settings.dir).expect("creating the bench directory");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows: Vec<Row> = Vec::new();

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
    println!("  binary {}", env!("CARGO_BIN_EXE_journeyd"));
    println!("  data dir {}", settings.dir.display());
    println!();

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
    println!();

    // Summary ------------------------------------------------------------------------------
    println!("== Summary");
    let w0 = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.value.len()).max().unwrap_or(0);
    let w2 = rows.iter().map(|r| r.goal.len()).max().unwrap_or(0);
    for r in &rows {
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
    if !exit_ok || stored < acknowledged as i64 {
        std::process::exit(1);
    }
}
