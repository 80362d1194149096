//! The store owns the SQLite database: the schema and its migrations, the single writer thread
//! that group-commits queued work, a small pool of read connections, and backups.
//!
//! It is the only module that imports rusqlite; all SQL of the product lives below this folder.
//! Writes go through [`Writer::submit`]: a closure queued to the writer thread, run inside one
//! `BEGIN IMMEDIATE` transaction together with whatever else was queued, and answered only after
//! that transaction has committed. Reads go through [`Store::read`] on a pooled read connection,
//! which in WAL mode never waits for the writer.

mod backup;
mod deliveries;
mod destinations;
mod housekeeping;
mod ingest;
mod journeys;
mod keys;
mod query;
mod read;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use backup::backup_to;
pub use deliveries::{Attempt, DeliveryView, DestinationRow, DueDelivery};
pub use destinations::{DeleteRefused, DestinationView};
pub use housekeeping::{Purged, backup_name, rotate_backups};
pub use ingest::IngestOutcome;
pub use journeys::{Fired, Published};
pub use keys::{Generated, KeySet};
pub use query::{
    InstanceView, JourneyDetail, JourneySummary, Page, ProfileView, StatRows, TOTALS, TimelineItem,
    TransitionRow,
};
pub use writer::{SubmitError, Writer, WriterStats};

use crate::clock::Clock;

/// The error type of store operations: the cases a caller branches on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A row the caller named does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// Anything SQLite reported; the caller can only log it and answer 500.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer journeyd, or is not a journeyd database.
    #[error("{0}")]
    Schema(String),
    /// Filesystem errors around the database file (backups, temp files).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

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

/// Sets the pragmas every connection needs, write or read.
fn configure(conn: &rusqlite::Connection, sync: Sync) -> rusqlite::Result<()> {
    // busy_timeout first: `journeyd backup` and other processes may hold locks briefly, and a
    // connection that gives up at once would turn that into spurious errors.
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
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

/// Opens a connection with the shared pragmas.
fn open_connection(path: &Path, sync: Sync) -> Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    configure(&conn, sync)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// The size the WAL file is trimmed back to when it starts over (SQLite's `journal_size_limit`).
/// Above what a second of heavy load writes (about 100 MB here), so that trimming, which stalls
/// the commit that starts the WAL over, stays rare.
pub const WAL_SIZE_LIMIT: u64 = 128 * 1024 * 1024;

/// The handle the rest of the process holds: cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Writer,
    readers: read::ReadPool,
    clock: Arc<dyn Clock>,
    wake: Arc<Wake>,
    /// The connection housekeeping checkpoints with, opened on first use.
    checkpointer: std::sync::Mutex<Option<rusqlite::Connection>>,
}

/// How the writer wakes the scheduler: `target` is the due time the scheduler sleeps until; a
/// transaction that writes an earlier timer notifies it. A hint only: the timers are in SQLite.
#[derive(Debug)]
pub struct Wake {
    pub target: std::sync::atomic::AtomicI64,
    pub notify: tokio::sync::Notify,
    /// Notified when deliveries are written or made due again, for the delivery dispatcher.
    pub deliveries: tokio::sync::Notify,
    /// Counts writes to the destinations table: the dispatcher reads them again when it moves.
    pub destinations: std::sync::atomic::AtomicU64,
}

