//! Identity: a profile is keyed by userId, else anonymousId; identify merges traits (shallowly); identify or
//! alias carrying both ids links them, so that later events from the anonymous id reach the user's profile.

use serde_json::{Value, json};

use crate::support::{Server, uid};

/// Reads a profile and checks its shape: `id` is `key`, every id in `ids` is listed, `instances` is a list.
fn check_profile(srv: &Server, lookup: &str, key: &str, ids: &[&str]) -> Value {
    let resp = srv.profile(lookup);
    let p = resp.expect(200);
    assert_eq!(
        p["id"], key,
        "GET /v1/profiles/{lookup} must resolve to {key}:\n{resp}"
    );
    let got = p["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("`ids` must be a list:\n{resp}"));
    for id in ids.iter().chain([&key]) {
        assert!(
            got.contains(&json!(id)),
            "ids of {key} must contain {id}:\n{resp}"
        );
    }
    assert!(
        p["instances"].is_array(),
        "`instances` must be a list:\n{resp}"
    );
    assert!(
        p["traits"].is_object(),
        "`traits` must be an object:\n{resp}"
    );
    p
}

fn mids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|m| m["messageId"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn identify_merges_traits_shallowly() {
    let srv = Server::start();
    let user = uid("user");
    srv.ingest_ok(
        "/v1/identify",
        &json!({"userId": user, "traits": {"a": 1, "b": 2, "address": {"city": "Paris", "zip": "75001"}}}),
    );
    srv.ingest_ok(
        "/v1/identify",
        &json!({"userId": user, "traits": {"b": 3, "c": [4], "address": {"city": "Lyon"}}}),
    );
    // A track carries no traits for the profile.
    srv.ingest_ok(
        "/v1/track",
        &json!({"userId": user, "event": "E", "properties": {"a": 99}}),
    );
    let p = check_profile(&srv, &user, &user, &[]);
    assert_eq!(
        p["traits"],
        json!({"a": 1, "b": 3, "c": [4], "address": {"city": "Lyon"}}),
        "top-level trait keys merge; a nested object is replaced whole: {p:#}"
    );
}

#[test]
fn anonymous_profile_is_keyed_by_anonymous_id() {
    let srv = Server::start();
    let anon = uid("anon");
    srv.ingest_ok(
        "/v1/track",
        &json!({"anonymousId": anon, "event": "Visited", "messageId": format!("{anon}-1")}),
    );
    srv.ingest_ok(
        "/v1/identify",
        &json!({"anonymousId": anon, "userId": null, "traits": {"plan": "free"}}),
    );
    let p = check_profile(&srv, &anon, &anon, &[]);
    assert_eq!(p["traits"], json!({"plan": "free"}), "{p:#}");
    srv.event(&anon, &format!("{anon}-1"));
}

/// Links `anon` to `user` with `link`, then sends a track with only the anonymous id, and checks that both
/// ids resolve to the user's profile and the track is in the user's timeline.
fn check_link(srv: &Server, name: &str, user: &str, anon: &str, path: &str, link: Value) {
    let resp = srv.ingest(path, &link);
    assert_eq!(
        resp.expect(200),
        json!({"success": true}),
        "{name}: {link}:\n{resp}"
    );
    let later = format!("{anon}-later");
    srv.ingest_ok(
        "/v1/track",
        &json!({"anonymousId": anon, "event": "After_Link", "messageId": later}),
    );

    let by_user = check_profile(srv, user, user, &[anon]);
    let by_anon = check_profile(srv, anon, user, &[anon]);
    assert_eq!(by_user, by_anon, "{name}: both ids show the same profile");
    let events = srv.events(user);
    assert!(
        mids(&events).contains(&later),
        "{name}: a track with only anonymousId {anon} after the link must be in {user}'s timeline: {:?}",
        mids(&events)
    );
    assert_eq!(
        mids(&srv.events(anon)),
        mids(&events),
        "{name}: the timeline read through the anonymous id is the user's"
    );
}

#[test]
fn identify_and_alias_link_ids() {
    let srv = Server::start();
    let (user, anon) = (uid("user"), uid("anon"));
    let link = json!({"userId": user, "anonymousId": anon, "traits": {"email": "a@example.com"}});
    check_link(&srv, "identify", &user, &anon, "/v1/identify", link);
    let p = check_profile(&srv, &anon, &user, &[&anon]);
    assert_eq!(p["traits"]["email"], "a@example.com", "{p:#}");

    let (user, anon) = (uid("user"), uid("anon"));
    check_link(
        &srv,
        "alias",
        &user,
        &anon,
        "/v1/alias",
        json!({"userId": user, "previousId": anon}),
    );

    let (user, anon) = (uid("user"), uid("anon"));
    check_link(
        &srv,
        "alias in a batch",
        &user,
        &anon,
        "/v1/batch",
        json!({"batch": [{"type": "alias", "userId": user, "previousId": anon}]}),
    );

    // Several anonymous ids (two devices) can be linked to one user.
    let user = uid("user");
    let (a1, a2) = (uid("anon"), uid("anon"));
    check_link(
        &srv,
        "first device",
        &user,
        &a1,
        "/v1/identify",
        json!({"userId": user, "anonymousId": a1}),
    );
    check_link(
        &srv,
        "second device",
        &user,
        &a2,
        "/v1/identify",
        json!({"userId": user, "anonymousId": a2}),
    );
    check_profile(&srv, &a1, &user, &[&a1, &a2]);
}

/// SPEC §2 promises that *later* events from a linked anonymous id reach the user; what happens to events the
/// anonymous id sent *before* the link is not spelled out. A user expects them not to vanish: they must be
/// readable through one of the two ids.
#[test]
fn events_before_linking_stay_visible() {
    let srv = Server::start();
    let (user, anon) = (uid("user"), uid("anon"));
    let early = format!("{anon}-early");
    srv.ingest_ok(
        "/v1/track",
        &json!({"anonymousId": anon, "event": "Before_Link", "messageId": early}),
    );
    srv.ingest_ok(
        "/v1/identify",
        &json!({"userId": user, "anonymousId": anon}),
    );
    let mut seen = mids(&srv.events(&user));
    seen.extend(mids(&srv.events(&anon)));
    assert!(
        seen.contains(&early),
        "an event sent by {anon} before it was linked to {user} is in neither timeline: {seen:?}"
    );
}

/// Forgetting a person ends their waiting instances at once: the timer that was due never fires
/// for them (nothing is sent), while someone else's does; the journey's counters stay as they
/// were (SPEC §6).
#[test]
fn a_forgotten_person_is_sent_nothing_more() {
    use crate::support::{Appliance, WAIT, settled_deliveries, signed_webhook};
    let srv = Appliance::start();
    let receiver = srv.receiver(Vec::new());
    srv.admin_put(
        "/v1/destinations/crm",
        &signed_webhook(&receiver.url("/hook")),
    )
    .expect(201);
    let journey = json!({"id": "remind", "entry": {"event": "Signed_Up"},
        "steps": [{"id": "wait", "type": "delay", "duration": "1h", "next": "nudge"},
                  {"id": "nudge", "type": "send", "destination": "crm"}]});
    srv.admin_put("/v1/journeys/remind", &journey).expect(201);
    for user in ["gone", "kept"] {
        srv.ingest_ok("/v1/track", &json!({"userId": user, "event": "Signed_Up"}));
    }
    let stats = || srv.admin_json("/v1/journeys/remind/stats");
    let before = stats();
    assert_eq!(before["active"], 2, "{before:#}");
    let resp = srv.admin_delete("/v1/profiles/gone");
    assert_eq!(resp.status, 204, "{resp}");
    assert_eq!(stats(), before, "the counters stay");

    srv.set_time(srv.now_ms() + 2 * 3_600_000);
    let sent = settled_deliveries(&srv, "destination=crm", 1, WAIT);
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].json()["userId"], "kept");
    // The forgotten person's timer was due at the same moment as the other's, so it would have
    // fired in the same tick: nothing more arrives.
    assert_eq!(
        srv.admin_json("/v1/deliveries?destination=crm")["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
