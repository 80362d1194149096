//! Timers and deliveries across restarts (SPEC §0.1, §0.3, §4: "a timer due at T fires at T or
//! later, also after a restart (timers that fell due while stopped fire at start)").
//!
//! - Instances holding when the process is killed (kill -9) are there after the restart, unchanged,
//!   and events still reach them.
//! - After a restart, holding instances resume: events reach them and their timers fire at their
//!   due time, exactly.
//! - Holds that fell due while the server was stopped time out as soon as it starts, each with
//!   exactly one delivery, at the logical time they fell due.
//! - Nothing fires twice, whatever the number of restarts; a delivery in flight at a kill -9 is
//!   sent again with the same `webhook-id`.
//! - And, as the baseline for all of this, a running server sends each delivery once.
//!
//! The kill -9 cases run the binary. The others run the in-process appliance on its manual clock,
//! stopped gracefully and started again on the same database and the same clock: time passes
//! (also while it is stopped) only when the test moves the clock, so due times are met exactly.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::support::{
    Appliance, Client, Received, Receiver, Reply, SECRET, Server, WAIT, check_webhook, fmt_ms,
    history_lines, instance, live_instances, settled_deliveries, signed_webhook, ts_ms,
};

/// The history of a signup hold that timed out and sent its nudge.
const TIMED_OUT: &[&str] = &[
    "entered",
    "step wait",
    "timeout wait -> nudge",
    "step nudge",
    "send nudge -> crm",
    "completed nudge",
];

/// Far past any timer or retry of these tests.
const AN_HOUR: i64 = 3_600_000;

fn signup_journey(hold: &str, reminder: &str) -> Value {
    json!({
        "id": "signup-nudge",
        "name": "Signup nudge",
        "entry": {"event": "Signup_Started"},
        "steps": [
            {"id": "wait", "type": "hold_until", "max_hold": hold,
             "branches": [{"name": "completed", "event": "Signup_Completed", "next": null}],
             "on_timeout": "nudge"},
            {"id": "nudge", "type": "send", "destination": "crm", "event_name": reminder,
             "traits": ["email", "first_name"]}
        ]
    })
}

fn welcome_journey(delay: &str) -> Value {
    json!({
        "id": "trial-welcome",
        "name": "Trial welcome after a delay",
        "entry": {"event": "Trial_Started"},
        "steps": [
            {"id": "pause", "type": "delay", "duration": delay, "next": "welcome"},
            {"id": "welcome", "type": "send", "destination": "crm", "event_name": "Trial Welcome",
             "traits": ["email", "first_name"]}
        ]
    })
}

/// A `crm` destination pointing at `receiver`, these journeys, and users identified with an email
/// and a first name.
fn configure(srv: &Client, receiver: &Receiver, journeys: &[Value], users: &[&str]) {
    srv.admin_put(
        "/v1/destinations/crm",
        &signed_webhook(&receiver.url("/hook")),
    )
    .expect(201);
    for j in journeys {
        let id = j["id"].as_str().unwrap();
        srv.admin_put(&format!("/v1/journeys/{id}"), j).expect(201);
    }
    for u in users {
        srv.ingest_ok(
            "/v1/identify",
            &json!({"userId": u, "traits": {"email": format!("{u}@example.com"), "first_name": u.to_uppercase()}}),
        );
    }
}

/// An appliance set up by [`configure`], with a receiver on its clock. The receiver comes second,
/// so that it is dropped first.
fn appliance(journeys: &[Value], users: &[&str]) -> (Appliance, Receiver) {
    let srv = Appliance::start();
    let receiver = srv.receiver(Vec::new());
    configure(&srv, &receiver, journeys, users);
    (srv, receiver)
}

/// The binary set up by [`configure`], for the kill -9 cases.
fn server(journeys: &[Value], script: Vec<Reply>, users: &[&str]) -> (Server, Receiver) {
    let srv = Server::start();
    let receiver = Receiver::start(script);
    configure(&srv, &receiver, journeys, users);
    (srv, receiver)
}

