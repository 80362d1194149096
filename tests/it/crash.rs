//! SPEC §0.1: an acknowledged event is never lost. Clients post batches while the server is SIGKILLed
//! mid-stream; after a restart every acknowledged messageId is in the timelines exactly once, and nothing is
//! stored twice.

use std::time::Duration;

use serde_json::json;

use crate::support::Server;
use crate::support::load::{BATCH, Load, check_stored, stored_counts};

#[test]
fn kill_9_loses_no_acknowledged_event() {
    let mut srv = Server::start();
    // The load would stop by itself only long after the kill: it is stopped right after it.
    let mut load = Load::start(&srv, 4, 5, Duration::from_secs(60));

    // Kill mid-stream: once a good number of batches have been answered (by count, not by time,
    // so that a slow machine kills at the same point of the stream), with clients still posting.
    load.wait_for_acks(100 * BATCH, Duration::from_secs(30));
    srv.kill9();
    load.stop();
    let acked = load.acked_snapshot();
    let sent = load.shared.sent.lock().unwrap().clone();
    eprintln!(
        "kill -9: {} messages sent, {} acknowledged",
        sent.len(),
        acked.len()
    );
    assert!(
        sent.len() > acked.len(),
        "the kill should have cut some requests off (sent {}, acked {})",
        sent.len(),
        acked.len()
    );

    srv.restart();
    let counts = stored_counts(&srv, &load.users);
    check_stored("after kill -9 and restart", &counts, &acked, &sent);

    // Sending an acknowledged batch again after the restart is acknowledged and still stores nothing twice.
    let again: Vec<_> = acked[..BATCH.min(acked.len())].to_vec();
    let msgs: Vec<_> = again
        .iter()
        .map(|id| json!({"type": "track", "event": "Load", "userId": load.user_of(id), "messageId": id}))
        .collect();
    srv.ingest_ok("/v1/batch", &json!({"batch": msgs}));
    let counts = stored_counts(&srv, &load.users);
    check_stored(
        "after resending acknowledged messages",
        &counts,
        &acked,
        &sent,
    );
}
