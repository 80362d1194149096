//! Engine scripts on the simulator's virtual clock, compared with readable traces.
//!
//! Each case is a journey, a script of `+offset userId Event {properties}` lines, and the trace
//! expected, one transition a line (`+2h #1 j timeout hold -> remind`). Set
//! `JOURNEYD_PRINT_TRACES=1` to print the actual traces when writing a new case.

use serde_json::{Value, json};

use crate::sim;

fn script(lines: &str) -> Vec<Value> {
    lines
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let at = parts.next().unwrap();
            let user = parts.next().unwrap();
            let event = parts.next().unwrap();
            let props: Value = parts
                .next()
                .map(|p| serde_json::from_str(p).unwrap())
                .unwrap_or(json!({}));
            let message = if event == "identify" {
                json!({"type": "identify", "userId": user, "traits": props})
            } else {
                json!({"type": "track", "userId": user, "event": event, "properties": props})
            };
            json!({"at": at, "message": message})
        })
        .collect()
}

fn simulate(journey: Value, events: &str) -> sim::Output {
    let doc = json!({"journey": journey, "traits": {"email": "ada@example.com"}, "events": script(events)});
    let input = sim::parse(&doc).unwrap_or_else(|p| panic!("bad case: {p:?}"));
    sim::run(&input, 25)
}

fn check(journey: Value, events: &str, expected: &str) {
    let out = simulate(journey, events);
    let actual = out.lines();
    if std::env::var_os("JOURNEYD_PRINT_TRACES").is_some() {
        println!("{}", actual.join("\n"));
    }
    let expected: Vec<String> = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    assert_eq!(actual, expected, "\nactual trace:\n{}\n", actual.join("\n"));
}

fn cart() -> Value {
    json!({
        "id": "cart", "name": "Cart",
        "entry": {"event": "Product_Added", "where": [{"property": "cart_ID", "exists": true}], "unique_by": "cart_ID"},
        "exit": {"events": [{"event": "Account_Deleted"}], "send": "notify_exit"},
        "steps": [
            {"id": "wait", "type": "hold_until", "max_hold": "2h",
             "branches": [
                {"name": "changed", "event": "Cart_Modified", "reset_timer": true},
                {"name": "ordered", "event": "Order_Confirmation", "next": null}],
             "on_timeout": "remind"},
            {"id": "remind", "type": "send", "destination": "crm", "event_name": "Cart Reminder", "traits": ["email"], "next": null},
            {"id": "notify_exit", "type": "send", "destination": "crm"}
        ]
    })
}

#[test]
fn hold_times_out_and_sends() {
    check(
        cart(),
        "+0s u1 Product_Added {\"cart_ID\": \"c1\"}",
        "+0s #1 cart entered
         +0s #1 cart step wait
         +2h #1 cart timeout wait -> remind
         +2h #1 cart step remind
         +2h #1 cart send remind -> crm
         +2h #1 cart completed remind",
    );
}

