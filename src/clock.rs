//! The only source of time, and the one timestamp type. Everything else takes time as an
//! argument, or sleeps through [`Clock::sleep_until`], so that tests and the simulator can drive
//! the whole server on a manual clock.

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use tokio::sync::watch;

/// A future a clock hands out for a sleep.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// UTC unix milliseconds, and sleeping until a time on the same scale.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;

    /// Resolves once [`Clock::now_ms`] reads `deadline` or later. The scheduler and the delivery
    /// dispatcher sleep through this, never through tokio's timer directly, so that a manual
    /// clock moves them.
    fn sleep_until(&self, deadline: i64) -> Sleep;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    fn sleep_until(&self, deadline: i64) -> Sleep {
        let wait = deadline.saturating_sub(self.now_ms()).max(0) as u64;
        Box::pin(tokio::time::sleep(std::time::Duration::from_millis(wait)))
    }
}

/// A clock that moves only when told to; sleepers wake when it passes their deadline.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<i64>,
}

impl ManualClock {
    pub fn new(start_ms: i64) -> ManualClock {
        ManualClock {
            now: watch::Sender::new(start_ms),
        }
    }

    pub fn set(&self, ms: i64) {
        self.now.send_replace(ms);
    }

    pub fn advance(&self, ms: i64) {
        self.now.send_modify(|now| *now += ms);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        *self.now.borrow()
    }

    fn sleep_until(&self, deadline: i64) -> Sleep {
        let mut now = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock; if it is gone, nothing will ever move it.
            if now.wait_for(|t| *t >= deadline).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

/// A point in time as the API shows it and Segment writes it: UTC unix milliseconds, formatted
/// as RFC 3339 with milliseconds and `Z` (`2026-11-28T10:17:41.908Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Parses an ISO 8601 date-time. An offset is honoured; a value without one is taken as UTC,
    /// since some SDKs omit the `Z`.
    pub fn parse(s: &str) -> Option<Timestamp> {
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Some(Timestamp(t.timestamp_millis()));
        }
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()
            .map(|t| Timestamp(t.and_utc().timestamp_millis()))
    }

    pub fn ms(self) -> i64 {
        self.0
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = DateTime::<Utc>::from_timestamp_millis(self.0).unwrap_or_default();
        f.write_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        for s in ["1970-01-01T00:00:00.000Z", "2026-11-28T10:17:41.908Z"] {
            assert_eq!(Timestamp::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(
            Timestamp::parse("2026-11-28T11:17:41.908+01:00"),
            Timestamp::parse("2026-11-28T10:17:41.908Z")
        );
        assert_eq!(
            Timestamp::parse("2026-11-28T10:17:41.908"),
            Timestamp::parse("2026-11-28T10:17:41.908Z")
        );
        assert_eq!(Timestamp::parse("yesterday"), None);
    }

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_when_it_passes_their_deadline() {
        let clock = std::sync::Arc::new(ManualClock::new(1_000));
        let sleeper = tokio::spawn(clock.sleep_until(5_000));
        clock.advance(3_000);
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(1_000);
        sleeper.await.unwrap();
        // A deadline already passed resolves at once.
        clock.sleep_until(0).await;
    }
}
