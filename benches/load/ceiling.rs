//! Phase 1's plain SQLite loops: the machine's ceiling for durable inserts into the product's
//! `events` table, and the fsync cost of this disk. The schema and the connection set-up are the
//! product's own (`journeyd::bench_support`), so the ceiling runs on what the server runs on.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use journeyd::bench_support::{SCHEMA, Sync, connect};

use crate::Settings;
use crate::db::remove_db_files;
use crate::messages::{Rng, iso_now, write_track};
use crate::sys::{describe_io, proc_io};

/// A fresh database at `path` with the product's connection set-up.
fn fresh(path: &Path, sync: Sync) -> rusqlite::Connection {
    remove_db_files(path);
    connect(path, sync).expect("opening the ceiling database")
}

pub struct CeilingResult {
    pub rows: u64,
    pub commits: u64,
    pub elapsed: Duration,
    /// Time of each commit in microseconds, sorted.
    pub commit_times: Vec<u32>,
    pub body_bytes: u64,
    /// What the loop wrote, as [`describe_io`] puts it.
    pub io: String,
}

impl CeilingResult {
    pub fn rows_per_sec(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64()
    }
}

/// Inserts rows in transactions of `per_tx` rows for `duration`, into a fresh database with the
/// product's schema. With `product_shaped`, each row also runs the statements the product's
/// ingest runs per message, each batch inside a savepoint.
pub fn ceiling(
    path: &Path,
    settings: &Settings,
    duration: Duration,
    per_tx: usize,
    product_shaped: bool,
) -> CeilingResult {
    let mut conn = fresh(path, settings.sqlite_sync());
    conn.execute_batch(SCHEMA).unwrap();

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
                // (The product's messageId check reads memory, not SQLite: `store/dedup.rs`.)
                if product_shaped {
                    let _: Option<String> = rusqlite::OptionalExtension::optional(
                        c.prepare_cached("SELECT profile_key FROM identities WHERE id = ?1")
                            .unwrap()
                            .query_row([&profile_key], |r| r.get(0)),
                    )
                    .unwrap();
                    // As the product's upsert: a userId's profile is not anonymous.
                    c.prepare_cached(
                        "INSERT INTO profiles (profile_key, anonymous, traits, created_at, updated_at) VALUES (?1, ?2, '{}', ?3, ?3)
                         ON CONFLICT (profile_key) DO NOTHING",
                    )
                    .unwrap()
                    .execute(rusqlite::params![profile_key, false, now])
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
                // As the product: the event's row in the profile's log (schema.sql).
                c.prepare_cached(
                    "INSERT INTO profile_log (profile_key, seq, instance_id) VALUES (?1, ?2, NULL)",
                )
                .unwrap()
                .execute(rusqlite::params![profile_key, seq])
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
    commit_times.sort_unstable();
    CeilingResult {
        rows,
        commits,
        elapsed,
        commit_times,
        body_bytes,
        io,
    }
}

/// Times bare WAL commits of one tiny row with `synchronous=FULL`: the fsync cost of this disk.
/// Microseconds per commit, sorted.
pub fn fsync_probe(path: &Path, duration: Duration) -> Vec<u32> {
    let conn = fresh(path, Sync::Full);
    conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
    let mut times = Vec::new();
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        let t0 = Instant::now();
        conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
        times.push(t0.elapsed().as_micros() as u32);
    }
    times.sort_unstable();
    times
}
