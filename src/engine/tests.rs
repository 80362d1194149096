//! Engine scripts on the simulator's virtual clock, compared with readable traces.
//!
//! Each case is a journey, a script of `+offset userId Event {properties}` lines, and the trace
//! expected, one transition a line (`+2h #1 j timeout hold -> remind`). Set
//! `JOURNEYD_PRINT_TRACES=1` to print the actual traces when writing a new case.
//!
//! In scripts, a user named `anon-…` sends as an `anonymousId`; the event `identify` is an
//! identify call with the properties as traits, `identify:<anonymousId>` one that also carries
//! that anonymousId, and `alias:<previousId>` an alias call.

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
            let id_field = if user.starts_with("anon-") {
                "anonymousId"
            } else {
                "userId"
            };
            let mut message = if event == "identify" {
                json!({"type": "identify", "traits": props})
            } else if let Some(anon) = event.strip_prefix("identify:") {
                json!({"type": "identify", "anonymousId": anon, "traits": props})
            } else if let Some(previous) = event.strip_prefix("alias:") {
                json!({"type": "alias", "previousId": previous})
            } else {
                json!({"type": "track", "event": event, "properties": props})
            };
            message[id_field] = json!(user);
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
    let payload = &out.deliveries[0].payload_value();
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

/// Anonymous first, identified later (SPEC §2): the cart instance started under the
/// anonymousId moves to the userId's profile at the identify, so the order placed under the
/// userId reaches it, and no reminder goes out.
#[test]
fn a_merge_moves_the_anonymous_instance_to_the_user() {
    check(
        cart(),
        "+0s anon-1 Product_Added {\"cart_ID\": \"c1\"}
         +10m u1 identify:anon-1 {\"email\": \"u1@example.com\"}
         +20m u1 Order_Confirmation {\"cart_ID\": \"c1\"}",
        "+0s #1 cart entered
         +0s #1 cart step wait
         +20m #1 cart branch wait -> ordered
         +20m #1 cart completed wait",
    );
}

/// The reminder of a merged instance carries the userId and the traits of the merged profile.
#[test]
fn a_merged_instance_sends_as_the_user() {
    let out = simulate(
        cart(),
        "+0s anon-1 identify {\"first_name\": \"Ada\"}
         +1s anon-1 Product_Added {\"cart_ID\": \"c1\"}
         +10m u1 identify:anon-1 {\"email\": \"u1@example.com\"}",
    );
    assert_eq!(out.deliveries.len(), 1, "{:?}", out.lines());
    let p = &out.deliveries[0].payload_value();
    assert_eq!(p["userId"], "u1", "{p}");
    assert!(p.get("anonymousId").is_none(), "{p}");
    assert_eq!(p["properties"]["email"], "u1@example.com", "{p}");
}

/// Identified first: the user's profile exists, anonymous browsing starts an instance, and the
/// identify merges it in; later events under either id reach it.
#[test]
fn a_merge_into_an_existing_user_and_events_under_either_id() {
    check(
        cart(),
        "+0s u1 identify {\"email\": \"u1@example.com\"}
         +1m anon-1 Product_Added {\"cart_ID\": \"c1\"}
         +2m u1 identify:anon-1 {}
         +3m anon-1 Cart_Modified {\"cart_ID\": \"c1\"}
         +4m u1 Order_Confirmation {\"cart_ID\": \"c1\"}",
        "+1m #1 cart entered
         +1m #1 cart step wait
         +3m #1 cart reset wait -> changed
         +4m #1 cart branch wait -> ordered
         +4m #1 cart completed wait",
    );
}

/// Both sides hold an instance of the same journey with the same unique_by value: both go on,
/// and the next hold event for that value reaches both.
#[test]
fn a_merge_keeps_both_instances_of_one_journey() {
    check(
        cart(),
        "+0s u1 Product_Added {\"cart_ID\": \"c1\"}
         +1m anon-1 Product_Added {\"cart_ID\": \"c1\"}
         +2m u1 identify:anon-1 {}
         +3m u1 Order_Confirmation {\"cart_ID\": \"c1\"}",
        "+0s #1 cart entered
         +0s #1 cart step wait
         +1m #2 cart entered
         +1m #2 cart step wait
         +3m #1 cart branch wait -> ordered
         +3m #1 cart completed wait
         +3m #2 cart branch wait -> ordered
         +3m #2 cart completed wait",
    );
}

/// An alias from one userId to another merges the two, and a chain of merges ends in one
/// profile that every id reaches.
#[test]
fn alias_and_chains_of_merges() {
    check(
        cart(),
        "+0s anon-1 Product_Added {\"cart_ID\": \"c1\"}
         +1m old identify:anon-1 {}
         +2m new alias:old
         +3m anon-1 Order_Confirmation {\"cart_ID\": \"c1\"}",
        "+0s #1 cart entered
         +0s #1 cart step wait
         +3m #1 cart branch wait -> ordered
         +3m #1 cart completed wait",
    );
    // Journey memory moves too: `once` holds across the merged profiles.
    let once = json!({"id": "once", "entry": {"event": "Go", "reentry": "once"},
                      "steps": [{"id": "d", "type": "delay", "duration": "1m"}]});
    check(
        once,
        "+0s anon-1 Go
         +1h u1 identify:anon-1 {}
         +2h u1 Go",
        "+0s #1 once entered
         +0s #1 once step d
         +1m #1 once timer d
         +1m #1 once completed d
         +2h - once not_entered -> reentry",
    );
}

/// A merge at the moment a timer of the absorbed profile falls due: the timer fires first, as
/// on a punctual scheduler, so the reminder still goes out under the anonymous id.
#[test]
fn a_merge_racing_a_due_timer() {
    let out = simulate(
        cart(),
        "+0s anon-1 Product_Added {\"cart_ID\": \"c1\"}
         +2h u1 identify:anon-1 {}",
    );
    assert_eq!(
        out.lines(),
        [
            "+0s #1 cart entered",
            "+0s #1 cart step wait",
            "+2h #1 cart timeout wait -> remind",
            "+2h #1 cart step remind",
            "+2h #1 cart send remind -> crm",
            "+2h #1 cart completed remind"
        ]
    );
    assert_eq!(out.deliveries[0].payload_value()["anonymousId"], "anon-1");
}

/// Exit rules end every active instance of the journey for the profile by default; with
/// match_unique_by only the one whose value the event carries (SPEC §3.4). An exit event that
/// ends nothing is explained in the trace.
#[test]
fn exit_rules_are_profile_wide_unless_matched_by_unique_value() {
    let mut journey = cart();
    check(
        journey.clone(),
        "+0s u1 Product_Added {\"cart_ID\": \"c1\"}
         +1s u1 Product_Added {\"cart_ID\": \"c2\"}
         +1m u1 Account_Deleted
         +2m u1 Account_Deleted",
        "+0s #1 cart entered
         +0s #1 cart step wait
         +1s #2 cart entered
         +1s #2 cart step wait
         +1m #1 cart exited wait
         +1m #1 cart step notify_exit
         +1m #1 cart send notify_exit -> crm
         +1m #2 cart exited wait
         +1m #2 cart step notify_exit
         +1m #2 cart send notify_exit -> crm",
    );
    journey["exit"]["events"][0]["match_unique_by"] = json!(true);
    check(
        journey,
        "+0s u1 Product_Added {\"cart_ID\": \"c1\"}
         +1s u1 Product_Added {\"cart_ID\": \"c2\"}
         +1m u1 Account_Deleted {\"cart_ID\": \"c2\"}
         +2m u1 Account_Deleted {\"cart_ID\": \"c9\"}",
        "+0s #1 cart entered
         +0s #1 cart step wait
         +1s #2 cart entered
         +1s #2 cart step wait
         +1m #2 cart exited wait
         +1m #2 cart step notify_exit
         +1m #2 cart send notify_exit -> crm
         +2m - cart exit_unmatched -> Account_Deleted
         +2h #1 cart timeout wait -> remind
         +2h #1 cart step remind
         +2h #1 cart send remind -> crm
         +2h #1 cart completed remind",
    );
}

/// Numbers compare by value, and a context key with dots works in a split path.
#[test]
fn numbers_by_value_and_dotted_context_keys() {
    let journey = json!({
        "id": "n", "entry": {"event": "Order.Completed", "where": [{"property": "total", "equals": 10}]},
        "steps": [
            {"id": "s", "type": "split",
             "branches": [{"name": "big", "where": [{"path": "context.Order.Completed.total", "gte": 10}], "next": null}],
             "else": null}
        ]
    });
    check(
        journey,
        "+0s u1 Order.Completed {\"total\": 10.0}
         +1s u2 Order.Completed {\"total\": 9}",
        "+0s #1 n entered
         +0s #1 n step s
         +0s #1 n branch s -> big
         +0s #1 n completed s
         +1s - n not_entered -> where",
    );
}

/// Runs a script from `start` (RFC 3339) with destination caps, giving the trace lines.
fn run_at(journey: Value, events: &str, start: &str, caps: &[(&str, u32, &str)]) -> Vec<String> {
    let doc = json!({"journey": journey, "events": script(events), "start": start});
    let mut input = sim::parse(&doc).unwrap_or_else(|p| panic!("bad case: {p:?}"));
    for (destination, max, per) in caps {
        input.caps.insert(
            destination.to_string(),
            crate::delivery::Cap {
                max: *max,
                per_ms: crate::journey::parse_duration(per).unwrap(),
            },
        );
    }
    let lines = sim::run(&input, 25).lines();
    if std::env::var_os("JOURNEYD_PRINT_TRACES").is_some() {
        println!("{}", lines.join("\n"));
    }
    lines
}

fn lines(expected: &str) -> Vec<String> {
    expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn windowed(window: Value) -> Value {
    json!({"id": "w", "entry": {"event": "Go"},
           "steps": [{"id": "s", "type": "send", "destination": "crm", "window": window}]})
}

/// A send reached outside its window waits at the step for the next opening in the person's
/// zone (SPEC §3.5): a Saturday waits for Monday, 03:00 local for 09:00, a daylight-saving night
/// follows the zone's rules, and an unknown zone falls back to the default.
#[test]
fn send_windows() {
    let weekdays = json!({"days": ["mon", "tue", "wed", "thu", "fri"], "from": "09:00", "to": "20:00",
                          "time_zone": "traits.tz", "default_time_zone": "Europe/Berlin"});
    // The instance waits at `s` for the window to open at `opens`, `after` on.
    let waits_for = |opens: &str, after: &str| {
        lines(&format!(
            "+0s #1 w entered
             +0s #1 w step s
             +0s #1 w window s -> {opens}
             {after} #1 w timer s
             {after} #1 w send s -> crm
             {after} #1 w completed s"
        ))
    };
    let every_day = json!({"from": "09:00", "to": "20:00", "default_time_zone": "Europe/Berlin"});
    let cases = [
        // Saturday 2026-12-05, 13:00 in Berlin.
        (
            &weekdays,
            "+0s u1 Go",
            "2026-12-05T12:00:00Z",
            "2026-12-07T08:00:00.000Z",
            "+44h",
        ),
        // Wednesday 03:00 in New York (the trait's zone): 09:00 there.
        (
            &weekdays,
            "+0s u1 identify {\"tz\": \"America/New_York\"}\n+0s u1 Go",
            "2026-12-02T08:00:00Z",
            "2026-12-02T14:00:00.000Z",
            "+6h",
        ),
        // Berlin's spring-forward night: Saturday 21:00 CET waits for Sunday 09:00 CEST (07:00
        // UTC), eleven hours later where the local clock moves twelve.
        (
            &every_day,
            "+0s u1 Go",
            "2026-03-28T20:00:00Z",
            "2026-03-29T07:00:00.000Z",
            "+11h",
        ),
    ];
    for (window, events, start, opens, after) in cases {
        assert_eq!(
            run_at(windowed(window.clone()), events, start, &[]),
            waits_for(opens, after),
            "{events} at {start}"
        );
    }
    // An unknown zone name falls back to the default (Berlin): inside its window at once.
    assert_eq!(
        run_at(
            windowed(weekdays),
            "+0s u1 identify {\"tz\": \"Mars/Olympus\"}
             +0s u1 Go",
            "2026-12-02T10:00:00Z",
            &[]
        ),
        lines(
            "+0s #1 w entered
             +0s #1 w step s
             +0s #1 w send s -> crm
             +0s #1 w completed s"
        )
    );
}

/// A destination's frequency cap counts a profile's sends across journeys and within one batch
/// of events; a send over it is recorded as capped and the instance goes on (SPEC §3.5).
#[test]
fn frequency_caps_across_journeys() {
    let journey = json!({"id": "a", "entry": {"event": "Go"},
        "steps": [{"id": "s1", "type": "send", "destination": "crm", "next": "s2"},
                  {"id": "s2", "type": "send", "destination": "crm", "next": "s3"},
                  {"id": "s3", "type": "send", "destination": "crm"}]});
    assert_eq!(
        run_at(
            journey,
            "+0s u1 Go\n+1m u2 Go\n+25h u1 Go",
            "2026-12-02T00:00:00Z",
            &[("crm", 2, "24h")]
        ),
        // Each instance sends twice and is capped at its third send: u1's first two sends of
        // the day, u2's own, u1's again a day on.
        [("+0s", 1), ("+1m", 2), ("+25h", 3)]
            .iter()
            .flat_map(|(at, n)| lines(&format!(
                "{at} #{n} a entered
                 {at} #{n} a step s1
                 {at} #{n} a send s1 -> crm
                 {at} #{n} a step s2
                 {at} #{n} a send s2 -> crm
                 {at} #{n} a step s3
                 {at} #{n} a capped s3 -> crm
                 {at} #{n} a completed s3"
            )))
            .collect::<Vec<_>>()
    );
}

/// A cap is per person: sends made to an anonymous visitor count against the profile they merge
/// into when they identify.
#[test]
fn frequency_caps_count_what_merged_profiles_were_sent() {
    let journey = json!({"id": "a", "entry": {"event": "Go"},
        "steps": [{"id": "s", "type": "send", "destination": "crm"}]});
    assert_eq!(
        run_at(
            journey,
            "+0s anon-1 Go\n+1m u1 identify:anon-1\n+2m u1 Go",
            "2026-12-02T00:00:00Z",
            &[("crm", 1, "24h")]
        ),
        lines(
            "+0s #1 a entered
             +0s #1 a step s
             +0s #1 a send s -> crm
             +0s #1 a completed s
             +2m #2 a entered
             +2m #2 a step s
             +2m #2 a capped s -> crm
             +2m #2 a completed s"
        )
    );
}

/// `delay.until` waits for a time from the context plus an offset; a time already past goes on
/// at once; a missing or unreadable one falls back to `duration`, and without one goes on.
#[test]
fn contextual_delays() {
    let journey = |fallback: Option<&str>| {
        let mut delay = json!({"id": "d", "type": "delay",
                               "until": {"path": "context.Booked.at", "offset": "-1h"}, "next": "s"});
        if let Some(f) = fallback {
            delay["duration"] = json!(f);
        }
        json!({"id": "c", "entry": {"event": "Booked"},
               "steps": [delay, {"id": "s", "type": "send", "destination": "crm"}]})
    };
    // Every case enters, waits at the delay, and sends when its timer fires at `sent`.
    let sent_at = |sent: &str| {
        lines(&format!(
            "+0s #1 c entered
             +0s #1 c step d
             {sent} #1 c timer d -> s
             {sent} #1 c step s
             {sent} #1 c send s -> crm
             {sent} #1 c completed s"
        ))
    };
    let cases = [
        // The appointment is at 15:00: the reminder goes at 14:00, four hours on.
        (None, r#"{"at": "2026-12-02T15:00:00Z"}"#, "+4h"),
        // Already past: at once.
        (Some("2h"), r#"{"at": "2026-12-02T10:30:00Z"}"#, "+0s"),
        // Unreadable, with a fallback duration; missing, without one.
        (Some("2h"), r#"{"at": "soon"}"#, "+2h"),
        (None, "{}", "+0s"),
    ];
    for (fallback, properties, sent) in cases {
        assert_eq!(
            run_at(
                journey(fallback),
                &format!("+0s u1 Booked {properties}"),
                "2026-12-02T10:00:00Z",
                &[]
            ),
            sent_at(sent),
            "{fallback:?} {properties}"
        );
    }
}
