//! Webhook delivery (SPEC §5): Standard Webhooks headers and signatures, retries with backoff,
//! `Retry-After`, dead letters and manual retry, timeouts, redelivery after `kill -9`, isolation
//! between destinations, `segment` destinations and payload mappings.
//!
//! Each test points a destination at a scripted [`Receiver`] on loopback, publishes a forwarding
//! journey and ingests its trigger event. Backoff is on the server's clock: those tests run on the
//! in-process appliance and move its clock past each retry's due time; the receiver stamps each
//! request with that clock, so the gaps between attempts are exact.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::support::{
    Appliance, Client, Received, Receiver, Reply, Server, WAIT, deliveries, delivery, eventually,
    identify, put_destination, put_journey, track_event, ts_ms, uid, wait_delivery, webhook,
};

/// The key bytes of the `whsec_` secret used here.
const KEY: &[u8] = b"journeyd-it-signing-key-\x00\x01\x02\xff";

fn whsec() -> String {
    format!("whsec_{}", STANDARD.encode(KEY))
}

/// The forwarding journey of these tests: `Order_Confirmation` sends `Order Confirmed` to `dest`.
fn fwd_journey(id: &str, dest: &str, trigger: &str) -> Value {
    json!({"id": id, "entry": {"event": trigger},
           "steps": [{"id": "notify", "type": "send", "destination": dest,
                      "event_name": "Order Confirmed", "traits": ["email"]}]})
}

/// An appliance with destination `hook` (these settings, pointed at a receiver answering
/// `script`) and journey `fwd`. The receiver comes second, so that it is dropped first: requests
/// left hanging end before the appliance stops.
fn setup(script: Vec<Reply>, extra: Value) -> (Appliance, Receiver) {
    let srv = Appliance::start();
    let rx = srv.receiver(script);
    put_destination(&srv, "hook", &webhook(&rx.url("/in"), extra));
    put_journey(&srv, &fwd_journey("fwd", "hook", "Order_Confirmation"));
    (srv, rx)
}

/// Identifies a fresh user and triggers `fwd` once; returns the user id.
fn trigger(srv: &Client) -> String {
    let user = uid("buyer");
    identify(srv, &user, json!({"email": format!("{user}@example.com")}));
    track_event(srv, &user, "Order_Confirmation", json!({"order_id": "o-1"}));
    user
}

/// Waits until attempt `n` of a delivery has been recorded as one to retry, checks its backoff
/// (at least `min_wait_ms` on the server's clock after the failed attempt), and returns when the
/// retry is due.
fn retry_due(srv: &Client, id: &str, n: i64, min_wait_ms: i64) -> i64 {
    let d = eventually(&format!("attempt {n} of {id} recorded"), WAIT, || {
        let d = delivery(srv, id);
        if d["attempts"] == n { Ok(d) } else { Err(d) }
    });
    assert_eq!(
        d["status"], "pending",
        "attempt {n} failed, to be retried: {d}"
    );
    let failed_at = ts_ms(&d["updated_at"]);
    let due = ts_ms(&d["next_attempt_at"]);
    assert!(
        due - failed_at >= min_wait_ms,
        "retry {n} is due {} ms after the failed attempt, expected at least {min_wait_ms}: {d}",
        due - failed_at
    );
    due
}

/// [`trigger`], then waits for the first attempt; returns the delivery's id.
fn trigger_first_attempt(srv: &Client, rx: &Receiver) -> String {
    trigger(srv);
    rx.wait_for(1, WAIT)[0].webhook_id()
}

/// [`retry_due`] for attempt `n`, then moves the clock to the retry's due time and waits for
/// attempt `n + 1`; returns every request received by then.
fn retry(srv: &Appliance, rx: &Receiver, id: &str, n: i64, min_wait_ms: i64) -> Vec<Received> {
    let due = retry_due(srv, id, n, min_wait_ms);
    srv.set_time(due);
    rx.wait_for(n as usize + 1, WAIT)
}

