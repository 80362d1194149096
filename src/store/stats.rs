//! Journey stats counters (`journey_stats`): added up in the transaction of the transitions that
//! move them (the deltas come from [`crate::engine::stats`]), read back for the API.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{Connection, params};

use super::{Result, Store, StoreError};
use crate::engine::stats::{Stat, StatKey, Total};

/// Adds a job's counter changes, one statement per counter. The writer calls it once per job
/// (inside the job's savepoint), so a batch of events updates each counter row once, not once
/// per event.
pub(super) fn add(conn: &Connection, deltas: HashMap<StatKey, i64>) -> Result<()> {
    for (key, by) in deltas {
        if by == 0 {
            continue;
        }
        let (kind, step, label) = key.stat.columns();
        conn.prepare_cached(
            "INSERT INTO journey_stats (journey_id, version, kind, step_id, label, count) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (journey_id, version, kind, step_id, label) DO UPDATE SET count = count + excluded.count",
        )?
        .execute(params![key.journey_id, key.version, kind, step, label, by])?;
    }
    Ok(())
}

/// Archiving a journey ended its active instances: each version's active count moves to
/// archived, and no step has anyone waiting any more.
pub(super) fn archived(conn: &Connection, journey_id: &str) -> Result<()> {
    let (kind, _, active) = Stat::Total(Total::Active).columns();
    let (_, _, archived) = Stat::Total(Total::Archived).columns();
    conn.execute(
        "INSERT INTO journey_stats (journey_id, version, kind, step_id, label, count)
         SELECT journey_id, version, ?2, '', ?4, count FROM journey_stats
         WHERE journey_id = ?1 AND kind = ?2 AND label = ?3 AND count != 0
         ON CONFLICT (journey_id, version, kind, step_id, label) DO UPDATE SET count = count + excluded.count",
        params![journey_id, kind, active, archived],
    )?;
    let (waiting, _, _) = Stat::Waiting(String::new()).columns();
    conn.execute(
        "UPDATE journey_stats SET count = 0
         WHERE journey_id = ?1 AND ((kind = ?2 AND label = ?3) OR kind = ?4)",
        params![journey_id, kind, active, waiting],
    )?;
    Ok(())
}

/// The totals of a journey over all its versions, each present even at zero.
pub(super) fn totals(conn: &Connection, journey_id: &str) -> Result<BTreeMap<Total, i64>> {
    let mut out: BTreeMap<Total, i64> = Total::ALL.into_iter().map(|t| (t, 0)).collect();
    let (kind, _, _) = Stat::Total(Total::Active).columns();
    let mut stmt = conn.prepare_cached(
        "SELECT label, sum(count) FROM journey_stats WHERE journey_id = ?1 AND kind = ?2 GROUP BY label",
    )?;
    let mut rows = stmt.query(params![journey_id, kind])?;
    while let Some(r) = rows.next()? {
        let label: String = r.get(0)?;
        match Stat::from_columns(kind, String::new(), label) {
            Some(Stat::Total(t)) => *out.entry(t).or_default() += r.get::<_, i64>(1)?,
            _ => return Err(corrupt_row(journey_id)),
        }
    }
    Ok(out)
}

fn corrupt_row(journey_id: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "a stats row of journey \"{journey_id}\" is not a known counter"
    ))
}

impl Store {
    /// Every counter of a journey, of one version or summed over all.
    pub(crate) async fn journey_stats(
        &self,
        id: String,
        version: Option<i64>,
    ) -> Result<Vec<(Stat, i64)>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT kind, step_id, label, sum(count) FROM journey_stats
                 WHERE journey_id = ?1 AND (?2 IS NULL OR version = ?2) GROUP BY kind, step_id, label",
            )?;
            let mut rows = stmt.query(params![id, version])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let kind: String = r.get(0)?;
                let stat = Stat::from_columns(&kind, r.get(1)?, r.get(2)?)
                    .ok_or_else(|| corrupt_row(&id))?;
                out.push((stat, r.get(3)?));
            }
            Ok(out)
        })
        .await
    }
}
