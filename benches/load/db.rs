//! Reading the server's database file directly (after a clean shutdown, or read-only beside the
//! running server): b-tree sizes, timer firings; and removing it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Settings;

/// The size of each b-tree of a database (from SQLite's `dbstat`), by name, with its table.
pub struct DbSize {
    pub btrees: Vec<(String, String, u64)>,
    pub file_bytes: u64,
    pub free_bytes: u64,
}

pub fn db_size(db: &Path) -> Result<DbSize, String> {
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
    btrees.sort_by_key(|b| std::cmp::Reverse(b.2));
    Ok(DbSize {
        btrees,
        file_bytes: (page * pages) as u64,
        free_bytes: (page * free) as u64,
    })
}

/// Tables whose rows are the user's data rather than journey state: stored events, profiles,
/// identity links, keys.
pub const USER_DATA_TABLES: [&str; 4] = ["events", "profiles", "identities", "api_keys"];

/// Timer firings of one journey as the database recorded them. The timeout transition carries
/// the timer's due time, not the firing time; the firing transaction's time is the `updated_at`
/// of the instance, which ends in that transaction (every journey timed this way completes when
/// its timer fires). So: each tick's time and how many timers it fired, and each timer's
/// lateness (firing time minus entry time minus the hold).
pub struct TickLog {
    pub ticks: Vec<(i64, u64)>,
    pub lateness_ms: Vec<i64>,
}

impl TickLog {
    pub fn read(db: &Path, journey: &str, hold_ms: i64) -> Result<TickLog, String> {
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
    pub fn full_tick_rate(&self) -> Option<(f64, f64, u64)> {
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

    pub fn lateness(&self, q: f64) -> f64 {
        if self.lateness_ms.is_empty() {
            return f64::NAN;
        }
        let i = ((self.lateness_ms.len() as f64 - 1.0) * q).round() as usize;
        self.lateness_ms[i] as f64
    }
}

/// Removes a database and its WAL and shared-memory files.
pub fn remove_db_files(db: &Path) {
    for ext in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(ext);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// Removes a phase's database, unless `JOURNEYD_BENCH_KEEP=1`.
pub fn remove_db(settings: &Settings, db: &Path) {
    if !settings.keep {
        remove_db_files(db);
    }
}

/// A file's size in MB; `None` if it cannot be read.
pub fn file_mb(path: &Path) -> Option<f64> {
    std::fs::metadata(path)
        .ok()
        .map(|m| m.len() as f64 / 1048576.0)
}