#[test]
fn delivery_headers_and_signatures() {
    let srv = Appliance::start();
    let rx = srv.receiver(vec![]);
    let headers = json!({"headers": {"X-Api-Key": "key-123", "X-Tenant": "acme"}});
    let plain_secret = "plain secret, not base64!";
    put_destination(
        &srv,
        "whsec",
        &webhook(
            &rx.url("/whsec"),
            json!({"secret": whsec(), "headers": headers["headers"]}),
        ),
    );
    put_destination(
        &srv,
        "plain",
        &webhook(
            &rx.url("/plain"),
            json!({"secret": plain_secret, "headers": headers["headers"]}),
        ),
    );
    put_destination(&srv, "nosig", &webhook(&rx.url("/nosig"), headers.clone()));
    put_journey(
        &srv,
        &json!({"id": "sig", "entry": {"event": "Order_Confirmation"}, "steps": [
            {"id": "a", "type": "send", "destination": "whsec", "event_name": "Order Confirmed",
             "traits": ["email"], "next": "b"},
            {"id": "b", "type": "send", "destination": "plain", "next": "c"},
            {"id": "c", "type": "send", "destination": "nosig"}]}),
    );
    let user = trigger(&srv);
    let got = rx.wait_for(3, WAIT);
    assert_eq!(got.len(), 3, "one request per destination: {got:#?}");
    let by_path = |p: &str| -> &crate::support::Received {
        got.iter()
            .find(|r| r.path == p)
            .unwrap_or_else(|| panic!("nothing received at {p}: {got:#?}"))
    };
    // The server's clock has not moved since the trigger: the time of sending, to the second.
    let now = srv.now_ms() / 1000;
    for r in &got {
        let id = r.webhook_id();
        let body = r.json();
        assert_eq!(r.method, "POST", "{r:?}");
        assert_eq!(
            body["messageId"],
            id.as_str(),
            "webhook-id is the messageId: {body}"
        );
        assert_eq!(body["type"], "track", "{body}");
        assert_eq!(body["userId"], user.as_str(), "{body}");
        assert_eq!(
            body["properties"]["journey_metadata"]["journey_id"], "sig",
            "{body}"
        );
        let ts: i64 = r
            .header("webhook-timestamp")
            .unwrap_or_else(|| panic!("no webhook-timestamp: {r:?}"))
            .parse()
            .unwrap_or_else(|e| panic!("webhook-timestamp is not unix seconds ({e}): {r:?}"));
        assert_eq!(
            ts, now,
            "webhook-timestamp is the server's time of sending in unix seconds"
        );
        assert_eq!(r.header("x-api-key"), Some("key-123"), "{r:?}");
        assert_eq!(r.header("x-tenant"), Some("acme"), "{r:?}");
        // The delivery is known under that id.
        let d = delivery(&srv, &id);
        assert_eq!(d["id"], id.as_str(), "{d}");
    }
    let ids: std::collections::HashSet<String> = got.iter().map(|r| r.webhook_id()).collect();
    assert_eq!(ids.len(), 3, "each delivery has its own id");

    let first = by_path("/whsec");
    assert_eq!(first.json()["event"], "Order Confirmed");
    assert_eq!(
        first.json()["properties"]["email"],
        format!("{user}@example.com").as_str()
    );
    assert!(
        first.signature_matches(KEY),
        "whsec_ secret: the signature must verify with the base64-decoded key: {first:?}"
    );
    assert!(
        !first.signature_matches(whsec().as_bytes()),
        "whsec_ secret: signed with the text of the secret instead of its decoded key"
    );
    let second = by_path("/plain");
    assert_eq!(
        second.json()["event"],
        "b",
        "event_name defaults to the step id"
    );
    assert!(
        second.signature_matches(plain_secret.as_bytes()),
        "plain secret: the signature must verify with the secret's UTF-8 bytes: {second:?}"
    );
    let third = by_path("/nosig");
    assert!(
        third.header("webhook-signature").is_none(),
        "no secret, no signature: {third:?}"
    );
    assert!(third.header("webhook-timestamp").is_some(), "{third:?}");
}

