//! Timers and deliveries across a `kill -9` and restart (SPEC §0.1, §0.3, §4: "a timer due at T
//! fires at T or later, also after a restart (timers that fell due while stopped fire at start)").
//!
//! - Instances holding when the process dies resume after restart: events still reach them and
//!   their timers fire at their due time, not earlier and not much later.
//! - Holds that fell due while the process was down time out right at start, each with exactly one
//!   delivery, at the logical time they fell due.
//! - Nothing fires twice, whatever the number of restarts; a delivery in flight at the kill is sent
//!   again with the same `webhook-id`.
//! - And, as the baseline for all of this, a running server sends each delivery once.
//!
//! Sleeps here only let real time pass for timers (and for the downtime); outcomes are polled for
//! with a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::examples::{
    SECRET, check_webhook, deliveries, history_lines, instance, live_instances, put_destination,
    put_json, settled_deliveries,
};
use crate::harness::{self, Server, fmt_ts};
use crate::receiver::{Received, Receiver, Reply};

/// How late a timer may fire, or a delivery arrive, on a loaded machine.
const LATE_MS: i64 = 2500;
/// How soon after a restart the timers that fell due while down must have been delivered.
const AT_START_MS: i64 = 1500;

/// The history of a signup hold that timed out and sent its nudge.
const TIMED_OUT: &[&str] = &[
    "entered",
    "step wait",
    "timeout wait -> nudge",
    "step nudge",
    "send nudge -> crm",
    "completed nudge",
];

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

/// A server with a `crm` destination pointing at a fresh receiver, these journeys, and users
/// identified with an email and a first name.
fn setup(journeys: &[Value], script: Vec<Reply>, users: &[&str]) -> (Server, Receiver) {
    let srv = Server::start();
    let receiver = Receiver::start(script);
    put_destination(&srv, "crm", &receiver.url("/hook"));
    for j in journeys {
        let id = j["id"].as_str().unwrap();
        put_json(&srv, &format!("/v1/journeys/{id}"), j).expect(201);
    }
    for u in users {
        srv.ingest_ok(
            "/v1/identify",
            &json!({"userId": u, "traits": {"email": format!("{u}@example.com"), "first_name": u.to_uppercase()}}),
        );
    }
    (srv, receiver)
}

fn track(srv: &Server, user: &str, event: &str) {
    srv.ingest_ok(
        "/v1/track",
        &json!({"userId": user, "event": event, "properties": {"plan": "pro"}}),
    );
}

/// Maps receiver arrival instants to wall-clock milliseconds, to compare with the server's due times.
struct Clock {
    instant: Instant,
    wall_ms: i64,
}

impl Clock {
    fn now() -> Clock {
        Clock {
            instant: Instant::now(),
            wall_ms: harness::now_micros() / 1000,
        }
    }

    fn wall(&self, at: Instant) -> i64 {
        self.wall_ms + at.duration_since(self.instant).as_millis() as i64
    }
}

fn now_ms() -> i64 {
    harness::now_micros() / 1000
}

/// Sleeps until the wall clock passes `ms`.
fn sleep_until_wall(ms: i64) {
    let left = ms - now_ms();
    if left > 0 {
        std::thread::sleep(Duration::from_millis(left as u64));
    }
}

fn due_at(inst: &Value) -> i64 {
    let s = inst["due_at"]
        .as_str()
        .unwrap_or_else(|| panic!("instance without due_at: {inst}"));
    harness::parse_ts(s).unwrap() / 1000
}

/// Waits until `n` requests have arrived; fails naming what did arrive.
fn wait_deliveries(
    srv: &Server,
    receiver: &Receiver,
    n: usize,
    timeout: Duration,
) -> Vec<Received> {
    let got = receiver.wait_for(n, timeout);
    assert!(
        got.len() >= n,
        "{} of {n} deliveries arrived within {timeout:?}: {:#?}\noutbox: {:#?}",
        got.len(),
        got.iter().map(Received::json).collect::<Vec<_>>(),
        deliveries(srv, "crm")
    );
    got
}

/// The requests by the instance id in their payload's journey metadata.
fn by_instance(received: &[Received]) -> BTreeMap<String, Vec<Value>> {
    let mut by: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in received {
        let body = check_webhook(r, SECRET);
        let id = body["properties"]["journey_metadata"]["instance_id"]
            .as_str()
            .unwrap()
            .to_string();
        by.entry(id).or_default().push(body);
    }
    by
}

