//! Batches: invalid messages are rejected by index while the valid ones are stored, and the batch's
//! top-level `context` and `integrations` merge into every message (the message's own keys win).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::support::{Server, uid};

/// One message of a batch and what must become of it: `None` stored, `Some(code)` rejected with that code.
struct Item {
    msg: Value,
    rejected: Option<&'static str>,
}

/// Sends the batch and checks the `rejected` list, then that exactly the accepted messages are stored.
fn check(srv: &Server, name: &str, user: &str, items: &[Item]) {
    let batch: Vec<Value> = items.iter().map(|i| i.msg.clone()).collect();
    let resp = srv.ingest("/v1/batch", &json!({"batch": batch}));
    let body = resp.expect(200);
    assert_eq!(body["success"], true, "{name}:\n{resp}");

    let want: BTreeMap<u64, &str> = items
        .iter()
        .enumerate()
        .filter_map(|(i, it)| it.rejected.map(|c| (i as u64, c)))
        .collect();
    let mut got: BTreeMap<u64, &str> = BTreeMap::new();
    if !want.is_empty() || body.get("rejected").is_some() {
        for r in body["rejected"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: `rejected` must be a list:\n{resp}"))
        {
            let index = r["index"]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: rejected entry without index: {r}"));
            let code = r["code"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: rejected entry without code: {r}"));
            assert!(
                r["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{name}: rejected entry needs a message: {r}"
            );
            assert!(
                got.insert(index, code).is_none(),
                "{name}: index {index} rejected twice:\n{resp}"
            );
        }
    }
    assert_eq!(got, want, "{name}: rejected (index -> code):\n{resp}");

    let expected: Vec<Value> = items
        .iter()
        .filter(|i| i.rejected.is_none())
        .map(|i| i.msg["messageId"].clone())
        .collect();
    if expected.is_empty() {
        let profile = srv.profile(user);
        assert_eq!(
            profile.status, 404,
            "{name}: nothing accepted, yet {user} exists:\n{profile}"
        );
        return;
    }
    let stored: Vec<Value> = srv
        .events(user)
        .into_iter()
        .map(|m| m["messageId"].clone())
        .collect();
    assert_eq!(
        stored, expected,
        "{name}: the accepted messages, in batch order, and nothing else, in {user}'s timeline"
    );
}

#[test]
fn bad_messages_are_rejected_by_index() {
    let srv = Server::start();
    let user = uid("user");
    let mid = |i: usize| format!("{user}-m{i}");
    let ok = |i: usize| Item {
        msg: json!({"type": "track", "event": "Good", "userId": user, "messageId": mid(i)}),
        rejected: None,
    };
    let bad = |msg: Value, code| Item {
        msg,
        rejected: Some(code),
    };
    let items = vec![
        ok(0),
        bad(
            json!({"type": "track", "userId": user, "messageId": mid(1)}),
            "invalid_message",
        ),
        ok(2),
        bad(
            json!({"type": "track", "event": "Huge", "userId": user, "messageId": mid(3),
                   "properties": {"pad": "x".repeat(40_000)}}),
            "too_large",
        ),
        bad(
            json!({"event": "No_Type", "userId": user, "messageId": mid(4)}),
            "invalid_message",
        ),
        bad(
            json!({"type": "identify", "userId": null, "anonymousId": null, "messageId": mid(5),
                   "traits": {"email": user}}),
            "invalid_message",
        ),
        bad(
            json!({"type": "alias", "userId": user, "messageId": mid(6)}),
            "invalid_message",
        ),
        Item {
            msg: json!({"type": "page", "name": "Home", "userId": user, "messageId": mid(7)}),
            rejected: None,
        },
    ];
    check(&srv, "mixed batch", &user, &items);

    // One bad message alone in a batch is still a 200 with its rejection.
    let user = uid("user");
    let items = vec![bad(
        json!({"type": "track", "userId": user, "messageId": uid("mid")}),
        "invalid_message",
    )];
    check(&srv, "only bad", &user, &items);
}

#[test]
fn batch_context_and_integrations_merge_into_messages() {
    let srv = Server::start();
    let user = uid("user");
    let library = json!({"name": "analytics-test", "version": "1.0"});
    let body = json!({
        "context": {"library": library, "ip": "10.0.0.1", "locale": "en-GB"},
        "integrations": {"All": false, "Mixpanel": true},
        "batch": [
            {"type": "track", "event": "Plain", "userId": user, "messageId": format!("{user}-plain")},
            {"type": "track", "event": "Own", "userId": user, "messageId": format!("{user}-own"),
             "context": {"ip": "192.0.2.9", "page": {"path": "/x"}},
             "integrations": {"Mixpanel": false, "Amplitude": true}}
        ]
    });
    srv.ingest_ok("/v1/batch", &body);

    let plain = srv.event(&user, &format!("{user}-plain"));
    let ctx = format!("stored {plain:#}");
    assert_eq!(plain["context"]["library"], library, "{ctx}");
    assert_eq!(plain["context"]["ip"], "10.0.0.1", "{ctx}");
    assert_eq!(plain["context"]["locale"], "en-GB", "{ctx}");
    assert_eq!(
        plain["integrations"],
        json!({"All": false, "Mixpanel": true}),
        "{ctx}"
    );

    let own = srv.event(&user, &format!("{user}-own"));
    let ctx = format!("stored {own:#}");
    // The batch's keys are merged in; where both have a key, the message's value wins.
    assert_eq!(own["context"]["library"], library, "{ctx}");
    assert_eq!(own["context"]["locale"], "en-GB", "{ctx}");
    assert_eq!(own["context"]["ip"], "192.0.2.9", "{ctx}");
    assert_eq!(own["context"]["page"], json!({"path": "/x"}), "{ctx}");
    assert_eq!(
        own["integrations"],
        json!({"All": false, "Mixpanel": false, "Amplitude": true}),
        "{ctx}"
    );
}