#[test]
fn delivery_retries_5xx_with_one_id_until_success() {
    let (srv, rx) = setup(vec![Reply::status(500), Reply::status(500)], json!({}));
    let id = trigger_first_attempt(&srv, &rx);
    // Each failed attempt backs off on the server's clock: nothing is sent again until it passes
    // the retry's due time.
    for n in 1..=2 {
        let due = retry_due(&srv, &id, n, 400);
        assert_eq!(
            rx.received().len(),
            n as usize,
            "retry {n} sent before its backoff passed"
        );
        srv.set_time(due);
        rx.wait_for(n as usize + 1, WAIT);
    }
    let d = wait_delivery(&srv, &id, "succeeded", WAIT);
    let got = rx.received();
    for r in &got {
        assert_eq!(r.webhook_id(), id, "the same webhook-id on every attempt");
        assert_eq!(r.body, got[0].body, "the same body on every attempt");
    }
    for (n, pair) in got.windows(2).enumerate() {
        let gap = pair[1].clock_ms - pair[0].clock_ms;
        assert!(
            gap >= 400,
            "retry {} came {gap} ms (server time) after the previous attempt: no backoff",
            n + 1
        );
    }
    assert_eq!(d["attempts"], 3, "{d}");
    assert_eq!(d["destination"], "hook", "{d}");
    assert_eq!(d["journey"], "fwd", "{d}");
    let listed = deliveries(&srv, "status=succeeded");
    assert!(
        listed.iter().any(|x| x["id"] == id.as_str()),
        "not listed as succeeded: {listed:#?}"
    );
    assert!(
        !deliveries(&srv, "status=failed")
            .iter()
            .any(|x| x["id"] == id.as_str())
    );
    // Nothing more after success.
    assert_eq!(rx.received().len(), 3);
}

#[test]
fn delivery_honours_retry_after_on_429() {
    let (srv, rx) = setup(
        vec![Reply::Status(429, vec![("retry-after", "2".into())])],
        json!({}),
    );
    let id = trigger_first_attempt(&srv, &rx);
    // Retry-After: 2 asks for 2 s, more than the first backoff.
    let got = retry(&srv, &rx, &id, 1, 2000);
    let gap = got[1].clock_ms - got[0].clock_ms;
    assert!(
        gap >= 2000,
        "Retry-After: 2 asked for 2 s; the retry came after {gap} ms (server time)"
    );
    assert_eq!(got[0].webhook_id(), got[1].webhook_id());
    let d = wait_delivery(&srv, &id, "succeeded", WAIT);
    assert_eq!(d["attempts"], 2, "{d}");
}