fn track(srv: &Client, user: &str, event: &str) {
    srv.ingest_ok(
        "/v1/track",
        &json!({"userId": user, "event": event, "properties": {"plan": "pro"}}),
    );
}

fn due_at(inst: &Value) -> i64 {
    ts_ms(&inst["due_at"])
}

/// The requests by the instance id in their payload's journey metadata, each checked as a signed
/// webhook.
fn by_instance(received: &[Received]) -> BTreeMap<String, Vec<Value>> {
    let mut by: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in received {
        let body = check_webhook(r, "/hook", SECRET);
        let id = body["properties"]["journey_metadata"]["instance_id"]
            .as_str()
            .unwrap()
            .to_string();
        by.entry(id).or_default().push(body);
    }
    by
}

/// Asserts that a restart left these instances as they were.
fn assert_unchanged(before: &[Value], after: &[Value]) {
    assert_eq!(after.len(), before.len(), "{after:#?}");
    for (b, a) in before.iter().zip(after) {
        for key in [
            "id",
            "journey",
            "version",
            "state",
            "step",
            "context",
            "due_at",
            "entered_at",
        ] {
            assert_eq!(
                a[key], b[key],
                "instance {} {key} changed across the restart",
                b["id"]
            );
        }
    }
}

/// The instances of `users`, checked to be `n` and all holding: active, with a due time.
fn holding_instances(srv: &Client, users: &[&str], n: usize) -> Vec<Value> {
    let instances = live_instances(srv, users);
    assert_eq!(instances.len(), n, "{instances:#?}");
    for i in &instances {
        assert_eq!(i["state"], "active", "{i}");
        let _ = due_at(i);
    }
    instances
}

/// Publishes version 2 of the signup journey, with this hold and reminder "Signup Reminder v2".
fn publish_signup_v2(srv: &Client, hold: &str) {
    let v2 = srv.admin_put(
        "/v1/journeys/signup-nudge",
        &signup_journey(hold, "Signup Reminder v2"),
    );
    assert_eq!(v2.expect(200)["version"], 2, "{v2}");
}

/// Tracks `Signup_Completed` for `user` and checks that their signup instance, one of
/// `instances` and holding until then, took the branch and completed. Returns that instance.
fn complete_signup<'a>(srv: &Client, instances: &'a [Value], user: &str) -> &'a Value {
    track(srv, user, "Signup_Completed");
    let signup = instances
        .iter()
        .find(|i| i["profile"] == user && i["journey"] == "signup-nudge")
        .unwrap();
    let id = signup["id"].as_i64().unwrap();
    assert_eq!(
        history_lines(&instance(srv, id)),
        [
            "entered",
            "step wait",
            "branch wait -> completed",
            "completed wait"
        ],
        "instance {id} of {user}"
    );
    signup
}

/// Tracks `Signup_Started` for `user`, who has no instance yet, and checks that the one instance
/// it enters is on version 2 of the signup journey. Returns that instance.
fn enters_on_version_2(srv: &Client, user: &str) -> Value {
    track(srv, user, "Signup_Started");
    let entered = live_instances(srv, &[user]);
    assert_eq!(entered.len(), 1, "{entered:#?}");
    assert_eq!(entered[0]["version"], 2, "{}", entered[0]);
    entered[0].clone()
}

/// Holding instances survive a kill -9: after the restart they are there with the same step, due
/// time and context, an event still reaches one, and instances keep the journey version they
/// entered (a version published before the kill applies only to entries after it, SPEC §4). That
/// their timers then fire at their due time is `restart_resumes_holds_and_timers_fire_on_time`.
#[test]
fn restart_after_kill9_keeps_holding_instances() {
    let users = ["k1", "k2", "k3"];
    let (mut srv, receiver) = server(
        &[
            signup_journey("1h", "Signup Reminder"),
            welcome_journey("1h"),
        ],
        Vec::new(),
        &users,
    );
    track(&srv, "k1", "Signup_Started");
    track(&srv, "k2", "Signup_Started");
    track(&srv, "k1", "Trial_Started");
    let before = holding_instances(&srv, &users, 3);
    publish_signup_v2(&srv, "2h");

    srv.kill9();
    srv.restart();

    let after = live_instances(&srv, &users);
    assert_unchanged(&before, &after);

    // An event still reaches a holding instance.
    complete_signup(&srv, &after, "k1");
    // A new entry after the restart runs on version 2; the others stay on version 1.
    enters_on_version_2(&srv, "k3");
    let k2 = live_instances(&srv, &["k2"]);
    assert_eq!(k2[0]["version"], 1, "{}", k2[0]);
    assert_eq!(k2[0]["state"], "active", "{}", k2[0]);
    assert!(
        receiver.received().is_empty(),
        "nothing was due: {:?}",
        receiver.received()
    );
}

