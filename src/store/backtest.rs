//! Reading stored events for a backtest (SPEC §6.8): a read-only connection of its own on the
//! database file, one read transaction (a snapshot) for the whole run, so it never holds the
//! writer and may run beside `serve`, even from another process (`journeyd backtest`).

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde_json::{Map, Value};

use super::{Result, StoreError, object_column};
use crate::sim::Replayed;

/// The stored events of a period, oldest first (commit order).
pub(crate) struct StoredEvents {
    conn: Connection,
    /// The first event of the period, by `seq`.
    first: i64,
}

impl StoredEvents {
    /// Opens the database at `db` read-only and finds the first event received at or after
    /// `since`.
    pub(crate) fn open(db: &Path, since: i64) -> Result<StoredEvents> {
        if !db.exists() {
            return Err(StoreError::NotFound(format!(
                "database \"{}\"",
                db.display()
            )));
        }
        let conn = Connection::open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        super::plan_stability(&conn)?;
        conn.pragma_update(None, "cache_size", -65_536)?;
        // One snapshot for the whole run, with the dictionaries its events were stored with.
        conn.execute_batch("BEGIN")?;
        super::codec::install(&conn, super::codec::Dictionaries::load(&conn)?)?;
        let first = first_since(&conn, since)?;
        Ok(StoredEvents { conn, first })
    }

    /// The frequency caps of the destinations, as of the snapshot.
    pub(crate) fn caps(&self) -> Result<HashMap<String, crate::delivery::Cap>> {
        super::destinations::caps(&self.conn)
    }

    /// How many events the period holds.
    pub(crate) fn count(&self) -> Result<u64> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM events WHERE seq >= ?1",
            [self.first],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// Hands each event to `visit`, resolved to the profile it belongs to now.
    pub(crate) fn for_each(&self, mut visit: impl FnMut(Replayed)) -> Result<()> {
        let mut profiles: HashMap<String, String> = HashMap::new();
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut resolve = self
            .conn
            .prepare("SELECT profile_key FROM identities WHERE id = ?1")?;
        let mut profile = self
            .conn
            .prepare("SELECT anonymous, traits FROM profiles WHERE profile_key = ?1")?;
        let mut stmt = self.conn.prepare(
            "SELECT profile_key, type, event, received_at, jd_text(body) FROM events WHERE seq >= ?1 ORDER BY seq",
        )?;
        let mut rows = stmt.query([self.first])?;
        while let Some(r) = rows.next()? {
            let stored_key: String = r.get(0)?;
            let key = match profiles.get(&stored_key) {
                Some(k) => k.clone(),
                None => {
                    let linked: Option<String> =
                        resolve.query_row([&stored_key], |r| r.get(0)).optional()?;
                    let key = linked.unwrap_or_else(|| stored_key.clone());
                    profiles.insert(stored_key, key.clone());
                    key
                }
            };
            let now = if seen.insert(key.clone()) {
                let row: Option<(bool, String)> = profile
                    .query_row([&key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                Some(match row {
                    Some((anonymous, traits)) => (
                        anonymous,
                        object_column(&traits, || format!("traits of profile \"{key}\""))?,
                    ),
                    // Forgotten since: it replays with no traits.
                    None => (false, Map::<String, Value>::new()),
                })
            } else {
                None
            };
            let call: String = r.get(1)?;
            let Some(message) = crate::ingest::stored(&call, r.get(2)?, r.get(4)?, r.get(3)?)
            else {
                return Err(StoreError::Corrupt(format!(
                    "a stored event has type \"{call}\""
                )));
            };
            visit(Replayed {
                profile: key,
                now,
                message,
            });
        }
        Ok(())
    }
}

/// The `seq` of the first event received at or after `since`: a binary search over the events'
/// `seq` (which grows with the receive time), a few index lookups whatever the table's size.
fn first_since(conn: &Connection, since: i64) -> Result<i64> {
    let bounds: Option<(i64, i64)> =
        conn.query_row("SELECT min(seq), max(seq) FROM events", [], |r| {
            Ok(r.get::<_, Option<i64>>(0)?.zip(r.get::<_, Option<i64>>(1)?))
        })?;
    let Some((mut lo, mut hi)) = bounds else {
        return Ok(i64::MAX);
    };
    let mut at =
        conn.prepare("SELECT seq, received_at FROM events WHERE seq >= ?1 ORDER BY seq LIMIT 1")?;
    // Invariant: every event before `lo` was received before `since`; `hi + 1` is past the end.
    hi += 1;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let found: Option<(i64, i64)> = at
            .query_row(params![mid], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match found {
            Some((seq, received_at)) if received_at < since => lo = seq + 1,
            _ => hi = mid,
        }
    }
    Ok(lo)
}
