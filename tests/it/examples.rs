//! The seed use cases in `examples/`, end to end through the real binary (SPEC §3-§6).
//!
//! Each example folder holds a journey with realistic durations ("1h", "3d") and the seed's sample
//! events with their offsets. A test scales both down linearly (the shortest duration becomes
//! [`UNIT_MS`]; every other duration and every offset by the same factor, so the order of events
//! and timers is kept), starts a server and a webhook receiver, replays the events in real time,
//! and checks what the live engine did against the case's expectations and against the simulator
//! (`POST /v1/simulate`) given the same scaled inputs: instance histories, outcomes, stats counters,
//! the outbox, and every payload the receiver got (headers, signature, context, metadata, traits).
//!
//! The expected histories are written by hand, in the engine's trace form (`what step -> detail`).
//! They are checked against three runs: `journeyd simulate` on the unscaled files (what a user
//! sees when trying an example), `POST /v1/simulate` on the scaled ones (which shows the scaling
//! kept the order of things), and the live run.
//!
//! Sleeps here only let real time pass for timers; outcomes are polled for with a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::harness::{self, Resp, Server, check_all, describe, enc, is_stored_timestamp, run_cli};
use crate::receiver::{Received, Receiver};

/// What the shortest duration of a journey becomes in the live run. Offsets scale by the same
/// factor, so an event written 30 minutes before a 1 h timeout lands a second before it.
const UNIT_MS: u64 = 2000;
/// The signing secret of the test destination: `whsec_` and the base64 of the key bytes.
pub const SECRET: &str = "whsec_am91cm5leWQtZXhhbXBsZXMtc2lnbmluZy1rZXk=";
/// How late a live timer may fire (or a delivery arrive) on a loaded machine, beyond its due time.
const LATE_MS: i64 = 2500;

/// One instance as expected, in entry order: whose it is and its history in trace form.
struct Inst {
    user: &'static str,
    history: &'static [&'static str],
}

/// One delivery as expected: the instance (1-based, entry order), the send step, the event name,
/// and its journey context as (context key, index of the event's line in `events.jsonl`).
struct Deliv {
    instance: usize,
    step: &'static str,
    event_name: &'static str,
    context: &'static [(&'static str, usize)],
}

struct Case {
    dir: &'static str,
    instances: &'static [Inst],
    deliveries: &'static [Deliv],
}