/// After a restart, holding instances resume: the instances are still there, at the same step with
/// the same due time and context; an event reaches a holding instance; the timers of the others
/// fire at their due time; and instances keep the journey version they entered.
#[test]
fn restart_resumes_holds_and_timers_fire_on_time() {
    let users = ["a1", "a2", "a3", "a4"];
    let (mut srv, receiver) = appliance(
        &[
            signup_journey("4s", "Signup Reminder"),
            welcome_journey("3s"),
        ],
        &users,
    );
    for u in &users[..3] {
        track(&srv, u, "Signup_Started");
    }
    track(&srv, "a1", "Trial_Started");
    let before = holding_instances(&srv, &users, 4);
    // Version 2 is published while version 1 instances hold.
    publish_signup_v2(&srv, "2s");

    srv.restart();

    let after = live_instances(&srv, &users);
    assert_unchanged(&before, &after);
    assert!(
        receiver.received().is_empty(),
        "nothing is due yet: {:?}",
        receiver.received()
    );

    // An event still reaches a holding instance after the restart.
    let a1_signup = complete_signup(&srv, &after, "a1");

    // A new entry after the restart runs on version 2.
    let a4 = enters_on_version_2(&srv, "a4");

    // The other timers fire at their due time: a2's and a3's holds, a1's delay, a4's hold. The
    // clock visits each due time in turn, and the deliveries due by then must have arrived
    // before it moves on, so each arrives on the server's clock exactly when its timer is due.
    let mut timed: Vec<&Value> = after
        .iter()
        .filter(|i| i["id"] != a1_signup["id"])
        .collect();
    timed.push(&a4);
    let dues: BTreeSet<i64> = timed.iter().map(|i| due_at(i)).collect();
    for &due in &dues {
        srv.set_time(due);
        let n = timed.iter().filter(|i| due_at(i) <= due).count();
        receiver.wait_for(n, WAIT);
    }
    let received = receiver.received();
    let by = by_instance(&received);
    for inst in &timed {
        let id = inst["id"].as_i64().unwrap();
        let due = due_at(inst);
        let got = by
            .get(&id.to_string())
            .unwrap_or_else(|| panic!("no delivery for instance {id}"));
        assert_eq!(got.len(), 1, "instance {id}: {got:#?}");
        let r = received
            .iter()
            .find(|r| r.json()["messageId"] == got[0]["messageId"])
            .unwrap();
        assert_eq!(
            r.clock_ms,
            due,
            "instance {id}: due at {}, delivered at {}",
            fmt_ms(due),
            fmt_ms(r.clock_ms)
        );
        // The step ran at the due time, which is also the payload's timestamp.
        assert_eq!(got[0]["timestamp"], fmt_ms(due), "{}", got[0]);
        let detail = instance(&srv, id);
        let history = history_lines(&detail);
        let fired = &detail["history"].as_array().unwrap()[2];
        assert_eq!(fired["at"], fmt_ms(due), "instance {id}: {detail:#}");
        let version = inst["version"].as_i64().unwrap();
        assert_eq!(
            got[0]["properties"]["journey_metadata"]["journey_version"], version,
            "instance {id}: {}",
            got[0]
        );
        if inst["journey"] == "trial-welcome" {
            assert_eq!(
                history,
                [
                    "entered",
                    "step pause",
                    "timer pause -> welcome",
                    "step welcome",
                    "send welcome -> crm",
                    "completed welcome"
                ],
                "instance {id}"
            );
            assert_eq!(got[0]["event"], "Trial Welcome");
        } else {
            assert_eq!(history, TIMED_OUT, "instance {id}");
            let want = if version == 1 {
                "Signup Reminder"
            } else {
                "Signup Reminder v2"
            };
            assert_eq!(got[0]["event"], want, "instance {id} on version {version}");
        }
        let user = inst["profile"].as_str().unwrap();
        assert_eq!(got[0]["userId"], user);
        assert_eq!(got[0]["properties"]["email"], format!("{user}@example.com"));
    }
    assert_eq!(receiver.received().len(), timed.len());
}