#[test]
fn delivery_4xx_fails_at_once_and_manual_retry_sends_again() {
    let (mut srv, rx) = setup(vec![Reply::status(400)], json!({}));
    trigger(&srv);
    let got = rx.wait_for(1, WAIT);
    let id = got[0].webhook_id();
    let d = wait_delivery(&srv, &id, "failed", WAIT);
    assert_eq!(d["attempts"], 1, "{d}");
    assert_eq!(d["last_status"], 400, "{d}");
    for query in [
        "status=failed",
        "destination=hook",
        "status=failed&destination=hook",
    ] {
        let listed = deliveries(&srv, query);
        assert!(
            listed.iter().any(|x| x["id"] == id.as_str()),
            "?{query}: the failed delivery is not listed: {listed:#?}"
        );
    }
    for query in ["status=pending", "status=succeeded", "destination=other"] {
        let listed = deliveries(&srv, query);
        assert!(
            !listed.iter().any(|x| x["id"] == id.as_str()),
            "?{query}: lists the failed delivery: {listed:#?}"
        );
    }

    // No retry of a 400, however long one waits: an hour later (far past any backoff), a second
    // delivery to the same destination goes out. The dispatcher pass that sends it reads the
    // destination's pending rows, oldest due first, so a 400 left to retry would go out in it too;
    // stopping the appliance then finishes every send that pass began.
    srv.advance(3_600_000);
    let probe = trigger(&srv);
    let got = rx.wait_for(2, WAIT);
    assert_eq!(got[1].json()["userId"], probe.as_str(), "{got:#?}");
    srv.stop();
    assert_eq!(rx.received().len(), 2, "a 400 was retried");
    srv.start_again();

    // A manual retry sends it again (the receiver now answers 200), with the same id.
    let resp = srv.admin_post(&format!("/v1/deliveries/{id}/retry"), &json!({}));
    assert_eq!(resp.status, 200, "{resp}");
    let got = rx.wait_for(3, WAIT);
    assert_eq!(got[2].webhook_id(), id);
    assert_eq!(got[2].body, got[0].body);
    let d = wait_delivery(&srv, &id, "succeeded", WAIT);
    assert_eq!(d["status"], "succeeded", "{d}");

    // Unknown deliveries.
    let resp = srv.admin_get("/v1/deliveries/no-such-id");
    assert_eq!(resp.status, 404, "{resp}");
    let resp = srv.admin_post("/v1/deliveries/no-such-id/retry", &json!({}));
    assert_eq!(resp.status, 404, "{resp}");
}

/// The request timeout is real time (the receiver hangs); the backoff after it is on the server's
/// clock.
#[test]
fn delivery_times_out_a_hanging_receiver_and_gives_up_after_max_attempts() {
    let (srv, rx) = setup(
        vec![Reply::Hang, Reply::Hang],
        json!({"timeout": "1s", "max_attempts": 2}),
    );
    let started = Instant::now();
    let id = trigger_first_attempt(&srv, &rx);
    let got = retry(&srv, &rx, &id, 1, 400);
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(1000),
        "the first attempt should time out after 1 s: retried after {gap:?}"
    );
    let gap = got[1].clock_ms - got[0].clock_ms;
    assert!(
        gap >= 400,
        "the retry after the timeout came {gap} ms (server time) after it: no backoff"
    );
    assert_eq!(got[1].webhook_id(), id);
    let d = wait_delivery(&srv, &id, "failed", WAIT);
    assert_eq!(d["attempts"], 2, "{d}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "two 1 s timeouts took {:?}",
        started.elapsed()
    );
    assert_eq!(
        rx.received().len(),
        2,
        "max_attempts 2: {:?}",
        rx.received()
    );
}

#[test]
fn delivery_exhausted_attempts_end_failed_and_listed() {
    let (srv, rx) = setup(
        vec![Reply::status(500), Reply::status(502), Reply::status(500)],
        json!({"max_attempts": 3}),
    );
    let id = trigger_first_attempt(&srv, &rx);
    for n in 1..=2 {
        retry(&srv, &rx, &id, n, 400);
    }
    let d = wait_delivery(&srv, &id, "failed", WAIT);
    assert_eq!(d["attempts"], 3, "{d}");
    assert_eq!(d["last_status"], 500, "{d}");
    assert!(
        d["payload"].is_object(),
        "the dead letter keeps its payload: {d}"
    );
    let listed = deliveries(&srv, "status=failed&destination=hook");
    assert!(listed.iter().any(|x| x["id"] == id.as_str()), "{listed:#?}");
    assert_eq!(rx.received().len(), 3);
}

#[test]
fn delivery_survives_kill9_while_in_flight() {
    let rx = Receiver::start(vec![Reply::Hang]);
    let mut srv = Server::start();
    put_destination(
        &srv,
        "hook",
        &webhook(&rx.url("/in"), json!({"timeout": "10s"})),
    );
    put_journey(&srv, &fwd_journey("fwd", "hook", "Order_Confirmation"));
    trigger(&srv);
    let got = rx.wait_for(1, Duration::from_secs(10));
    let id = got[0].webhook_id();
    srv.kill9();
    srv.restart();
    let got = rx.wait_for(2, Duration::from_secs(15));
    assert_eq!(
        got[1].webhook_id(),
        id,
        "the redelivery after restart carries the same webhook-id"
    );
    assert_eq!(got[1].body, got[0].body);
    wait_delivery(&srv, &id, "succeeded", Duration::from_secs(10));
    assert_eq!(deliveries(&srv, "").len(), 1, "no duplicate outbox rows");
}

