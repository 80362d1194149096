//! The scheduler: sleeps until the next due timer, then fires what is due through the writer.
//!
//! Timers live in SQLite (`instances.due_at`, indexed); this task only holds the time of the next
//! one. Each tick fires up to [`BATCH`] timers in one transaction, for at most [`BUDGET`], and
//! reports the next due time; the writer wakes the task early when it writes an earlier timer. After a restart the first
//! tick fires everything that fell due while journeyd was stopped.

use std::time::Duration;

use tokio::sync::watch;

use crate::store::{Store, SubmitError};

/// Most timers fired in one transaction.
pub const BATCH: usize = 1000;
/// How long one tick may hold the writer: events that arrive during a backlog of due timers wait
/// at most about this long behind a tick. A backlog is worked off in ticks one after another.
pub const BUDGET: Duration = Duration::from_millis(20);

/// Runs until `shutdown` turns true.
pub async fn run(store: Store, mut shutdown: watch::Receiver<bool>) {
    let wake = store.wake().clone();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let fired = match store.fire_due(BATCH, BUDGET).await {
            Ok(f) => f,
            Err(SubmitError::Closed) => return,
            Err(e) => {
                tracing::error!(error = %e, "firing timers failed");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
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
        let wait = match fired.next_due {
            Some(due) => (due - store.clock().now_ms()).max(0) as u64,
            None => u64::MAX,
        };
        if wait == 0 {
            continue;
        }
        // Sleep at most a minute at a time: a hint lost to a failed commit costs at most that.
        let sleep = tokio::time::sleep(Duration::from_millis(wait.min(60_000)));
        tokio::select! {
            _ = sleep => {}
            _ = wake.notify.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}