/// Holds that fell due while the server was stopped time out as soon as it starts, at the logical
/// time they fell due, each with exactly one delivery; an event for one of them arriving right
/// after the restart loses the race to the timeout (decisions.md: due timers fire first).
#[test]
fn restart_fires_holds_that_fell_due_while_down_once() {
    let users = ["b1", "b2", "b3", "b4"];
    let (mut srv, receiver) = appliance(&[signup_journey("2s", "Signup Reminder")], &users);
    for u in users {
        track(&srv, u, "Signup_Started");
    }
    let before = live_instances(&srv, &users);
    assert_eq!(before.len(), 4, "{before:#?}");
    srv.stop();

    let last_due = before.iter().map(due_at).max().unwrap();
    srv.set_time(last_due + 1000);
    srv.start_again();
    let restarted = srv.now_ms();
    track(&srv, "b4", "Signup_Completed");

    // The clock has not moved since the start: whatever arrives, arrives at start.
    let received = receiver.wait_for(4, WAIT);
    for r in &received {
        assert_eq!(
            r.clock_ms,
            restarted,
            "a delivery due before the restart arrived at {}, after the start at {}",
            fmt_ms(r.clock_ms),
            fmt_ms(restarted)
        );
    }
    let by = by_instance(&received);
    let mut ids = BTreeSet::new();
    for inst in &before {
        let id = inst["id"].as_i64().unwrap();
        let due = due_at(inst);
        let got = by
            .get(&id.to_string())
            .unwrap_or_else(|| panic!("no delivery for instance {id}: {by:#?}"));
        assert_eq!(
            got.len(),
            1,
            "instance {id} was delivered more than once: {got:#?}"
        );
        ids.insert(got[0]["messageId"].as_str().unwrap().to_string());
        assert_eq!(got[0]["userId"], inst["profile"]);
        assert_eq!(got[0]["event"], "Signup Reminder");
        // Logical time: the hold timed out when it fell due, while the server was stopped.
        assert_eq!(got[0]["timestamp"], fmt_ms(due), "{}", got[0]);
        let detail = instance(&srv, id);
        assert_eq!(
            history_lines(&detail),
            TIMED_OUT,
            "instance {id}: {detail:#}"
        );
        assert_eq!(detail["history"][2]["at"], fmt_ms(due), "{detail:#}");
        assert_eq!(detail["state"], "completed");
    }
    assert_eq!(ids.len(), 4, "webhook ids repeat");

    // The outbox holds one succeeded delivery per instance, under the ids the receiver saw.
    let outbox = settled_deliveries(&srv, "destination=crm", 4, WAIT);
    assert_eq!(outbox.len(), 4, "{outbox:#?}");
    let outbox_ids: BTreeSet<String> = outbox
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(outbox_ids, ids);
    for d in &outbox {
        assert_eq!(d["status"], "succeeded", "{d}");
        assert_eq!(d["attempts"], 1, "{d}");
    }

    // Later (past any retry), still exactly one request per instance: a stop finishes every
    // send begun, so the count is final.
    srv.advance(AN_HOUR);
    srv.stop();
    assert_eq!(
        receiver.received().len(),
        4,
        "{:#?}",
        by_instance(&receiver.received())
    );
}