const CASES: &[Case] = &[
    Case {
        dir: "real-time-event-forwarding",
        instances: &[Inst {
            user: "99",
            history: &[
                "entered",
                "step send_confirmation",
                "send send_confirmation -> crm",
                "completed send_confirmation",
            ],
        }],
        deliveries: &[Deliv {
            instance: 1,
            step: "send_confirmation",
            event_name: "Order Confirmation Message",
            context: &[("Order_Confirmation", 1)],
        }],
    },
    Case {
        dir: "application-abandonment",
        instances: &[
            Inst {
                user: "88",
                history: &[
                    "entered",
                    "step wait_for_completion",
                    "branch wait_for_completion -> completed",
                    "completed wait_for_completion",
                ],
            },
            Inst {
                user: "88",
                history: &[
                    "entered",
                    "step wait_for_completion",
                    "timeout wait_for_completion -> application_nudge",
                    "step application_nudge",
                    "send application_nudge -> crm",
                    "completed application_nudge",
                ],
            },
        ],
        deliveries: &[Deliv {
            instance: 2,
            step: "application_nudge",
            event_name: "Application Reminder",
            context: &[("Application_Started", 3)],
        }],
    },
    Case {
        dir: "cart-abandonment-cart-viewed",
        instances: &[
            Inst {
                user: "88",
                history: &[
                    "entered",
                    "step wait_for_checkout",
                    "timeout wait_for_checkout -> cart_reminder",
                    "step cart_reminder",
                    "send cart_reminder -> crm",
                    "completed cart_reminder",
                ],
            },
            Inst {
                user: "88",
                history: &[
                    "entered",
                    "step wait_for_checkout",
                    "branch wait_for_checkout -> checked out",
                    "completed wait_for_checkout",
                ],
            },
        ],
        deliveries: &[Deliv {
            instance: 1,
            step: "cart_reminder",
            event_name: "Cart Reminder",
            context: &[("Cart_Viewed", 1)],
        }],
    },
    Case {
        dir: "cart-abandonment-cart-modified",
        instances: &[
            Inst {
                user: "23",
                history: &[
                    "entered",
                    "step wait_for_order",
                    "reset wait_for_order -> cart changed",
                    "timeout wait_for_order -> remind",
                    "step remind",
                    "send remind -> crm",
                    "completed remind",
                ],
            },
            Inst {
                user: "23",
                history: &[
                    "entered",
                    "step wait_for_order",
                    "branch wait_for_order -> ordered",
                    "completed wait_for_order",
                ],
            },
        ],
        deliveries: &[Deliv {
            instance: 1,
            step: "remind",
            event_name: "Cart Reminder",
            context: &[("Product_Added", 1), ("Cart_Modified", 2)],
        }],
    },
    Case {
        dir: "browse-abandonment",
        instances: &[
            Inst {
                user: "26",
                history: &[
                    "entered",
                    "step first_wait",
                    "branch first_wait -> viewed another product",
                    "step second_wait",
                    "reset second_wait -> still browsing",
                    "timeout second_wait -> browse_reminder",
                    "step browse_reminder",
                    "send browse_reminder -> crm",
                    "completed browse_reminder",
                ],
            },
            Inst {
                user: "26",
                history: &[
                    "entered",
                    "step first_wait",
                    "branch first_wait -> added to cart",
                    "completed first_wait",
                ],
            },
        ],
        deliveries: &[Deliv {
            instance: 1,
            step: "browse_reminder",
            event_name: "Browse Abandonment Reminder",
            context: &[
                ("Viewed_Product", 1),
                ("Subsequent_View", 2),
                ("Final_View", 3),
            ],
        }],
    },
    Case {
        dir: "trial-re-engagement",
        instances: &[
            Inst {
                user: "747",
                history: &[
                    "entered",
                    "step first_wait",
                    "timeout first_wait -> first_reminder",
                    "step first_reminder",
                    "send first_reminder -> crm",
                    "step second_wait",
                    "branch second_wait -> trial ended",
                    "completed second_wait",
                ],
            },
            Inst {
                user: "748",
                history: &[
                    "entered",
                    "step first_wait",
                    "timeout first_wait -> first_reminder",
                    "step first_reminder",
                    "send first_reminder -> crm",
                    "step second_wait",
                    "timeout second_wait -> second_reminder",
                    "step second_reminder",
                    "send second_reminder -> crm",
                    "completed second_reminder",
                ],
            },
        ],
        deliveries: &[
            Deliv {
                instance: 1,
                step: "first_reminder",
                event_name: "Trial Reminder 1",
                context: &[("Trial_Started", 2)],
            },
            Deliv {
                instance: 2,
                step: "first_reminder",
                event_name: "Trial Reminder 1",
                context: &[("Trial_Started", 3)],
            },
            Deliv {
                instance: 2,
                step: "second_reminder",
                event_name: "Trial Reminder 2",
                context: &[("Trial_Started", 3)],
            },
        ],
    },
    Case {
        dir: "complex-multi-step-onboarding",
        instances: &[
            Inst {
                user: "999",
                history: &[
                    "entered",
                    "step wait_for_account",
                    "timeout wait_for_account -> nudge_create_account",
                    "step nudge_create_account",
                    "send nudge_create_account -> crm",
                    "step wait_for_account_after_nudge",
                    "branch wait_for_account_after_nudge -> account created",
                    "step wait_for_trial",
                    "reset wait_for_trial -> payment method added",
                    "branch wait_for_trial -> trial started",
                    "step wait_for_trial_end",
                    "branch wait_for_trial_end -> trial ended",
                    "step wait_for_subscription",
                    "branch wait_for_subscription -> subscribed",
                    "step welcome_subscriber",
                    "send welcome_subscriber -> crm",
                    "completed welcome_subscriber",
                ],
            },
            Inst {
                user: "1000",
                history: &[
                    "entered",
                    "step wait_for_account",
                    "timeout wait_for_account -> nudge_create_account",
                    "step nudge_create_account",
                    "send nudge_create_account -> crm",
                    "step wait_for_account_after_nudge",
                    "timeout wait_for_account_after_nudge",
                    "completed wait_for_account_after_nudge",
                ],
            },
        ],
        deliveries: &[
            Deliv {
                instance: 1,
                step: "nudge_create_account",
                event_name: "Create Your Account",
                context: &[("Website_Viewed", 2)],
            },
            Deliv {
                instance: 2,
                step: "nudge_create_account",
                event_name: "Create Your Account",
                context: &[("Website_Viewed", 3)],
            },
            Deliv {
                instance: 1,
                step: "welcome_subscriber",
                event_name: "Welcome Subscriber",
                context: &[
                    ("Website_Viewed", 2),
                    ("Account_Created", 4),
                    ("Payment_Method", 5),
                    ("Trial_Started", 6),
                    ("Trial_Ended", 7),
                    ("Subscription_Started", 8),
                ],
            },
        ],
    },
];

