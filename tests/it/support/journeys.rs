//! The admin API helpers the journey, delivery, example and restart tests share: destinations,
//! journeys, triggering events, instances and their histories, the outbox; and the journey
//! documents more than one file uses.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Client, enc, eventually};

/// PUTs a destination and expects success (`200` or `201`); returns what it shows.
pub fn put_destination(c: &Client, id: &str, body: &Value) -> Value {
    let resp = c.admin_put(&format!("/v1/destinations/{}", enc(id)), body);
    assert!(
        resp.status == 200 || resp.status == 201,
        "{}: expected 200/201:\n{resp}",
        resp.request
    );
    resp.json()
}

/// A webhook destination pointing at `url`, with `extra` settings merged in.
pub fn webhook(url: &str, extra: Value) -> Value {
    let mut d = json!({"type": "webhook", "url": url, "timeout": "1s", "max_attempts": 3});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            d[k] = v;
        }
    }
    d
}

/// A webhook destination pointing at `url` with a frequency cap of `max` sends `per` period.
pub fn capped_webhook(url: &str, max: u32, per: &str) -> Value {
    webhook(url, json!({"frequency_cap": {"max": max, "per": per}}))
}

/// PUTs a journey document under its own id and expects success; returns `{id, version}`.
pub fn put_journey(c: &Client, doc: &Value) -> Value {
    let id = doc["id"].as_str().expect("journey document without id");
    let resp = c.admin_put(&format!("/v1/journeys/{}", enc(id)), doc);
    assert!(
        resp.status == 200 || resp.status == 201,
        "{}: expected 200/201:\n{resp}",
        resp.request
    );
    resp.json()
}

/// Ingests one track call for `user` and expects the plain success answer.
pub fn track_event(c: &Client, user: &str, event: &str, properties: Value) {
    c.ingest_ok(
        "/v1/track",
        &json!({"userId": user, "event": event, "properties": properties}),
    );
}

pub fn identify(c: &Client, user: &str, traits: Value) {
    c.ingest_ok("/v1/identify", &json!({"userId": user, "traits": traits}));
}

/// A minimal valid track message for a user, with a messageId.
pub fn track(user: &str, message_id: &str) -> Value {
    json!({"type": "track", "event": "Test_Event", "userId": user, "messageId": message_id,
           "properties": {"n": 1}})
}

pub fn stats(c: &Client, journey: &str, query: &str) -> Value {
    c.admin_json(&format!("/v1/journeys/{}/stats{query}", enc(journey)))
}

/// The instances listed by `GET /v1/profiles/{id}`.
pub fn instances(c: &Client, user: &str) -> Vec<Value> {
    let resp = c.profile(user);
    let body = resp.expect(200);
    body["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no instances array:\n{resp}", resp.request))
        .clone()
}

/// The instances of one journey for one profile.
pub fn instances_of(c: &Client, user: &str, journey: &str) -> Vec<Value> {
    instances(c, user)
        .into_iter()
        .filter(|i| i["journey"] == journey)
        .collect()
}

/// The instances of these users' profiles, oldest first (instance ids follow entry order); an
/// unknown profile has none.
pub fn live_instances(c: &Client, users: &[&str]) -> Vec<Value> {
    let mut seen = BTreeSet::new();
    let mut all = Vec::new();
    for user in users {
        if !seen.insert(*user) {
            continue;
        }
        let resp = c.profile(user);
        if resp.status == 404 {
            continue;
        }
        let profile = resp.expect(200);
        all.extend(profile["instances"].as_array().unwrap().iter().cloned());
    }
    // Ids linked to one profile show the same instances.
    all.sort_by_key(|i| i["id"].as_i64().unwrap());
    all.dedup_by_key(|i| i["id"].as_i64().unwrap());
    all
}

/// `GET /v1/instances/{id}`.
pub fn instance(c: &Client, id: i64) -> Value {
    c.admin_json(&format!("/v1/instances/{id}"))
}

/// A transition in the trace form `what step -> detail`, from the simulator's trace or a live history.
pub fn transition_line(t: &Value) -> String {
    let mut s = t["what"].as_str().unwrap().to_string();
    if let Some(step) = t["step"].as_str() {
        s.push(' ');
        s.push_str(step);
    }
    if let Some(detail) = t["detail"].as_str() {
        s.push_str(" -> ");
        s.push_str(detail);
    }
    s
}

/// The history of an instance (`GET /v1/instances/{id}`) in trace form.
pub fn history_lines(instance: &Value) -> Vec<String> {
    instance["history"]
        .as_array()
        .unwrap_or_else(|| panic!("instance without history: {instance}"))
        .iter()
        .map(transition_line)
        .collect()
}

