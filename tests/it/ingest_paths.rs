//! Every ingest path and its alias accepts a valid message of its type, and the message shows up in the
//! profile's timeline as stored: original fields kept, server fields added.

use serde_json::{Value, json};

use crate::support::{Server, check_all, is_stored_timestamp, uid};

/// The fields, beyond ids and type, that make a valid message of each type.
fn body_of(kind: &str, user: &str) -> Value {
    match kind {
        "track" => json!({"event": "Signed_Up", "properties": {"plan": "pro"}}),
        "identify" => json!({"traits": {"email": "ada@example.com"}}),
        "page" => json!({"name": "Home", "properties": {"path": "/home"}}),
        "screen" => json!({"name": "Main", "properties": {"tab": "feed"}}),
        "group" => json!({"groupId": "g-1", "traits": {"name": "Acme"}}),
        "alias" => json!({"previousId": format!("{user}-previous")}),
        other => panic!("no message for type {other}"),
    }
}

/// Posts one message of `kind` to `path` and checks that it is in the timeline with the fields it was sent with.
/// `with_type`: whether the message names its type (browser paths and batches do; the plain Tracking API
/// paths imply it).
fn check(srv: &Server, path: &str, kind: &str, with_type: bool, batch: bool) {
    let user = uid("user");
    let mid = uid("mid");
    let mut msg = body_of(kind, &user);
    msg["userId"] = json!(user);
    msg["messageId"] = json!(mid);
    msg["timestamp"] = json!("2026-01-02T03:04:05.678Z");
    if with_type {
        msg["type"] = json!(kind);
    }
    let body = if batch {
        json!({"batch": [msg]})
    } else {
        msg.clone()
    };

    let resp = srv.ingest(path, &body);
    assert_eq!(
        resp.expect(200),
        json!({"success": true}),
        "POST {path} with a valid {kind} {body}:\n{resp}"
    );

    let stored = srv.event(&user, &mid);
    let ctx = format!("POST {path} ({kind}): stored message {stored:#}");
    assert_eq!(stored["type"], kind, "{ctx}");
    assert_eq!(stored["userId"], json!(user), "{ctx}");
    for (k, v) in body_of(kind, &user).as_object().unwrap() {
        assert_eq!(&stored[k], v, "field {k}: {ctx}");
    }
    for field in ["receivedAt", "timestamp", "originalTimestamp"] {
        assert!(
            is_stored_timestamp(&stored[field]),
            "{field} not RFC 3339 UTC ms Z: {ctx}"
        );
    }
    assert_eq!(stored["timestamp"], "2026-01-02T03:04:05.678Z", "{ctx}");
}

#[test]
fn every_path_accepts_its_type() {
    let srv = Server::start();
    // (path, type, whether the message carries `type`, batch envelope)
    let mut cases = vec![
        ("/v1/track", "track", false, false),
        ("/v1/identify", "identify", false, false),
        ("/v1/page", "page", false, false),
        ("/v1/screen", "screen", false, false),
        ("/v1/group", "group", false, false),
        ("/v1/alias", "alias", false, false),
        ("/v1/t", "track", true, false),
        ("/v1/i", "identify", true, false),
        ("/v1/p", "page", true, false),
        ("/v1/s", "screen", true, false),
        ("/v1/g", "group", true, false),
        ("/v1/a", "alias", true, false),
        // The plain paths also accept a message that names its own (matching) type.
        ("/v1/track", "track", true, false),
        ("/v1/alias", "alias", true, false),
    ];
    for path in ["/v1/batch", "/v1/b"] {
        for kind in ["track", "identify", "page", "screen", "group", "alias"] {
            cases.push((path, kind, true, true));
        }
    }
    check_all(
        cases,
        |c| format!("{c:?}"),
        |&(path, kind, with_type, batch)| check(&srv, path, kind, with_type, batch),
    );
}

#[test]
fn message_id_is_generated_when_absent() {
    let srv = Server::start();
    let user = uid("user");
    srv.ingest_ok("/v1/track", &json!({"event": "No_Id", "userId": user}));
    srv.ingest_ok(
        "/v1/batch",
        &json!({"batch": [{"type": "track", "event": "No_Id", "userId": user}]}),
    );
    let events = srv.events(&user);
    assert_eq!(events.len(), 2, "timeline of {user}: {events:#?}");
    let ids: Vec<&str> = events
        .iter()
        .map(|m| {
            m["messageId"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| panic!("no messageId: {m:#}"))
        })
        .collect();
    assert_ne!(
        ids[0], ids[1],
        "generated messageIds must differ: {events:#?}"
    );
    for m in &events {
        assert!(is_stored_timestamp(&m["receivedAt"]), "receivedAt: {m:#}");
        // No client timestamp: timestamp is receivedAt, and there is no originalTimestamp.
        assert_eq!(m["timestamp"], m["receivedAt"], "{m:#}");
        assert!(
            m.get("originalTimestamp").is_none_or(Value::is_null),
            "{m:#}"
        );
    }
}

#[test]
fn timeline_pages_by_default_limit_and_cursor() {
    let srv = Server::start();
    let user = uid("user");
    let mids: Vec<String> = (0..250).map(|i| format!("{user}-m{i:03}")).collect();
    let batch: Vec<Value> = mids
        .iter()
        .map(|m| crate::support::track(&user, m))
        .collect();
    srv.ingest_ok("/v1/batch", &json!({"batch": batch}));

    // The default page is 100 items with a cursor to go on.
    let resp = srv.admin_get(&format!("/v1/profiles/{user}/timeline"));
    let first = resp.expect(200);
    assert_eq!(
        first["items"].as_array().map(Vec::len),
        Some(100),
        "default limit:\n{resp}"
    );
    assert!(
        first["next_cursor"].is_string(),
        "a cursor after the first of 3 pages:\n{resp}"
    );

    // Small pages, paged to the end, give every event once, in the order sent (oldest first).
    let got: Vec<String> = srv
        .timeline_paged(&user, 7)
        .into_iter()
        .filter(|i| i["kind"] == "event")
        .map(|i| i["message"]["messageId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        got, mids,
        "paging with limit=7 must give every event once, oldest first"
    );
    let seqs: Vec<i64> = srv
        .timeline(&user)
        .iter()
        .map(|i| i["seq"].as_i64().expect("integer seq"))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq must increase: {seqs:?}"
    );
}