fn case(dir: &str) -> &'static Case {
    CASES
        .iter()
        .find(|c| c.dir == dir)
        .unwrap_or_else(|| panic!("no case for examples/{dir}"))
}

#[test]
fn examples_real_time_event_forwarding() {
    check(case("real-time-event-forwarding"));
}

#[test]
fn examples_application_abandonment() {
    check(case("application-abandonment"));
}

#[test]
fn examples_cart_abandonment_cart_viewed() {
    check(case("cart-abandonment-cart-viewed"));
}

#[test]
fn examples_cart_abandonment_cart_modified() {
    check(case("cart-abandonment-cart-modified"));
}

#[test]
fn examples_browse_abandonment() {
    check(case("browse-abandonment"));
}

#[test]
fn examples_trial_re_engagement() {
    check(case("trial-re-engagement"));
}

#[test]
fn examples_complex_multi_step_onboarding() {
    check(case("complex-multi-step-onboarding"));
}

/// Every folder in `examples/` has a case here and the three files; every journey passes
/// `journeyd check`; `journeyd simulate` on the unscaled files gives the expected histories and
/// deliveries, which is what each README tells a user to run.
#[test]
fn examples_check_and_simulate_cli() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(examples_dir())
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            e.file_type()
                .unwrap()
                .is_dir()
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    let covered: BTreeSet<String> = CASES.iter().map(|c| c.dir.to_string()).collect();
    assert_eq!(on_disk, covered, "example folders and test cases differ");

    let files: Vec<String> = CASES
        .iter()
        .map(|c| example_file(c.dir, "journey.json").display().to_string())
        .collect();
    let args: Vec<&str> = std::iter::once("check")
        .chain(files.iter().map(String::as_str))
        .collect();
    let out = run_cli(&args);
    assert!(out.status.success(), "journeyd check: {}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for f in &files {
        assert!(
            stdout.contains(&format!("{f}: ok")),
            "journeyd check did not say {f}: ok\n{}",
            describe(&out)
        );
    }

    check_all(
        CASES,
        |c| c.dir.to_string(),
        |c| {
            let readme = std::fs::read_to_string(example_file(c.dir, "README.md")).unwrap();
            assert!(
                readme.contains("journeyd simulate journey.json --events events.jsonl"),
                "examples/{}/README.md does not show how to simulate",
                c.dir
            );
            let journey = example_file(c.dir, "journey.json").display().to_string();
            let events = example_file(c.dir, "events.jsonl").display().to_string();
            let out = run_cli(&["simulate", &journey, "--events", &events]);
            assert!(
                out.status.success(),
                "journeyd simulate {}: {}",
                c.dir,
                describe(&out)
            );
            let sim: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                panic!("simulate output is not JSON ({e}): {}", describe(&out))
            });
            check_sim(c, "journeyd simulate (unscaled)", &sim);
        },
    );
}

