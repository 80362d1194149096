//! Profiles that follow the person (SPEC §2 Identity, §6.7): anonymous first and identified
//! later, identified first, alias from one userId to another, chains; live through the writer
//! on a manual clock, and the same script simulated, must deliver the same payloads.

use serde_json::{Value, json};

use crate::support::{Appliance, WAIT, cart_journey, offset_ms, put_journey};

/// A script line: an offset from the start and a Segment message.
fn at(offset: &str, message: Value) -> Value {
    json!({"at": offset, "message": message})
}

/// A cart event of a script: `who` is `("userId", id)` or `("anonymousId", id)`.
fn cart(offset: &str, (key, id): (&str, &str), event: &str, cart_id: &str) -> Value {
    let mut message = json!({"type": "track", "event": event, "properties": {"cart_ID": cart_id}});
    message[key] = json!(id);
    at(offset, message)
}

/// An identify call of a script that links `anonymous` to `user`.
fn identify(offset: &str, user: &str, anonymous: &str) -> Value {
    at(
        offset,
        json!({"type": "identify", "userId": user, "anonymousId": anonymous}),
    )
}

/// An alias call of a script from `previous` to `user`.
fn alias(offset: &str, user: &str, previous: &str) -> Value {
    at(
        offset,
        json!({"type": "alias", "userId": user, "previousId": previous}),
    )
}

/// A payload with what differs by nature between a live run and a simulation taken out: ids.
fn comparable(payload: &Value) -> Value {
    let mut p = payload.clone();
    p.as_object_mut().unwrap().remove("messageId");
    p["properties"]["journey_metadata"]
        .as_object_mut()
        .unwrap()
        .remove("instance_id");
    p
}

