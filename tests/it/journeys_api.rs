//! The journeys admin API over HTTP (SPEC §3, §4, §6): publishing and versions, validation
//! errors that list every problem and change nothing, instances draining on their version, pause,
//! resume and archive, stats, re-entry modes, exit rules, the per-profile cap, instances and
//! timelines, the destinations API and `POST /v1/simulate`. Tests with timers run on the in-process
//! appliance and move its clock.

use serde_json::{Value, json};

use crate::support::{
    Appliance, Client, Options, Receiver, Resp, Server, WAIT, bearer, cart_events, cart_journey,
    deliveries, enc, eventually, instances_of, many_problems_journey, put_destination, put_journey,
    stats, track_event, uid, webhook,
};

// ---------------------------------------------------------------------------------------------
// Publishing and versions
// ---------------------------------------------------------------------------------------------

fn simple_journey(id: &str, name: &str) -> Value {
    json!({
        "id": id,
        "name": name,
        "entry": {"event": "Ver_Start"},
        "steps": [
            {"id": "wait", "type": "hold_until", "max_hold": "1h",
             "branches": [{"event": "Ver_Done", "next": null}], "on_timeout": "notify"},
            {"id": "notify", "type": "send", "destination": "hook", "event_name": "Ver Notice"}
        ]
    })
}

#[test]
fn journeys_publish_versions_get_and_list() {
    let srv = Server::start();
    let rx = Receiver::start(vec![]);
    put_destination(&srv, "hook", &webhook(&rx.url("/in"), json!({})));

    let v1 = simple_journey("ver", "Versioned");
    let resp = srv.admin_put("/v1/journeys/ver", &v1);
    assert_eq!(
        resp.expect(201),
        json!({"id": "ver", "version": 1}),
        "first PUT"
    );

    // The same document again, with its keys in another order: no new version.
    let reordered: Value = serde_json::from_str(
        r#"{"steps": [
              {"on_timeout": "notify", "type": "hold_until", "id": "wait", "max_hold": "1h",
               "branches": [{"next": null, "event": "Ver_Done"}]},
              {"event_name": "Ver Notice", "destination": "hook", "type": "send", "id": "notify"}],
            "entry": {"event": "Ver_Start"}, "name": "Versioned", "id": "ver"}"#,
    )
    .unwrap();
    for doc in [&v1, &reordered] {
        let resp = srv.admin_put("/v1/journeys/ver", doc);
        assert_eq!(
            resp.expect(200),
            json!({"id": "ver", "version": 1}),
            "same body again"
        );
    }

    // A changed body: version 2 (a new version of an existing journey: 200 or 201).
    let mut v2 = v1.clone();
    v2["name"] = json!("Versioned, renamed");
    v2["steps"][1]["event_name"] = json!("Ver Notice 2");
    let resp = srv.admin_put("/v1/journeys/ver", &v2);
    assert!(
        resp.status == 200 || resp.status == 201,
        "changed body:\n{resp}"
    );
    assert_eq!(resp.json(), json!({"id": "ver", "version": 2}));
    // And once more: still 2.
    assert_eq!(
        srv.admin_put("/v1/journeys/ver", &v2).expect(200),
        json!({"id": "ver", "version": 2})
    );

    let got = srv.admin_json("/v1/journeys/ver");
    assert_eq!(got["id"], "ver", "{got}");
    assert_eq!(got["version"], 2, "{got}");
    assert_eq!(got["status"], "active", "{got}");
    assert_eq!(
        got["definition"], v2,
        "the definition is the newest version"
    );
    let versions: Vec<i64> = got["versions"]
        .as_array()
        .unwrap_or_else(|| panic!("no versions array: {got}"))
        .iter()
        .map(|v| v["version"].as_i64().unwrap_or_else(|| panic!("{v}")))
        .collect();
    assert_eq!(versions, vec![1, 2], "{got}");

    let list = srv.admin_json("/v1/journeys");
    let items = list["items"].as_array().unwrap_or_else(|| panic!("{list}"));
    let item = items
        .iter()
        .find(|j| j["id"] == "ver")
        .unwrap_or_else(|| panic!("journey ver not listed: {list}"));
    assert_eq!(item["status"], "active", "{item}");
    assert_eq!(item["version"], 2, "{item}");
    assert!(
        item["counts"].is_object(),
        "list items carry counts: {item}"
    );

    // The counts follow entries.
    let user = uid("ver-user");
    track_event(&srv, &user, "Ver_Start", json!({}));
    let list = srv.admin_json("/v1/journeys");
    let item = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == "ver")
        .unwrap()
        .clone();
    assert_eq!(item["counts"]["entered"], 1, "{item}");
    assert_eq!(item["counts"]["active"], 1, "{item}");

    // Unknown journeys are 404 everywhere.
    for path in ["/v1/journeys/nope", "/v1/journeys/nope/stats"] {
        let resp = srv.admin("GET", path, None);
        assert_eq!(resp.expect(404)["error"]["code"], "not_found", "{resp}");
    }
}