/// Timers pending at a kill -9 survive it: the instances are still there, at the same step with
/// the same due time and context; an event reaches a holding instance after the restart; the
/// timers of the others fire at their due time; and instances keep the journey version they
/// entered (a version published before the kill applies only to entries after it, SPEC §4).
#[test]
fn restart_resumes_holds_and_timers_fire_on_time() {
    let users = ["a1", "a2", "a3", "a4"];
    let (mut srv, receiver) = setup(
        &[
            signup_journey("4s", "Signup Reminder"),
            welcome_journey("3s"),
        ],
        Vec::new(),
        &users,
    );
    let clock = Clock::now();
    for u in &users[..3] {
        track(&srv, u, "Signup_Started");
    }
    track(&srv, "a1", "Trial_Started");
    let before = live_instances(&srv, &users);
    assert_eq!(before.len(), 4, "{before:#?}");
    for i in &before {
        assert_eq!(i["state"], "active", "{i}");
        let _ = due_at(i);
    }
    // Version 2 is published while version 1 instances hold.
    let v2 = put_json(
        &srv,
        "/v1/journeys/signup-nudge",
        &signup_journey("2s", "Signup Reminder v2"),
    );
    assert_eq!(v2.expect(200)["version"], 2, "{v2}");

    srv.kill9();
    srv.restart();

    let after = live_instances(&srv, &users);
    assert_eq!(after.len(), before.len(), "{after:#?}");
    for (b, a) in before.iter().zip(&after) {
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
    assert!(
        receiver.received().is_empty(),
        "nothing is due yet: {:?}",
        receiver.received()
    );

    // An event still reaches a holding instance after the restart.
    track(&srv, "a1", "Signup_Completed");
    let a1_signup = after
        .iter()
        .find(|i| i["profile"] == "a1" && i["journey"] == "signup-nudge")
        .unwrap();
    let id = a1_signup["id"].as_i64().unwrap();
    assert_eq!(
        history_lines(&instance(&srv, id)),
        [
            "entered",
            "step wait",
            "branch wait -> completed",
            "completed wait"
        ],
        "instance {id} of a1"
    );

    // A new entry after the restart runs on version 2.
    track(&srv, "a4", "Signup_Started");
    let a4 = live_instances(&srv, &["a4"]);
    assert_eq!(a4.len(), 1, "{a4:#?}");
    assert_eq!(a4[0]["version"], 2, "{}", a4[0]);

    // The other timers fire at their due time: a2's and a3's holds, a1's delay, a4's hold.
    let mut timed: Vec<&Value> = after
        .iter()
        .filter(|i| i["id"] != a1_signup["id"])
        .collect();
    timed.push(&a4[0]);
    let last_due = timed.iter().map(|i| due_at(i)).max().unwrap();
    let wait = Duration::from_millis((last_due - now_ms() + LATE_MS).max(0) as u64);
    let received = wait_deliveries(&srv, &receiver, timed.len(), wait);
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
        let arrived = clock.wall(r.at);
        assert!(
            arrived >= due - 20 && arrived <= due + LATE_MS,
            "instance {id}: due at {}, delivered at {}",
            fmt_ts(due * 1000),
            fmt_ts(arrived * 1000)
        );
        // The step ran at the due time, which is also the payload's timestamp.
        assert_eq!(got[0]["timestamp"], fmt_ts(due * 1000), "{}", got[0]);
        let detail = instance(&srv, id);
        let history = history_lines(&detail);
        let fired = &detail["history"].as_array().unwrap()[2];
        assert_eq!(fired["at"], fmt_ts(due * 1000), "instance {id}: {detail:#}");
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

/// Holds that fell due while the process was down time out as soon as it starts again, at the
/// logical time they fell due, each with exactly one delivery; an event for one of them arriving
/// right after the restart loses the race to the timeout (decisions.md: due timers fire first).
#[test]
fn restart_fires_holds_that_fell_due_while_down_once() {
    let users = ["b1", "b2", "b3", "b4"];
    let (mut srv, receiver) = setup(
        &[signup_journey("2s", "Signup Reminder")],
        Vec::new(),
        &users,
    );
    for u in users {
        track(&srv, u, "Signup_Started");
    }
    let before = live_instances(&srv, &users);
    assert_eq!(before.len(), 4, "{before:#?}");
    srv.kill9();

    let last_due = before.iter().map(due_at).max().unwrap();
    sleep_until_wall(last_due + 1000);
    srv.restart();
    let restarted = Clock::now();
    track(&srv, "b4", "Signup_Completed");

    let received = wait_deliveries(
        &srv,
        &receiver,
        4,
        Duration::from_millis((AT_START_MS + LATE_MS) as u64),
    );
    for r in &received {
        let after = r.at.duration_since(restarted.instant).as_millis() as i64;
        assert!(
            after <= AT_START_MS,
            "a delivery due before the restart arrived {after} ms after it"
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
        // Logical time: the hold timed out when it fell due, while the process was down.
        assert_eq!(got[0]["timestamp"], fmt_ts(due * 1000), "{}", got[0]);
        let detail = instance(&srv, id);
        assert_eq!(
            history_lines(&detail),
            TIMED_OUT,
            "instance {id}: {detail:#}"
        );
        assert_eq!(detail["history"][2]["at"], fmt_ts(due * 1000), "{detail:#}");
        assert_eq!(detail["state"], "completed");
    }
    assert_eq!(ids.len(), 4, "webhook ids repeat");

    // The outbox holds one succeeded delivery per instance, under the ids the receiver saw.
    let outbox = settled_deliveries(&srv, "crm", 4);
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

    // Later, still exactly one request per instance.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        receiver.received().len(),
        4,
        "{:#?}",
        by_instance(&receiver.received())
    );
}

/// Nothing fires twice across restarts: one timer fired before the kill, one fell due during the
/// downtime, one was set after the restart; after another kill and restart, and waiting past every
/// timer, each instance has exactly one timeout, one send and one completion, the receiver got
/// one request per instance, and the stats count each once.
#[test]
fn restart_never_fires_twice() {
    let users = ["c1", "c2", "c3"];
    let (mut srv, receiver) = setup(
        &[signup_journey("2s", "Signup Reminder")],
        Vec::new(),
        &users,
    );

    // c1's timer fires while the server runs. Each kill below comes only once the outbox has
    // recorded every delivery's outcome: a delivery whose request reached the receiver but whose
    // outcome was not yet recorded is rightly sent again after a restart (at least once, SPEC §0.3),
    // which is `restart_resends_in_flight_delivery_with_same_id`, not this test.
    track(&srv, "c1", "Signup_Started");
    wait_deliveries(
        &srv,
        &receiver,
        1,
        Duration::from_millis(2000 + LATE_MS as u64),
    );
    settled_deliveries(&srv, "crm", 1);

    // c2's falls due while it is down.
    track(&srv, "c2", "Signup_Started");
    let c2 = live_instances(&srv, &["c2"]);
    srv.kill9();
    sleep_until_wall(due_at(&c2[0]) + 500);
    srv.restart();

    // c3's is set after the restart.
    track(&srv, "c3", "Signup_Started");
    wait_deliveries(
        &srv,
        &receiver,
        3,
        Duration::from_millis(2000 + LATE_MS as u64),
    );
    settled_deliveries(&srv, "crm", 3);

    // Once more, and wait past everything.
    srv.kill9();
    srv.restart();
    std::thread::sleep(Duration::from_millis(1500));

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
    let outbox = settled_deliveries(&srv, "crm", 3);
    assert_eq!(outbox.len(), 3, "{outbox:#?}");
    for d in &outbox {
        assert_eq!(d["status"], "succeeded", "{d}");
        assert_eq!(d["attempts"], 1, "{d}");
    }

    let stats = srv.admin_get("/v1/journeys/signup-nudge/stats").expect(200);
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
}

/// A delivery in flight when the process is killed is sent again after the restart with the same
/// `webhook-id` and body (at least once, SPEC §0.3), and the instance did not run its step again.
#[test]
fn restart_resends_in_flight_delivery_with_same_id() {
    let (mut srv, receiver) = setup(
        &[signup_journey("1s", "Signup Reminder")],
        vec![Reply::Hang],
        &["d1"],
    );
    track(&srv, "d1", "Signup_Started");
    let first = wait_deliveries(
        &srv,
        &receiver,
        1,
        Duration::from_millis(1000 + LATE_MS as u64),
    );
    let first_body = check_webhook(&first[0], SECRET);

    srv.kill9();
    srv.restart();
    let received = wait_deliveries(
        &srv,
        &receiver,
        2,
        Duration::from_millis((AT_START_MS + LATE_MS) as u64),
    );
    let again = check_webhook(&received[1], SECRET);
    assert_eq!(
        received[1].header("webhook-id"),
        first[0].header("webhook-id"),
        "the resend has a new webhook-id"
    );
    assert_eq!(again, first_body, "the resend has another body");

    let outbox = settled_deliveries(&srv, "crm", 1);
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
    std::thread::sleep(Duration::from_millis(500));
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
    let srv = Server::start();
    let receiver = Receiver::start(Vec::new());
    put_destination(&srv, "crm", &receiver.url("/hook"));
    put_json(
        &srv,
        "/v1/journeys/signup-nudge",
        &signup_journey("1s", "Signup Reminder"),
    )
    .expect(201);
    // Entries spread over a second or so: their timers fall due one after another, so deliveries are
    // written (and wake the dispatcher) while earlier ones are in flight.
    const N: usize = 600;
    for n in 0..N {
        srv.ingest_ok(
            "/v1/track",
            &json!({"userId": format!("burst-{n}"), "event": "Signup_Started"}),
        );
    }
    wait_deliveries(&srv, &receiver, N, Duration::from_secs(30));
    let outbox = settled_deliveries(&srv, "crm", N);
    assert!(outbox.iter().all(|d| d["status"] == "succeeded"));
    std::thread::sleep(Duration::from_millis(500));
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
