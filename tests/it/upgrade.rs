//! Upgrades keep what was stored (issue 15): a database written by an older journeyd, opened by
//! this one, is migrated and reads the same through the API as it did before: profiles with
//! their timelines, instances with their histories, deliveries, journeys and stats. Then new
//! events (stored compressed) and old ones (stored as text) read side by side.
//!
//! The fixture `tests/fixtures/upgrade/v7.db` and what the older journeyd answered for it
//! (`v7.json`) were made by [`make_fixture`] on journeyd at schema version 7 (commit `dea7403`).
//! To make them again from an older release, run that test there:
//! `JOURNEYD_FIXTURE_DIR=$PWD/tests/fixtures/upgrade cargo test --test it upgrade::make_fixture -- --ignored`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::appliance::START_MS;
use crate::support::*;

/// The people of the fixture: a waiting cart, an order, an anonymous visitor who signed in (a
/// merge), a cart that timed out into a send, and someone known only by traits.
const PEOPLE: &[&str] = &["u1", "u2", "u3", "anon-3", "u4", "u5"];

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade")
}

/// What the fixture holds, written through the API on a manual clock.
fn scenario(app: &Appliance, rx: &Receiver) {
    put_destination(app, "hook", &webhook(&rx.url("/hook"), json!({})));
    put_journey(
        app,
        &json!({
            "id": "cart", "name": "Cart abandonment",
            "entry": {"event": "Product Added"},
            "steps": [
                {"id": "wait", "type": "hold_until", "max_hold": "2d",
                 "branches": [{"name": "bought", "event": "Order Completed", "next": null}],
                 "on_timeout": "remind"},
                {"id": "remind", "type": "send", "destination": "hook", "next": null}
            ]
        }),
    );
    put_journey(
        app,
        &json!({
            "id": "fwd", "name": "Forward orders",
            "entry": {"event": "Order Completed"},
            "steps": [{"id": "send", "type": "send", "destination": "hook", "next": null}]
        }),
    );
    let context = json!({"library": {"name": "analytics.js", "version": "2.11.1"},
                         "page": {"path": "/cart", "url": "https://shop.example.com/cart"},
                         "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/119.0"});
    let product = |sku: &str| json!({"sku": sku, "price": 19.99, "quantity": 1, "name": "A rather long product name"});
    let track = |user: Value, event: &str, props: Value| {
        let mut m = json!({"event": event, "properties": props, "context": context});
        for (k, v) in user.as_object().unwrap() {
            m[k] = v.clone();
        }
        app.ingest_ok("/v1/track", &m);
    };
    track(json!({"userId": "u4"}), "Product Added", product("sku-4"));
    app.advance(3 * 86_400_000);
    track(json!({"userId": "u1"}), "Product Added", product("sku-1"));
    track(json!({"userId": "u2"}), "Product Added", product("sku-2"));
    app.advance(3_600_000);
    track(
        json!({"userId": "u2"}),
        "Order Completed",
        json!({"order_id": "o-2", "total": 19.99, "products": [product("sku-2")]}),
    );
    track(
        json!({"anonymousId": "anon-3"}),
        "Product Added",
        product("sku-3"),
    );
    app.ingest_ok(
        "/v1/identify",
        &json!({"userId": "u3", "anonymousId": "anon-3", "traits": {"email": "u3@example.com", "plan": "pro"}}),
    );
    identify(app, "u5", json!({"name": "Five", "tz": "Europe/Paris"}));
    // The reminder for u4 and the forwarded order delivered before anything is read.
    eventually("the fixture's deliveries", Duration::from_secs(30), || {
        let all = deliveries(app, "");
        let done = all.iter().filter(|d| d["status"] == "succeeded").count();
        if all.len() == 2 && done == 2 {
            Ok(())
        } else {
            Err(format!("{done} of {} succeeded: {all:?}", all.len()))
        }
    });
}