/// The live run of one example; see the module comment.
fn check(c: &Case) {
    let journey = read_json(&example_file(c.dir, "journey.json"));
    let events = read_events(c.dir);
    let scale = Scale::of(&journey, &events);
    let scaled_journey = scale.journey(&journey);
    let scaled_events: Vec<(u64, Value)> = events
        .iter()
        .map(|(at, m)| (scale.offset(*at), m.clone()))
        .collect();
    let journey_id = journey["id"].as_str().unwrap().to_string();
    let traits = identify_traits(&events);

    let srv = Server::start();
    let receiver = Receiver::start(Vec::new());
    put_destination(&srv, "crm", &receiver.url("/hook"));
    let resp = put_json(&srv, &format!("/v1/journeys/{journey_id}"), &scaled_journey);
    assert_eq!(
        resp.expect(201),
        json!({"id": journey_id, "version": 1}),
        "{resp}"
    );

    // The simulator, given the scaled inputs, must tell the same story as for the real durations:
    // this is what shows the scaling kept the order of events and timers.
    let script: Vec<Value> = scaled_events
        .iter()
        .map(|(at, m)| json!({"at": format!("+{at}ms"), "message": m}))
        .collect();
    let sim = simulate(
        &srv,
        &json!({"journey": scaled_journey, "traits": {}, "events": script}),
    );
    check_sim(c, "POST /v1/simulate (scaled)", &sim);
    let sim_trace = trace_by_instance(&sim);

    // Replay in real time.
    let t0 = Instant::now();
    let t0_ms = harness::now_micros() / 1000;
    for (at, message) in &scaled_events {
        let when = t0 + Duration::from_millis(*at);
        if let Some(wait) = when.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let kind = message["type"].as_str().unwrap_or("track");
        srv.ingest_ok(&format!("/v1/{kind}"), message);
    }

    // Wait until every instance has ended and every delivery has arrived.
    let users: Vec<&str> = c.instances.iter().map(|i| i.user).collect();
    let last_ms = sim["trace"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| offset_ms(t["at"].as_str().unwrap()))
        .max()
        .unwrap_or(0);
    let deadline = t0 + Duration::from_millis(last_ms) + Duration::from_secs(15);
    let instances = loop {
        let instances = live_instances(&srv, &users);
        let ended = instances.len() == c.instances.len()
            && instances.iter().all(|i| i["state"] != "active");
        if ended && receiver.received().len() >= c.deliveries.len() {
            break instances;
        }
        assert!(
            Instant::now() < deadline,
            "{}: not done by {:?}: instances {}, {} of {} deliveries received",
            c.dir,
            deadline - t0,
            Value::Array(instances),
            receiver.received().len(),
            c.deliveries.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    // Instances: owner, outcome, history; the history equals the simulator's trace; each
    // transition happened when the simulation says (never early, at most a little late).
    let mut live_ids = Vec::new();
    for (n, (want, got)) in c.instances.iter().zip(&instances).enumerate() {
        let id = got["id"].as_i64().unwrap();
        live_ids.push(id);
        assert_eq!(got["profile"], want.user, "{}: instance {}", c.dir, n + 1);
        let outcome = outcome_of(want.history);
        assert_eq!(got["state"], outcome, "{}: instance {id}: {got}", c.dir);
        assert_eq!(got["outcome"], outcome, "{}: instance {id}: {got}", c.dir);
        assert_eq!(got["journey"], journey_id.as_str());
        assert_eq!(got["version"], 1);
        assert_eq!(
            got["due_at"],
            Value::Null,
            "{}: ended instance {got}",
            c.dir
        );
        let detail = instance(&srv, id);
        let history = history_lines(&detail);
        assert_eq!(
            history, want.history,
            "{}: live history of instance {id} ({})",
            c.dir, want.user
        );
        let sim_steps: Vec<String> = sim_trace[n].iter().map(|(_, line)| line.clone()).collect();
        assert_eq!(
            history, sim_steps,
            "{}: live history of instance {id} differs from the simulation",
            c.dir
        );
        for (t, (sim_at, line)) in detail["history"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&sim_trace[n])
        {
            let at = harness::parse_ts(t["at"].as_str().unwrap()).unwrap() / 1000 - t0_ms;
            assert!(
                at >= *sim_at as i64 - 20 && at <= *sim_at as i64 + LATE_MS,
                "{}: instance {id}: `{line}` at +{at}ms, the simulation says +{sim_at}ms",
                c.dir
            );
        }
    }

    // Deliveries: exactly the expected ones, each once, signed, with the default payload.
    let received = receiver.received();
    assert_eq!(
        received.len(),
        c.deliveries.len(),
        "{}: receiver got {:#?}",
        c.dir,
        received.iter().map(Received::json).collect::<Vec<_>>()
    );
    let sim_deliveries = sim["deliveries"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for want in c.deliveries {
        let instance_id = live_ids[want.instance - 1];
        let user = c.instances[want.instance - 1].user;
        // Payloads carry the instance id as a string (SPEC §5).
        let instance_key = instance_id.to_string();
        let matching: Vec<&Received> = received
            .iter()
            .filter(|r| {
                let b = r.json();
                b["properties"]["journey_metadata"]["instance_id"] == instance_key.as_str()
                    && b["properties"]["journey_metadata"]["step_id"] == want.step
            })
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "{}: deliveries of instance {instance_id} step {}",
            c.dir,
            want.step
        );
        let r = matching[0];
        let body = check_webhook(r, SECRET);
        ids.insert(body["messageId"].as_str().unwrap().to_string());
        let mut context = serde_json::Map::new();
        for (key, line) in want.context {
            context.insert(key.to_string(), events[*line].1["properties"].clone());
        }
        let mut properties = json!({
            "journey_context": context,
            "journey_metadata": {"journey_id": journey_id, "journey_version": 1,
                                 "instance_id": instance_id.to_string(), "step_id": want.step},
        });
        for (k, v) in traits[user].as_object().unwrap() {
            properties[k] = v.clone();
        }
        assert_eq!(body["type"], "track", "{}: {body}", c.dir);
        assert_eq!(body["event"], want.event_name, "{}: {body}", c.dir);
        assert_eq!(body["userId"], user, "{}: {body}", c.dir);
        assert_eq!(body["properties"], properties, "{}: payload {body}", c.dir);
        assert!(is_stored_timestamp(&body["timestamp"]), "{body}");
        // The payload's timestamp is when the send step ran: its `send` transition.
        let detail = instance(&srv, instance_id);
        let send = detail["history"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["what"] == "send" && t["step"] == want.step)
            .unwrap();
        assert_eq!(body["timestamp"], send["at"], "{}: {body}", c.dir);
        // It arrived no earlier than the simulation's virtual time, and not much later.
        let sim_delivery = sim_deliveries
            .iter()
            .find(|d| {
                d["instance"] == want.instance as i64
                    && d["step"] == want.step
                    && d["payload"]["userId"] == user
            })
            .unwrap_or_else(|| panic!("{}: no simulated delivery for {}", c.dir, want.step));
        let due = offset_ms(sim_delivery["at"].as_str().unwrap());
        let arrived = r.at.duration_since(t0).as_millis() as i64;
        assert!(
            arrived >= due as i64 - 20 && arrived <= due as i64 + LATE_MS,
            "{}: delivery of {} arrived at +{arrived}ms, due at +{due}ms",
            c.dir,
            want.step
        );
        // The same payload as the simulation's, but for the ids and the time.
        assert_eq!(
            comparable(&body),
            comparable(&sim_delivery["payload"]),
            "{}: live and simulated payloads of {} differ",
            c.dir,
            want.step
        );
    }
    assert_eq!(
        ids.len(),
        c.deliveries.len(),
        "{}: delivery ids repeat",
        c.dir
    );

    // The outbox: every delivery succeeded at the first attempt, under the ids the receiver saw.
    let outbox = settled_deliveries(&srv, "crm", c.deliveries.len());
    let outbox_ids: BTreeSet<String> = outbox
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(outbox_ids, ids, "{}: outbox {outbox:#?}", c.dir);
    for d in &outbox {
        assert_eq!(d["status"], "succeeded", "{}: {d}", c.dir);
        assert_eq!(d["attempts"], 1, "{}: {d}", c.dir);
        assert_eq!(d["journey"], journey_id.as_str(), "{d}");
    }

    // Stats: the counters agree with the histories.
    let stats = srv
        .admin_get(&format!("/v1/journeys/{}/stats", enc(&journey_id)))
        .expect(200);
    let want = expected_stats(&scaled_journey, c);
    for key in ["entered", "active", "completed", "exited", "skipped"] {
        assert_eq!(stats[key], want[key], "{}: stats.{key} in {stats:#}", c.dir);
    }
    assert_eq!(stats["steps"], want["steps"], "{}: stats.steps", c.dir);
    assert_eq!(
        stats["branches"], want["branches"],
        "{}: stats.branches",
        c.dir
    );

    // Nothing more arrives once every instance has ended.
    assert_eq!(receiver.received().len(), c.deliveries.len(), "{}", c.dir);
}

/// Checks a simulation's answer against the case: the per-instance traces and the deliveries.
fn check_sim(c: &Case, what: &str, sim: &Value) {
    let traces = trace_by_instance(sim);
    let got: Vec<Vec<String>> = traces
        .iter()
        .map(|t| t.iter().map(|(_, l)| l.clone()).collect())
        .collect();
    let want: Vec<Vec<String>> = c
        .instances
        .iter()
        .map(|i| i.history.iter().map(|s| s.to_string()).collect())
        .collect();
    assert_eq!(got, want, "{}: {what}: traces", c.dir);
    let deliveries: Vec<(i64, String, String)> = sim["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["instance"].as_i64().unwrap(),
                d["step"].as_str().unwrap().to_string(),
                d["payload"]["event"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut want: Vec<(i64, String, String)> = c
        .deliveries
        .iter()
        .map(|d| {
            (
                d.instance as i64,
                d.step.to_string(),
                d.event_name.to_string(),
            )
        })
        .collect();
    let mut got = deliveries;
    got.sort();
    want.sort();
    assert_eq!(got, want, "{}: {what}: deliveries", c.dir);
}

/// The trace of a simulation, per instance in order of entry: (virtual ms, `what step -> detail`).
fn trace_by_instance(sim: &Value) -> Vec<Vec<(u64, String)>> {
    let mut by: BTreeMap<i64, Vec<(u64, String)>> = BTreeMap::new();
    for t in sim["trace"].as_array().expect("trace") {
        let id = t["instance"]
            .as_i64()
            .unwrap_or_else(|| panic!("a trace entry without an instance: {t}"));
        by.entry(id)
            .or_default()
            .push((offset_ms(t["at"].as_str().unwrap()), transition_line(t)));
    }
    by.into_values().collect()
}

/// A transition in the trace form `what step -> detail`, from the simulator's trace or a live history.
pub fn transition_line(t: &Value) -> String {
    let mut s = t["what"].as_str().unwrap().to_string();
    if let Some(step) = t["step"].as_str() {
        s.push(' ');
        s.push_str(step);
    }
    if let Some(detail) = t["detail"].as_str() {
        s.push_str(" -> ");
        s.push_str(detail);
    }
    s
}

/// The history of an instance (`GET /v1/instances/{id}`) in trace form.
pub fn history_lines(instance: &Value) -> Vec<String> {
    instance["history"]
        .as_array()
        .unwrap_or_else(|| panic!("instance without history: {instance}"))
        .iter()
        .map(transition_line)
        .collect()
}

/// The outcome an expected history ends in.
fn outcome_of(history: &[&str]) -> &'static str {
    let last = history.last().unwrap();
    ["completed", "exited", "archived"]
        .into_iter()
        .find(|o| last.starts_with(o))
        .unwrap_or("active")
}

/// The stats the expected histories imply (SPEC §6 and decisions.md: steps.reached counts each
/// `step` transition; branches count hold branches taken, resets, and timeouts).
fn expected_stats(journey: &Value, c: &Case) -> Value {
    let mut steps = serde_json::Map::new();
    let mut branches = serde_json::Map::new();
    for step in journey["steps"].as_array().unwrap() {
        let id = step["id"].as_str().unwrap();
        steps.insert(id.into(), json!({"reached": 0, "active": 0}));
        if step["type"] == "hold_until" {
            let mut labels = serde_json::Map::new();
            for b in step["branches"].as_array().unwrap() {
                let label = b["name"].as_str().or(b["event"].as_str()).unwrap();
                labels.insert(label.into(), json!(0));
            }
            if step.get("max_hold").is_some() {
                labels.insert("timeout".into(), json!(0));
            }
            branches.insert(id.into(), Value::Object(labels));
        }
    }
    let mut totals = json!({"entered": 0, "active": 0, "completed": 0, "exited": 0, "skipped": 0});
    let bump = |v: &mut Value| *v = json!(v.as_i64().unwrap() + 1);
    for inst in c.instances {
        for line in inst.history {
            let (head, detail) = match line.split_once(" -> ") {
                Some((h, d)) => (h, Some(d)),
                None => (*line, None),
            };
            let mut words = head.splitn(2, ' ');
            let what = words.next().unwrap();
            let step = words.next();
            match (what, step) {
                ("entered", _) => bump(&mut totals["entered"]),
                ("completed" | "exited", _) => bump(&mut totals[what]),
                ("step", Some(s)) => bump(&mut steps[s]["reached"]),
                ("branch" | "reset", Some(s)) => bump(&mut branches[s][detail.unwrap()]),
                ("timeout", Some(s)) => bump(&mut branches[s]["timeout"]),
                _ => {}
            }
        }
    }
    totals["steps"] = Value::Object(steps);
    totals["branches"] = Value::Object(branches);
    totals
}

/// A payload without what differs between a live run and a simulation: the delivery id, the
/// time, and the instance id.
fn comparable(payload: &Value) -> Value {
    let mut p = payload.clone();
    let obj = p.as_object_mut().unwrap();
    obj.remove("messageId");
    obj.remove("timestamp");
    p["properties"]["journey_metadata"]
        .as_object_mut()
        .unwrap()
        .remove("instance_id");
    p
}

/// Scales a journey's durations and a script's offsets by one factor: the shortest duration
/// becomes [`UNIT_MS`] (a journey without durations: the last offset becomes one second).
pub struct Scale {
    num: u64,
    den: u64,
}

impl Scale {
    fn of(journey: &Value, events: &[(u64, Value)]) -> Scale {
        let mut durations = Vec::new();
        collect_durations(journey, &mut durations);
        match durations.iter().min() {
            Some(&min) => Scale {
                num: UNIT_MS,
                den: min,
            },
            None => Scale {
                num: 1000,
                den: events
                    .iter()
                    .map(|(at, _)| *at)
                    .max()
                    .unwrap_or(0)
                    .max(1000),
            },
        }
    }

    /// An offset in milliseconds, scaled (rounded to the millisecond).
    pub fn offset(&self, ms: u64) -> u64 {
        (ms * self.num + self.den / 2) / self.den
    }

    /// The journey with every duration scaled; each must come out in whole seconds.
    pub fn journey(&self, journey: &Value) -> Value {
        let mut j = journey.clone();
        self.rewrite(&mut j);
        j
    }

    fn rewrite(&self, v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, v) in m.iter_mut() {
                    if (k == "max_hold" || k == "duration") && v.is_string() {
                        let ms = duration_ms(v.as_str().unwrap());
                        assert_eq!(
                            (ms * self.num) % (self.den * 1000),
                            0,
                            "duration {v} does not scale to whole seconds"
                        );
                        *v = json!(format!("{}s", ms * self.num / (self.den * 1000)));
                    } else {
                        self.rewrite(v);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|v| self.rewrite(v)),
            _ => {}
        }
    }
}

fn collect_durations(v: &Value, out: &mut Vec<u64>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match v.as_str() {
                    Some(s) if k == "max_hold" || k == "duration" => out.push(duration_ms(s)),
                    _ => collect_durations(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_durations(v, out)),
        _ => {}
    }
}

/// `"90m"` to milliseconds (SPEC §3: a whole number and one of s, m, h, d, w).
pub fn duration_ms(s: &str) -> u64 {
    let (n, unit) = s.split_at(s.len() - 1);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("bad duration {s:?}"));
    n * match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => panic!("bad duration {s:?}"),
    }
}

