//! The scheduler: sleeps until the next due timer, then fires what is due through the writer.
//!
//! Timers live in SQLite (`instances.due_at`, indexed); this task only holds the time of the next
//! one. Each tick fires due timers in one transaction, for at most [`BUDGET`] while other work
//! waits for the writer and at most [`MOST`] while none does, and reports the next due time; the
//! writer wakes the task early when it writes an earlier timer. After a restart the first ticks
//! fire everything that fell due while journeyd was stopped.

use std::time::Duration;

use tokio::sync::watch;

use crate::store::{Store, StoreError, Unavailable};

/// How long one tick may hold the writer while other work waits: events that arrive during a
/// backlog of due timers wait at most about this long behind a tick. A backlog is worked off in
/// ticks one after another.
pub(crate) const BUDGET: Duration = Duration::from_millis(20);
/// How long one tick may go on while nothing else waits for the writer: a backlog fired in fewer
/// transactions costs less per timer (pages shared by many timers, such as the tails of the
/// outbox and the transitions, are written once per commit), and its first deliveries wait for
/// the commit at most this long.
pub(crate) const MOST: Duration = Duration::from_millis(100);

/// Runs until `shutdown` turns true.
pub(crate) async fn run(store: Store, mut shutdown: watch::Receiver<bool>) {
    let wake = store.wake().clone();
    let clock = store.clock().clone();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let fired = match store.fire_due(BUDGET, MOST).await {
            Ok(f) => f,
            Err(StoreError::Unavailable(Unavailable::Stopped)) => return,
            Err(e) => {
                tracing::error!(error = %e, "firing timers failed");
                let retry = clock.now_ms() + 1_000;
                tokio::select! {
                    _ = clock.sleep_until(retry) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        if fired.fired > 0 {
            tracing::debug!(
                fired = fired.fired,
                max_late_ms = fired.lateness_max_ms,
                "timers fired"
            );
        }
        if fired.more {
            continue;
        }
        let now = clock.now_ms();
        let due = fired.next_due.unwrap_or(i64::MAX);
        if due <= now {
            continue;
        }
        // Sleep at most a minute at a time: a hint lost to a failed commit costs at most that.
        tokio::select! {
            _ = clock.sleep_until(due.min(now + 60_000)) => {}
            _ = wake.timers.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}
