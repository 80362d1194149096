//! Firing due timers: one scheduler tick, in one writer job.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rusqlite::params;

use super::writer::WriteCtx;
use super::{Result, Store, profiles};
use crate::metrics::METRICS;

/// What one scheduler tick did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Fired {
    pub(crate) fired: usize,
    /// The tick stopped at its limit or its time budget with timers still due: tick again now.
    pub(crate) more: bool,
    /// The earliest timer still pending after the tick.
    pub(crate) next_due: Option<i64>,
    /// How late the latest fired timer was, in milliseconds.
    pub(crate) lateness_max_ms: i64,
}

impl Store {
    /// Fires up to `limit` timers due by now, each with its transitions and deliveries, in one
    /// transaction. The tick stops early, once `budget` has passed, so that it holds the writer
    /// (and the events queued behind it) only that long; [`Fired::more`] says it should go on.
    pub(crate) async fn fire_due(&self, limit: usize, budget: Duration) -> Result<Fired> {
        self.writer()
            .submit_wait(move |ctx| fire_due(ctx, limit, budget))
            .await
    }
}

fn fire_due(ctx: &mut WriteCtx, limit: usize, budget: Duration) -> Result<Fired> {
    let started = Instant::now();
    let now = ctx.now;
    // The due timers, grouped by profile in the order each profile's first one fell due.
    let mut profiles: Vec<(String, Vec<(i64, i64)>)> = Vec::new();
    let mut selected = 0;
    {
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut stmt = ctx.conn.prepare_cached(
            "SELECT instance_id, profile_key, due_at FROM instances WHERE due_at IS NOT NULL AND due_at <= ?1 ORDER BY due_at LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![now, limit as i64])?;
        while let Some(r) = rows.next()? {
            let (id, key, due_at): (i64, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            selected += 1;
            let n = *index.entry(key.clone()).or_insert_with(|| {
                profiles.push((key, Vec::new()));
                profiles.len() - 1
            });
            profiles[n].1.push((id, due_at));
        }
    }
    let mut out = Fired {
        more: selected >= limit,
        ..Fired::default()
    };
    for (key, timers) in &profiles {
        // Past the budget, the rest waits for the next tick.
        if started.elapsed() >= budget {
            out.more = true;
            break;
        }
        let ids: Vec<i64> = timers.iter().map(|t| t.0).collect();
        for (_, due_at) in timers {
            out.fired += 1;
            let late = now - due_at;
            out.lateness_max_ms = out.lateness_max_ms.max(late);
            METRICS.timer_lateness.observe(late as f64 / 1000.0);
        }
        if profiles::fire(ctx, key, &ids, now)? == 0 {
            // A timer that fired nothing (its instance is not active, which cannot happen unless
            // the database was edited) would fire forever: clear it.
            let mut clear = ctx.conn.prepare_cached(
                "UPDATE instances SET due_at = NULL WHERE instance_id = ?1 AND due_at <= ?2",
            )?;
            for id in &ids {
                clear.execute(params![id, now])?;
            }
        }
    }
    out.next_due = ctx
        .conn
        .prepare_cached("SELECT min(due_at) FROM instances WHERE due_at IS NOT NULL")?
        .query_row([], |r| r.get(0))?;
    ctx.effects.next_due = Some(out.next_due);
    METRICS.timers_fired.inc_by(out.fired as u64);
    Ok(out)
}