impl Default for Wake {
    fn default() -> Wake {
        Wake {
            target: std::sync::atomic::AtomicI64::new(i64::MAX),
            notify: tokio::sync::Notify::new(),
            deliveries: tokio::sync::Notify::new(),
            destinations: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// Settings of the store, with defaults in [`StoreOptions::default`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How many write jobs may wait for the writer before callers are told to come back later.
    pub queue_capacity: usize,
    /// The most jobs one transaction takes: bounds the latency a batch adds to its first caller.
    pub max_batch: usize,
    /// Read connections kept open for queries.
    pub readers: usize,
    /// Most active journey instances per profile, across journeys (SPEC §4).
    pub max_active: usize,
    pub sync: Sync,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            queue_capacity: 4096,
            max_batch: 512,
            readers: 4,
            max_active: crate::engine::DEFAULT_MAX_ACTIVE,
            sync: Sync::Normal,
        }
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path`, applies the schema or its migrations,
    /// and starts the writer thread.
    pub fn open(path: &Path, clock: Arc<dyn Clock>, options: StoreOptions) -> Result<Store> {
        let mut conn = open_connection(path, options.sync)?;
        // The writer never checkpoints inside its commits (that cost it about 15% of its time and
        // made commit latency jumpy): housekeeping checkpoints from a connection of its own, off
        // the writer thread, and truncates the WAL through the writer when it grows large.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // A larger page cache for the writer: the hot parts of the indexes stay in memory.
        conn.pragma_update(None, "cache_size", -65_536)?;
        // When the WAL starts over after a complete checkpoint, a file that a burst grew past this
        // is cut back to it.
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT as i64)?;
        schema::apply(&mut conn)?;
        let wake = Arc::new(Wake::default());
        let live = journeys::Live::new(options.max_active, wake.clone());
        let writer = Writer::start(conn, clock.clone(), &options, live)?;
        let readers = read::ReadPool::new(path.to_path_buf(), options.readers);
        Ok(Store {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writer,
                readers,
                clock,
                wake,
                checkpointer: std::sync::Mutex::new(None),
            }),
        })
    }

    /// Copies committed WAL frames into the database file from a connection of its own, alongside
    /// the writer (SQLite's PASSIVE checkpoint never blocks it). This is the bulk of a checkpoint's
    /// work; [`Store::checkpoint_finish`] then copies the little the writer added meanwhile.
    pub async fn checkpoint_passive(&self) -> Result<Checkpointed> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = inner.checkpointer.lock().unwrap();
            if guard.is_none() {
                let conn = rusqlite::Connection::open(&inner.path)?;
                conn.busy_timeout(std::time::Duration::from_secs(5))?;
                *guard = Some(conn);
            }
            let conn = guard.as_ref().expect("opened above");
            Ok(Checkpointed::run(conn, &inner.path, "PASSIVE")?)
        })
        .await
        .expect("checkpoint task panicked")
    }

    /// Finishes a checkpoint on the write connection, between two transactions, so that no frame
    /// is appended while it runs. When it backfills the whole WAL (no reader holds an older
    /// snapshot), the next transaction writes the WAL from its start again instead of growing it:
    /// under constant load that is what keeps the WAL small, and `journal_size_limit` trims a file
    /// a burst made larger. Quick after [`Store::checkpoint_passive`]: only the frames written
    /// since are left to copy.
    pub async fn checkpoint_finish(&self) -> std::result::Result<Checkpointed, SubmitError> {
        let path = self.inner.path.clone();
        self.writer()
            .with_connection(move |conn| {
                // A reader still on a snapshot from before the last commit keeps the checkpoint
                // from finishing; reads are short, so try again a few times, briefly.
                let mut tries = 0;
                loop {
                    let c = Checkpointed::run(conn, &path, "PASSIVE")?;
                    tries += 1;
                    if c.complete() || tries == 4 {
                        return Ok(c);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            })
            .await?
            .map_err(|e: rusqlite::Error| SubmitError::Store(e.into()))
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn writer(&self) -> &Writer {
        &self.inner.writer
    }

    pub fn wake(&self) -> &Arc<Wake> {
        &self.inner.wake
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Runs `f` on a pooled read connection on the blocking thread pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.readers.with(f))
            .await
            .expect("read task panicked")
    }
}

/// What a WAL checkpoint found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpointed {
    /// Frames in the WAL when it ran.
    pub frames: i64,
    /// Frames of those now in the database file.
    pub backfilled: i64,
    /// The WAL file's size afterwards, in bytes.
    pub wal_bytes: u64,
}

impl Checkpointed {
    fn run(conn: &rusqlite::Connection, db: &Path, mode: &str) -> rusqlite::Result<Checkpointed> {
        let (frames, backfilled) =
            conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            })?;
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let wal_bytes = std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0);
        Ok(Checkpointed {
            frames,
            backfilled,
            wal_bytes,
        })
    }

    /// Every frame of the WAL is in the database file: the WAL can start over.
    pub fn complete(&self) -> bool {
        self.backfilled >= self.frames
    }
}

/// Hashes a secret (admin token, write key) for storage and lookup.
pub fn hash_secret(secret: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
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