/// A script or trace offset (`+90m`, `+0s`, `+1500ms`) to milliseconds.
pub fn offset_ms(s: &str) -> u64 {
    let s = s.strip_prefix('+').unwrap_or(s);
    match s.strip_suffix("ms") {
        Some(ms) => ms.parse().unwrap_or_else(|_| panic!("bad offset {s:?}")),
        None => duration_ms(s),
    }
}

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn example_file(dir: &str, file: &str) -> PathBuf {
    examples_dir().join(dir).join(file)
}

fn read_json(path: &PathBuf) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The lines of an example's `events.jsonl`: (offset in ms, message).
fn read_events(dir: &str) -> Vec<(u64, Value)> {
    let path = example_file(dir, "events.jsonl");
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {l}: {e}", path.display()));
            (offset_ms(v["at"].as_str().unwrap()), v["message"].clone())
        })
        .collect()
}

/// The traits each user's `identify` lines give (merged, as journeyd merges them).
fn identify_traits(events: &[(u64, Value)]) -> Value {
    let mut out = json!({});
    for (_, m) in events.iter().filter(|(_, m)| m["type"] == "identify") {
        let user = m["userId"].as_str().unwrap();
        if out.get(user).is_none() {
            out[user] = json!({});
        }
        for (k, v) in m["traits"].as_object().unwrap() {
            out[user][k] = v.clone();
        }
    }
    out
}