/// Every delivery of `GET /v1/deliveries?<query>` (`destination=crm`, `status=failed`, or empty),
/// following `next_cursor`.
pub fn deliveries(c: &Client, query: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut path = format!("/v1/deliveries?limit=1000&{query}");
        if let Some(cur) = &cursor {
            path.push_str(&format!("&cursor={}", enc(cur)));
        }
        let body = c.admin_json(&path);
        items.extend(
            body["items"]
                .as_array()
                .unwrap_or_else(|| panic!("GET {path}: no items array: {body}"))
                .iter()
                .cloned(),
        );
        match &body["next_cursor"] {
            Value::String(cur) => cursor = Some(cur.clone()),
            _ => return items,
        }
    }
    panic!("GET /v1/deliveries?{query} did not end after 1000 pages");
}

pub fn delivery(c: &Client, id: &str) -> Value {
    c.admin_json(&format!("/v1/deliveries/{}", enc(id)))
}

/// Waits until the delivery has this status, and returns it.
pub fn wait_delivery(c: &Client, id: &str, status: &str, timeout: Duration) -> Value {
    eventually(&format!("delivery {id} to be {status}"), timeout, || {
        let d = delivery(c, id);
        if d["status"] == status { Ok(d) } else { Err(d) }
    })
}

/// The deliveries of `GET /v1/deliveries?<query>` once there are at least `n` and none is
/// pending any more: a receiver sees a request before journeyd has recorded its outcome.
pub fn settled_deliveries(c: &Client, query: &str, n: usize, timeout: Duration) -> Vec<Value> {
    eventually(
        &format!("{n} settled deliveries of ?{query}"),
        timeout,
        || {
            let items = deliveries(c, query);
            if items.len() >= n && items.iter().all(|d| d["status"] != "pending") {
                Ok(items)
            } else {
                Err(Value::Array(items))
            }
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Journey documents that more than one test file uses
// ---------------------------------------------------------------------------------------------

/// The cart-abandonment journey of SPEC §3; its destination `crm` need not exist for simulation.
pub fn cart_journey() -> Value {
    serde_json::from_str(include_str!("../../fixtures/journeys/spec-example.json"))
        .expect("the SPEC example is JSON")
}

/// Timed events for the cart journey: one cart abandoned (its timer reset at +1h, so reminded at
/// +3h), one ordered at +10m, one exited at +45m.
pub fn cart_events(user: &str) -> Vec<Value> {
    let other = format!("{user}-b");
    let third = format!("{user}-c");
    vec![
        json!({"at": "+0s", "message": {"type": "track", "userId": user, "event": "Product_Added",
                                        "properties": {"cart_ID": "c-1"}}}),
        json!({"at": "+1h", "message": {"type": "track", "userId": user, "event": "Cart_Modified",
                                        "properties": {"cart_ID": "c-1", "items": 2}}}),
        json!({"at": "+1m", "message": {"type": "track", "userId": other, "event": "Product_Added",
                                        "properties": {"cart_ID": "c-2"}}}),
        json!({"at": "+10m", "message": {"type": "track", "userId": other, "event": "Order_Confirmation",
                                         "properties": {"cart_ID": "c-2"}}}),
        json!({"at": "+0s", "message": {"type": "track", "userId": third, "event": "Product_Added",
                                        "properties": {"cart_ID": "c-3"}}}),
        json!({"at": "+45m", "message": {"type": "track", "userId": third, "event": "Account_Deleted",
                                         "properties": {"cart_ID": "c-3"}}}),
    ]
}

/// A journey with many independent problems at once.
pub fn many_problems_journey(id: &str) -> Value {
    json!({
        "id": id,
        "entry": {"event": "Bad_Start"},
        "steps": [
            // percents total 90
            {"id": "pick", "type": "random_split",
             "branches": [{"name": "a", "percent": 60, "next": "wait"},
                          {"name": "b", "percent": 30, "next": "loop1"}]},
            // a dangling reference, a bad duration, and a branch without an event
            {"id": "wait", "type": "hold_until", "max_hold": "2 hours",
             "branches": [{"event": "Bad_Go", "next": "remindr"},
                          {"name": "no event here", "next": null}]},
            // a cycle
            {"id": "loop1", "type": "delay", "duration": "1h", "next": "loop2"},
            {"id": "loop2", "type": "delay", "duration": "1h", "next": "loop1"},
            {"id": "remind", "type": "send", "destination": "hook", "next": null}
        ]
    })
}

/// The signing secret of the `crm` destinations of the example and restart tests: `whsec_` and
/// the base64 of the key bytes.
pub const SECRET: &str = "whsec_am91cm5leWQtZXhhbXBsZXMtc2lnbmluZy1rZXk=";

/// A webhook destination pointing at `url`, signed with [`SECRET`], otherwise with the defaults.
pub fn signed_webhook(url: &str) -> Value {
    json!({"type": "webhook", "url": url, "secret": SECRET})
}
