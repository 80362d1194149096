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

// ---------------------------------------------------------------------------------------------
// B-tree statistics of a database copy

/// One b-tree of a database (a table or an index), from SQLite's `dbstat`.
#[derive(Clone, Debug, Default)]
pub struct Btree {
    pub name: String,
    /// The table it belongs to (itself for a table).
    pub table: String,
    /// Entries: rows of a table, keys of an index.
    pub rows: u64,
    /// Pages, overflow pages included.
    pub pages: u64,
    /// Bytes of those pages.
    pub bytes: u64,
    /// Bytes of the records themselves (without page headers, cell pointers and free space).
    pub payload: u64,
}

/// Every b-tree of a database file, largest first, with the file's page size, pages and free
/// pages. Entries are counted from the cells of the pages: the leaf cells of a rowid table (its
/// interior cells are only dividers), every cell of an index or a `WITHOUT ROWID` table.
pub struct BtreeStats {
    pub btrees: Vec<Btree>,
    pub page_size: u64,
    pub page_count: u64,
    pub freelist: u64,
}

impl BtreeStats {
    pub fn read(db: &Path) -> Result<BtreeStats, String> {
        let conn =
            rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(|e| e.to_string())?;
        // name -> (table, whether its b-tree is keyed by rowid)
        let mut schema: BTreeMap<String, (String, bool)> = BTreeMap::new();
        schema.insert("sqlite_schema".into(), ("sqlite_schema".into(), true));
        {
            let mut stmt = conn
                .prepare(
                    "SELECT name, tbl_name, type = 'table' AND sql NOT LIKE '%WITHOUT ROWID%'
                     FROM sqlite_schema WHERE type IN ('table', 'index')",
                )
                .map_err(|e| e.to_string())?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, bool>(2)?,
                    ))
                })
                .map_err(|e| e.to_string())?;
            for r in rows.flatten() {
                schema.insert(r.0, (r.1, r.2));
            }
        }
        let mut btrees = Vec::new();
        {
            let mut stmt = conn
                .prepare(
                    "SELECT name, count(*), sum(pgsize), sum(payload),
                            sum(CASE WHEN pagetype = 'leaf' THEN ncell ELSE 0 END),
                            sum(CASE WHEN pagetype IN ('leaf', 'internal') THEN ncell ELSE 0 END)
                     FROM dbstat GROUP BY name",
                )
                .map_err(|e| format!("dbstat: {e}"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                })
                .map_err(|e| e.to_string())?;
            for r in rows {
                let (name, pages, bytes, payload, leaf_cells, cells) =
                    r.map_err(|e| e.to_string())?;
                let (table, rowid) = schema
                    .get(&name)
                    .cloned()
                    .unwrap_or_else(|| (name.clone(), false));
                btrees.push(Btree {
                    name,
                    table,
                    rows: if rowid { leaf_cells } else { cells } as u64,
                    pages: pages as u64,
                    bytes: bytes as u64,
                    payload: payload as u64,
                });
            }
        }
        btrees.sort_by_key(|b| std::cmp::Reverse(b.bytes));
        let pragma = |name: &str| -> Result<u64, String> {
            conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
                .map(|v| v as u64)
                .map_err(|e| e.to_string())
        };
        Ok(BtreeStats {
            btrees,
            page_size: pragma("page_size")?,
            page_count: pragma("page_count")?,
            freelist: pragma("freelist_count")?,
        })
    }

    /// Bytes of the pages in use (the file less its free pages).
    pub fn used_bytes(&self) -> u64 {
        (self.page_count - self.freelist) * self.page_size
    }

    pub fn get(&self, name: &str) -> Option<&Btree> {
        self.btrees.iter().find(|b| b.name == name)
    }
}

// ---------------------------------------------------------------------------------------------
// The WAL index of a running server

