//! Beyond Segment (SPEC §3.2 `delay.until`, §3.5, §6.8), through the binary on a manual clock:
//! send windows in the person's zone, frequency caps across journeys, contextual delays, and
//! backtests over the events actually received.

use serde_json::{Value, json};

use crate::support::appliance::START_MS;
use crate::support::{
    Appliance, Receiver, Server, WAIT, capped_webhook, deliveries, describe, eventually,
    instances_of, put_destination, put_journey, run_cli, stats, temp_dir, track_event, webhook,
};

/// The appliance's clock starts on Tuesday 2030-01-01 at 00:00 UTC.
const HOUR: i64 = 3_600_000;

/// Outside its window, a send waits at the step (active there) and goes out when the window
/// opens in the person's zone; inside, at once.
#[test]
fn a_send_waits_for_its_window_in_the_persons_zone() {
    let (app, rx) = Appliance::with_crm_receiver();
    put_journey(
        &app,
        &json!({"id": "w", "entry": {"event": "Go"},
                "steps": [{"id": "s", "type": "send", "destination": "crm",
                           "window": {"from": "09:00", "to": "20:00", "time_zone": "traits.tz",
                                      "default_time_zone": "Europe/Berlin"}}]}),
    );
    // 02:00 UTC: 03:00 in Berlin, 21:00 the day before in New York. Both outside.
    app.set_time(START_MS + 2 * HOUR);
    app.ingest_ok(
        "/v1/identify",
        &json!({"userId": "ny", "traits": {"tz": "America/New_York"}}),
    );
    track_event(&app, "ny", "Go", json!({}));
    track_event(&app, "berlin", "Go", json!({}));
    let waiting = instances_of(&app, "ny", "w");
    assert_eq!(waiting[0]["state"], "active", "{waiting:#?}");
    assert_eq!(waiting[0]["step"], "s");
    let st = stats(&app, "w", "");
    assert_eq!(st["steps"]["s"]["active"], 2, "{st}");
    // 09:00 in Berlin is 08:00 UTC; in New York, 14:00 UTC.
    app.set_time(START_MS + 8 * HOUR);
    let got = rx.wait_for(1, WAIT);
    assert_eq!(got[0].json()["userId"], "berlin");
    assert_eq!(got[0].json()["timestamp"], "2030-01-01T08:00:00.000Z");
    app.set_time(START_MS + 14 * HOUR);
    let got = rx.wait_for(2, WAIT);
    assert_eq!(got[1].json()["userId"], "ny");
    let st = stats(&app, "w", "");
    assert_eq!(st["steps"]["s"]["active"], 0, "{st}");
    assert_eq!(st["completed"], 2, "{st}");
}

