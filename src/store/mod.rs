//! The store owns the SQLite database: the schema and its migrations, the single writer thread
//! that group-commits queued work, a small pool of read connections, and backups.
//!
//! It is the only module that imports rusqlite; all SQL of the product lives below this folder.
//! Writes go through [`Writer::submit`]: a closure queued to the writer thread, run inside one
//! `BEGIN IMMEDIATE` transaction together with whatever else was queued, and answered only after
//! that transaction has committed. Reads go through [`Store::read`] on a pooled read connection,
//! which in WAL mode never waits for the writer.

mod backtest;
mod backup;
mod catalog;
mod checkpoint;
mod codec;
mod dedup;
mod deliveries;
mod destinations;
mod erasure;
mod files;
mod housekeeping;
mod ingest;
mod journeys;
mod keys;
mod profiles;
mod query;
mod read;
mod schema;
mod stats;
mod stream;
mod timers;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) use backtest::StoredEvents;
pub(crate) use backup::{
    Replace, Restored, backup_name, backup_to, partial_name, remove_partials, restore,
    rotate_backups,
};
pub use codec::inspect;
pub(crate) use deliveries::{Attempt, DeliveryView, DestinationRow, DueDelivery};
pub(crate) use destinations::DestinationView;
pub(crate) use keys::{KeySet, KeyView};
pub(crate) use query::{
    InstanceFilter, InstanceView, JourneyDetail, JourneySummary, Page, ProfileView, TimelineItem,
    TransitionRow,
};
pub use schema::SCHEMA;
pub(crate) use stream::{DeliveryOutcome, StreamEvent};
pub(crate) use writer::Writer;

use crate::clock::Clock;

/// The error type of store operations: the cases a caller branches on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A row the caller named does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with what is stored; nothing was changed.
    #[error("{0}")]
    Refused(Refusal),
    /// The work could not be done now and may succeed later: the caller should ask its client
    /// to retry (SDKs retry a `503` with `Retry-After`).
    #[error("{0}")]
    Unavailable(Unavailable),
    /// A stored value does not read back (a JSON column that does not parse, an unknown
    /// status): the database was edited or damaged. Reported, never papered over with a default.
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    /// The database was written by a newer journeyd, or is not a journeyd database.
    #[error("{0}")]
    Schema(String),
    /// Another process holds the database file (SPEC invariant 8).
    #[error("{0}")]
    Locked(String),
    /// The database file is damaged (`PRAGMA quick_check` found problems).
    #[error("{0}")]
    Damaged(String),
    /// A transaction that ran did not commit, for a reason that is not transient.
    #[error("commit failed: {0}")]
    CommitFailed(String),
    /// Anything else SQLite reported.
    #[error("database: {0}")]
    Sqlite(rusqlite::Error),
    /// Filesystem errors around the database file (backups, temp files).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Why the store cannot take work now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// Too much work is queued for the writer.
    #[error("the write queue is full")]
    QueueFull,
    /// The writer has stopped (shutdown in progress).
    #[error("the writer has stopped")]
    Stopped,
    /// Another connection or process holds a lock on the database.
    #[error("the database is busy: {0}")]
    Busy(String),
    /// The disk is full, the file is read-only, or an I/O error occurred.
    #[error("the database cannot be written: {0}")]
    Storage(String),
}