#[test]
fn delivery_slow_destination_does_not_starve_another() {
    let slow_rx = Receiver::start(vec![Reply::Hang; 40]);
    let fast_rx = Receiver::start(vec![]);
    let srv = Server::start();
    put_destination(
        &srv,
        "slow",
        &webhook(&slow_rx.url("/slow"), json!({"timeout": "30s"})),
    );
    put_destination(&srv, "fast", &webhook(&fast_rx.url("/fast"), json!({})));
    put_journey(&srv, &fwd_journey("to-slow", "slow", "Slow_Event"));
    put_journey(&srv, &fwd_journey("to-fast", "fast", "Fast_Event"));

    // More hanging deliveries than any sane per-destination concurrency, then the healthy ones.
    let slow: Vec<Value> = (0..20)
        .map(|n| json!({"type": "track", "userId": format!("slow-{n}"), "event": "Slow_Event"}))
        .collect();
    srv.ingest_ok("/v1/batch", &json!({"batch": slow}));
    slow_rx.wait_for(1, Duration::from_secs(10));
    let sent = Instant::now();
    let fast: Vec<Value> = (0..5)
        .map(|n| json!({"type": "track", "userId": format!("fast-{n}"), "event": "Fast_Event"}))
        .collect();
    srv.ingest_ok("/v1/batch", &json!({"batch": fast}));
    let got = fast_rx.wait_for(5, Duration::from_secs(5));
    assert_eq!(got.len(), 5, "{got:#?}");
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "the healthy destination waited {:?}",
        sent.elapsed()
    );
    for r in &got {
        let id = r.webhook_id();
        wait_delivery(&srv, &id, "succeeded", Duration::from_secs(5));
    }
    assert!(
        deliveries(&srv, "destination=slow&status=pending").len() == 20,
        "the slow destination's deliveries are all still pending"
    );
}

#[test]
fn delivery_segment_destination_to_a_second_journeyd() {
    let second = Server::start();
    let srv = Server::start();
    put_destination(
        &srv,
        "seg",
        &json!({"type": "segment", "url": second.url(""), "write_key": second.write_key()}),
    );
    let shown = srv.admin_json("/v1/destinations/seg");
    assert_eq!(shown["write_key_set"], true, "{shown}");
    assert!(shown.get("write_key").is_none(), "write_key shown: {shown}");
    put_journey(&srv, &fwd_journey("fwd", "seg", "Order_Confirmation"));
    let user = trigger(&srv);

    let d = eventually("a delivery to be written", Duration::from_secs(5), || {
        deliveries(&srv, "destination=seg")
            .into_iter()
            .next()
            .ok_or_else(|| "none".to_string())
    });
    let id = d["id"].as_str().unwrap().to_string();
    wait_delivery(&srv, &id, "succeeded", Duration::from_secs(10));

    // The second journeyd stored it as a track event of the same user, with the delivery id as its
    // messageId and the journey metadata in its properties.
    let stored = eventually(
        "the event in the second server's timeline",
        Duration::from_secs(5),
        || {
            if second.profile(&user).status != 200 {
                return Err("no profile yet".into());
            }
            second
                .events(&user)
                .into_iter()
                .find(|m| m["messageId"] == id.as_str())
                .ok_or_else(|| format!("{:?}", second.events(&user)))
        },
    );
    assert_eq!(stored["type"], "track", "{stored}");
    assert_eq!(stored["event"], "Order Confirmed", "{stored}");
    assert_eq!(stored["userId"], user.as_str(), "{stored}");
    let meta = &stored["properties"]["journey_metadata"];
    assert_eq!(meta["journey_id"], "fwd", "{stored}");
    assert_eq!(meta["journey_version"], 1, "{stored}");
    assert_eq!(meta["step_id"], "notify", "{stored}");
    assert_eq!(
        stored["properties"]["email"],
        format!("{user}@example.com").as_str(),
        "{stored}"
    );
    assert_eq!(
        stored["properties"]["journey_context"]["Order_Confirmation"],
        json!({"order_id": "o-1"}),
        "{stored}"
    );
}