/// Nothing fires twice across restarts: one timer fired before a restart, one fell due while the
/// server was stopped, one was set after the restart; after another restart, and past every
/// timer, each instance has exactly one timeout, one send and one completion, the receiver got
/// one request per instance, and the stats count each once.
#[test]
fn restart_never_fires_twice() {
    let users = ["c1", "c2", "c3"];
    let (mut srv, receiver) = appliance(&[signup_journey("2s", "Signup Reminder")], &users);

    // c1's timer fires while the server runs. Each restart below comes only once the outbox has
    // recorded every delivery's outcome: a delivery whose request reached the receiver but whose
    // outcome was not yet recorded is rightly sent again after a restart (at least once, SPEC §0.3),
    // which is `restart_resends_in_flight_delivery_with_same_id`, not this test.
    track(&srv, "c1", "Signup_Started");
    srv.advance(2_000);
    receiver.wait_for(1, WAIT);
    settled_deliveries(&srv, "destination=crm", 1, WAIT);

    // c2's falls due while it is stopped, and fires at start.
    track(&srv, "c2", "Signup_Started");
    let c2 = live_instances(&srv, &["c2"]);
    srv.stop();
    srv.set_time(due_at(&c2[0]) + 500);
    srv.start_again();
    receiver.wait_for(2, WAIT);

    // c3's is set after the restart.
    track(&srv, "c3", "Signup_Started");
    srv.advance(2_000);
    receiver.wait_for(3, WAIT);
    settled_deliveries(&srv, "destination=crm", 3, WAIT);

    // Once more, and past everything.
    srv.restart();
    srv.advance(AN_HOUR);

    let instances = live_instances(&srv, &users);
    assert_eq!(instances.len(), 3, "{instances:#?}");
    for inst in &instances {
        let id = inst["id"].as_i64().unwrap();
        let history = history_lines(&instance(&srv, id));
        for what in ["entered", "timeout", "send", "completed"] {
            let n = history
                .iter()
                .filter(|l| l.split(' ').next() == Some(what))
                .count();
            assert_eq!(n, 1, "instance {id} has {n} `{what}`: {history:#?}");
        }
        assert_eq!(history, TIMED_OUT, "instance {id}");
        assert_eq!(inst["state"], "completed");
    }

    let outbox = settled_deliveries(&srv, "destination=crm", 3, WAIT);
    assert_eq!(outbox.len(), 3, "{outbox:#?}");
    for d in &outbox {
        assert_eq!(d["status"], "succeeded", "{d}");
        assert_eq!(d["attempts"], 1, "{d}");
    }

    let stats = srv.admin_json("/v1/journeys/signup-nudge/stats");
    let want = json!({
        "entered": 3, "active": 0, "completed": 3, "exited": 0, "skipped": 0,
        "steps": {"wait": {"reached": 3, "active": 0}, "nudge": {"reached": 3, "active": 0}},
        "branches": {"wait": {"completed": 0, "timeout": 3}},
    });
    for key in [
        "entered",
        "active",
        "completed",
        "exited",
        "skipped",
        "steps",
        "branches",
    ] {
        assert_eq!(stats[key], want[key], "stats.{key}: {stats:#}");
    }

    // A stop finishes every send begun: the receiver's count is final.
    srv.stop();
    let received = receiver.received();
    let by = by_instance(&received);
    assert_eq!(by.len(), 3, "{by:#?}");
    for (id, got) in &by {
        assert_eq!(
            got.len(),
            1,
            "instance {id} was delivered {} times: {got:#?}",
            got.len()
        );
    }
}

