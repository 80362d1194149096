//! WAL checkpoints: copying committed WAL frames into the database file so the WAL can start
//! over and stays small.
//!
//! The writer never checkpoints inside its commits (`wal_autocheckpoint` is off on its
//! connection). Housekeeping calls [`Store::checkpoint`] on its schedule (every second by
//! default), which works in two steps: passes alongside the writer from a connection of its own
//! (SQLite's PASSIVE mode never blocks the writer) until one pass is short, then a finishing pass
//! on the write connection between two transactions, which copies the few frames written
//! meanwhile. A complete checkpoint lets the next transaction write the WAL from its start again,
//! so under constant load the WAL stays about one schedule interval of writes long, and
//! `journal_size_limit` trims a file that a burst grew. Truncating the WAL (which waits for
//! readers) is the fallback for a WAL that still grew past [`TRUNCATE_BYTES`] because readers
//! kept a checkpoint from finishing.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::{Result, Store, StoreError};

/// The size the WAL file is trimmed back to when it starts over (SQLite's `journal_size_limit`).
/// Above what a second of heavy load writes (about 100 MB here), so that trimming, which stalls
/// the commit that starts the WAL over, stays rare.
pub(crate) const WAL_SIZE_LIMIT: u64 = 128 * 1024 * 1024;

/// A WAL still above this size after a checkpoint that could not finish is truncated.
const TRUNCATE_BYTES: u64 = 2 * WAL_SIZE_LIMIT;

/// A pass alongside the writer this short leaves little for the writer to copy.
const SHORT_PASS: Duration = Duration::from_millis(15);
/// Most passes alongside the writer per checkpoint.
const MAX_PASSES: u32 = 5;

/// What one checkpoint pass found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pass {
    /// Frames in the WAL when it ran.
    frames: i64,
    /// Frames of those now in the database file.
    backfilled: i64,
    /// The WAL file's size afterwards, in bytes.
    wal_bytes: u64,
}

impl Pass {
    fn run(conn: &Connection, db: &Path, mode: &str) -> rusqlite::Result<Pass> {
        let (frames, backfilled) =
            conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            })?;
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let wal_bytes = std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0);
        Ok(Pass {
            frames,
            backfilled,
            wal_bytes,
        })
    }

    /// Every frame of the WAL is in the database file: the WAL can start over.
    fn complete(&self) -> bool {
        self.backfilled >= self.frames
    }
}

impl Store {
    /// Checkpoints the WAL as the module documentation describes; logs what it did at `debug`
    /// (routine) and a truncation at `info`.
    pub(crate) async fn checkpoint(&self) -> Result<()> {
        let started = Instant::now();
        let mut passes = 0;
        let bulk = loop {
            let pass = Instant::now();
            let p = self.checkpoint_alongside().await?;
            passes += 1;
            if pass.elapsed() < SHORT_PASS || passes == MAX_PASSES {
                break p;
            }
        };
        let finish_started = Instant::now();
        let finish = self.checkpoint_on_writer().await?;
        tracing::debug!(
            passes,
            frames = bulk.frames,
            backfilled = bulk.backfilled,
            complete = finish.complete(),
            wal_bytes = finish.wal_bytes,
            took_ms = started.elapsed().as_millis() as u64,
            writer_ms = finish_started.elapsed().as_millis() as u64,
            "wal checkpoint"
        );
        if !finish.complete() && finish.wal_bytes > TRUNCATE_BYTES {
            let frames = self.checkpoint_truncate().await?;
            tracing::info!(wal_bytes = finish.wal_bytes, frames, "wal truncated");
        }
        Ok(())
    }

    /// The bulk of a checkpoint, from a connection of its own alongside the writer.
    async fn checkpoint_alongside(&self) -> Result<Pass> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = inner.checkpointer.lock().unwrap();
            if guard.is_none() {
                let conn = Connection::open(&inner.path)?;
                conn.busy_timeout(Duration::from_secs(5))?;
                *guard = Some(conn);
            }
            let conn = guard.as_ref().expect("opened above");
            Ok(Pass::run(conn, &inner.path, "PASSIVE")?)
        })
        .await
        .expect("checkpoint task panicked")
    }

    /// Finishes a checkpoint on the write connection, between two transactions, so that no frame
    /// is appended while it runs. A reader still on a snapshot from before the last commit keeps
    /// it from finishing; reads are short, so it tries again a few times, briefly.
    async fn checkpoint_on_writer(&self) -> Result<Pass> {
        let path = self.inner.path.clone();
        self.writer()
            .with_connection(move |conn| {
                let mut tries = 0;
                loop {
                    let p = Pass::run(conn, &path, "PASSIVE")?;
                    tries += 1;
                    if p.complete() || tries == 4 {
                        return Ok(p);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .await?
            .map_err(|e: rusqlite::Error| StoreError::from(e))
    }

    /// Checkpoints the WAL and truncates it, on the writer between two transactions, waiting (up
    /// to the busy timeout) for readers on older snapshots. Returns the WAL's size in frames
    /// before the checkpoint.
    async fn checkpoint_truncate(&self) -> Result<i64> {
        self.writer()
            .with_connection(|conn| {
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    r.get::<_, i64>(1)
                })
                .map_err(StoreError::from)
            })
            .await?
    }
}
