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
    /// The tick stopped at its time limit with timers still due: tick again now.
    pub(crate) more: bool,
    /// The earliest timer still pending after the tick.
    pub(crate) next_due: Option<i64>,
    /// How late the latest fired timer was, in milliseconds.
    pub(crate) lateness_max_ms: i64,
}

impl Store {
    /// Fires timers due by now, each with its transitions and deliveries, in one transaction,
    /// reading them [`CHUNK`] at a time in the order they fell due. The tick stops once `budget`
    /// has passed and other work waits for the writer, so that it holds that work (events queued
    /// behind it) only about that long; while nobody waits it goes on, up to `most`: a backlog
    /// then costs fewer commits. [`Fired::more`] says timers were still due when it stopped.
    pub(crate) async fn fire_due(&self, budget: Duration, most: Duration) -> Result<Fired> {
        self.writer()
            .submit_wait(move |ctx| fire_due(ctx, budget, most))
            .await
    }
}

/// A profile's key and its due timers: (instance id, due time) each.
type DueTimers = (String, Vec<(i64, i64)>);

/// Due timers read at a time.
const CHUNK: usize = 1000;

fn fire_due(ctx: &mut WriteCtx, budget: Duration, most: Duration) -> Result<Fired> {
    let started = Instant::now();
    let now = ctx.now;
    let mut out = Fired::default();
    'chunks: loop {
        let profiles = due_by_profile(ctx, now)?;
        // A chunk that is not full holds every timer still due.
        let selected: usize = profiles.iter().map(|(_, t)| t.len()).sum();
        out.more = selected >= CHUNK;
        for (n, (key, timers)) in profiles.iter().enumerate() {
            let ids: Vec<i64> = timers.iter().map(|t| t.0).collect();
            for (_, due_at) in timers {
                out.fired += 1;
                let late = now - due_at;
                out.lateness_max_ms = out.lateness_max_ms.max(late);
                METRICS.timer_lateness.observe(late as f64 / 1000.0);
            }
            if profiles::fire(ctx, key, &ids, now)? == 0 {
                // A timer that fired nothing (its instance is not active, which cannot happen
                // unless the database was edited) would fire forever: clear it.
                let mut clear = ctx.conn.prepare_cached(
                    "UPDATE instances SET due_at = NULL WHERE instance_id = ?1 AND due_at <= ?2",
                )?;
                for id in &ids {
                    clear.execute(params![id, now])?;
                }
            }
            // At least one profile a tick; the rest waits for the next.
            let spent = started.elapsed();
            if spent >= most || (spent >= budget && ctx.others_waiting()) {
                out.more |= n + 1 < profiles.len();
                break 'chunks;
            }
        }
        if !out.more {
            break;
        }
    }
    out.next_due = ctx
        .conn
        .prepare_cached("SELECT min(due_at) FROM instances WHERE due_at IS NOT NULL")?
        .query_row([], |r| r.get(0))?;
    ctx.effects.next_due = Some(out.next_due);
    METRICS.timers_fired.inc_by(out.fired as u64);
    METRICS
        .timer_firing_seconds
        .inc_by(started.elapsed().as_secs_f64());
    Ok(out)
}

/// Up to [`CHUNK`] timers due by `now`, grouped by profile in the order each profile's first one
/// fell due. A fired timer's instance has moved on (its `due_at` later, or none), so reading
/// again reads the next ones.
fn due_by_profile(ctx: &WriteCtx, now: i64) -> Result<Vec<DueTimers>> {
    let mut profiles: Vec<DueTimers> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut stmt = ctx.conn.prepare_cached(
        "SELECT instance_id, profile_key, due_at FROM instances WHERE due_at IS NOT NULL AND due_at <= ?1 ORDER BY due_at LIMIT ?2",
    )?;
    let mut rows = stmt.query(params![now, CHUNK as i64])?;
    while let Some(r) = rows.next()? {
        let (id, key, due_at): (i64, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let n = *index.entry(key.clone()).or_insert_with(|| {
            profiles.push((key, Vec::new()));
            profiles.len() - 1
        });
        profiles[n].1.push((id, due_at));
    }
    Ok(profiles)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::clock::ManualClock;
    use crate::store::StoreOptions;

    const T0: i64 = 1_795_000_000_000;
    const MINUTE: i64 = 60_000;
    const HOUR: Duration = Duration::from_secs(3600);

    /// Enters `users` into the journey at `at`, one request each.
    async fn enter(store: &Store, at: i64, users: std::ops::Range<usize>) {
        for user in users {
            let message = json!({"type": "track", "userId": format!("u{user}"), "event": "Go"});
            crate::store::send(store, at, message).await;
        }
    }

    /// A backlog of due timers, one per person: a tick goes on past its budget while nothing
    /// else waits for the writer, up to its most; with work waiting (batched with it) it stops
    /// once its budget has passed, after one person at least, and says more are due.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tick_goes_on_while_nobody_waits_and_stops_at_its_budget_when_someone_does() {
        let path = crate::store::temp_db("timers-tick");
        let clock = Arc::new(ManualClock::new(T0));
        let store = Store::open(&path, clock.clone(), StoreOptions::default()).unwrap();
        let journey = crate::journey::parse(&json!({"id": "j", "entry": {"event": "Go"},
            "steps": [{"id": "wait", "type": "hold_until", "max_hold": "1m",
                       "branches": [{"event": "Never", "next": null}], "on_timeout": null}]}))
        .unwrap();
        store.publish_journey(journey, "{}".into()).await.unwrap();

        // Nobody waits: one tick fires the whole backlog, however small its budget.
        enter(&store, T0, 0..10).await;
        clock.set(T0 + 2 * MINUTE);
        let fired = store.fire_due(Duration::ZERO, HOUR).await.unwrap();
        assert_eq!((fired.fired, fired.more), (10, false), "{fired:?}");

        // Another job in the same transaction: the tick stops after one person.
        enter(&store, T0 + 2 * MINUTE, 10..20).await;
        clock.set(T0 + 4 * MINUTE);
        let (started, blocked) = tokio::sync::oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let blocker = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .writer()
                    .submit_wait(move |_| {
                        let _ = started.send(());
                        let _ = released.recv();
                        Ok(())
                    })
                    .await
            })
        };
        blocked.await.unwrap();
        let tick = {
            let store = store.clone();
            tokio::spawn(async move { store.fire_due(Duration::ZERO, HOUR).await })
        };
        let other = {
            let store = store.clone();
            tokio::spawn(async move { store.writer().submit_wait(|_| Ok(())).await })
        };
        // Both queued behind the blocked job, so that the writer takes them together.
        while store.writer().depth() < 2 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        other.await.unwrap().unwrap();
        let fired = tick.await.unwrap().unwrap();
        assert_eq!((fired.fired, fired.more), (1, true), "{fired:?}");

        // Alone, a tick stops at its most: after one person when that is zero.
        let fired = store
            .fire_due(Duration::ZERO, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!((fired.fired, fired.more), (1, true), "{fired:?}");
        let fired = store.fire_due(Duration::ZERO, HOUR).await.unwrap();
        assert_eq!((fired.fired, fired.more), (8, false), "{fired:?}");
        assert_eq!(fired.next_due, None);
        store.writer().shutdown().await;
    }
}