#[test]
fn delivery_mapping_replaces_the_body() {
    let rx = Receiver::start(vec![]);
    let srv = Server::start();
    put_destination(
        &srv,
        "hook",
        &webhook(&rx.url("/in"), json!({"secret": whsec()})),
    );
    put_journey(
        &srv,
        &json!({"id": "mapped", "entry": {"event": "Order_Confirmation"}, "steps": [
            {"id": "notify", "type": "send", "destination": "hook",
             "traits": ["email", "first_name"],
             "mapping": {"email": {"@path": "$.properties.email"},
                         "text": {"@template": "Hi {{properties.first_name}}"},
                         "missing": {"@path": "$.properties.no_such_trait"},
                         "nested": {"event": {"@path": "$.event"}, "fixed": [1, "two"]}}}]}),
    );
    let user = uid("mapped");
    identify(
        &srv,
        &user,
        json!({"email": "ada@example.com", "first_name": "Ada", "plan": "pro"}),
    );
    track_event(&srv, &user, "Order_Confirmation", json!({}));
    let got = rx.wait_for(1, Duration::from_secs(10));
    assert_eq!(
        got[0].json(),
        json!({"email": "ada@example.com", "text": "Hi Ada",
               "nested": {"event": "notify", "fixed": [1, "two"]}}),
        "exactly the mapped body"
    );
    assert!(
        got[0].signature_matches(KEY),
        "a mapped body is signed as sent"
    );
    let id = got[0].webhook_id();
    let d = wait_delivery(&srv, &id, "succeeded", Duration::from_secs(10));
    assert_eq!(d["journey"], "mapped", "{d}");
}

/// The dispatcher reads due rows ahead of its free permits; forgetting a person must take theirs
/// out of what it read ahead, not only out of the outbox. A destination limited to one request a
/// second (on the appliance's clock) holds a person's later rows back while the first one goes;
/// once the person is forgotten, the next requests are other people's, and none of theirs follows.
#[test]
fn delivery_read_ahead_is_dropped_when_the_person_is_forgotten() {
    let (srv, rx) = setup(vec![], json!({"rate_limit": 1}));
    let gone = uid("gone");
    let events: Vec<Value> = (0..3)
        .map(|n| {
            json!({"type": "track", "userId": gone, "event": "Order_Confirmation",
                         "properties": {"order_id": format!("o-{n}")}})
        })
        .collect();
    srv.ingest_ok("/v1/batch", &json!({"batch": events}));
    let first = rx.wait_for(1, WAIT);
    assert_eq!(first[0].json()["userId"], gone, "{first:#?}");
    wait_delivery(&srv, &first[0].webhook_id(), "succeeded", WAIT);
    assert_eq!(
        deliveries(&srv, "status=pending").len(),
        2,
        "two rows wait for the rate limit"
    );
    let resp = srv.admin_delete(&format!("/v1/profiles/{gone}"));
    assert_eq!(resp.status, 204, "{resp}");
    assert!(
        deliveries(&srv, "").is_empty(),
        "their deliveries are deleted"
    );

    for n in 2..=3 {
        let other = uid("other");
        track_event(&srv, &other, "Order_Confirmation", json!({}));
        srv.advance(1_000);
        let got = rx.wait_for(n, WAIT);
        assert_eq!(got.len(), n, "{got:#?}");
        assert_eq!(
            got[n - 1].json()["userId"],
            other,
            "request {n} is the other person's, not a forgotten one read ahead: {got:#?}"
        );
    }
}
