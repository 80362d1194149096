//! Process metrics for `GET /metrics` (OpenMetrics text, which Prometheus scrapes natively).
//!
//! One process-wide set of counters and histograms, updated where things happen (ingest, writer,
//! engine persistence, scheduler, dispatcher); gauges that describe the database (pending timers
//! and deliveries) are read at scrape time. Counters start at zero with the process, as
//! Prometheus expects.

use std::sync::LazyLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

pub(crate) struct Metrics {
    registry: Registry,
    /// Messages stored, by call type.
    pub(crate) events_received: Family<Labels, Counter>,
    /// Messages acknowledged but not processed again (messageId seen in the last 24 hours).
    pub(crate) events_duplicate: Counter,
    /// Messages or requests refused, by error code.
    pub(crate) events_rejected: Family<Labels, Counter>,
    /// Journey entries, by journey.
    pub(crate) entries: Family<Labels, Counter>,
    /// Entries refused by the per-profile cap, by journey.
    pub(crate) skipped: Family<Labels, Counter>,
    pub(crate) timers_fired: Counter,
    /// Seconds the writer spent in scheduler ticks: with `timers_fired`, the cost of a timer,
    /// however the ticks were cut.
    pub(crate) timer_firing_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    pub(crate) timers_pending: Gauge,
    /// Seconds between a timer's due time and its firing.
    pub(crate) timer_lateness: Histogram,
    /// Delivery attempts, by outcome: delivered, retry, failed.
    pub(crate) delivery_attempts: Family<Labels, Counter>,
    pub(crate) deliveries_pending: Gauge,
    /// Sends over a destination's frequency cap, by destination.
    pub(crate) deliveries_capped: Family<Labels, Counter>,
    /// Jobs waiting for the writer.
    pub(crate) queue_depth: Gauge,
    pub(crate) commits: Counter,
    /// Jobs per write transaction (group-commit batch size).
    pub(crate) commit_batch: Histogram,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("journeyd");
        let m = Metrics {
            registry: Registry::default(),
            events_received: Family::default(),
            events_duplicate: Counter::default(),
            events_rejected: Family::default(),
            entries: Family::default(),
            skipped: Family::default(),
            timers_fired: Counter::default(),
            timer_firing_seconds: Counter::default(),
            timers_pending: Gauge::default(),
            timer_lateness: Histogram::new([
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
            ]),
            delivery_attempts: Family::default(),
            deliveries_pending: Gauge::default(),
            deliveries_capped: Family::default(),
            queue_depth: Gauge::default(),
            commits: Counter::default(),
            commit_batch: Histogram::new([
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
            ]),
        };
        registry.register(
            "events_received",
            "Messages stored, by type",
            m.events_received.clone(),
        );
        registry.register(
            "events_duplicate",
            "Messages acknowledged as duplicates (messageId seen within 24 hours)",
            m.events_duplicate.clone(),
        );
        registry.register(
            "events_rejected",
            "Messages or requests refused, by error code",
            m.events_rejected.clone(),
        );
        registry.register(
            "journey_entries",
            "Journey entries, by journey",
            m.entries.clone(),
        );
        registry.register(
            "journey_skipped",
            "Entries skipped by the per-profile cap, by journey",
            m.skipped.clone(),
        );
        registry.register(
            "timers_fired",
            "Timers fired by the scheduler",
            m.timers_fired.clone(),
        );
        registry.register(
            "timer_firing_seconds",
            "Time the writer spent firing timers",
            m.timer_firing_seconds.clone(),
        );
        registry.register(
            "timers_pending",
            "Timers waiting to fire",
            m.timers_pending.clone(),
        );
        registry.register(
            "timer_lateness_seconds",
            "Time from a timer's due time to its firing",
            m.timer_lateness.clone(),
        );
        registry.register(
            "delivery_attempts",
            "Delivery attempts, by outcome",
            m.delivery_attempts.clone(),
        );
        registry.register(
            "deliveries_capped",
            "Sends over a destination's frequency cap (recorded, not sent), by destination",
            m.deliveries_capped.clone(),
        );
        registry.register(
            "deliveries_pending",
            "Deliveries waiting to be sent or retried",
            m.deliveries_pending.clone(),
        );
        registry.register(
            "writer_queue_depth",
            "Write jobs waiting for the writer",
            m.queue_depth.clone(),
        );
        registry.register(
            "writer_commits",
            "Write transactions committed",
            m.commits.clone(),
        );
        registry.register(
            "writer_batch_jobs",
            "Jobs per write transaction",
            m.commit_batch.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Renders every metric.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// The process's metrics.
pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// A label set of one label.
pub(crate) fn label(name: &'static str, value: impl Into<String>) -> Labels {
    vec![(name, value.into())]
}
