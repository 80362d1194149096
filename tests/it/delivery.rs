//! Webhook delivery over the real binary (SPEC §5): Standard Webhooks headers and signatures,
//! retries with backoff, `Retry-After`, dead letters and manual retry, timeouts, redelivery after
//! `kill -9`, isolation between destinations, `segment` destinations and payload mappings.
//!
//! Each test points a destination at a scripted [`Receiver`] on loopback, publishes a forwarding
//! journey and ingests its trigger event.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::harness::{Server, uid};
use crate::journeys_api::{
    deliveries, delivery, identify, put_destination, put_journey, track_event, wait_delivery,
    wait_for, wait_received, webhook,
};
use crate::receiver::{Received, Receiver, Reply};

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

/// A server with destination `hook` (these settings, pointed at `rx`'s `/in`) and journey `fwd`.
fn setup(rx: &Receiver, extra: Value) -> Server {
    let srv = Server::start();
    put_destination(&srv, "hook", &webhook(&rx.url("/in"), extra));
    put_journey(&srv, &fwd_journey("fwd", "hook", "Order_Confirmation"));
    srv
}

/// Identifies a fresh user and triggers `fwd` once; returns the user id.
fn trigger(srv: &Server) -> String {
    let user = uid("buyer");
    identify(srv, &user, json!({"email": format!("{user}@example.com")}));
    track_event(srv, &user, "Order_Confirmation", json!({"order_id": "o-1"}));
    user
}

fn webhook_id(r: &Received) -> String {
    r.header("webhook-id")
        .unwrap_or_else(|| panic!("no webhook-id header: {:?}", r.headers))
        .to_string()
}