// Admin helpers, shared with `restart`.

/// A JSON `PUT` to an admin path, as the admin token.
pub fn put_json(srv: &Server, path: &str, body: &Value) -> Resp {
    srv.admin("PUT", path, Some(body))
}

/// A webhook destination pointing at `url`, signed with [`SECRET`].
pub fn put_destination(srv: &Server, id: &str, url: &str) {
    let resp = put_json(
        srv,
        &format!("/v1/destinations/{id}"),
        &json!({"type": "webhook", "url": url, "secret": SECRET}),
    );
    resp.expect(201);
}

/// `POST /v1/simulate`.
pub fn simulate(srv: &Server, body: &Value) -> Value {
    srv.admin("POST", "/v1/simulate", Some(body)).expect(200)
}

/// The instances of these users' profiles, oldest first (instance ids follow entry order).
pub fn live_instances(srv: &Server, users: &[&str]) -> Vec<Value> {
    let mut seen = BTreeSet::new();
    let mut all = Vec::new();
    for user in users {
        if !seen.insert(*user) {
            continue;
        }
        let resp = srv.profile(user);
        if resp.status == 404 {
            continue;
        }
        let profile = resp.expect(200);
        all.extend(profile["instances"].as_array().unwrap().iter().cloned());
    }
    all.sort_by_key(|i| i["id"].as_i64().unwrap());
    all
}