/// Asserts the numbers of a stats (or other) document, each named by its path (`entered`,
/// `steps/wait/reached`).
fn assert_counts(doc: &Value, want: &[(&str, i64)]) {
    for (path, n) in want {
        let got = doc.pointer(&format!("/{path}")).unwrap_or(&Value::Null);
        assert_eq!(*got, *n, "{path} in {doc}");
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// The `details` of a 422 answer, checked for shape: each an object with a string path and message.
fn problems(resp: &Resp) -> Vec<(String, String)> {
    let body = resp.expect(422);
    let err = &body["error"];
    assert!(
        err["code"].as_str().is_some_and(|c| !c.is_empty()),
        "{}: error.code:\n{resp}",
        resp.request
    );
    assert!(
        err["message"].as_str().is_some_and(|c| !c.is_empty()),
        "{}: error.message:\n{resp}",
        resp.request
    );
    let details = err["details"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: error.details is not an array:\n{resp}", resp.request));
    assert!(!details.is_empty(), "{}: no details:\n{resp}", resp.request);
    details
        .iter()
        .map(|d| {
            let path = d["path"]
                .as_str()
                .unwrap_or_else(|| panic!("detail without a string path: {d}\n{resp}"));
            let message = d["message"]
                .as_str()
                .unwrap_or_else(|| panic!("detail without a string message: {d}\n{resp}"));
            assert!(!message.is_empty(), "empty message: {d}");
            (path.to_string(), message.to_string())
        })
        .collect()
}

/// One expected problem: the exact path (or, with a trailing `*`, a path prefix) and a word its
/// message must contain (case-insensitive).
fn assert_problem(got: &[(String, String)], path: &str, word: &str, context: &str) {
    let found = got.iter().any(|(p, m)| {
        let path_ok = match path.strip_suffix('*') {
            Some(prefix) => p.starts_with(prefix),
            None => p == path,
        };
        path_ok && m.to_lowercase().contains(&word.to_lowercase())
    });
    assert!(
        found,
        "{context}: expected a problem at {path} mentioning {word:?}; got {got:#?}"
    );
}

#[test]
fn journeys_invalid_documents_list_every_problem_and_change_nothing() {
    let srv = Server::start();
    let rx = Receiver::start(vec![]);
    put_destination(&srv, "hook", &webhook(&rx.url("/in"), json!({})));

    // Many problems in one document: every one listed with its path.
    let resp = srv.admin_put("/v1/journeys/bad", &many_problems_journey("bad"));
    let got = problems(&resp);
    assert!(
        got.contains(&(
            "/steps/1/branches/0/next".to_string(),
            "unknown step \"remindr\"".to_string()
        )),
        "the dangling reference, exactly as SPEC §6 shows it: {got:#?}"
    );
    assert_problem(&got, "/steps/1/max_hold*", "duration", "bad duration");
    assert_problem(
        &got,
        "/steps/1/branches/1*",
        "event",
        "hold branch without event",
    );
    assert_problem(&got, "/steps/0*", "100", "random_split percents");
    assert_problem(&got, "/steps/*", "cycle", "cycle loop1 -> loop2 -> loop1");
    assert!(got.len() >= 5, "at least five problems: {got:#?}");
    assert_eq!(srv.admin("GET", "/v1/journeys/bad", None).status, 404);

    // An unreachable step.
    let unreachable = json!({"id": "unreach", "entry": {"event": "U"}, "steps": [
        {"id": "first", "type": "send", "destination": "hook", "next": null},
        {"id": "orphan", "type": "send", "destination": "hook"}]});
    let got = problems(&srv.admin_put("/v1/journeys/unreach", &unreachable));
    assert_problem(&got, "/steps/1", "unreachable", "unreachable step");
    assert_eq!(srv.admin("GET", "/v1/journeys/unreach", None).status, 404);

    // More than 50 steps.
    let steps: Vec<Value> = (0..51)
        .map(|i| {
            let next = if i < 50 {
                json!(format!("s{}", i + 1))
            } else {
                Value::Null
            };
            json!({"id": format!("s{i}"), "type": "delay", "duration": "1m", "next": next})
        })
        .collect();
    let too_long = json!({"id": "long", "entry": {"event": "L"}, "steps": steps});
    let got = problems(&srv.admin_put("/v1/journeys/long", &too_long));
    assert_problem(&got, "/steps", "50", "more than 50 steps");
    assert_eq!(srv.admin("GET", "/v1/journeys/long", None).status, 404);

    // The URL's id differs from the body's.
    let resp = srv.admin_put("/v1/journeys/other", &simple_journey("ver", "x"));
    let got = problems(&resp);
    assert_problem(&got, "/id", "", "URL id != body id");
    assert_eq!(srv.admin("GET", "/v1/journeys/other", None).status, 404);
    assert_eq!(srv.admin("GET", "/v1/journeys/ver", None).status, 404);

    // A send step naming a destination that does not exist.
    let mut doc = simple_journey("nodest", "x");
    doc["steps"][1]["destination"] = json!("no-such-destination");
    let got = problems(&srv.admin_put("/v1/journeys/nodest", &doc));
    assert_problem(
        &got,
        "/steps/1/destination",
        "no-such-destination",
        "unknown destination",
    );
    assert_eq!(srv.admin("GET", "/v1/journeys/nodest", None).status, 404);

    // An existing journey stays as it was when a bad version is sent.
    let good = simple_journey("keep", "Keep me");
    assert_eq!(put_journey(&srv, &good)["version"], 1);
    let mut bad = good.clone();
    bad["steps"][0]["branches"][0]["next"] = json!("remindr");
    bad["steps"][0]["max_hold"] = json!("forever");
    let got = problems(&srv.admin_put("/v1/journeys/keep", &bad));
    assert_problem(
        &got,
        "/steps/0/branches/0/next",
        "remindr",
        "keep: dangling",
    );
    assert_problem(&got, "/steps/0/max_hold", "forever", "keep: bad duration");
    let mut bad_dest = good.clone();
    bad_dest["steps"][1]["destination"] = json!("gone");
    problems(&srv.admin_put("/v1/journeys/keep", &bad_dest));
    let mut bad_id = good.clone();
    bad_id["id"] = json!("keep2");
    problems(&srv.admin_put("/v1/journeys/keep", &bad_id));
    let kept = srv.admin_json("/v1/journeys/keep");
    assert_eq!(kept["version"], 1, "{kept}");
    assert_eq!(kept["definition"], good, "{kept}");
    assert_eq!(kept["versions"].as_array().map(Vec::len), Some(1), "{kept}");

    // Not JSON at all: a 400, and nothing stored.
    let auth = bearer(srv.admin_token());
    let resp = srv.send(
        "PUT",
        "/v1/journeys/garbage",
        &[("Authorization", &auth)],
        Some(b"{not json"),
    );
    assert_eq!(resp.status, 400, "non-JSON journey:\n{resp}");
    assert_eq!(srv.admin("GET", "/v1/journeys/garbage", None).status, 404);
}

// ---------------------------------------------------------------------------------------------
// Versions in flight
// ---------------------------------------------------------------------------------------------

fn drain_journey(event_name: &str) -> Value {
    json!({
        "id": "drain",
        "entry": {"event": "Drain_Start"},
        "steps": [
            {"id": "wait", "type": "hold_until", "max_hold": "2s",
             "branches": [{"event": "Drain_Never", "next": null}], "on_timeout": "notify"},
            {"id": "notify", "type": "send", "destination": "hook", "event_name": event_name}
        ]
    })
}

#[test]
fn journeys_in_flight_instances_stay_on_their_version() {
    let srv = Appliance::start();
    let rx = srv.receiver(vec![]);
    put_destination(&srv, "hook", &webhook(&rx.url("/in"), json!({})));
    assert_eq!(put_journey(&srv, &drain_journey("V1 Notice"))["version"], 1);

    let old = uid("drain-old");
    track_event(&srv, &old, "Drain_Start", json!({}));
    assert_eq!(put_journey(&srv, &drain_journey("V2 Notice"))["version"], 2);
    let new = uid("drain-new");
    track_event(&srv, &new, "Drain_Start", json!({}));

    let old_inst = instances_of(&srv, &old, "drain");
    assert_eq!(old_inst.len(), 1, "{old_inst:?}");
    assert_eq!(old_inst[0]["version"], 1, "{old_inst:?}");
    let new_inst = instances_of(&srv, &new, "drain");
    assert_eq!(new_inst.len(), 1, "{new_inst:?}");
    assert_eq!(new_inst[0]["version"], 2, "{new_inst:?}");

    // Both holds time out, each sending its own version's notice.
    srv.advance(2_000);
    let got = rx.wait_for(2, WAIT);
    let by_user = |user: &str| -> Value {
        got.iter()
            .map(|r| r.json())
            .find(|b| b["userId"] == user)
            .unwrap_or_else(|| panic!("no delivery for {user}"))
    };
    let old_body = by_user(&old);
    assert_eq!(old_body["event"], "V1 Notice", "{old_body}");
    assert_eq!(
        old_body["properties"]["journey_metadata"]["journey_version"], 1,
        "{old_body}"
    );
    let new_body = by_user(&new);
    assert_eq!(new_body["event"], "V2 Notice", "{new_body}");
    assert_eq!(
        new_body["properties"]["journey_metadata"]["journey_version"], 2,
        "{new_body}"
    );

    // Stats per version.
    let v1 = stats(&srv, "drain", "?version=1");
    assert_eq!(v1["entered"], 1, "{v1}");
    let v2 = stats(&srv, "drain", "?version=2");
    assert_eq!(v2["entered"], 1, "{v2}");
}

// ---------------------------------------------------------------------------------------------
// Pause, resume, archive
// ---------------------------------------------------------------------------------------------

#[test]
fn journeys_pause_resume_and_archive() {
    let srv = Appliance::start();
    let rx = srv.receiver(vec![]);
    put_destination(&srv, "hook", &webhook(&rx.url("/in"), json!({})));
    let doc = json!({
        "id": "pj",
        "entry": {"event": "P_Start"},
        "steps": [
            {"id": "wait", "type": "hold_until",
             "branches": [{"event": "P_Go", "next": "notify"}]},
            {"id": "notify", "type": "send", "destination": "hook", "event_name": "PJ Notice"}
        ]
    });
    put_journey(&srv, &doc);
    let (u1, u2, u3, u4) = (uid("p1"), uid("p2"), uid("p3"), uid("p4"));

    track_event(&srv, &u1, "P_Start", json!({}));
    assert_eq!(instances_of(&srv, &u1, "pj").len(), 1);

    let resp = srv.admin_post("/v1/journeys/pj/pause", &json!({}));
    resp.expect(200);
    assert_eq!(srv.admin_json("/v1/journeys/pj")["status"], "paused");

    // Paused: no new entry...
    track_event(&srv, &u2, "P_Start", json!({}));
    assert!(
        instances_of(&srv, &u2, "pj").is_empty(),
        "a paused journey took an entry"
    );
    assert_eq!(stats(&srv, "pj", "")["entered"], 1);
    // ...but the instance in flight goes on.
    track_event(&srv, &u1, "P_Go", json!({}));
    let got = rx.wait_for(1, WAIT);
    assert_eq!(got[0].json()["userId"], u1.as_str());
    assert_eq!(instances_of(&srv, &u1, "pj")[0]["state"], "completed");

    srv.admin_post("/v1/journeys/pj/resume", &json!({}))
        .expect(200);
    assert_eq!(srv.admin_json("/v1/journeys/pj")["status"], "active");
    track_event(&srv, &u3, "P_Start", json!({}));
    track_event(&srv, &u4, "P_Start", json!({}));
    assert_eq!(
        instances_of(&srv, &u3, "pj").len(),
        1,
        "resumed: entries again"
    );
    assert_eq!(stats(&srv, "pj", "")["entered"], 3);

    // Archive: the active instances end as archived, and nothing more is sent for them.
    let resp = srv.admin_delete("/v1/journeys/pj");
    let body = resp.expect(200);
    assert_eq!(body["status"], "archived", "{body}");
    let got = srv.admin_json("/v1/journeys/pj");
    assert_eq!(got["status"], "archived", "{got}");
    for user in [&u3, &u4] {
        let inst = instances_of(&srv, user, "pj");
        assert_eq!(inst.len(), 1, "{inst:?}");
        assert_eq!(inst[0]["state"], "archived", "{inst:?}");
        let id = inst[0]["id"].to_string();
        let one = srv.admin_json(&format!("/v1/instances/{}", id.trim_matches('"')));
        assert_eq!(one["state"], "archived", "{one}");
        let history: Vec<&str> = one["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|h| h["what"].as_str())
            .collect();
        assert_eq!(history.last(), Some(&"archived"), "{one}");
        track_event(&srv, user, "P_Go", json!({}));
    }
    // The P_Go events are committed: any delivery they caused would already be in the outbox.
    let all = deliveries(&srv, "destination=hook");
    assert_eq!(all.len(), 1, "only u1's delivery: {all:#?}");
    // An archived journey takes no entries.
    let u5 = uid("p5");
    track_event(&srv, &u5, "P_Start", json!({}));
    assert!(instances_of(&srv, &u5, "pj").is_empty());
    let st = stats(&srv, "pj", "");
    assert_counts(&st, &[("entered", 3), ("active", 0), ("completed", 1)]);
    assert_eq!(rx.received().len(), 1);

    // An archived instance's timer never fires: `pt` is archived while its instance waits on a 1 s
    // hold; `ctl`, the same journey entered a millisecond later, times out and sends. By then
    // `pt`'s earlier timer would have fired too (due timers fire in order).
    let timed = |id: &str, prefix: &str| {
        json!({"id": id, "entry": {"event": format!("{prefix}_Start")}, "steps": [
            {"id": "wait", "type": "hold_until", "max_hold": "1s",
             "branches": [{"event": format!("{prefix}_Never"), "next": null}], "on_timeout": "notify"},
            {"id": "notify", "type": "send", "destination": "hook",
             "event_name": format!("{prefix} Notice")}]})
    };
    put_journey(&srv, &timed("pt", "PT"));
    put_journey(&srv, &timed("ctl", "CTL"));
    let u6 = uid("p6");
    track_event(&srv, &u6, "PT_Start", json!({}));
    srv.admin_delete("/v1/journeys/pt").expect(200);
    srv.advance(1);
    track_event(&srv, &u6, "CTL_Start", json!({}));
    srv.advance(1_000);
    let got = rx.wait_for(2, WAIT);
    assert_eq!(got[1].json()["event"], "CTL Notice");
    let sent: Vec<Value> = deliveries(&srv, "destination=hook")
        .into_iter()
        .filter(|d| d["journey"] == "pt")
        .collect();
    assert!(sent.is_empty(), "an archived instance sent: {sent:#?}");
    assert_eq!(states(&srv, &u6, "pt"), ["archived"]);
}

// ---------------------------------------------------------------------------------------------
// Stats, instances and timelines
// ---------------------------------------------------------------------------------------------

fn stats_journey(max_hold: &str) -> Value {
    json!({
        "id": "st",
        "entry": {"event": "S_Start"},
        "exit": {"events": [{"event": "S_Quit"}]},
        "steps": [
            {"id": "wait", "type": "hold_until", "max_hold": max_hold,
             "branches": [{"name": "bought", "event": "S_Buy", "next": "thanks"}],
             "on_timeout": "remind"},
            {"id": "thanks", "type": "send", "destination": "hook", "event_name": "Thanks"},
            {"id": "remind", "type": "send", "destination": "hook", "event_name": "Remind"}
        ]
    })
}

/// A filter given empty counts as not given; a version that is not a number is a 400, alike for
/// stats, layout and the instance list; so is a state that is not one.
#[test]
fn empty_filters_count_as_not_given_and_bad_versions_are_refused() {
    let srv = Appliance::start();
    put_destination(&srv, "crm", &webhook("http://127.0.0.1:9/", json!({})));
    put_journey(&srv, &cart_journey());
    let j = "/v1/journeys/cart-abandonment";
    assert_eq!(
        stats(&srv, "cart-abandonment", "?version="),
        stats(&srv, "cart-abandonment", "")
    );
    for (empty, plain) in [
        (format!("{j}/layout?version="), format!("{j}/layout")),
        (
            format!("{j}/instances?version=&state=&step="),
            format!("{j}/instances"),
        ),
        (
            "/v1/deliveries?status=&destination=".to_string(),
            "/v1/deliveries".to_string(),
        ),
    ] {
        assert_eq!(srv.admin_json(&empty), srv.admin_json(&plain), "{empty}");
    }
    let body = srv
        .admin_get(&format!("{j}/instances?state=asleep"))
        .expect(400);
    assert_eq!(
        body["error"]["message"],
        "state \"asleep\" is not one of active, completed, exited, archived",
        "{body}"
    );
    for path in ["stats", "layout", "instances"] {
        let resp = srv.admin_get(&format!("{j}/{path}?version=two"));
        let body = resp.expect(400);
        assert_eq!(body["error"]["code"], "bad_request", "{path}: {body}");
        assert_eq!(
            body["error"]["message"], "version \"two\" is not a number",
            "{path}: {body}"
        );
    }
}

#[test]
fn journeys_stats_instances_and_timeline() {
    let srv = Appliance::start();
    let rx = srv.receiver(vec![]);
    put_destination(&srv, "hook", &webhook(&rx.url("/in"), json!({})));
    put_journey(&srv, &stats_journey("2s"));
    let (a, b, c, d) = (uid("sa"), uid("sb"), uid("sc"), uid("sd"));

    // a buys, b times out, c quits (v1); d waits on v2.
    track_event(&srv, &a, "S_Start", json!({"n": 1}));
    track_event(&srv, &b, "S_Start", json!({}));
    track_event(&srv, &c, "S_Start", json!({}));
    track_event(&srv, &a, "S_Buy", json!({"sku": "x"}));
    track_event(&srv, &c, "S_Quit", json!({}));
    assert_eq!(put_journey(&srv, &stats_journey("1h"))["version"], 2);
    track_event(&srv, &d, "S_Start", json!({}));

    // b's 2 s hold times out; d's (1 h, on version 2) does not.
    srv.advance(2_000);
    let all = eventually("b's hold to time out", WAIT, || {
        let s = stats(&srv, "st", "");
        if s["completed"] == 2 { Ok(s) } else { Err(s) }
    });
    assert_counts(
        &all,
        &[
            ("entered", 4),
            ("active", 1),
            ("completed", 2),
            ("exited", 1),
            ("skipped", 0),
            ("steps/wait/reached", 4),
            ("steps/wait/active", 1),
            ("steps/thanks/reached", 1),
            ("steps/remind/reached", 1),
            ("branches/wait/bought", 1),
            ("branches/wait/timeout", 1),
        ],
    );

    let v1 = stats(&srv, "st", "?version=1");
    assert_counts(
        &v1,
        &[
            ("entered", 3),
            ("active", 0),
            ("completed", 2),
            ("exited", 1),
            ("steps/wait/active", 0),
            ("branches/wait/timeout", 1),
        ],
    );
    let v2 = stats(&srv, "st", "?version=2");
    assert_counts(
        &v2,
        &[
            ("entered", 1),
            ("active", 1),
            ("completed", 0),
            ("steps/wait/reached", 1),
            ("steps/wait/active", 1),
            ("branches/wait/bought", 0),
        ],
    );

    // The instance of a, with its history in order.
    let inst = instances_of(&srv, &a, "st");
    assert_eq!(inst.len(), 1, "{inst:?}");
    let id = match &inst[0]["id"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let one = srv.admin_json(&format!("/v1/instances/{}", enc(&id)));
    assert_eq!(one["journey"], "st", "{one}");
    assert_eq!(one["version"], 1, "{one}");
    assert_eq!(one["state"], "completed", "{one}");
    assert_eq!(one["context"]["S_Start"], json!({"n": 1}), "{one}");
    assert_eq!(one["context"]["S_Buy"], json!({"sku": "x"}), "{one}");
    let history = one["history"]
        .as_array()
        .unwrap_or_else(|| panic!("no history: {one}"));
    let whats: Vec<&str> = history.iter().filter_map(|h| h["what"].as_str()).collect();
    assert_eq!(whats.first(), Some(&"entered"), "{one}");
    assert_eq!(whats.last(), Some(&"completed"), "{one}");
    let pos = |w: &str| {
        whats
            .iter()
            .position(|x| *x == w)
            .unwrap_or_else(|| panic!("no {w} in {whats:?}"))
    };
    assert!(pos("entered") < pos("branch"), "{whats:?}");
    assert!(pos("branch") < pos("send"), "{whats:?}");
    let seqs: Vec<i64> = history.iter().filter_map(|h| h["seq"].as_i64()).collect();
    assert_eq!(
        seqs.len(),
        history.len(),
        "every history item has a seq: {one}"
    );
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "history in order: {one}"
    );

    // c's instance ended as exited.
    let c_inst = instances_of(&srv, &c, "st");
    assert_eq!(c_inst[0]["state"], "exited", "{c_inst:?}");

    // Unknown instances.
    for bad in ["999999999", "nope"] {
        let resp = srv.admin("GET", &format!("/v1/instances/{bad}"), None);
        assert_eq!(resp.expect(404)["error"]["code"], "not_found", "{resp}");
    }

    // a's timeline: the events and the transitions, interleaved in commit order.
    let items = srv.timeline(&a);
    let describe: Vec<String> = items
        .iter()
        .map(|i| match i["kind"].as_str() {
            Some("event") => format!("event {}", i["message"]["event"].as_str().unwrap_or("?")),
            Some("transition") => format!("transition {}", i["what"].as_str().unwrap_or("?")),
            other => panic!("unknown timeline kind {other:?}: {i}"),
        })
        .collect();
    let at = |s: &str| {
        describe
            .iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("no {s:?} in the timeline: {describe:#?}"))
    };
    assert!(
        at("event S_Start") < at("transition entered"),
        "{describe:#?}"
    );
    assert!(
        at("transition entered") < at("event S_Buy"),
        "{describe:#?}"
    );
    assert!(at("event S_Buy") < at("transition branch"), "{describe:#?}");
    assert!(
        at("transition branch") < at("transition completed"),
        "{describe:#?}"
    );
    let seqs: Vec<i64> = items.iter().filter_map(|i| i["seq"].as_i64()).collect();
    assert_eq!(seqs.len(), items.len(), "every timeline item has a seq");
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "timeline in order: {describe:#?}"
    );
    for t in items.iter().filter(|i| i["kind"] == "transition") {
        assert_eq!(t["journey"], "st", "{t}");
        assert!(t["instance"] == inst[0]["id"], "{t}");
    }
}

// ---------------------------------------------------------------------------------------------
// Re-entry, unique_by, exit rules, the per-profile cap
// ---------------------------------------------------------------------------------------------

fn waiting_journey(id: &str, prefix: &str, entry_extra: Value) -> Value {
    let mut entry = json!({"event": format!("{prefix}_Start")});
    if let Value::Object(m) = entry_extra {
        for (k, v) in m {
            entry[k] = v;
        }
    }
    json!({
        "id": id,
        "entry": entry,
        "steps": [{"id": "wait", "type": "hold_until",
                   "branches": [{"event": format!("{prefix}_Done"), "next": null}]}]
    })
}

fn states(srv: &Client, user: &str, journey: &str) -> Vec<String> {
    let mut s: Vec<String> = instances_of(srv, user, journey)
        .iter()
        .map(|i| i["state"].as_str().unwrap_or("?").to_string())
        .collect();
    s.sort();
    s
}

#[test]
fn journeys_reentry_unique_by_exit_rules_and_cap() {
    let srv = Server::start();
    let rx = Receiver::start(vec![]);
    put_destination(&srv, "hook", &webhook(&rx.url("/in"), json!({})));
    put_journey(&srv, &waiting_journey("re-every", "RE", json!({})));
    put_journey(
        &srv,
        &waiting_journey("re-ifna", "RI", json!({"reentry": "if_not_active"})),
    );
    put_journey(
        &srv,
        &waiting_journey("re-once", "RO", json!({"reentry": "once"})),
    );
    put_journey(
        &srv,
        &waiting_journey("re-uniq", "RU", json!({"unique_by": "cart_ID"})),
    );
    let user = uid("re");

    // every_time (the default): each trigger starts an instance.
    track_event(&srv, &user, "RE_Start", json!({}));
    track_event(&srv, &user, "RE_Start", json!({}));
    assert_eq!(states(&srv, &user, "re-every"), ["active", "active"]);
    track_event(&srv, &user, "RE_Done", json!({}));
    assert_eq!(
        states(&srv, &user, "re-every"),
        ["completed", "completed"],
        "without unique_by a hold event reaches every active instance"
    );

    // if_not_active: not while one is active; again once it ended.
    track_event(&srv, &user, "RI_Start", json!({}));
    track_event(&srv, &user, "RI_Start", json!({}));
    assert_eq!(states(&srv, &user, "re-ifna"), ["active"]);
    track_event(&srv, &user, "RI_Done", json!({}));
    track_event(&srv, &user, "RI_Start", json!({}));
    assert_eq!(states(&srv, &user, "re-ifna"), ["active", "completed"]);

    // once: once per profile, ever.
    track_event(&srv, &user, "RO_Start", json!({}));
    track_event(&srv, &user, "RO_Start", json!({}));
    track_event(&srv, &user, "RO_Done", json!({}));
    track_event(&srv, &user, "RO_Start", json!({}));
    assert_eq!(states(&srv, &user, "re-once"), ["completed"]);
    assert_eq!(stats(&srv, "re-once", "")["entered"], 1);

    // unique_by: one active instance per value; hold events reach only their value's instance.
    track_event(&srv, &user, "RU_Start", json!({"cart_ID": "c1"}));
    track_event(&srv, &user, "RU_Start", json!({"cart_ID": "c1"}));
    track_event(&srv, &user, "RU_Start", json!({"cart_ID": "c2"}));
    track_event(&srv, &user, "RU_Start", json!({})); // no value: no entry
    assert_eq!(states(&srv, &user, "re-uniq"), ["active", "active"]);
    track_event(&srv, &user, "RU_Done", json!({"cart_ID": "c1"}));
    let uniq = instances_of(&srv, &user, "re-uniq");
    for i in &uniq {
        let want = if i["unique_value"] == "c1" {
            "completed"
        } else {
            "active"
        };
        assert_eq!(i["state"], want, "{uniq:#?}");
    }
    track_event(&srv, &user, "RU_Start", json!({"cart_ID": "c1"}));
    assert_eq!(
        states(&srv, &user, "re-uniq"),
        ["active", "active", "completed"],
        "c1 ended, so c1 may enter again"
    );

    // Exit rules: only a matching exit event ends the instance, which then runs exit.send once
    // (counted as reached). An exit send step with a next is refused: it goes nowhere.
    let mut exit_doc = json!({
        "id": "ex",
        "entry": {"event": "X_Start"},
        "exit": {"events": [{"event": "X_Cancel", "where": [{"property": "reason", "equals": "user"}]}],
                 "send": "bye"},
        "steps": [
            {"id": "wait", "type": "hold_until", "branches": [{"event": "X_Never", "next": null}]},
            {"id": "bye", "type": "send", "destination": "hook", "event_name": "Goodbye",
             "next": "never_followed"},
            {"id": "never_followed", "type": "send", "destination": "hook", "event_name": "Not Sent"}
        ]
    });
    let refused = srv.admin_put("/v1/journeys/ex", &exit_doc);
    assert_eq!(
        refused.expect(422)["error"]["details"][0]["path"],
        "/steps/1/next",
        "{refused}"
    );
    exit_doc["steps"][1].as_object_mut().unwrap().remove("next");
    exit_doc["steps"].as_array_mut().unwrap().pop();
    put_journey(&srv, &exit_doc);
    let ex_user = uid("ex");
    track_event(&srv, &ex_user, "X_Start", json!({"k": 1}));
    track_event(&srv, &ex_user, "X_Cancel", json!({"reason": "other"}));
    assert_eq!(states(&srv, &ex_user, "ex"), ["active"]);
    track_event(&srv, &ex_user, "X_Cancel", json!({"reason": "user"}));
    assert_eq!(states(&srv, &ex_user, "ex"), ["exited"]);
    let got = rx.wait_for(1, WAIT);
    let body = got[0].json();
    assert_eq!(body["event"], "Goodbye", "{body}");
    assert_eq!(body["userId"], ex_user.as_str(), "{body}");
    assert_eq!(
        body["properties"]["journey_metadata"]["step_id"], "bye",
        "{body}"
    );
    let st = stats(&srv, "ex", "");
    assert_counts(
        &st,
        &[("exited", 1), ("active", 0), ("steps/bye/reached", 1)],
    );
    let ex_deliveries: Vec<Value> = deliveries(&srv, "destination=hook")
        .into_iter()
        .filter(|d| d["journey"] == "ex")
        .collect();
    assert_eq!(
        ex_deliveries.len(),
        1,
        "exit.send runs once and does not follow next: {ex_deliveries:#?}"
    );

    // The default per-profile cap (SPEC §4: 25, across journeys): a fresh profile enters re-every 26
    // times in one batch: 25 instances, the 26th entry skipped and counted.
    let capped = uid("cap");
    let batch: Vec<Value> = (0..26)
        .map(|_| json!({"type": "track", "userId": capped, "event": "RE_Start"}))
        .collect();
    srv.ingest_ok("/v1/batch", &json!({"batch": batch}));
    assert_eq!(states(&srv, &capped, "re-every").len(), 25);
    let st = stats(&srv, "re-every", "");
    assert_eq!(st["skipped"], 1, "{st}");
    assert_eq!(st["entered"], 2 + 25, "{st}");
    // Also for another journey: the cap counts across journeys.
    track_event(&srv, &capped, "RI_Start", json!({}));
    assert!(instances_of(&srv, &capped, "re-ifna").is_empty());
    assert_eq!(stats(&srv, "re-ifna", "")["skipped"], 1);
    let skipped: Vec<Value> = srv
        .timeline(&capped)
        .into_iter()
        .filter(|i| i["kind"] == "transition" && i["what"] == "skipped")
        .collect();
    assert_eq!(
        skipped.len(),
        2,
        "skipped entries in the timeline: {skipped:#?}"
    );
}

/// `--max-active-per-profile 2`: a third active instance of a profile, in any journey, is skipped,
/// counted in stats and recorded in the timeline; once one ends, entries are possible again.
#[test]
fn journeys_per_profile_cap_from_the_command_line() {
    let srv = Server::start_with(Options::with_args(&["--max-active-per-profile", "2"]));
    put_journey(&srv, &waiting_journey("cap-a", "CA", json!({})));
    put_journey(&srv, &waiting_journey("cap-b", "CB", json!({})));
    let user = uid("cap");
    track_event(&srv, &user, "CA_Start", json!({}));
    track_event(&srv, &user, "CA_Start", json!({}));
    track_event(&srv, &user, "CA_Start", json!({}));
    assert_eq!(states(&srv, &user, "cap-a"), ["active", "active"]);
    let st = stats(&srv, "cap-a", "");
    assert_counts(&st, &[("entered", 2), ("skipped", 1), ("active", 2)]);
    // The cap spans journeys.
    track_event(&srv, &user, "CB_Start", json!({}));
    assert!(states(&srv, &user, "cap-b").is_empty());
    assert_eq!(stats(&srv, "cap-b", "")["skipped"], 1);
    // Another profile has its own cap.
    let other = uid("cap-other");
    track_event(&srv, &other, "CB_Start", json!({}));
    assert_eq!(states(&srv, &other, "cap-b"), ["active"]);
    // Once the user's instances end, entries are possible again.
    track_event(&srv, &user, "CA_Done", json!({}));
    track_event(&srv, &user, "CB_Start", json!({}));
    assert_eq!(states(&srv, &user, "cap-b"), ["active"]);
    let skipped: Vec<Value> = srv
        .timeline(&user)
        .into_iter()
        .filter(|i| i["kind"] == "transition" && i["what"] == "skipped")
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:#?}");
    let journeys: Vec<&str> = skipped
        .iter()
        .filter_map(|t| t["journey"].as_str())
        .collect();
    assert_eq!(journeys, ["cap-a", "cap-b"], "{skipped:#?}");
}

// ---------------------------------------------------------------------------------------------
// Destinations API
// ---------------------------------------------------------------------------------------------

#[test]
fn destinations_api() {
    let srv = Server::start();
    let secret = "whsec_c2VjcmV0LWJ5dGVzLWZvci10ZXN0cw==";
    let body = json!({"type": "webhook", "url": "http://127.0.0.1:9/in", "method": "POST",
                      "headers": {"X-Api-Key": "abc"}, "secret": secret,
                      "timeout": "5s", "max_attempts": 4});
    let resp = srv.admin_put("/v1/destinations/crm", &body);
    assert!(resp.status == 200 || resp.status == 201, "{resp}");
    let check_shown = |d: &Value, context: &str| {
        assert_eq!(d["id"], "crm", "{context}: {d}");
        assert_eq!(d["type"], "webhook", "{context}: {d}");
        assert_eq!(d["url"], "http://127.0.0.1:9/in", "{context}: {d}");
        // Header values are write-only (SPEC §5): the name shows, the value is masked.
        assert_eq!(d["headers"]["X-Api-Key"], "********", "{context}: {d}");
        assert_eq!(d["max_attempts"], 4, "{context}: {d}");
        assert_eq!(d["timeout"], "5s", "{context}: {d}");
        assert_eq!(d["secret_set"], true, "{context}: {d}");
        assert!(d.get("secret").is_none(), "{context}: secret shown: {d}");
        assert!(
            !d.to_string().contains("c2VjcmV0"),
            "{context}: secret shown: {d}"
        );
    };
    check_shown(&resp.json(), "PUT");
    check_shown(&srv.admin_json("/v1/destinations/crm"), "GET");
    let list = srv.admin_json("/v1/destinations");
    let listed = list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .find(|d| d["id"] == "crm")
        .unwrap_or_else(|| panic!("crm not listed: {list}"))
        .clone();
    check_shown(&listed, "list");

    // PUT again without a secret: it keeps the stored one.
    let mut no_secret = body.clone();
    no_secret.as_object_mut().unwrap().remove("secret");
    let again = put_destination(&srv, "crm", &no_secret);
    assert_eq!(again["secret_set"], true, "{again}");

    // A destination with no secret.
    let plain = put_destination(
        &srv,
        "plain",
        &json!({"type": "webhook", "url": "http://127.0.0.1:9/plain"}),
    );
    assert_eq!(plain["secret_set"], false, "{plain}");

    // In use by a live journey: 409 in_use; unused: deleted.
    put_journey(
        &srv,
        &json!({"id": "uses-crm", "entry": {"event": "D_Start"},
                "steps": [{"id": "s", "type": "send", "destination": "crm"}]}),
    );
    let resp = srv.admin_delete("/v1/destinations/crm");
    let body = resp.expect(409);
    assert_eq!(body["error"]["code"], "in_use", "{resp}");
    assert_eq!(srv.admin("GET", "/v1/destinations/crm", None).status, 200);

    let resp = srv.admin_delete("/v1/destinations/plain");
    assert_eq!(resp.status, 200, "{resp}");
    let resp = srv.admin("GET", "/v1/destinations/plain", None);
    assert_eq!(resp.expect(404)["error"]["code"], "not_found", "{resp}");
    let resp = srv.admin_delete("/v1/destinations/plain");
    assert_eq!(resp.status, 404, "deleting twice: {resp}");

    // Once the journey is archived, crm is no longer in use.
    srv.admin_delete("/v1/journeys/uses-crm").expect(200);
    assert_eq!(srv.admin_delete("/v1/destinations/crm").status, 200);

    // Invalid destinations: 422 with paths; nothing stored.
    let cases = [
        ("missing url", json!({"type": "webhook"}), "/url"),
        (
            "bad type",
            json!({"type": "carrier-pigeon", "url": "http://127.0.0.1:9/"}),
            "/type",
        ),
        (
            "bad url",
            json!({"type": "webhook", "url": "ftp://example.com/"}),
            "/url",
        ),
    ];
    for (name, doc, path) in cases {
        let resp = srv.admin_put("/v1/destinations/broken", &doc);
        let got = problems(&resp);
        assert!(
            got.iter().any(|(p, _)| p == path),
            "{name}: expected a problem at {path}: {got:#?}"
        );
        assert_eq!(
            srv.admin("GET", "/v1/destinations/broken", None).status,
            404,
            "{name}: stored anyway"
        );
    }
}

/// `write_key` is write-only like `secret` (docs/decisions.md): a PUT that leaves it out keeps the
/// stored one, also for a `segment` destination, which needs one.
#[test]
fn destinations_segment_write_key_is_kept_when_left_out() {
    let srv = Server::start();
    let first = put_destination(
        &srv,
        "seg",
        &json!({"type": "segment", "url": "http://127.0.0.1:9", "write_key": "wk-1"}),
    );
    assert_eq!(first["write_key_set"], true, "{first}");
    assert!(first.get("write_key").is_none(), "{first}");
    let resp = srv.admin_put(
        "/v1/destinations/seg",
        &json!({"type": "segment", "url": "http://127.0.0.1:9", "max_attempts": 2}),
    );
    assert_eq!(resp.status, 200, "re-PUT without write_key:\n{resp}");
    let shown = srv.admin_json("/v1/destinations/seg");
    assert_eq!(shown["write_key_set"], true, "{shown}");
    assert_eq!(shown["max_attempts"], 2, "{shown}");
    // A new segment destination without any write_key is invalid.
    let resp = srv.admin_put(
        "/v1/destinations/seg2",
        &json!({"type": "segment", "url": "http://127.0.0.1:9"}),
    );
    let got = problems(&resp);
    assert!(got.iter().any(|(p, _)| p == "/write_key"), "{got:#?}");
}

// ---------------------------------------------------------------------------------------------
// Simulation
// ---------------------------------------------------------------------------------------------

#[test]
fn simulate_api() {
    let srv = Server::start();
    let user = uid("sim");
    let input = json!({
        "journey": cart_journey(),
        "traits": {"email": "ada@example.com", "first_name": "Ada"},
        "events": cart_events(&user),
    });
    let out = srv.admin_post("/v1/simulate", &input).expect(200);
    let trace = out["trace"]
        .as_array()
        .unwrap_or_else(|| panic!("no trace: {out}"));
    let deliveries_out = out["deliveries"]
        .as_array()
        .unwrap_or_else(|| panic!("no deliveries: {out}"));
    for t in trace {
        let at = t["at"]
            .as_str()
            .unwrap_or_else(|| panic!("trace entry without at: {t}"));
        assert!(at.starts_with('+'), "offsets look like +2h: {t}");
        assert!(t["what"].is_string(), "{t}");
    }
    // The timeout of the abandoned cart: two hours after the reset at +1h.
    let timeout = trace
        .iter()
        .find(|t| t["what"] == "timeout")
        .unwrap_or_else(|| panic!("no timeout in the trace: {out:#}"));
    assert_eq!(timeout["at"], "+3h", "{timeout}");
    assert_eq!(timeout["step"], "wait_for_order", "{timeout}");
    for (what, at) in [("exited", "+45m"), ("branch", "+10m"), ("reset", "+1h")] {
        assert!(
            trace.iter().any(|t| t["what"] == what && t["at"] == at),
            "no {what} at {at}: {out:#}"
        );
    }

    assert_eq!(
        deliveries_out.len(),
        2,
        "the reminder and the exit send: {out:#}"
    );
    let reminder = deliveries_out
        .iter()
        .find(|d| d["payload"]["event"] == "Cart Reminder")
        .unwrap_or_else(|| panic!("no reminder: {out:#}"));
    assert_eq!(reminder["at"], "+3h", "{reminder}");
    assert_eq!(reminder["destination"], "crm", "{reminder}");
    let p = &reminder["payload"];
    assert_eq!(p["type"], "track", "{p}");
    assert_eq!(p["userId"], user.as_str(), "{p}");
    assert_eq!(p["properties"]["email"], "ada@example.com", "{p}");
    assert_eq!(p["properties"]["first_name"], "Ada", "{p}");
    assert_eq!(
        p["properties"]["journey_context"]["Cart_Modified"],
        json!({"cart_ID": "c-1", "items": 2}),
        "{p}"
    );
    assert_eq!(
        p["properties"]["journey_metadata"]["step_id"], "remind",
        "{p}"
    );
    let exit = deliveries_out
        .iter()
        .find(|d| d["payload"]["event"] == "notify_exit")
        .unwrap_or_else(|| panic!("no exit send (event_name defaults to the step id): {out:#}"));
    assert_eq!(exit["at"], "+45m", "{exit}");

    // The same input gives the same output.
    assert_eq!(srv.admin_post("/v1/simulate", &input).expect(200), out);

    // Nothing written: no profiles, journeys or deliveries.
    for u in [user.clone(), format!("{user}-b"), format!("{user}-c")] {
        assert_eq!(
            srv.profile(&u).status,
            404,
            "simulation created profile {u}"
        );
    }
    assert_eq!(
        srv.admin("GET", "/v1/journeys/cart-abandonment", None)
            .status,
        404
    );
    assert!(
        deliveries(&srv, "").is_empty(),
        "simulation wrote deliveries"
    );
    assert_eq!(
        srv.admin_json("/v1/journeys")["items"],
        json!([]),
        "simulation published a journey"
    );

    // Bad input: 422 with paths.
    let mut bad_journey = cart_journey();
    bad_journey["steps"][0]["on_timeout"] = json!("remindr");
    let cases = [
        (
            "invalid journey",
            json!({"journey": bad_journey, "events": []}),
            "/journey/steps/0/on_timeout",
        ),
        ("no journey", json!({"events": []}), "/journey"),
        (
            "bad offset",
            json!({"journey": cart_journey(),
                   "events": [{"at": "soon", "message": {"type": "track", "userId": "u", "event": "E"}}]}),
            "/events/0/at",
        ),
        (
            "event without message",
            json!({"journey": cart_journey(), "events": [{"at": "+1m"}]}),
            "/events/0/message",
        ),
    ];
    for (name, doc, path) in cases {
        let got = problems(&srv.admin_post("/v1/simulate", &doc));
        assert!(
            got.iter().any(|(p, _)| p == path),
            "{name}: expected a problem at {path}: {got:#?}"
        );
    }
}