/// The HMAC-SHA256 signature of SPEC §5, computed here from the key bytes.
fn expected_signature(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Does the `webhook-signature` header (space-separated `v1,<sig>` entries) hold this signature?
fn signature_matches(r: &Received, key: &[u8]) -> bool {
    let (Some(sig), Some(ts)) = (r.header("webhook-signature"), r.header("webhook-timestamp"))
    else {
        return false;
    };
    let want = expected_signature(key, &webhook_id(r), ts, &r.body);
    sig.split(' ').any(|s| s == want)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn delivery_headers_and_signatures() {
    let rx = Receiver::start(vec![]);
    let srv = Server::start();
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
    let got = wait_received(&rx, 3, Duration::from_secs(10));
    assert_eq!(got.len(), 3, "one request per destination: {got:#?}");
    let by_path = |p: &str| -> &Received {
        got.iter()
            .find(|r| r.path == p)
            .unwrap_or_else(|| panic!("nothing received at {p}: {got:#?}"))
    };
    let now = now_secs();
    for r in &got {
        let id = webhook_id(r);
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
        assert!(
            (ts - now).abs() <= 10,
            "webhook-timestamp {ts} is not within 10 s of now {now}"
        );
        assert_eq!(r.header("x-api-key"), Some("key-123"), "{r:?}");
        assert_eq!(r.header("x-tenant"), Some("acme"), "{r:?}");
        // The delivery is known under that id.
        let d = delivery(&srv, &id);
        assert_eq!(d["id"], id.as_str(), "{d}");
    }
    let ids: std::collections::HashSet<String> = got.iter().map(webhook_id).collect();
    assert_eq!(ids.len(), 3, "each delivery has its own id");

    let first = by_path("/whsec");
    assert_eq!(first.json()["event"], "Order Confirmed");
    assert_eq!(
        first.json()["properties"]["email"],
        format!("{user}@example.com").as_str()
    );
    assert!(
        signature_matches(first, KEY),
        "whsec_ secret: the signature must verify with the base64-decoded key: {first:?}"
    );
    assert!(
        !signature_matches(first, whsec().as_bytes()),
        "whsec_ secret: signed with the text of the secret instead of its decoded key"
    );
    let second = by_path("/plain");
    assert_eq!(
        second.json()["event"],
        "b",
        "event_name defaults to the step id"
    );
    assert!(
        signature_matches(second, plain_secret.as_bytes()),
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
    let rx = Receiver::start(vec![Reply::status(500), Reply::status(500)]);
    let srv = setup(&rx, json!({}));
    trigger(&srv);
    let got = wait_received(&rx, 3, Duration::from_secs(15));
    let id = webhook_id(&got[0]);
    for r in &got {
        assert_eq!(webhook_id(r), id, "the same webhook-id on every attempt");
        assert_eq!(r.body, got[0].body, "the same body on every attempt");
    }
    for (n, pair) in got.windows(2).enumerate() {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(400),
            "retry {} came {gap:?} after the previous attempt: no backoff",
            n + 1
        );
    }
    let d = wait_delivery(&srv, &id, "succeeded", Duration::from_secs(10));
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
    let rx = Receiver::start(vec![Reply::Status(429, vec![("retry-after", "2".into())])]);
    let srv = setup(&rx, json!({}));
    trigger(&srv);
    let got = wait_received(&rx, 2, Duration::from_secs(15));
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(1900),
        "Retry-After: 2 asked for 2 s; the retry came after {gap:?}"
    );
    assert_eq!(webhook_id(&got[0]), webhook_id(&got[1]));
    let d = wait_delivery(
        &srv,
        &webhook_id(&got[0]),
        "succeeded",
        Duration::from_secs(10),
    );
    assert_eq!(d["attempts"], 2, "{d}");
}

#[test]
fn delivery_4xx_fails_at_once_and_manual_retry_sends_again() {
    let rx = Receiver::start(vec![Reply::status(400)]);
    let srv = setup(&rx, json!({}));
    trigger(&srv);
    let got = wait_received(&rx, 1, Duration::from_secs(10));
    let id = webhook_id(&got[0]);
    let d = wait_delivery(&srv, &id, "failed", Duration::from_secs(10));
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
    // No retry of a 400: the shortest backoff is well under a second.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(rx.received().len(), 1, "a 400 was retried");

    // A manual retry sends it again (the receiver now answers 200), with the same id.
    let resp =
        crate::journeys_api::admin_post(&srv, &format!("/v1/deliveries/{id}/retry"), &json!({}));
    assert_eq!(resp.status, 200, "{resp}");
    let got = wait_received(&rx, 2, Duration::from_secs(10));
    assert_eq!(webhook_id(&got[1]), id);
    assert_eq!(got[1].body, got[0].body);
    let d = wait_delivery(&srv, &id, "succeeded", Duration::from_secs(10));
    assert_eq!(d["status"], "succeeded", "{d}");

    // Unknown deliveries.
    let resp = crate::journeys_api::admin(&srv, "GET", "/v1/deliveries/no-such-id", None);
    assert_eq!(resp.status, 404, "{resp}");
    let resp = crate::journeys_api::admin_post(&srv, "/v1/deliveries/no-such-id/retry", &json!({}));
    assert_eq!(resp.status, 404, "{resp}");
}

#[test]
fn delivery_times_out_a_hanging_receiver_and_gives_up_after_max_attempts() {
    let rx = Receiver::start(vec![Reply::Hang, Reply::Hang]);
    let srv = setup(&rx, json!({"timeout": "1s", "max_attempts": 2}));
    let started = Instant::now();
    trigger(&srv);
    let got = wait_received(&rx, 2, Duration::from_secs(15));
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(1400),
        "the first attempt should time out after 1 s, then back off: retried after {gap:?}"
    );
    let id = webhook_id(&got[0]);
    assert_eq!(webhook_id(&got[1]), id);
    let d = wait_delivery(&srv, &id, "failed", Duration::from_secs(10));
    assert_eq!(d["attempts"], 2, "{d}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "a 1 s timeout took {:?}",
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
    let rx = Receiver::start(vec![
        Reply::status(500),
        Reply::status(502),
        Reply::status(500),
    ]);
    let srv = setup(&rx, json!({"max_attempts": 3}));
    trigger(&srv);
    let got = wait_received(&rx, 3, Duration::from_secs(15));
    let id = webhook_id(&got[0]);
    let d = wait_delivery(&srv, &id, "failed", Duration::from_secs(10));
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
    let mut srv = setup(&rx, json!({"timeout": "10s"}));
    trigger(&srv);
    let got = wait_received(&rx, 1, Duration::from_secs(10));
    let id = webhook_id(&got[0]);
    srv.kill9();
    srv.restart();
    let got = wait_received(&rx, 2, Duration::from_secs(15));
    assert_eq!(
        webhook_id(&got[1]),
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
    wait_received(&slow_rx, 1, Duration::from_secs(10));
    let sent = Instant::now();
    let fast: Vec<Value> = (0..5)
        .map(|n| json!({"type": "track", "userId": format!("fast-{n}"), "event": "Fast_Event"}))
        .collect();
    srv.ingest_ok("/v1/batch", &json!({"batch": fast}));
    let got = wait_received(&fast_rx, 5, Duration::from_secs(5));
    assert_eq!(got.len(), 5, "{got:#?}");
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "the healthy destination waited {:?}",
        sent.elapsed()
    );
    for r in &got {
        let id = webhook_id(r);
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
    let shown = crate::journeys_api::admin_json(&srv, "/v1/destinations/seg");
    assert_eq!(shown["write_key_set"], true, "{shown}");
    assert!(shown.get("write_key").is_none(), "write_key shown: {shown}");
    put_journey(&srv, &fwd_journey("fwd", "seg", "Order_Confirmation"));
    let user = trigger(&srv);

    let d = wait_for("a delivery to be written", Duration::from_secs(5), || {
        deliveries(&srv, "destination=seg")
            .into_iter()
            .next()
            .ok_or_else(|| "none".to_string())
    });
    let id = d["id"].as_str().unwrap().to_string();
    wait_delivery(&srv, &id, "succeeded", Duration::from_secs(10));

    // The second journeyd stored it as a track event of the same user, with the delivery id as its
    // messageId and the journey metadata in its properties.
    let stored = wait_for(
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
    let got = wait_received(&rx, 1, Duration::from_secs(10));
    assert_eq!(
        got[0].json(),
        json!({"email": "ada@example.com", "text": "Hi Ada",
               "nested": {"event": "notify", "fixed": [1, "two"]}}),
        "exactly the mapped body"
    );
    assert!(
        signature_matches(&got[0], KEY),
        "a mapped body is signed as sent"
    );
    let id = webhook_id(&got[0]);
    let d = wait_delivery(&srv, &id, "succeeded", Duration::from_secs(10));
    assert_eq!(d["journey"], "mapped", "{d}");
}
