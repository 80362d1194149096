//! Exact semantics of SPEC §3.1, §3.4 and §6.7 through the binary: numbers by value, dotted
//! context keys, exit rules, and simulations that explain what did nothing.

use serde_json::{Value, json};

use crate::support::{
    Appliance, instances_of, put_destination, put_journey, stats, track_event, webhook,
};

/// A split path naming no context key, `match_unique_by` without `unique_by`, and an exit send
/// with a `next` are refused with their JSON paths.
#[test]
fn definitions_that_cannot_mean_anything_are_refused_with_their_paths() {
    let app = Appliance::start();
    let cases = [
        (
            json!({"id": "a", "entry": {"event": "Order.Completed"},
                   "steps": [{"id": "s", "type": "split",
                              "branches": [{"where": [{"path": "context.Order.total", "gt": 1}], "next": null}]}]}),
            "/steps/0/branches/0/where/0/path",
        ),
        (
            json!({"id": "b", "entry": {"event": "Go"},
                   "exit": {"events": [{"event": "Stop", "match_unique_by": true}]},
                   "steps": [{"id": "d", "type": "delay", "duration": "1h"}]}),
            "/exit/events/0/match_unique_by",
        ),
    ];
    for (doc, path) in cases {
        let r = app.admin_put(
            &format!("/v1/journeys/{}", doc["id"].as_str().unwrap()),
            &doc,
        );
        let body = r.expect(422);
        assert_eq!(body["error"]["details"][0]["path"], path, "{r}");
    }
}

/// `10` equals `10.0` in conditions, and an event name with dots is a context key a split path
/// can read past.
#[test]
fn numbers_compare_by_value_and_dotted_event_names_work_in_context_paths() {
    let app = Appliance::start();
    put_journey(
        &app,
        &json!({"id": "n", "entry": {"event": "Order.Completed", "where": [{"property": "total", "in": [10, 20]}]},
                "steps": [{"id": "s", "type": "split",
                           "branches": [{"name": "ten", "where": [{"path": "context.Order.Completed.total", "equals": 10}],
                                         "next": null}],
                           "else": null}]}),
    );
    track_event(&app, "u1", "Order.Completed", json!({"total": 10.0}));
    let inst = instances_of(&app, "u1", "n");
    assert_eq!(inst.len(), 1, "10.0 is in [10, 20]");
    let stats = app.admin_json("/v1/journeys/n/stats");
    assert_eq!(stats["branches"]["s"]["ten"], 1, "{stats}");
}

/// A simulation lists each trigger that entered nothing with its reason, and each exit event
/// that ended nothing; offsets may be compound.
#[test]
fn simulations_explain_what_did_nothing() {
    let app = Appliance::start();
    let journey = json!({
        "id": "why", "entry": {"event": "Add", "unique_by": "cart", "reentry": "every_time",
                               "where": [{"property": "ok", "equals": true}]},
        "exit": {"events": [{"event": "Gone", "match_unique_by": true}]},
        "steps": [{"id": "h", "type": "hold_until", "max_hold": "3h",
                   "branches": [{"event": "Buy", "next": null}]}]
    });
    let m = |event: &str, props: Value| json!({"type": "track", "userId": "u", "event": event, "properties": props});
    let events = json!([
        {"at": "+0s", "message": m("Add", json!({"cart": 1, "ok": true}))},
        {"at": "+1m", "message": m("Add", json!({"cart": 1, "ok": false}))},
        {"at": "+2m", "message": m("Add", json!({"cart": 1.0, "ok": true}))},
        {"at": "+3m", "message": m("Add", json!({"ok": true}))},
        {"at": "+2h30m", "message": m("Gone", json!({"cart": 2}))},
    ]);
    let out = app
        .admin_post(
            "/v1/simulate",
            &json!({"journey": journey, "events": events}),
        )
        .expect(200);
    let notes: Vec<(String, String, String)> = out["trace"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["what"] == "not_entered" || t["what"] == "exit_unmatched")
        .map(|t| {
            let why = t
                .get("reason")
                .or(t.get("event"))
                .and_then(Value::as_str)
                .unwrap_or("");
            (
                t["at"].as_str().unwrap().to_string(),
                t["what"].as_str().unwrap().to_string(),
                why.to_string(),
            )
        })
        .collect();
    let expected = [
        ("+1m", "not_entered", "where"),
        ("+2m", "not_entered", "unique_by"),
        ("+3m", "not_entered", "missing_unique_by"),
        ("+150m", "exit_unmatched", "Gone"),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(notes, expected, "{:#}", out["trace"]);
}

/// A person's entries into a journey are counted for `reentry: once` and for random-split draws
/// (the entry's ordinal): a journey without a random split records only the first entry (its
/// journey memory is written once, not on every entry), one with a split counts every entry, and
/// `once` still holds after entries that were not counted.
#[test]
fn entries_are_counted_where_they_are_used() {
    let mut app = Appliance::start();
    let rx = app.receiver(vec![]);
    put_destination(&app, "hook", &webhook(&rx.url("/hook"), json!({})));
    let send = json!({"id": "s", "type": "send", "destination": "hook", "next": null});
    put_journey(
        &app,
        &json!({"id": "plain", "entry": {"event": "Go"}, "steps": [send.clone()]}),
    );
    put_journey(
        &app,
        &json!({"id": "split", "entry": {"event": "Go"}, "steps": [
            {"id": "r", "type": "random_split", "branches": [
                {"percent": 50, "next": "s"}, {"percent": 50, "next": "s"}]},
            send.clone()]}),
    );
    for _ in 0..3 {
        track_event(&app, "u1", "Go", json!({}));
    }
    // A journey changed to `once` keeps out someone who entered it before.
    put_journey(
        &app,
        &json!({"id": "plain", "entry": {"event": "Go", "reentry": "once"}, "steps": [send]}),
    );
    track_event(&app, "u1", "Go", json!({}));
    let entered = |journey: &str| stats(&app, journey, "")["entered"].as_i64().unwrap();
    assert_eq!((entered("plain"), entered("split")), (3, 4));
    app.stop();
    let db = journeyd::bench_support::inspect(app.db_path()).unwrap();
    let memory: Vec<(String, i64)> = db
        .prepare("SELECT journey_id, entries FROM journey_memory WHERE profile_key = 'u1' ORDER BY journey_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(memory, [("plain".to_string(), 1), ("split".to_string(), 4)]);
}