/// A refusal by what is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Send steps naming destinations that do not exist, as (JSON path, destination id).
    #[error("unknown destinations")]
    UnknownDestinations(Vec<(String, String)>),
    /// The destination is used by these journeys (not archived).
    #[error("destination is in use by journeys: {}", .0.join(", "))]
    InUse(Vec<String>),
    /// A backup may not be written there.
    #[error("{0}")]
    Destination(String),
    /// The last admin token cannot be revoked: nobody could administer the server after.
    #[error("the last admin token cannot be revoked")]
    LastAdminToken,
    /// The delivery's destination was deleted: a retry could only fail.
    #[error("the destination of this delivery was deleted")]
    DestinationDeleted,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        use rusqlite::ErrorCode as C;
        match e.sqlite_error_code() {
            Some(C::DatabaseBusy | C::DatabaseLocked) => {
                StoreError::Unavailable(Unavailable::Busy(e.to_string()))
            }
            Some(C::DiskFull | C::ReadOnly | C::SystemIoFailure | C::CannotOpen) => {
                StoreError::Unavailable(Unavailable::Storage(e.to_string()))
            }
            _ => StoreError::Sqlite(e),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Parses a JSON column, or names the damage: `what` says which row it is, for the log.
fn json_column<T: serde::de::DeserializeOwned>(
    text: &str,
    what: impl FnOnce() -> String,
) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{}: {e}", what())))
}

/// Parses a JSON object column.
fn object_column(
    text: &str,
    what: impl FnOnce() -> String,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    json_column(text, what)
}

/// When a commit counts as durable (SQLite's `synchronous` in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sync {
    /// A commit is durable once written to the OS: it survives the process being killed at any
    /// moment (SPEC invariant 1), but an OS crash or power loss can lose the last moments of
    /// commits (the database itself stays consistent). The WAL is fsynced at each checkpoint.
    #[default]
    Normal,
    /// Every commit fsyncs the WAL before callers are answered: also survives power loss, at the
    /// cost of one fsync per group commit.
    Full,
}

impl Sync {
    fn pragma(self) -> &'static str {
        match self {
            Sync::Normal => "NORMAL",
            Sync::Full => "FULL",
        }
    }
}

/// The page size of files this version creates; older files keep theirs.
pub(crate) const PAGE_SIZE: i64 = 2048;

/// Sets the pragmas every connection needs, write or read.
fn configure(conn: &rusqlite::Connection, sync: Sync) -> rusqlite::Result<()> {
    // busy_timeout first: `journeyd backup` and other processes may hold locks briefly, and a
    // connection that gives up at once would turn that into spurious errors.
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // The page size of a new file (a no-op on one that exists). Every commit writes each page it
    // dirtied whole to the WAL, and an event dirties one page at a random place in each of
    // several indexes, so smaller pages write fewer bytes per event: 2 KiB pages wrote about a
    // third less than the default 4 KiB and kept slightly less; 1 KiB pages wrote fewer bytes
    // still but kept far more (BENCHMARKS.md, "Storage"). It must come before `journal_mode`,
    // which creates the file.
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    // WAL lets readers (admin API, backups) run while the writer commits, and makes a commit one
    // sequential append instead of a rewrite of the pages in place.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // NORMAL (the default) makes a commit durable against the process dying, which is the
    // contract; FULL adds an fsync per commit for power loss. Group commit amortises that fsync
    // over every request in the batch. See [`Sync`].
    conn.pragma_update(None, "synchronous", sync.pragma())?;
    // Foreign keys are off by default in SQLite; the schema relies on none, but say so explicitly.
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    plan_stability(conn)?;
    // Keep temporary b-trees (sorts for list queries) in memory rather than in temp files.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // 16 MiB of page cache per connection (negative means KiB): the hot part of the indexes stays resident.
    conn.pragma_update(None, "cache_size", -16_384)?;
    Ok(())
}