/// Plays `script` into a fresh appliance (moving its clock to each offset) with `journey`
/// published and its destination `crm` pointing at a receiver, lets every timer fire, and
/// checks that the payloads delivered are those `POST /v1/simulate` gives for the same script.
/// Returns the appliance and the live payloads.
fn live_equals_simulated(journey: &Value, script: &[Value]) -> (Appliance, Vec<Value>) {
    let (app, rx) = Appliance::with_crm_receiver();
    put_journey(&app, journey);
    let start = app.now_ms();
    let mut sorted: Vec<&Value> = script.iter().collect();
    sorted.sort_by_key(|e| offset_ms(e["at"].as_str().unwrap()));
    for e in &sorted {
        app.set_time(start + offset_ms(e["at"].as_str().unwrap()) as i64);
        app.ingest_ok("/v1/batch", &json!({"batch": [e["message"]]}));
    }
    let sim = app
        .admin_post(
            "/v1/simulate",
            &json!({"journey": journey, "events": script,
                    "start": chrono::DateTime::from_timestamp_millis(start).unwrap().to_rfc3339()}),
        )
        .expect(200);
    let mut expected: Vec<Value> = sim["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| comparable(&d["payload"]))
        .collect();
    // Every timer fires (the journeys here hold for hours at most).
    app.advance(30 * 86_400_000);
    let got = rx.wait_for(expected.len(), WAIT);
    let mut live: Vec<Value> = got.iter().map(|r| comparable(&r.json())).collect();
    let key = |v: &Value| v.to_string();
    live.sort_by_key(key);
    expected.sort_by_key(key);
    assert_eq!(
        live, expected,
        "live and simulated deliveries differ\nlive: {live:#?}\nsimulated trace: {:#}",
        sim["trace"]
    );
    (app, live)
}

/// Anonymous first, identified later: the cart started under the anonymousId sees the order
/// placed under the userId, so no reminder goes out; the merge is on the timeline of the
/// profile, which either id now reaches.
#[test]
fn an_anonymous_cart_follows_the_person_who_signs_in() {
    let script = [
        cart("+0s", ("anonymousId", "anon-1"), "Product_Added", "c1"),
        at(
            "+10m",
            json!({"type": "identify", "userId": "u1", "anonymousId": "anon-1",
                           "traits": {"email": "u1@example.com", "first_name": "Ada"}}),
        ),
        cart("+20m", ("userId", "u1"), "Order_Confirmation", "c1"),
    ];
    let (app, live) = live_equals_simulated(&cart_journey(), &script);
    assert!(live.is_empty(), "no reminder after the order: {live:#?}");
    let profile = app.profile("anon-1").expect(200);
    assert_eq!(profile["id"], "u1", "{profile}");
    assert_eq!(profile["traits"]["email"], "u1@example.com");
    let instances = profile["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 1, "{profile}");
    assert_eq!(instances[0]["state"], "completed", "{profile}");
    let merged: Vec<Value> = app
        .timeline("u1")
        .into_iter()
        .filter(|i| i["kind"] == "merged")
        .collect();
    assert_eq!(merged.len(), 1, "{merged:#?}");
    assert_eq!(merged[0]["from"], "anon-1");
    assert_eq!(merged[0]["into"], "u1");
    // The anonymous id's events show in the profile's timeline.
    let events: Vec<Value> = app.events("u1");
    assert_eq!(events.len(), 3, "{events:#?}");
}

/// Without an order, the reminder of the merged instance goes to the userId, with its traits.
#[test]
fn the_reminder_of_a_merged_cart_carries_the_user_id() {
    let script = [
        at(
            "+0s",
            json!({"type": "identify", "userId": "u2", "traits": {"email": "u2@example.com"}}),
        ),
        cart("+1m", ("anonymousId", "anon-2"), "Product_Added", "c2"),
        identify("+5m", "u2", "anon-2"),
    ];
    let (_app, live) = live_equals_simulated(&cart_journey(), &script);
    assert_eq!(live.len(), 1, "{live:#?}");
    assert_eq!(live[0]["userId"], "u2");
    assert!(live[0].get("anonymousId").is_none());
}

/// An alias from one userId to another, a chain of merges, and both sides holding an instance
/// of the same journey: both instances go on, and the order reaches both.
#[test]
fn alias_chains_and_two_instances_of_one_journey() {
    let script = [
        cart("+0s", ("anonymousId", "anon-3"), "Product_Added", "c3"),
        cart("+1m", ("userId", "old"), "Product_Added", "c3"),
        identify("+2m", "old", "anon-3"),
        alias("+3m", "new", "old"),
        cart("+4m", ("anonymousId", "anon-3"), "Cart_Modified", "c3"),
        cart("+5m", ("userId", "new"), "Product_Added", "c4"),
    ];
    let (app, live) = live_equals_simulated(&cart_journey(), &script);
    // Two reminders for c3 (both instances went on) and one for c4, all to "new".
    assert_eq!(live.len(), 3, "{live:#?}");
    assert!(live.iter().all(|p| p["userId"] == "new"), "{live:#?}");
    let profile = app.profile("old").expect(200);
    assert_eq!(profile["id"], "new", "{profile}");
    let mut ids: Vec<&str> = profile["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["anon-3", "new", "old"]);
}

/// A merge at the moment a timer of the anonymous profile falls due: the timer fires first, live
/// as in the simulation, whatever the scheduler was doing.
#[test]
fn a_merge_racing_a_due_timer() {
    let script = [
        cart("+0s", ("anonymousId", "anon-5"), "Product_Added", "c5"),
        identify("+2h", "u5", "anon-5"),
    ];
    let (_app, live) = live_equals_simulated(&cart_journey(), &script);
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["anonymousId"], "anon-5", "{:#}", live[0]);
}

/// messageId deduplication is simulated as it runs live.
#[test]
fn duplicates_are_simulated_as_they_run_live() {
    let add = json!({"type": "track", "userId": "u6", "event": "Product_Added", "messageId": "m-6",
                     "properties": {"cart_ID": "c6"}});
    let script = [
        at("+0s", add.clone()),
        at("+1m", add.clone()),
        at("+25h", add),
    ];
    let journey = json!({"id": "dup", "entry": {"event": "Product_Added"},
        "steps": [{"id": "s", "type": "send", "destination": "crm"}]});
    let (_app, live) = live_equals_simulated(&journey, &script);
    assert_eq!(
        live.len(),
        2,
        "the second within 24 hours is a duplicate: {live:#?}"
    );
}

/// Property: random scripts of identify, alias and track calls over a few ids, run live and
/// simulated, deliver the same payloads.
#[test]
fn random_identity_scripts_run_live_as_simulated() {
    let mut seed: u64 = 0x2545f4914f6cdd1d;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let (mut delivered, mut merges) = (0, 0);
    for round in 0..6 {
        let anon = |n: u64| format!("anon-{round}-{n}");
        let user = |n: u64| format!("user-{round}-{n}");
        let mut t = 0;
        let mut script = Vec::new();
        for _ in 0..(8 + next(10)) {
            t += next(50) * 60_000;
            let cart = format!("c{}", next(2));
            let who = if next(2) == 0 {
                json!({"anonymousId": anon(next(3))})
            } else {
                json!({"userId": user(next(2))})
            };
            let mut message = match next(6) {
                0 => {
                    json!({"type": "identify", "userId": user(next(2)), "anonymousId": anon(next(3)),
                            "traits": {"email": format!("e{}", next(9))}})
                }
                1 => json!({"type": "alias", "userId": user(next(2)), "previousId": user(next(2))}),
                2 => {
                    json!({"type": "track", "event": "Cart_Modified", "properties": {"cart_ID": cart}})
                }
                3 => {
                    json!({"type": "track", "event": "Order_Confirmation", "properties": {"cart_ID": cart}})
                }
                _ => {
                    json!({"type": "track", "event": "Product_Added", "properties": {"cart_ID": cart}})
                }
            };
            if message.get("userId").is_none() {
                for (k, v) in who.as_object().unwrap() {
                    message[k] = v.clone();
                }
            }
            script.push(at(&format!("+{t}ms"), message));
        }
        let (app, live) = live_equals_simulated(&cart_journey(), &script);
        delivered += live.len();
        for n in 0..2 {
            if app.profile(&user(n)).status == 200 {
                merges += app
                    .timeline(&user(n))
                    .iter()
                    .filter(|i| i["kind"] == "merged")
                    .count();
            }
        }
    }
    // The scripts exercise what they are meant to.
    assert!(delivered >= 6, "{delivered} deliveries in all");
    assert!(merges >= 3, "{merges} merges in all");
}

/// Delivery ids are a function of (instance, step) (SPEC invariant 9): restored from a backup
/// taken while an instance waited, the timeout that already sent sends again with the same
/// `webhook-id`; an instance entered after the restore gets ids never seen before.
#[test]
fn delivery_ids_survive_a_restore_and_never_repeat_after_it() {
    let (mut app, rx) = Appliance::with_crm_receiver();
    put_journey(&app, &cart_journey());
    let add = |user: &str, cart: &str| json!({"userId": user, "event": "Product_Added", "properties": {"cart_ID": cart}});
    app.ingest_ok("/v1/track", &add("r1", "c1"));
    let backup = app.admin_get("/v1/backup");
    assert_eq!(backup.status, 200);
    // An instance the backup does not have: the restore loses it, and its ids must not return.
    app.advance(1_000);
    app.ingest_ok("/v1/track", &add("lost", "c0"));
    app.advance(3 * 3_600_000);
    let first = rx.wait_for(2, WAIT);
    let by_user = |user: &str| {
        first
            .iter()
            .find(|r| r.json()["userId"] == user)
            .unwrap_or_else(|| panic!("no delivery for {user}"))
    };
    let sent_id = by_user("r1").webhook_id();
    let sent_instance =
        by_user("r1").json()["properties"]["journey_metadata"]["instance_id"].clone();
    let lost_id = by_user("lost").webhook_id();
    let lost_instance =
        by_user("lost").json()["properties"]["journey_metadata"]["instance_id"].clone();
    app.stop();
    std::fs::write(app.db_path(), &backup.body).unwrap();
    for suffix in ["-wal", "-shm"] {
        let mut p = app.db_path().as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    app.start_again();
    // The restored instance still waits, its timer long due: it fires at start and resends.
    let again = rx.wait_for(3, WAIT);
    assert_eq!(again[2].json()["userId"], "r1");
    assert_eq!(
        again[2].webhook_id(),
        sent_id,
        "the resend carries the same id"
    );
    assert_eq!(
        again[2].json()["properties"]["journey_metadata"]["instance_id"],
        sent_instance
    );
    // A new instance after the restore takes neither the lost instance's id nor its
    // delivery's.
    app.ingest_ok("/v1/track", &add("lost", "c0"));
    app.advance(3 * 3_600_000);
    let all = rx.wait_for(4, WAIT);
    let new = &all[3];
    assert_eq!(new.json()["userId"], "lost");
    assert_ne!(
        new.webhook_id(),
        lost_id,
        "a restore made a delivery id repeat"
    );
    assert_ne!(
        new.json()["properties"]["journey_metadata"]["instance_id"],
        lost_instance,
        "a restore made an instance id repeat"
    );
}