/// Everything the API shows of the fixture's data.
fn capture(app: &Appliance) -> Value {
    let mut profiles = serde_json::Map::new();
    for id in PEOPLE {
        let profile = app.profile(id).expect(200);
        let instances: Vec<Value> = profile["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| instance(app, i["id"].as_i64().unwrap()))
            .collect();
        profiles.insert(
            id.to_string(),
            json!({"profile": profile, "timeline": app.timeline(id), "instances": instances}),
        );
    }
    json!({
        "profiles": profiles,
        "deliveries": deliveries(app, ""),
        "journeys": app.admin_json("/v1/journeys"),
        "stats": {"cart": stats(app, "cart", ""), "fwd": stats(app, "fwd", "")},
    })
}

/// Writes the fixture with the journeyd this is built from (see the module's comment).
#[test]
#[ignore = "makes the fixture; run on the older journeyd"]
fn make_fixture() {
    let out = PathBuf::from(
        std::env::var("JOURNEYD_FIXTURE_DIR").expect("JOURNEYD_FIXTURE_DIR: where to write"),
    );
    let mut app = Appliance::start();
    let rx = app.receiver(vec![]);
    scenario(&app, &rx);
    let seen = capture(&app);
    app.stop();
    std::fs::create_dir_all(&out).unwrap();
    // One self-contained file, whatever the WAL still held.
    let _ = std::fs::remove_file(out.join("v7.db"));
    rusqlite::Connection::open(app.db_path())
        .unwrap()
        .execute("VACUUM INTO ?1", [out.join("v7.db").to_str().unwrap()])
        .unwrap();
    std::fs::write(
        out.join("v7.json"),
        serde_json::to_string_pretty(&seen).unwrap() + "\n",
    )
    .unwrap();
}

#[test]
fn a_database_from_version_7_reads_the_same_after_the_upgrade() {
    let dir = temp_dir("upgrade");
    let db = dir.join("j.db");
    std::fs::copy(fixture_dir().join("v7.db"), &db).unwrap();
    let before: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_dir().join("v7.json")).unwrap())
            .unwrap();
    let version = |db: &Path| -> i64 {
        rusqlite::Connection::open(db)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(version(&db), 7);

    let mut app = Appliance::start_with(Options {
        db: Some(db.clone()),
        ..Options::default()
    });
    // The clock where the fixture's ended: u1's cart still waits (due two days on).
    app.set_time(START_MS + 3 * 86_400_000 + 3_600_000);
    let after = capture(&app);
    assert_json_eq(&before, &after);

    // New events are stored compressed once the file has a dictionary (trained on its first
    // thousand values after the upgrade), old ones stay text, and a timeline reads both.
    for b in 0..5 {
        let batch: Vec<Value> = (0..200)
            .map(|i| json!({"type": "track", "userId": format!("filler-{}", (b * 200 + i) % 50),
                            "event": "Page Viewed", "properties": {"page": format!("/p/{}", i % 7), "n": i}}))
            .collect();
        app.ingest_ok("/v1/batch", &json!({"batch": batch}));
    }
    eventually("a dictionary trained", WAIT, || {
        let n: i64 = journeyd::bench_support::inspect(&db)
            .unwrap()
            .query_row("SELECT count(*) FROM dictionaries", [], |r| r.get(0))
            .unwrap();
        if n > 0 { Ok(()) } else { Err("none yet") }
    });
    let long = "x".repeat(300);
    track_event(&app, "u1", "Page Viewed", json!({"note": long}));
    let timeline = app.timeline("u1");
    let events: Vec<&Value> = timeline.iter().filter(|i| i["kind"] == "event").collect();
    assert_eq!(events.len(), 2, "{timeline:?}");
    assert_eq!(events[0]["message"]["event"], "Product Added");
    assert_eq!(events[1]["message"]["properties"]["note"], long.as_str());
    app.stop();
    assert!(version(&db) > 7, "migrated");
    let conn = journeyd::bench_support::inspect(&db).unwrap();
    let kinds: Vec<(String, String)> = conn
        .prepare(
            "SELECT typeof(body), jd_text(body) FROM events WHERE profile_key = 'u1' ORDER BY seq",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert_eq!(kinds[0].0, "text");
    assert_eq!(kinds[1].0, "blob");
    let new: Value = serde_json::from_str(&kinds[1].1).unwrap();
    assert_eq!(new["properties"]["note"], long.as_str());
}

/// Equal JSON, or the first path where they differ.
fn assert_json_eq(before: &Value, after: &Value) {
    fn diff(path: &str, a: &Value, b: &Value) -> Option<String> {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for k in x.keys().chain(y.keys()) {
                    let (va, vb) = (
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                    );
                    if let Some(d) = diff(&format!("{path}/{k}"), va, vb) {
                        return Some(d);
                    }
                }
                None
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
                .iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (va, vb))| diff(&format!("{path}/{i}"), va, vb)),
            _ if a == b => None,
            _ => Some(format!("{path}: before {a}, after {b}")),
        }
    }
    if let Some(d) = diff("", before, after) {
        panic!("the upgraded database reads differently at {d}");
    }
}