/// Turns on SQLite's query planner stability guarantee. Without it, a statement whose bound
/// parameter is compared with a partial index's literal (`profile_key = ?1` against
/// `WHERE state = 'active'`) or used as a `LIMIT` is marked to be planned again for every new
/// binding, so a cached statement was parsed and planned anew on each use: every profile load,
/// every look at the outbox. The schema's partial indexes are all usable from literals in the
/// queries themselves, so nothing is lost.
fn plan_stability(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// Refuses a damaged database before anything reads or writes it (SPEC §9).
fn quick_check(conn: &rusqlite::Connection, path: &Path) -> Result<()> {
    match damage(conn) {
        None => Ok(()),
        Some(found) => Err(damaged_message(path, &found)),
    }
}

/// What `PRAGMA quick_check` finds wrong with a database (the first 20 problems, joined), or
/// `None` when it is sound.
fn damage(conn: &rusqlite::Connection) -> Option<String> {
    let found: Vec<String> = conn
        .prepare("PRAGMA quick_check(20)")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .unwrap_or_else(|e| vec![e.to_string()]);
    (found != ["ok"]).then(|| found.join("; "))
}

/// An error opening the database that means the file is not a sound database.
fn damaged(e: StoreError, path: &Path) -> StoreError {
    use rusqlite::ErrorCode as C;
    match &e {
        StoreError::Sqlite(s)
            if matches!(
                s.sqlite_error_code(),
                Some(C::NotADatabase | C::DatabaseCorrupt)
            ) =>
        {
            damaged_message(path, &s.to_string())
        }
        _ => e,
    }
}

fn damaged_message(path: &Path, found: &str) -> StoreError {
    StoreError::Damaged(format!(
        "{} is damaged ({}). Stop here and restore the newest good backup: \
         `journeyd restore BACKUP --db {}` (or copy the backup over the file while journeyd is stopped)",
        path.display(),
        found,
        path.display()
    ))
}

/// Opens a connection configured as every connection of the product is (the benchmark's ceiling
/// phase measures plain SQLite with these same settings, through [`crate::bench_support`]).
pub fn connect(path: &Path, sync: Sync) -> Result<rusqlite::Connection> {
    open_connection(path, sync)
}

/// Opens a connection with the shared pragmas.
fn open_connection(path: &Path, sync: Sync) -> Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    configure(&conn, sync)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// How long `/healthz` waits for its write before it says the database is not writable.
const HEALTH_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The handle the rest of the process holds: cheap to clone.
#[derive(Clone)]
pub(crate) struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Held while the store is open: no other process serves this file meanwhile.
    _lock: files::ProcessLock,
    writer: Writer,
    readers: read::ReadPool,
    clock: Arc<dyn Clock>,
    wake: Arc<Wake>,
    /// The zstd dictionaries of stored JSON (see `codec.rs`).
    dictionaries: Arc<codec::Dictionaries>,
    /// The connection housekeeping checkpoints with, opened on first use.
    checkpointer: std::sync::Mutex<Option<rusqlite::Connection>>,
}

/// How the writer wakes the tasks that sleep until there is work: hints only, since the timers
/// and deliveries themselves are in SQLite. The writer notifies after a commit, so a woken task's
/// next read sees what woke it.
#[derive(Debug)]
pub(crate) struct Wake {
    /// The due time the scheduler sleeps until; a commit that writes an earlier timer notifies it.
    pub(crate) target: std::sync::atomic::AtomicI64,
    pub(crate) timers: tokio::sync::Notify,
    /// Notified when deliveries are written or made due again, for the delivery dispatcher.
    pub(crate) deliveries: tokio::sync::Notify,
    /// Counts commits that changed the destinations table: the dispatcher reads them again when
    /// it moves.
    pub(crate) destinations: std::sync::atomic::AtomicU64,
    /// Counts commits that took pending deliveries out of the outbox other than by recording an
    /// attempt (forgetting a person): the dispatcher drops the rows it read ahead when it moves.
    pub(crate) removed: std::sync::atomic::AtomicU64,
    /// Committed transitions and delivery outcomes, for listeners.
    pub(crate) events: stream::Events,
}

impl Default for Wake {
    fn default() -> Wake {
        Wake {
            target: std::sync::atomic::AtomicI64::new(i64::MAX),
            timers: tokio::sync::Notify::new(),
            deliveries: tokio::sync::Notify::new(),
            destinations: std::sync::atomic::AtomicU64::new(0),
            removed: std::sync::atomic::AtomicU64::new(0),
            events: stream::Events::default(),
        }
    }
}

