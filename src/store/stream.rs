//! Committed changes as they happen, for `GET /v1/stream` (SPEC §6) and whoever else listens:
//! the writer publishes each job's transitions and delivery outcomes after its transaction has
//! committed (never anything uncommitted), on a bounded broadcast channel. Publishing never
//! waits: a listener that falls behind misses events and is told so (the API then drops it), and
//! nothing is built for publishing while nobody listens.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::Store;
use crate::engine::Transition;

/// Events a listener may fall behind by before it is dropped: room for the largest commits (a
/// 500-message batch through a chain of steps publishes thousands at once). The channel holds
/// pointers; an event lives until every listener has seen it or fallen this far behind.
const CAPACITY: usize = 16_384;

/// One committed change.
#[derive(Debug, Clone)]
pub(crate) enum StreamEvent {
    /// An instance transition of a profile.
    Transition {
        profile: String,
        transition: Transition,
    },
    /// The outcome of a delivery attempt.
    Delivery(DeliveryOutcome),
}

/// A delivery attempt's recorded outcome.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryOutcome {
    pub(crate) id: String,
    pub(crate) destination: String,
    pub(crate) journey: String,
    pub(crate) instance: i64,
    pub(crate) status: crate::delivery::Status,
    pub(crate) attempts: i64,
    pub(crate) http_status: Option<u16>,
    pub(crate) error: Option<String>,
    pub(crate) at: i64,
}

impl StreamEvent {
    /// The journey it concerns, for `?journey=`.
    pub(crate) fn journey(&self) -> &str {
        match self {
            StreamEvent::Transition { transition, .. } => &transition.journey_id,
            StreamEvent::Delivery(d) => &d.journey,
        }
    }
}

/// The sending side, held with the writer's wake-ups. The channel is made when the first
/// listener subscribes: its buffer (16,384 slots, 512 KiB) is allocated whole, and most servers
/// are never listened to.
#[derive(Debug, Default)]
pub(crate) struct Events(std::sync::OnceLock<broadcast::Sender<Arc<StreamEvent>>>);

impl Events {
    fn subscribe(&self) -> broadcast::Receiver<Arc<StreamEvent>> {
        self.0
            .get_or_init(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }

    /// Whether anyone listens now.
    pub(crate) fn listened(&self) -> bool {
        self.0.get().is_some_and(|tx| tx.receiver_count() > 0)
    }

    /// Publishes a committed change; nothing waits for listeners, and without any it is dropped.
    pub(crate) fn send(&self, event: StreamEvent) {
        if let Some(tx) = self.0.get() {
            let _ = tx.send(Arc::new(event));
        }
    }
}

impl Store {
    /// Listens to committed changes from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<StreamEvent>> {
        self.wake().events.subscribe()
    }
}
