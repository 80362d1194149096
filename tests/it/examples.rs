//! The seed use cases in `examples/`, end to end (SPEC §3-§6).
//!
//! Each example folder holds a journey with realistic durations ("1h", "3d") and the seed's sample
//! events with their offsets. A test starts an appliance (journeyd in the test process, on a
//! manual clock) and a webhook receiver, replays the events at their offsets on the server's clock
//! (moving the clock, not waiting: days pass in milliseconds), and checks what the live engine did
//! against the case's expectations and against the simulator (`POST /v1/simulate`) given the same
//! inputs: instance histories and the time of every transition, outcomes, stats counters, the
//! outbox, and every payload the receiver got (headers, signature, context, metadata, traits) and
//! when it got it.
//!
//! The expected histories are written by hand, in the engine's trace form (`what step -> detail`).
//! They are checked against three runs: `journeyd simulate` on the files (what a user sees when
//! trying an example), `POST /v1/simulate`, and the live run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::support::{
    Appliance, Client, Received, SECRET, WAIT, check_all, check_webhook, describe, enc, eventually,
    fmt_ms, history_lines, instance, is_stored_timestamp, live_instances, offset_ms, run_cli,
    settled_deliveries, signed_webhook, transition_line, ts_ms,
};

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

/// Where every example's virtual clock starts, in simulations (`--start`) and live (the
/// appliance's clock): a Tuesday at midnight UTC. It matters to send windows and `delay.until`.
const START: &str = "2030-01-01T00:00:00Z";

/// appointment-reminder: an instance that sent the reminder the day before and the one an hour
/// before.
const REMINDED_TWICE: &[&str] = &[
    "entered",
    "step until_day_before",
    "timer until_day_before -> day_before",
    "step day_before",
    "send day_before -> crm",
    "step until_hour_before",
    "timer until_hour_before -> hour_before",
    "step hour_before",
    "send hour_before -> crm",
    "completed hour_before",
];

/// product-nudge-with-a-daily-cap: an instance whose wait for the cart timed out and whose nudge
/// went out.
const NUDGED: &[&str] = &[
    "entered",
    "step wait_for_cart",
    "timeout wait_for_cart -> nudge",
    "step nudge",
    "send nudge -> crm",
    "completed nudge",
];

const CASES: &[Case] = &[
    Case {
        dir: "appointment-reminder",
        instances: &[
            Inst {
                user: "501",
                history: REMINDED_TWICE,
            },
            Inst {
                user: "502",
                history: REMINDED_TWICE,
            },
        ],
        deliveries: &[
            Deliv {
                instance: 1,
                step: "day_before",
                event_name: "Appointment Tomorrow",
                context: &[("Appointment_Booked", 2)],
            },
            Deliv {
                instance: 1,
                step: "hour_before",
                event_name: "Appointment Soon",
                context: &[("Appointment_Booked", 2)],
            },
            Deliv {
                instance: 2,
                step: "day_before",
                event_name: "Appointment Tomorrow",
                context: &[("Appointment_Booked", 3)],
            },
            Deliv {
                instance: 2,
                step: "hour_before",
                event_name: "Appointment Soon",
                context: &[("Appointment_Booked", 3)],
            },
        ],
    },
    Case {
        dir: "cart-reminder-in-business-hours",
        instances: &[
            Inst {
                user: "601",
                history: &[
                    "entered",
                    "step wait_for_checkout",
                    "timeout wait_for_checkout -> cart_reminder",
                    "step cart_reminder",
                    "window cart_reminder -> 2030-01-01T14:00:00.000Z",
                    "timer cart_reminder",
                    "send cart_reminder -> crm",
                    "completed cart_reminder",
                ],
            },
            Inst {
                user: "602",
                history: &[
                    "entered",
                    "step wait_for_checkout",
                    "timeout wait_for_checkout -> cart_reminder",
                    "step cart_reminder",
                    "send cart_reminder -> crm",
                    "completed cart_reminder",
                ],
            },
        ],
        deliveries: &[
            Deliv {
                instance: 1,
                step: "cart_reminder",
                event_name: "Cart Reminder",
                context: &[("Cart_Viewed", 2)],
            },
            Deliv {
                instance: 2,
                step: "cart_reminder",
                event_name: "Cart Reminder",
                context: &[("Cart_Viewed", 3)],
            },
        ],
    },
    Case {
        dir: "product-nudge-with-a-daily-cap",
        instances: &[
            Inst {
                user: "701",
                history: NUDGED,
            },
            Inst {
                user: "701",
                history: &[
                    "entered",
                    "step wait_for_cart",
                    "timeout wait_for_cart -> nudge",
                    "step nudge",
                    "capped nudge -> crm",
                    "completed nudge",
                ],
            },
            Inst {
                user: "702",
                history: &[
                    "entered",
                    "step wait_for_cart",
                    "branch wait_for_cart -> added to cart",
                    "completed wait_for_cart",
                ],
            },
            Inst {
                user: "702",
                history: NUDGED,
            },
            Inst {
                user: "701",
                history: NUDGED,
            },
        ],
        deliveries: &[
            Deliv {
                instance: 1,
                step: "nudge",
                event_name: "Product Nudge",
                context: &[("Product_Viewed", 2)],
            },
            Deliv {
                instance: 4,
                step: "nudge",
                event_name: "Product Nudge",
                context: &[("Product_Viewed", 6)],
            },
            Deliv {
                instance: 5,
                step: "nudge",
                event_name: "Product Nudge",
                context: &[("Product_Viewed", 7)],
            },
        ],
    },
    Case {
        dir: "anonymous-cart-then-sign-in",
        instances: &[
            Inst {
                user: "41",
                history: &[
                    "entered",
                    "step wait_for_order",
                    "branch wait_for_order -> ordered",
                    "completed wait_for_order",
                ],
            },
            Inst {
                user: "42",
                history: &[
                    "entered",
                    "step wait_for_order",
                    "timeout wait_for_order -> remind",
                    "step remind",
                    "send remind -> crm",
                    "completed remind",
                ],
            },
        ],
        deliveries: &[Deliv {
            instance: 2,
            step: "remind",
            event_name: "Cart Reminder",
            context: &[("Product_Added", 3)],
        }],
    },
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
fn examples_product_nudge_with_a_daily_cap() {
    check(case("product-nudge-with-a-daily-cap"));
}

#[test]
fn examples_appointment_reminder() {
    check(case("appointment-reminder"));
}

#[test]
fn examples_cart_reminder_in_business_hours() {
    check(case("cart-reminder-in-business-hours"));
}

#[test]
fn examples_anonymous_cart_then_sign_in() {
    check(case("anonymous-cart-then-sign-in"));
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
/// `journeyd check`; `journeyd simulate` on the files gives the expected histories and
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
            let mut args = vec!["simulate", &journey, "--events", &events, "--start", START];
            let crm = example_file(c.dir, "crm.json").display().to_string();
            if example_file(c.dir, "crm.json").exists() {
                args.extend(["--destination", &crm]);
            }
            let out = run_cli(&args);
            assert!(
                out.status.success(),
                "journeyd simulate {}: {}",
                c.dir,
                describe(&out)
            );
            let sim: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                panic!("simulate output is not JSON ({e}): {}", describe(&out))
            });
            check_sim(c, "journeyd simulate", &sim);
        },
    );
}