/// What the `-shm` file (the WAL index) of a database in WAL mode says now: its header (the last
/// committed frame, the salt that changes whenever the WAL starts over, the page size) and how
/// many frames checkpoints have copied back into the database file. Read without locks, as two
/// header copies that must agree (SQLite writes them one after the other).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalIndex {
    pub max_frame: u32,
    pub backfilled: u32,
    pub salt: (u32, u32),
    pub page_size: u32,
}

impl WalIndex {
    pub fn read(db: &Path) -> Option<WalIndex> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(with_ext(db, "-shm")).ok()?;
        let mut buf = [0u8; 136];
        let u32_at = |b: &[u8], at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
        for _ in 0..100 {
            file.read_exact_at(&mut buf, 0).ok()?;
            // Two copies of the 48-byte header (WalIndexHdr), then WalCkptInfo (nBackfill first).
            if buf[..48] != buf[48..96] || buf[12] == 0 {
                std::thread::yield_now();
                continue;
            }
            let size = u16::from_ne_bytes([buf[14], buf[15]]) as u32;
            return Some(WalIndex {
                max_frame: u32_at(&buf, 16),
                backfilled: u32_at(&buf, 96),
                salt: (u32_at(&buf, 32), u32_at(&buf, 36)),
                page_size: if size == 1 { 65_536 } else { size },
            });
        }
        None
    }

    /// Whether every committed frame has been copied into the database file.
    pub fn checkpointed(&self) -> bool {
        self.backfilled >= self.max_frame
    }
}

fn with_ext(db: &Path, ext: &str) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(ext);
    PathBuf::from(p)
}

/// Waits until every frame of the WAL has been checkpointed (the server's checkpoints run every
/// second by default); the time it took, or `None` after `timeout`.
pub fn wait_checkpointed(db: &Path, timeout: Duration) -> Option<Duration> {
    let t0 = std::time::Instant::now();
    loop {
        if WalIndex::read(db).is_some_and(|w| w.checkpointed()) {
            return Some(t0.elapsed());
        }
        if t0.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Counts the frames appended to a server's WAL while it runs, by reading the WAL index every
/// millisecond: the growth of the last committed frame, and each time the WAL starts over (a new
/// salt) the frames of the new round. Frames appended between the last reading and a restart
/// are missed (at most about a millisecond's worth, once per restart).
pub struct WalFrames {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<WalCount>,
}

/// What [`WalFrames`] counted.
#[derive(Clone, Copy, Debug, Default)]
pub struct WalCount {
    pub frames: u64,
    /// Times the WAL started over.
    pub restarts: u64,
    pub page_size: u32,
    /// Readings of the WAL index.
    pub readings: u64,
}

impl WalCount {
    /// Bytes of WAL those frames are (each a 24-byte header and a page).
    pub fn bytes(&self) -> u64 {
        self.frames * (self.page_size as u64 + 24)
    }
}

impl WalFrames {
    pub fn start(db: &Path) -> WalFrames {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (db, flag) = (db.to_path_buf(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut count = WalCount::default();
            let mut last = WalIndex::read(&db);
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
                let Some(now) = WalIndex::read(&db) else {
                    continue;
                };
                count.readings += 1;
                count.page_size = now.page_size;
                match last {
                    Some(l) if l.salt == now.salt => {
                        count.frames += now.max_frame.saturating_sub(l.max_frame) as u64
                    }
                    Some(_) => {
                        count.restarts += 1;
                        count.frames += now.max_frame as u64;
                    }
                    None => {}
                }
                last = Some(now);
            }
            count
        });
        WalFrames { stop, thread }
    }

    pub fn stop(self) -> WalCount {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Deliveries still `pending` in the database (read-only, beside the running server).
pub fn pending_deliveries(db: &Path) -> Result<u64, String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| e.to_string())?;
    conn.busy_timeout(Duration::from_secs(5)).ok();
    conn.query_row(
        "SELECT count(*) FROM deliveries WHERE status = 'pending'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as u64)
    .map_err(|e| e.to_string())
}