/// A destination's frequency cap counts a person's sends across journeys; a send over it is a
/// `capped` delivery (listed, in the timeline, counted in stats), never sent, and the instance
/// goes on. A cap of 0 is refused with its path.
#[test]
fn frequency_caps_across_journeys() {
    let app = Appliance::start();
    let rx = app.receiver(Vec::new());
    let r = app.admin_put(
        "/v1/destinations/crm",
        &capped_webhook(&rx.url("/in"), 0, "1d"),
    );
    assert_eq!(
        r.expect(422)["error"]["details"][0]["path"],
        "/frequency_cap/max",
        "{r}"
    );
    put_destination(&app, "crm", &capped_webhook(&rx.url("/in"), 2, "24h"));
    for j in ["a", "b"] {
        put_journey(
            &app,
            &json!({"id": j, "entry": {"event": "Go"},
                    "steps": [{"id": "hello", "type": "send", "destination": "crm", "next": "again"},
                              {"id": "again", "type": "send", "destination": "crm"}]}),
        );
    }
    // One event enters both journeys: four sends for one person, two allowed.
    track_event(&app, "u1", "Go", json!({}));
    track_event(&app, "u2", "Go", json!({}));
    let all = eventually("the deliveries settle", WAIT, || {
        let d = deliveries(&app, "");
        let settled = d.iter().filter(|d| d["status"] != "pending").count();
        if settled == 8 {
            Ok(d)
        } else {
            Err(format!("{settled} of 8 settled"))
        }
    });
    let capped: Vec<&Value> = all.iter().filter(|d| d["status"] == "capped").collect();
    assert_eq!(capped.len(), 4, "{all:#?}");
    assert!(capped.iter().all(|d| d["attempts"] == 0));
    assert_eq!(rx.wait_for(4, WAIT).len(), 4);
    let listed = app.admin_json("/v1/deliveries?status=capped");
    assert_eq!(listed["items"].as_array().unwrap().len(), 4);
    let total: i64 = ["a", "b"]
        .iter()
        .map(|j| stats(&app, j, "")["capped"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 4);
    let timeline = app.timeline("u1");
    assert_eq!(
        timeline.iter().filter(|i| i["what"] == "capped").count(),
        2,
        "{timeline:#?}"
    );
    for j in ["a", "b"] {
        assert!(
            instances_of(&app, "u1", j)
                .iter()
                .all(|i| i["state"] == "completed")
        );
    }
    // A day later the cap has room again.
    app.advance(25 * HOUR);
    track_event(&app, "u1", "Go", json!({}));
    assert_eq!(rx.wait_for(6, WAIT).len(), 6);
}

/// "One hour before the appointment": a delay until a time in the context, with an offset.
#[test]
fn a_contextual_delay_waits_for_the_time_in_the_context() {
    let (app, rx) = Appliance::with_crm_receiver();
    put_journey(
        &app,
        &json!({"id": "appt", "entry": {"event": "Appointment_Booked"},
                "steps": [{"id": "wait", "type": "delay", "duration": "1d",
                           "until": {"path": "context.Appointment_Booked.starts_at", "offset": "-1h"},
                           "next": "remind"},
                          {"id": "remind", "type": "send", "destination": "crm"}]}),
    );
    track_event(
        &app,
        "u1",
        "Appointment_Booked",
        json!({"starts_at": "2030-01-01T15:00:00Z"}),
    );
    track_event(
        &app,
        "u2",
        "Appointment_Booked",
        json!({"starts_at": "whenever"}),
    );
    app.set_time(START_MS + 14 * HOUR);
    let got = rx.wait_for(1, WAIT);
    assert_eq!(got[0].json()["userId"], "u1");
    assert_eq!(got[0].json()["timestamp"], "2030-01-01T14:00:00.000Z");
    // The unreadable time falls back to the duration: a day.
    app.set_time(START_MS + 24 * HOUR);
    let got = rx.wait_for(2, WAIT);
    assert_eq!(got[1].json()["userId"], "u2");
}

/// A backtest replays the events received over a period through a draft journey: the entry
/// counts those events give, sample payloads, the instances still active; nothing written or
/// sent.
#[test]
fn a_backtest_replays_stored_events_and_changes_nothing() {
    let (app, rx) = Appliance::with_crm_receiver();
    app.ingest_ok(
        "/v1/identify",
        &json!({"userId": "u0", "traits": {"email": "u0@example.com"}}),
    );
    for n in 0..30 {
        let user = format!("u{}", n % 10);
        track_event(
            &app,
            &user,
            "Product_Added",
            json!({"cart_ID": format!("c{n}")}),
        );
        if n % 3 == 0 {
            track_event(
                &app,
                &user,
                "Order_Confirmation",
                json!({"cart_ID": format!("c{n}")}),
            );
        }
        app.advance(10 * 60_000);
    }
    let draft = json!({
        "id": "draft", "entry": {"event": "Product_Added", "unique_by": "cart_ID"},
        "steps": [{"id": "hold", "type": "hold_until", "max_hold": "1h",
                   "branches": [{"name": "ordered", "event": "Order_Confirmation", "next": null}],
                   "on_timeout": "remind"},
                  {"id": "remind", "type": "send", "destination": "crm", "traits": ["email"]}]
    });
    let before = app.admin_json("/v1/journeys");
    let r = app
        .admin_post(
            "/v1/journeys/backtest",
            &json!({"journey": draft, "since": "7d"}),
        )
        .expect(200);
    assert_eq!(r["entered"], 30, "{r:#}");
    assert_eq!(r["branches"]["hold"]["ordered"], 10, "{r:#}");
    // The last carts' hour has not passed by the end of the period: still active.
    let active = r["active"].as_i64().unwrap();
    assert!(active > 0 && active < 20, "{r:#}");
    assert_eq!(r["completed"].as_i64().unwrap() + active, 30, "{r:#}");
    assert_eq!(
        r["deliveries"]["crm"], r["branches"]["hold"]["timeout"],
        "{r:#}"
    );
    assert_eq!(r["events"], 41, "every stored event of the period: {r:#}");
    let sample = &r["samples"][0]["payload"];
    assert_eq!(sample["event"], "remind", "{r:#}");
    assert_eq!(
        r["active_instances"].as_array().unwrap().len() as i64,
        active
    );
    // u0's reminder carries the trait it has now.
    let u0 = r["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["payload"]["userId"] == "u0")
        .expect("a sample for u0");
    assert_eq!(u0["payload"]["properties"]["email"], "u0@example.com");
    // Nothing written or sent.
    assert_eq!(app.admin_json("/v1/journeys"), before);
    assert!(deliveries(&app, "").is_empty());
    assert!(rx.received().is_empty());
    // A bad request says where.
    let r = app.admin_post(
        "/v1/journeys/backtest",
        &json!({"journey": {"id": "x"}, "since": "soon"}),
    );
    let body = r.expect(422);
    let paths: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"/since") && paths.iter().any(|p| p.starts_with("/journey")),
        "{body}"
    );
    // Streamed: progress events, then the result.
    let streamed = app.post(
        "/v1/journeys/backtest?stream=1",
        &[("Authorization", &crate::support::bearer(app.admin_token()))],
        json!({"journey": draft, "since": "7d"})
            .to_string()
            .as_bytes(),
    );
    let text = streamed.text();
    assert!(text.contains("event: progress"), "{text}");
    assert!(text.contains("event: result"), "{text}");
}