/// The live run of one example; see the module comment.
fn check(c: &Case) {
    let journey = read_json(&example_file(c.dir, "journey.json"));
    let events = read_events(c.dir);
    let journey_id = journey["id"].as_str().unwrap().to_string();
    let traits = identify_traits(&events);

    let srv = Appliance::start();
    let receiver = srv.receiver(Vec::new());
    srv.admin_put(
        "/v1/destinations/crm",
        &crm_destination(c, &receiver.url("/hook")),
    )
    .expect(201);
    let resp = srv.admin_put(&format!("/v1/journeys/{journey_id}"), &journey);
    assert_eq!(
        resp.expect(201),
        json!({"id": journey_id, "version": 1}),
        "{resp}"
    );

    // The simulator, given the same inputs, tells what should happen and when.
    let script: Vec<Value> = events
        .iter()
        .map(|(at, m)| json!({"at": format!("+{at}ms"), "message": m}))
        .collect();
    assert_eq!(
        fmt_ms(srv.now_ms()),
        START.replace("Z", ".000Z"),
        "the appliance's clock"
    );
    let sim = simulate(
        &srv,
        &json!({"journey": journey, "traits": {}, "events": script, "start": START}),
    );
    check_sim(c, "POST /v1/simulate", &sim);
    let sim_trace = trace_by_instance(&sim);
    let sim_deliveries = sim["deliveries"].as_array().unwrap();
    let sim_delivery_at: Vec<u64> = sim_deliveries
        .iter()
        .map(|d| offset_ms(d["at"].as_str().unwrap()))
        .collect();

    // Replay on the server's clock. Every moment at which the script has an event or the
    // simulation has something happen is visited in order: the clock is set to it, that moment's
    // events are ingested, and the live run must catch up with the simulation up to then (every
    // transition, at its time, and every delivery received) before the clock moves on. So each
    // transition and delivery is seen to happen at the time the simulation says, to the ms.
    let t0 = srv.now_ms();
    // Every id the script uses: an instance may start under an anonymousId and move to a
    // userId's profile when the two merge.
    let script_ids: Vec<String> = events
        .iter()
        .flat_map(|(_, m)| ["userId", "anonymousId"].map(|k| m[k].as_str().map(str::to_string)))
        .flatten()
        .collect();
    let users: Vec<&str> = c
        .instances
        .iter()
        .map(|i| i.user)
        .chain(script_ids.iter().map(String::as_str))
        .collect();
    let moments: BTreeSet<u64> = events
        .iter()
        .map(|(at, _)| *at)
        .chain(sim_trace.iter().flatten().map(|(at, _)| *at))
        .chain(sim_delivery_at.iter().copied())
        .collect();
    for &moment in &moments {
        srv.set_time(t0 + moment as i64);
        for (_, message) in events.iter().filter(|(at, _)| *at == moment) {
            let kind = message["type"].as_str().unwrap_or("track");
            srv.ingest_ok(&format!("/v1/{kind}"), message);
        }
        let want: Vec<Vec<(i64, String)>> = sim_trace
            .iter()
            .map(|t| {
                t.iter()
                    .filter(|(at, _)| *at <= moment)
                    .map(|(at, line)| (t0 + *at as i64, line.clone()))
                    .collect::<Vec<_>>()
            })
            .filter(|t| !t.is_empty())
            .collect();
        let want_received = sim_delivery_at.iter().filter(|at| **at <= moment).count();
        eventually(
            &format!(
                "{}: the live run at +{moment}ms to be where the simulation is",
                c.dir
            ),
            WAIT,
            || {
                let live = live_histories(&srv, &users);
                let received = receiver.received().len();
                if live == want && received == want_received {
                    Ok(())
                } else {
                    Err(format!(
                        "live histories {live:#?}\nsimulated {want:#?}\n{received} of {want_received} deliveries received"
                    ))
                }
            },
        );
    }

    // Instances: owner, outcome, history; the history equals the simulator's trace, each
    // transition at the simulation's time.
    let instances = live_instances(&srv, &users);
    assert_eq!(
        instances.len(),
        c.instances.len(),
        "{}: {instances:#?}",
        c.dir
    );
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
            assert_eq!(
                t["at"],
                fmt_ms(t0 + *sim_at as i64),
                "{}: instance {id}: `{line}` at {}, the simulation says +{sim_at}ms",
                c.dir,
                t["at"]
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
        let body = check_webhook(r, "/hook", SECRET);
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
        // It arrived at the simulation's virtual time.
        let sim_delivery = sim_deliveries
            .iter()
            .find(|d| {
                d["instance"] == want.instance as i64
                    && d["step"] == want.step
                    && d["payload"]["userId"] == user
            })
            .unwrap_or_else(|| panic!("{}: no simulated delivery for {}", c.dir, want.step));
        let due = offset_ms(sim_delivery["at"].as_str().unwrap()) as i64;
        assert_eq!(
            r.clock_ms - t0,
            due,
            "{}: delivery of {} arrived at +{}ms, due at +{due}ms",
            c.dir,
            want.step,
            r.clock_ms - t0
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
    let capped = c
        .instances
        .iter()
        .flat_map(|i| i.history)
        .filter(|line| line.starts_with("capped "))
        .count();
    let all = settled_deliveries(&srv, "destination=crm", c.deliveries.len() + capped, WAIT);
    let (capped_rows, outbox): (Vec<Value>, Vec<Value>) =
        all.into_iter().partition(|d| d["status"] == "capped");
    assert_eq!(
        capped_rows.len(),
        capped,
        "{}: capped deliveries {capped_rows:#?}",
        c.dir
    );
    for d in &capped_rows {
        assert_eq!(d["attempts"], 0, "{}: {d}", c.dir);
    }
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
    let stats = srv.admin_json(&format!("/v1/journeys/{}/stats", enc(&journey_id)));
    let want = expected_stats(&journey, c);
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

/// The histories of these users' instances, in entry order: (unix ms, `what step -> detail`).
fn live_histories(srv: &Client, users: &[&str]) -> Vec<Vec<(i64, String)>> {
    live_instances(srv, users)
        .iter()
        .map(|i| {
            instance(srv, i["id"].as_i64().unwrap())["history"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| (ts_ms(&t["at"]), transition_line(t)))
                .collect()
        })
        .collect()
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
        // What did nothing (a trigger that entered no instance, an exit that ended none) is
        // explained in the trace but belongs to no instance.
        if ["not_entered", "exit_unmatched"].contains(&t["what"].as_str().unwrap_or_default()) {
            assert!(t.get("instance").is_none(), "{t}");
            continue;
        }
        let id = t["instance"]
            .as_i64()
            .unwrap_or_else(|| panic!("a trace entry without an instance: {t}"));
        by.entry(id)
            .or_default()
            .push((offset_ms(t["at"].as_str().unwrap()), transition_line(t)));
    }
    by.into_values().collect()
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

/// The `crm` destination of an example: a signed webhook to the receiver, with the settings of
/// the example's `crm.json` when it has one (a frequency cap, say).
fn crm_destination(c: &Case, url: &str) -> Value {
    let mut dest = signed_webhook(url);
    let file = example_file(c.dir, "crm.json");
    if file.exists() {
        for (k, v) in read_json(&file).as_object().unwrap() {
            if !["url", "secret"].contains(&k.as_str()) {
                dest[k] = v.clone();
            }
        }
    }
    dest
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

/// `POST /v1/simulate`.
fn simulate(srv: &Client, body: &Value) -> Value {
    srv.admin_post("/v1/simulate", body).expect(200)
}