#[test]
fn reset_timer_restarts_the_hold_and_updates_context() {
    let out = simulate(
        cart(),
        "+0s u1 Product_Added {\"cart_ID\": \"c1\"}
         +90m u1 Cart_Modified {\"cart_ID\": \"c1\", \"n\": 2}
         +3h u1 Cart_Modified {\"cart_ID\": \"other\"}",
    );
    assert_eq!(
        out.lines(),
        [
            "+0s #1 cart entered",
            "+0s #1 cart step wait",
            "+90m #1 cart reset wait -> changed",
            "+210m #1 cart timeout wait -> remind",
            "+210m #1 cart step remind",
            "+210m #1 cart send remind -> crm",
            "+210m #1 cart completed remind",
        ]
    );
    let payload = &out.deliveries[0].payload;
    assert_eq!(
        payload["properties"]["journey_context"]["Cart_Modified"],
        json!({"cart_ID": "c1", "n": 2})
    );
    assert_eq!(payload["properties"]["email"], json!("ada@example.com"));
    assert_eq!(payload["userId"], json!("u1"));
    assert_eq!(payload["event"], json!("Cart Reminder"));
    assert_eq!(payload["timestamp"], json!("1970-01-01T03:30:00.000Z"));
    assert_eq!(
        payload["properties"]["journey_metadata"]["step_id"],
        json!("remind")
    );
}

#[test]
fn branch_event_completes_and_unique_by_separates_instances() {
    check(
        cart(),
        "+0s u1 Product_Added {\"cart_ID\": \"c1\"}
         +1m u1 Product_Added {\"cart_ID\": \"c2\"}
         +2m u1 Product_Added {\"cart_ID\": \"c1\"}
         +3m u1 Order_Confirmation {\"cart_ID\": \"c2\"}",
        "+0s #1 cart entered
         +0s #1 cart step wait
         +1m #2 cart entered
         +1m #2 cart step wait
         +2m - cart not_entered -> unique_by
         +3m #2 cart branch wait -> ordered
         +3m #2 cart completed wait
         +2h #1 cart timeout wait -> remind
         +2h #1 cart step remind
         +2h #1 cart send remind -> crm
         +2h #1 cart completed remind",
    );
}

#[test]
fn exit_rule_ends_the_instance_and_runs_exit_send() {
    check(
        cart(),
        "+0s u1 Product_Added {\"cart_ID\": \"c1\"}
         +1m u1 Account_Deleted {\"cart_ID\": \"c1\"}",
        "+0s #1 cart entered
         +0s #1 cart step wait
         +1m #1 cart exited wait
         +1m #1 cart step notify_exit
         +1m #1 cart send notify_exit -> crm",
    );
}

#[test]
fn the_entry_event_is_not_also_a_hold_event() {
    let journey = json!({
        "id": "j", "entry": {"event": "A"},
        "steps": [{"id": "h", "type": "hold_until", "max_hold": "1h", "branches": [{"event": "A"}]}]
    });
    check(
        journey,
        "+0s u1 A
         +1m u1 A",
        "+0s #1 j entered
         +0s #1 j step h
         +1m #1 j branch h -> A
         +1m #1 j completed h
         +1m #2 j entered
         +1m #2 j step h
         +61m #2 j timeout h
         +61m #2 j completed h",
    );
}

#[test]
fn reentry_modes() {
    let journey = |mode: &str| {
        json!({"id": "j", "entry": {"event": "A", "reentry": mode},
               "steps": [{"id": "d", "type": "delay", "duration": "1h"}]})
    };
    let events = "+0s u1 A
                  +1m u1 A
                  +2h u1 A";
    let entries = |mode: &str| {
        simulate(journey(mode), events)
            .trace
            .iter()
            .filter(|t| t.what.as_str() == "entered")
            .count()
    };
    assert_eq!(entries("every_time"), 3);
    assert_eq!(entries("if_not_active"), 2);
    assert_eq!(entries("once"), 1);
}

#[test]
fn delay_split_and_conditions() {
    let journey = json!({
        "id": "j", "entry": {"event": "Signed_Up", "where": [{"property": "plan", "in": ["pro", "team"]}]},
        "steps": [
            {"id": "wait", "type": "delay", "duration": "1d", "next": "tier"},
            {"id": "tier", "type": "split",
             "branches": [{"name": "big", "where": [{"path": "context.Signed_Up.seats", "gte": 10}], "next": "sales"}],
             "else": "self_serve"},
            {"id": "sales", "type": "send", "destination": "crm"},
            {"id": "self_serve", "type": "send", "destination": "email"}
        ]
    });
    check(
        journey,
        "+0s u1 Signed_Up {\"plan\": \"pro\", \"seats\": 12}
         +0s u2 Signed_Up {\"plan\": \"team\", \"seats\": 3}
         +0s u3 Signed_Up {\"plan\": \"free\", \"seats\": 50}",
        "+0s #1 j entered
         +0s #1 j step wait
         +0s #2 j entered
         +0s #2 j step wait
         +0s - j not_entered -> where
         +1d #1 j timer wait -> tier
         +1d #1 j step tier
         +1d #1 j branch tier -> big
         +1d #1 j step sales
         +1d #1 j send sales -> crm
         +1d #1 j completed sales
         +1d #2 j timer wait -> tier
         +1d #2 j step tier
         +1d #2 j branch tier -> else
         +1d #2 j step self_serve
         +1d #2 j send self_serve -> email
         +1d #2 j completed self_serve",
    );
}

#[test]
fn random_split_is_weighted_deterministic_and_sticky() {
    let journey = |sticky: bool| {
        json!({"id": "j", "entry": {"event": "A"},
               "steps": [{"id": "r", "type": "random_split", "sticky": sticky,
                          "branches": [{"name": "a", "percent": 30}, {"name": "b", "percent": 70}]}]})
    };
    let many: String = (0..400).map(|n| format!("+0s u{n} A\n")).collect();
    let out = simulate(journey(false), &many);
    let a = out
        .trace
        .iter()
        .filter(|t| t.detail.as_deref() == Some("a"))
        .count();
    assert!(
        (80..=160).contains(&a),
        "30% of 400 should be near 120, got {a}"
    );
    assert_eq!(
        out,
        simulate(journey(false), &many),
        "the same inputs give the same trace"
    );

    let repeat: String = (0..20).map(|n| format!("+{n}m u1 A\n")).collect();
    let labels = |out: sim::Output| {
        out.trace
            .iter()
            .filter(|t| t.what.as_str() == "branch")
            .map(|t| t.detail.clone().unwrap())
            .collect::<Vec<_>>()
    };
    let sticky = labels(simulate(journey(true), &repeat));
    assert!(
        sticky.iter().all(|l| *l == sticky[0]),
        "sticky keeps one branch: {sticky:?}"
    );
    let loose = labels(simulate(journey(false), &repeat));
    assert!(
        loose.iter().any(|l| *l != loose[0]),
        "without sticky the branch varies: {loose:?}"
    );
}

#[test]
fn reset_timer_stops_after_one_hundred() {
    let journey = json!({
        "id": "j", "entry": {"event": "A"},
        "steps": [{"id": "h", "type": "hold_until", "max_hold": "1h",
                   "branches": [{"event": "B", "reset_timer": true}]}]
    });
    let events: String = std::iter::once("+0s u1 A\n".to_string())
        .chain((1..=150).map(|n| format!("+{n}s u1 B\n")))
        .collect();
    let out = simulate(journey, &events);
    let resets = out
        .trace
        .iter()
        .filter(|t| t.what.as_str() == "reset")
        .count();
    assert_eq!(resets, 100);
    let last = out.lines().into_iter().last().unwrap();
    // The 100th reset came at +100s; the hold then times out an hour later.
    assert_eq!(last, "+3700s #1 j completed h");
}

#[test]
fn per_profile_cap_skips_entries() {
    let journey = json!({"id": "j", "entry": {"event": "A"},
                         "steps": [{"id": "d", "type": "delay", "duration": "1h"}]});
    let events: String = (0..3).map(|n| format!("+{n}s u1 A\n")).collect();
    let doc = json!({"journey": journey, "events": script(&events)});
    let out = sim::run(&sim::parse(&doc).unwrap(), 2);
    let what: Vec<_> = out.trace.iter().map(|t| t.what.as_str()).collect();
    assert_eq!(what.iter().filter(|w| **w == "entered").count(), 2);
    assert_eq!(what.iter().filter(|w| **w == "skipped").count(), 1);
}

/// Property: over many generated scripts, no timer fires before it is due, every instance ends
/// in exactly one outcome, and the same input gives the same trace.
#[test]
fn properties_over_generated_scripts() {
    let journey = json!({
        "id": "p", "entry": {"event": "A", "unique_by": "k"},
        "exit": {"events": [{"event": "X"}]},
        "steps": [
            {"id": "h", "type": "hold_until", "max_hold": "30m",
             "branches": [{"event": "R", "reset_timer": true}, {"event": "B", "next": "d"}], "on_timeout": "s"},
            {"id": "d", "type": "delay", "duration": "10m", "next": "s"},
            {"id": "s", "type": "send", "destination": "x"}
        ]
    });
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _ in 0..200 {
        let mut t = 0;
        let mut lines = String::new();
        for _ in 0..next(30) {
            t += next(20 * 60);
            let event = ["A", "A", "R", "B", "X"][next(5) as usize];
            lines.push_str(&format!(
                "+{t}s u{} {event} {{\"k\": {}}}\n",
                next(3),
                next(2)
            ));
        }
        let out = simulate(journey.clone(), &lines);
        assert_eq!(out, simulate(journey.clone(), &lines), "deterministic");
        let mut due: std::collections::HashMap<i64, i64> = Default::default();
        let mut outcomes: std::collections::HashMap<i64, usize> = Default::default();
        for tr in out.trace.iter().filter(|t| !t.what.is_note()) {
            let id = tr.instance.unwrap();
            match tr.what.as_str() {
                "step" if tr.step.as_deref() == Some("h") => {
                    due.insert(id, tr.at + 30 * 60_000);
                }
                "step" if tr.step.as_deref() == Some("d") => {
                    due.insert(id, tr.at + 10 * 60_000);
                }
                "reset" => {
                    due.insert(id, tr.at + 30 * 60_000);
                }
                "timeout" | "timer" => {
                    assert!(tr.at >= due[&id], "timer fired early: {tr}\n{lines}")
                }
                "completed" | "exited" => *outcomes.entry(id).or_default() += 1,
                _ => {}
            }
        }
        let entered: Vec<_> = out
            .trace
            .iter()
            .filter(|t| t.what.as_str() == "entered")
            .map(|t| t.instance.unwrap())
            .collect();
        for id in entered {
            assert_eq!(
                outcomes.get(&id),
                Some(&1),
                "instance {id} must end exactly once\n{lines}"
            );
        }
    }
}
