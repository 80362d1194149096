//! Deduplication: a messageId seen before is acknowledged (200) and not processed again, however it comes
//! back: the same path, another path, inside a batch, twice in one batch, or after a crash and restart.

use serde_json::{Value, json};

use crate::support::{Server, check_all, uid};

/// Sends each (path, body) in turn, every one must answer `200 {"success": true}`; then the timeline of
/// `user` must hold `mid` exactly once, as first sent (the `properties.n` of the first copy).
fn check(srv: &Server, name: &str, user: &str, mid: &str, sends: &[(&str, Value)], first_n: i64) {
    for (path, body) in sends {
        let resp = srv.ingest(path, body);
        assert_eq!(
            resp.expect(200),
            json!({"success": true}),
            "{name}: POST {path} {body}:\n{resp}"
        );
    }
    let events = srv.events(user);
    let copies: Vec<&Value> = events.iter().filter(|m| m["messageId"] == mid).collect();
    assert_eq!(
        copies.len(),
        1,
        "{name}: messageId {mid} must be stored once, timeline: {events:#?}"
    );
    assert_eq!(
        copies[0]["properties"]["n"], first_n,
        "{name}: the first copy is the one kept: {:#}",
        copies[0]
    );
}

fn msg(user: &str, mid: &str, n: i64) -> Value {
    json!({"type": "track", "event": "Dup", "userId": user, "messageId": mid, "properties": {"n": n}})
}

#[test]
fn duplicates_are_acknowledged_and_stored_once() {
    let srv = Server::start();
    let cases: Vec<(&str, Box<dyn Fn(&str, &str) -> Vec<(&'static str, Value)>>)> = vec![
        (
            "same path twice",
            Box::new(|u, m| vec![("/v1/track", msg(u, m, 1)), ("/v1/track", msg(u, m, 2))]),
        ),
        (
            "alias path",
            Box::new(|u, m| vec![("/v1/track", msg(u, m, 1)), ("/v1/t", msg(u, m, 2))]),
        ),
        (
            "single then batch",
            Box::new(|u, m| {
                vec![
                    ("/v1/track", msg(u, m, 1)),
                    ("/v1/batch", json!({"batch": [msg(u, m, 2)]})),
                ]
            }),
        ),
        (
            "batch then single",
            Box::new(|u, m| {
                vec![
                    ("/v1/batch", json!({"batch": [msg(u, m, 1)]})),
                    ("/v1/track", msg(u, m, 2)),
                ]
            }),
        ),
        (
            "twice in one batch",
            Box::new(|u, m| vec![("/v1/batch", json!({"batch": [msg(u, m, 1), msg(u, m, 2)]}))]),
        ),
        (
            "three times",
            Box::new(|u, m| {
                vec![
                    ("/v1/track", msg(u, m, 1)),
                    ("/v1/track", msg(u, m, 2)),
                    ("/v1/b", json!({"batch": [msg(u, m, 3)]})),
                ]
            }),
        ),
    ];
    check_all(
        cases,
        |c| c.0.to_string(),
        |(name, sends)| {
            let user = uid("user");
            let mid = uid("mid");
            check(&srv, name, &user, &mid, &sends(&user, &mid), 1);
        },
    );
}

#[test]
fn duplicates_are_recognised_after_a_crash() {
    let mut srv = Server::start();
    let user = uid("user");
    let mid = uid("mid");
    check(
        &srv,
        "before crash",
        &user,
        &mid,
        &[("/v1/track", msg(&user, &mid, 1))],
        1,
    );
    srv.kill9();
    srv.restart();
    check(
        &srv,
        "after crash",
        &user,
        &mid,
        &[("/v1/track", msg(&user, &mid, 2))],
        1,
    );
}