/// `journeyd backtest FILE --since 1h` reads the database file beside the running server and
/// answers what the API answers; a bad period is a usage error, a bad journey names its paths.
#[test]
fn the_backtest_command_reads_the_file_beside_the_server() {
    let srv = Server::start();
    let rx = Receiver::start(Vec::new());
    put_destination(&srv, "crm", &webhook(&rx.url("/in"), json!({})));
    for n in 0..12 {
        track_event(
            &srv,
            &format!("u{}", n % 4),
            "Product_Added",
            json!({"cart_ID": format!("c{n}")}),
        );
    }
    let draft = json!({
        "id": "draft", "entry": {"event": "Product_Added"},
        "steps": [{"id": "hold", "type": "hold_until", "max_hold": "1h",
                   "branches": [{"name": "ordered", "event": "Order_Confirmation", "next": null}],
                   "on_timeout": "remind"},
                  {"id": "remind", "type": "send", "destination": "crm"}]
    });
    let dir = temp_dir("backtest-cli");
    let file = dir.join("draft.json");
    std::fs::write(&file, draft.to_string()).unwrap();
    let db = srv.db_path().to_str().unwrap().to_string();
    let backtest = |since: &str| {
        run_cli(&[
            "backtest",
            file.to_str().unwrap(),
            "--since",
            since,
            "--db",
            &db,
        ])
    };
    let out = backtest("1h");
    assert!(out.status.success(), "{}", describe(&out));
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    let api = srv
        .admin_post(
            "/v1/journeys/backtest",
            &json!({"journey": draft, "since": "1h"}),
        )
        .expect(200);
    for field in [
        "events",
        "entered",
        "active",
        "completed",
        "exited",
        "steps",
        "branches",
        "deliveries",
    ] {
        assert_eq!(cli[field], api[field], "{field}: cli {cli:#}\napi {api:#}");
    }
    assert_eq!(cli["events"], 12, "{cli:#}");
    assert_eq!(cli["active"], 12, "the hour has not passed: {cli:#}");
    assert!(rx.received().is_empty(), "nothing sent");

    let out = backtest("soon");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    std::fs::write(&file, json!({"id": "x", "entry": {}}).to_string()).unwrap();
    let out = backtest("1h");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("/entry"),
        "{}",
        describe(&out)
    );
}

/// A cap is per person (SPEC §3.5): what an anonymous visitor was sent counts against the profile
/// they merge into when they identify, so the identified person's next send is `capped`.
#[test]
fn frequency_caps_count_what_merged_profiles_were_sent() {
    let app = Appliance::start();
    let rx = app.receiver(Vec::new());
    put_destination(&app, "crm", &capped_webhook(&rx.url("/in"), 1, "24h"));
    put_journey(
        &app,
        &json!({"id": "a", "entry": {"event": "Go"},
                "steps": [{"id": "s", "type": "send", "destination": "crm"}]}),
    );
    app.ingest_ok(
        "/v1/track",
        &json!({"anonymousId": "anon-1", "event": "Go"}),
    );
    app.ingest_ok(
        "/v1/identify",
        &json!({"userId": "u1", "anonymousId": "anon-1", "traits": {}}),
    );
    track_event(&app, "u1", "Go", json!({}));
    let statuses: Vec<String> = deliveries(&app, "")
        .iter()
        .map(|d| d["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| *s == "capped").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(rx.wait_for(1, WAIT).len(), 1);
}
