//! Exact semantics of SPEC §3.1, §3.4 and §6.7 through the binary: numbers by value, dotted
//! context keys, exit rules, and simulations that explain what did nothing.

use serde_json::{Value, json};

use crate::support::{Appliance, instances_of, put_journey, track_event};

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