/// A delivery in flight when the process is killed is sent again after the restart with the same
/// `webhook-id` and body (at least once, SPEC §0.3), and the instance did not run its step again.
#[test]
fn restart_resends_in_flight_delivery_with_same_id() {
    let (mut srv, receiver) = server(
        &[signup_journey("1s", "Signup Reminder")],
        vec![Reply::Hang],
        &["d1"],
    );
    // The 1 s hold times out on the wall clock (this is the binary, for kill -9).
    track(&srv, "d1", "Signup_Started");
    let first = receiver.wait_for(1, WAIT);
    let first_body = check_webhook(&first[0], "/hook", SECRET);

    srv.kill9();
    srv.restart();
    let received = receiver.wait_for(2, WAIT);
    let again = check_webhook(&received[1], "/hook", SECRET);
    assert_eq!(
        received[1].header("webhook-id"),
        first[0].header("webhook-id"),
        "the resend has a new webhook-id"
    );
    assert_eq!(again, first_body, "the resend has another body");

    let outbox = settled_deliveries(&srv, "destination=crm", 1, WAIT);
    assert_eq!(outbox.len(), 1, "{outbox:#?}");
    assert_eq!(outbox[0]["id"], first_body["messageId"]);
    assert_eq!(outbox[0]["status"], "succeeded", "{}", outbox[0]);
    let inst = live_instances(&srv, &["d1"]);
    let id = inst[0]["id"].as_i64().unwrap();
    assert_eq!(
        history_lines(&instance(&srv, id)),
        TIMED_OUT,
        "instance {id}"
    );
    // SIGTERM finishes every send begun: the receiver's count is final.
    let status = srv.terminate();
    assert_eq!(status.code(), Some(0), "{status}\n{}", srv.log_tail());
    assert_eq!(receiver.received().len(), 2);
}

/// Without any restart, a stream of timeouts falling due one after another sends each delivery
/// exactly once: SPEC §0.3's "at least once" covers resends after a crash or a failed attempt, not a
/// running dispatcher sending a delivery again after recording its success (its own doc says it
/// "does not send one twice at the same time").
///
/// The race it guards: the dispatcher reads the pending rows (`pending_for`), then skips those in
/// its in-flight set. A send whose outcome is committed while that read runs must not be taken for
/// one that is due again (`src/delivery/worker.rs` takes settled ids out of the set only at the
/// start of a pass, before its reads).
#[test]
fn running_server_sends_each_delivery_once() {
    let mut srv = Appliance::start();
    let receiver = srv.receiver(Vec::new());
    configure(
        &srv,
        &receiver,
        &[signup_journey("1s", "Signup Reminder")],
        &[],
    );
    // Entries spread over 1.2 s of the server's clock, ten every 20 ms, so that their timers fall
    // due one group after another, from 1 s on while entries still arrive. After each step of the
    // clock the test waits only until the deliveries due by then have reached the receiver, not
    // for their outcomes to be recorded: so deliveries are written (and wake the dispatcher) while
    // earlier ones are being recorded.
    const N: usize = 600;
    const GROUP: usize = 10;
    const STEP_MS: i64 = 20;
    let start = srv.now_ms();
    let groups = N / GROUP;
    let hold_steps = (1000 / STEP_MS) as usize;
    for step in 1..=groups + hold_steps {
        srv.advance(STEP_MS);
        if step <= groups {
            let batch: Vec<Value> = (0..GROUP)
                .map(|i| {
                    json!({"type": "track", "userId": format!("burst-{}", (step - 1) * GROUP + i),
                           "event": "Signup_Started"})
                })
                .collect();
            srv.ingest_ok("/v1/batch", &json!({"batch": batch}));
        }
        // The group that entered at step k falls due at step k + hold_steps.
        let due_groups = step.saturating_sub(hold_steps).min(groups);
        receiver.wait_for(due_groups * GROUP, WAIT);
    }
    assert_eq!(srv.now_ms() - start, (groups + hold_steps) as i64 * STEP_MS);
    let outbox = settled_deliveries(&srv, "destination=crm", N, WAIT);
    assert!(outbox.iter().all(|d| d["status"] == "succeeded"));
    // A stop finishes every send begun: the receiver's count is final.
    srv.stop();
    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    for r in receiver.received() {
        *per_id
            .entry(r.header("webhook-id").unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_id.len(), N);
    let repeated: Vec<String> = per_id
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| {
            let d = outbox.iter().find(|d| d["id"] == id.as_str()).unwrap();
            format!(
                "{id}: sent {n} times, outbox says {} after {} attempt(s)",
                d["status"], d["attempts"]
            )
        })
        .collect();
    assert!(
        repeated.is_empty(),
        "{} of {N} deliveries were sent more than once by a running server:\n{}",
        repeated.len(),
        repeated.join("\n")
    );
}