/// `GET /v1/instances/{id}`.
pub fn instance(srv: &Server, id: i64) -> Value {
    srv.admin_get(&format!("/v1/instances/{id}")).expect(200)
}

/// Every delivery in the outbox for one destination.
pub fn deliveries(srv: &Server, destination: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/deliveries?destination={}&limit=1000", enc(destination));
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", enc(c)));
        }
        let page = srv.admin_get(&path).expect(200);
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return items,
        }
    }
}

/// The outbox of a destination once it holds `n` deliveries and none is pending any more: the
/// receiver sees a request before journeyd has recorded its outcome, so this polls (bounded).
pub fn settled_deliveries(srv: &Server, destination: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let items = deliveries(srv, destination);
        if items.len() >= n && items.iter().all(|d| d["status"] != "pending") {
            return items;
        }
        assert!(
            Instant::now() < deadline,
            "the outbox of {destination} did not settle with {n} deliveries: {items:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks one webhook request (SPEC §5: method, Standard Webhooks headers, signature, and
/// `messageId` = `webhook-id`) and returns its JSON body.
pub fn check_webhook(r: &Received, secret: &str) -> Value {
    assert_eq!(r.method, "POST", "{r:?}");
    assert_eq!(r.path, "/hook", "{r:?}");
    let body = r.json();
    let id = r.header("webhook-id").expect("webhook-id header");
    assert_eq!(body["messageId"], id, "messageId is the webhook-id: {body}");
    let ts = r.header("webhook-timestamp").expect("webhook-timestamp");
    let ts_secs: i64 = ts.parse().expect("webhook-timestamp is unix seconds");
    let now = harness::now_micros() / 1_000_000;
    assert!(
        (now - ts_secs).abs() < 120,
        "webhook-timestamp {ts} is not now"
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&r.body);
    let want = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    let got = r.header("webhook-signature").expect("webhook-signature");
    assert!(
        got.split(' ').any(|s| s == want),
        "webhook-signature {got:?}, expected {want:?}"
    );
    body
}