/// Settings of the store, with defaults in [`StoreOptions::default`].
#[derive(Debug, Clone)]
pub(crate) struct StoreOptions {
    /// How many write jobs may wait for the writer before callers are told to come back later.
    pub(crate) queue_capacity: usize,
    /// The most jobs one transaction takes: bounds the latency a batch adds to its first caller.
    pub(crate) max_batch: usize,
    /// Read connections kept open for queries.
    pub(crate) readers: usize,
    /// Most active journey instances per profile, across journeys (SPEC §4).
    pub(crate) max_active: usize,
    pub(crate) sync: Sync,
    /// How many message ids the writer holds in memory before it writes them as a run.
    pub(crate) dedup_run_ids: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            queue_capacity: 4096,
            max_batch: 512,
            readers: 4,
            max_active: crate::engine::DEFAULT_MAX_ACTIVE,
            sync: Sync::Normal,
            dedup_run_ids: dedup::RUN_IDS,
        }
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path`, applies the schema or its migrations,
    /// and starts the writer thread.
    pub(crate) fn open(path: &Path, clock: Arc<dyn Clock>, options: StoreOptions) -> Result<Store> {
        let lock = files::ProcessLock::acquire(path)?;
        files::create_private(path)?;
        let mut conn = open_connection(path, options.sync).map_err(|e| damaged(e, path))?;
        // A damaged file is refused before anything writes it (SPEC §9). With nothing to migrate,
        // nothing writes until the store is returned, so the check runs on a connection of its
        // own while the writer's thread reads its state: a restart takes the longer of the check
        // (it reads every page) and that loading (the message ids of the last day), not their
        // sum. Before a migration it runs first.
        let current = schema::is_current(&conn).map_err(|e| damaged(e, path))?;
        if !current {
            quick_check(&conn, path)?;
        }
        let prepared = (|| -> Result<_> {
            // The writer never checkpoints inside its commits (that cost it about 15% of its time
            // and made commit latency jumpy): see `checkpoint.rs`.
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
            // A larger page cache for the writer: the hot parts of the indexes stay in memory.
            // 60 MiB of 2 KiB pages take, with each page's headers (about 300 bytes), what 64 MiB
            // of 4 KiB pages took before issue 15 (about 72 MB).
            conn.pragma_update(None, "cache_size", -61_440)?;
            // When the WAL starts over after a complete checkpoint, a file that a burst grew past
            // this is cut back to it.
            conn.pragma_update(
                None,
                "journal_size_limit",
                checkpoint::WAL_SIZE_LIMIT as i64,
            )?;
            schema::apply(&mut conn)?;
            // Databases made before files were private, and their WAL and shared memory.
            for suffix in ["", "-wal", "-shm"] {
                files::make_private(&files::with_suffix(path, suffix))?;
            }
            let dictionaries = codec::Dictionaries::load(&conn)?;
            codec::install(&conn, dictionaries.clone())?;
            let wake = Arc::new(Wake::default());
            let starting = Writer::start(conn, clock.clone(), &options, wake.clone())?;
            Ok((starting, dictionaries, wake))
        })();
        if current {
            let checked = open_connection(path, options.sync)
                .map_err(|e| damaged(e, path))
                .and_then(|conn| {
                    // The check reads each page once: a large cache only slows it (about 10 %
                    // with 16 MiB against 100 pages).
                    conn.pragma_update(None, "cache_size", 100)?;
                    quick_check(&conn, path)
                });
            // Damage found is the error, whatever else failed meanwhile or the writer made of
            // the file.
            if let Err(e) = checked {
                if let Ok((starting, ..)) = prepared {
                    drop(starting.ready());
                }
                return Err(e);
            }
        }
        let (starting, dictionaries, wake) = prepared?;
        let writer = starting.ready()?;
        let readers =
            read::ReadPool::new(path.to_path_buf(), options.readers, dictionaries.clone());
        Ok(Store {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                _lock: lock,
                writer,
                readers,
                clock,
                wake,
                dictionaries,
                checkpointer: std::sync::Mutex::new(None),
            }),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.inner.path
    }

    pub(crate) fn writer(&self) -> &Writer {
        &self.inner.writer
    }

    pub(crate) fn wake(&self) -> &Arc<Wake> {
        &self.inner.wake
    }

    pub(crate) fn dictionaries(&self) -> &Arc<codec::Dictionaries> {
        &self.inner.dictionaries
    }

    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Runs `f` on a pooled read connection on the blocking thread pool.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.readers.with(f))
            .await
            .expect("read task panicked")
    }

    /// Whether the database takes writes (SPEC §6 `/healthz`): a commit succeeded moments ago,
    /// or a real write to the file, through the writer's queue like real work, succeeds now.
    pub(crate) async fn health(&self) -> Result<()> {
        if self
            .writer()
            .committed_within(std::time::Duration::from_secs(1))
        {
            return Ok(());
        }
        let write = self.writer().submit_wait(|ctx| {
            ctx.conn
                .prepare_cached(
                    "INSERT INTO health (id, checked_at) VALUES (1, ?1)
                     ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
                )?
                .execute([ctx.now])?;
            Ok(())
        });
        // A stalled disk (or a long transaction ahead in the queue) must not stall the answer.
        match tokio::time::timeout(HEALTH_WRITE_TIMEOUT, write).await {
            Ok(done) => done,
            Err(_) => Err(StoreError::Unavailable(Unavailable::Storage(format!(
                "no write reached the database within {} s",
                HEALTH_WRITE_TIMEOUT.as_secs()
            )))),
        }
    }
}

/// Hashes a secret (admin token, write key) for storage and lookup.
pub(crate) fn hash_secret(secret: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh database path for a store test: `<tmp>/journeyd-<name>-<pid>/j.db`.
#[cfg(test)]
fn temp_db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("journeyd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("j.db")
}

/// Ingests one message received at `at`, in a batch of its own, as a store test's client would.
#[cfg(test)]
async fn send(store: &Store, at: i64, message: serde_json::Value) {
    use crate::ingest::{Endpoint, Parsed};
    let body = serde_json::to_vec(&serde_json::json!({"batch": [message]})).unwrap();
    let mut ids = || uuid::Uuid::new_v4().to_string();
    let (messages, _) = Parsed::new(Endpoint::Batch, &body)
        .unwrap()
        .messages(at, &mut ids)
        .unwrap();
    store.ingest(messages).await.unwrap();
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use super::*;

    /// Cached statements of the hot paths are planned once, not again for every binding.
    #[test]
    fn cached_statements_are_not_planned_again_per_binding() {
        let dir = std::env::temp_dir().join(format!("journeyd-qpsg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut conn = open_connection(&dir.join("j.db"), Sync::Normal).unwrap();
        schema::apply(&mut conn).unwrap();
        let hot = [
            // A bound value against a partial index's literal (`state = 'active'`).
            "SELECT instance_id FROM instances WHERE profile_key = ?1 AND state = 'active' ORDER BY instance_id",
            // A bound LIMIT.
            "SELECT instance_id FROM instances WHERE due_at IS NOT NULL AND due_at <= ?1 ORDER BY due_at LIMIT ?2",
            "SELECT delivery_id FROM deliveries WHERE status = 'pending' AND destination_id = ?1 ORDER BY next_attempt_at LIMIT ?2",
        ];
        for sql in hot {
            let mut reprepared = 0;
            for n in 0..10i64 {
                let mut stmt = conn.prepare_cached(sql).unwrap();
                let key = format!("k{n}");
                let params: Vec<&dyn rusqlite::ToSql> = if sql.contains("?2") {
                    if sql.contains("due_at") {
                        vec![&n, &n]
                    } else {
                        vec![&key, &n]
                    }
                } else {
                    vec![&key]
                };
                let mut rows = stmt.query(params.as_slice()).unwrap();
                while rows.next().unwrap().is_some() {}
                drop(rows);
                reprepared = stmt.get_status(StatementStatus::RePrepare);
            }
            assert_eq!(reprepared, 0, "planned again per binding: {sql}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
