//! SPEC §0.1: an acknowledged event is never lost. Clients post batches while the server is SIGKILLed
//! mid-stream; after a restart every acknowledged messageId is in the timelines exactly once, and nothing is
//! stored twice.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::Server;
use crate::load::{BATCH, Load, check_stored, stored_counts};

#[test]
fn kill_9_loses_no_acknowledged_event() {
    let mut srv = Server::start();
    let mut load = Load::start(&srv, 4, 5, Duration::from_secs(2));

    // Kill mid-stream: the load runs for 2 s; the kill comes after about 1 s of it, once batches are being
    // answered (the wait below is the scenario's timing, not a synchronisation).
    let started = Instant::now();
    load.wait_for_acks(BATCH, Duration::from_secs(10));
    while started.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(5));
    }
    srv.kill9();
    load.stop();
    let acked = load.acked_snapshot();
    let sent = load.shared.sent.lock().unwrap().clone();
    eprintln!(
        "kill -9 after {:?}: {} messages sent, {} acknowledged",
        started.elapsed(),
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