/// Version 10 finds a person's deliveries through their instances and counts sends against a
/// frequency cap through a partial index. On a database from version 7: a cap set after the
/// upgrade counts the sends made before it (u2's forwarded order makes the next one `capped`, while
/// u1, who was sent nothing, is sent), and forgetting u2 deletes the delivery written by the older
/// journeyd along with the new one.
#[test]
fn after_the_upgrade_caps_count_older_sends_and_forgetting_finds_older_deliveries() {
    let dir = temp_dir("upgrade-caps");
    let db = dir.join("j.db");
    std::fs::copy(fixture_dir().join("v7.db"), &db).unwrap();
    let mut app = Appliance::start_with(Options {
        db: Some(db.clone()),
        ..Options::default()
    });
    app.set_time(START_MS + 3 * 86_400_000 + 2 * 3_600_000);
    let rx = app.receiver(vec![]);
    put_destination(&app, "hook", &capped_webhook(&rx.url("/hook"), 1, "7d"));
    let order = |user: &str| {
        track_event(
            &app,
            user,
            "Order Completed",
            json!({"order_id": format!("o-{user}")}),
        )
    };
    order("u2");
    order("u1");
    let fwd = |user: &str| -> Vec<String> {
        deliveries(&app, "")
            .iter()
            .filter(|d| d["profile"] == user && d["journey"] == "fwd")
            .map(|d| d["status"].as_str().unwrap().to_string())
            .collect()
    };
    let u2 = fwd("u2");
    assert_eq!(u2.len(), 2, "{u2:?}");
    assert!(u2.contains(&"capped".to_string()), "{u2:?}");
    eventually(
        "u1's order forwarded",
        Duration::from_secs(30),
        || match fwd("u1").as_slice() {
            [s] if s == "succeeded" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    assert_eq!(app.admin_delete("/v1/profiles/u2").status, 204);
    let left: Vec<Value> = deliveries(&app, "")
        .into_iter()
        .filter(|d| d["profile"] == "u2" || d["payload"]["userId"] == "u2")
        .collect();
    assert!(
        left.is_empty(),
        "u2's deliveries outlived forgetting: {left:?}"
    );
    assert_eq!(fwd("u1").len(), 1, "u1's delivery stays");
    app.stop();
}

/// The upgrade to version 11 keeps messageId deduplication: an id stored within 24 hours is
/// still a duplicate after the upgrade (and after a restart), an older one is not.
#[test]
fn after_the_upgrade_message_ids_of_the_last_day_are_still_duplicates() {
    let dir = temp_dir("upgrade-dedup");
    let db = dir.join("j.db");
    std::fs::copy(fixture_dir().join("v7.db"), &db).unwrap();
    let stored_id = |user: &str| -> String {
        rusqlite::Connection::open(&db)
            .unwrap()
            .query_row(
                "SELECT message_id FROM events WHERE profile_key = ?1 AND event = 'Product Added'",
                [user],
                |r| r.get(0),
            )
            .unwrap()
    };
    // u1's event came three days after u4's, an hour before the fixture's last.
    let (recent, old) = (stored_id("u1"), stored_id("u4"));
    let fixture_last: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT max(seq) FROM events", [], |r| r.get(0))
        .unwrap();
    let mut app = Appliance::start_with(Options {
        db: Some(db.clone()),
        ..Options::default()
    });
    app.set_time(START_MS + 3 * 86_400_000 + 2 * 3_600_000);
    let copies = |app: &Appliance, user: &str, id: &str| -> usize {
        app.timeline(user)
            .iter()
            .filter(|i| i["kind"] == "event" && i["message"]["messageId"] == id)
            .count()
    };
    let again = |app: &Appliance, user: &str, id: &str| {
        app.ingest_ok(
            "/v1/track",
            &json!({"userId": user, "event": "Product Added", "messageId": id}),
        );
    };
    again(&app, "u1", &recent);
    assert_eq!(
        copies(&app, "u1", &recent),
        1,
        "a duplicate within 24 hours"
    );
    again(&app, "u4", &old);
    assert_eq!(copies(&app, "u4", &old), 2, "three days on, stored again");
    app.restart();
    again(&app, "u1", &recent);
    assert_eq!(
        copies(&app, "u1", &recent),
        1,
        "still a duplicate after a restart"
    );
    app.stop();
    // The upgrade wrote the last day's ids as a run, so that opening the store reads only the
    // newer events' ids into memory, not every event's.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let in_runs = |id: &str| -> i64 {
        conn.query_row(
            "SELECT count(*) FROM dedup_ids WHERE message_id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!((in_runs(&recent), in_runs(&old)), (1, 0));
    let flushed: i64 = conn
        .query_row("SELECT max(last_seq) FROM dedup_runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(flushed, fixture_last);
}
