//! Tests of journey parsing and validation, as data: each case is a document (usually the SPEC §3 example
//! with a few edits) and the exact problems it must produce, checked by one `check` function.

use super::*;
use serde_json::{Value, json};

/// The example of SPEC §3, which must stay valid (the file the integration tests use too).
fn spec_example() -> Value {
    serde_json::from_str(include_str!(
        "../../tests/fixtures/journeys/spec-example.json"
    ))
    .expect("the SPEC example is JSON")
}

/// A small journey that uses every step type, valid as it stands.
fn all_types() -> Value {
    json!({
      "id": "all",
      "entry": {"event": "Signed_Up"},
      "steps": [
        {"id": "wait", "type": "delay", "duration": "1d", "next": "pick"},
        {"id": "pick", "type": "split",
         "branches": [{"name": "pro", "where": [{"path": "traits.plan", "equals": "pro"}], "next": "ab"}],
         "else": "ab"},
        {"id": "ab", "type": "random_split", "sticky": true,
         "branches": [{"percent": 30, "next": "hold"}, {"name": "control", "percent": 70}]},
        {"id": "hold", "type": "hold_until", "max_hold": "3d", "on_timeout": "nudge",
         "branches": [{"event": "Order", "as": "order", "where": [{"property": "total", "gt": 10}]}]},
        {"id": "nudge", "type": "send", "destination": "email", "traits": ["*"],
         "mapping": {"to": {"@path": "$.properties.email"}}}
      ]
    })
}

/// One edit to a document: set the value at a JSON pointer (appending when the index is one past an
/// array's end), or remove it when the value is `None`.
type Edit = (&'static str, Option<Value>);

fn set(pointer: &'static str, value: Value) -> Edit {
    (pointer, Some(value))
}

fn del(pointer: &'static str) -> Edit {
    (pointer, None)
}

fn edit(mut doc: Value, edits: &[Edit]) -> Value {
    for (pointer, value) in edits {
        let (parent, key) = pointer.rsplit_once('/').expect("a pointer below the root");
        let parent = doc
            .pointer_mut(parent)
            .unwrap_or_else(|| panic!("no parent for {pointer}"));
        match (parent, value) {
            (Value::Object(map), Some(value)) => {
                map.insert(key.to_string(), value.clone());
            }
            (Value::Object(map), None) => {
                map.remove(key);
            }
            (Value::Array(items), value) => {
                let i: usize = key.parse().expect("an array index");
                match value {
                    Some(value) if i == items.len() => items.push(value.clone()),
                    Some(value) => items[i] = value.clone(),
                    None => {
                        items.remove(i);
                    }
                }
            }
            (other, _) => panic!("cannot edit {pointer} inside {other}"),
        }
    }
    doc
}

/// Parses `doc` and compares its problems, as (path, message) pairs in any order, with `expected`;
/// an empty `expected` means the document must parse.
fn check(doc: &Value, expected: &[(&str, &str)]) {
    let mut got: Vec<(String, String)> = match parse(doc) {
        Ok(_) => Vec::new(),
        Err(problems) => {
            assert!(!problems.is_empty(), "Err with no problems for {doc}");
            problems.into_iter().map(|p| (p.path, p.message)).collect()
        }
    };
    let mut want: Vec<(String, String)> = expected
        .iter()
        .map(|(p, m)| (p.to_string(), m.to_string()))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "\ndocument: {doc:#}");
}

/// One case for `check_edits`: the edits, and the (path, message) problems they must cause.
type Case = (Vec<Edit>, &'static [(&'static str, &'static str)]);

/// Runs `check` on each case, applying its edits to a fresh `base` document.
fn check_edits(base: fn() -> Value, cases: &[Case]) {
    for (edits, expected) in cases {
        check(&edit(base(), edits), expected);
    }
}

#[test]
fn spec_example_parses() {
    let journey = parse(&spec_example()).expect("the SPEC example is valid");
    let expected = Journey {
        id: "cart-abandonment".into(),
        name: "Cart abandonment (cart modified)".into(),
        entry: Entry {
            event: "Product_Added".into(),
            conditions: vec![Condition {
                target: Target::Property(vec!["cart_ID".into()]),
                op: Op::Exists(true),
            }],
            reentry: Reentry::EveryTime,
            unique_by: Some("cart_ID".into()),
        },
        exit: Exit {
            events: vec![ExitEvent {
                event: "Account_Deleted".into(),
                conditions: vec![],
                match_unique_by: false,
            }],
            send: Some("notify_exit".into()),
        },
        steps: vec![
            Step {
                id: "wait_for_order".into(),
                kind: StepKind::HoldUntil {
                    branches: vec![
                        HoldBranch {
                            name: Some("cart changed".into()),
                            event: "Cart_Modified".into(),
                            conditions: vec![],
                            reset_timer: true,
                            as_key: None,
                            next: None,
                        },
                        HoldBranch {
                            name: Some("ordered".into()),
                            event: "Order_Confirmation".into(),
                            conditions: vec![],
                            reset_timer: false,
                            as_key: None,
                            next: None,
                        },
                    ],
                    max_hold: Some(7_200_000),
                    on_timeout: Some("remind".into()),
                },
            },
            Step {
                id: "remind".into(),
                kind: StepKind::Send {
                    destination: "crm".into(),
                    event_name: "Cart Reminder".into(),
                    traits: vec!["email".into(), "first_name".into()],
                    mapping: None,
                    window: None,
                    next: None,
                },
            },
            Step {
                id: "notify_exit".into(),
                kind: StepKind::Send {
                    destination: "crm".into(),
                    // The default event name is the step id.
                    event_name: "notify_exit".into(),
                    traits: vec![],
                    mapping: None,
                    window: None,
                    next: None,
                },
            },
        ],
    };
    assert_eq!(journey, expected);
    assert_eq!(
        journey.first_step().map(|s| s.id.as_str()),
        Some("wait_for_order")
    );
    assert_eq!(
        journey.step("remind").map(|s| type_name(&s.kind)),
        Some("send")
    );
    assert!(journey.step("nope").is_none());
    assert_eq!(journey.destinations(), vec!["crm"]);
}

#[test]
fn all_step_types_parse() {
    let journey = parse(&all_types()).expect("valid");
    assert_eq!(journey.name, "all", "the name defaults to the id");
    assert_eq!(journey.entry.reentry, Reentry::EveryTime);
    assert_eq!(journey.exit, Exit::default());
    let kinds: Vec<&str> = journey.steps.iter().map(|s| type_name(&s.kind)).collect();
    assert_eq!(
        kinds,
        ["delay", "split", "random_split", "hold_until", "send"]
    );
    assert_eq!(
        journey.steps[1].kind,
        StepKind::Split {
            branches: vec![SplitBranch {
                name: Some("pro".into()),
                conditions: vec![Condition {
                    target: Target::Path(vec!["traits".into(), "plan".into()]),
                    op: Op::Equals(json!("pro")),
                }],
                next: Some("ab".into()),
            }],
            otherwise: Some("ab".into()),
        }
    );
    let StepKind::RandomSplit { branches, sticky } = &journey.steps[2].kind else {
        panic!("random split")
    };
    assert!(*sticky);
    assert_eq!(
        branches.iter().map(|b| b.percent).collect::<Vec<_>>(),
        [30, 70]
    );
    assert_eq!(branches[0].label(0), "branch 0");
    assert_eq!(branches[1].label(1), "control");
    let StepKind::HoldUntil {
        branches, max_hold, ..
    } = &journey.steps[3].kind
    else {
        panic!("hold")
    };
    assert_eq!(*max_hold, Some(3 * 86_400_000));
    assert_eq!(branches[0].label(), "Order");
    assert_eq!(branches[0].context_key(), "order");
    let StepKind::Send {
        traits,
        mapping,
        event_name,
        ..
    } = &journey.steps[4].kind
    else {
        panic!("send")
    };
    assert_eq!(traits, &["*"]);
    assert_eq!(event_name, "nudge");
    assert_eq!(
        mapping,
        &Some(json!({"to": {"@path": "$.properties.email"}}))
    );
}

#[test]
fn optional_fields_accept_null_and_other_valid_shapes() {
    check_edits(
        spec_example,
        &[
            (vec![set("/name", json!(null))], &[]),
            (vec![set("/exit", json!(null)), del("/steps/2")], &[]),
            (vec![del("/exit/send"), del("/steps/2")], &[]),
            (
                vec![set("/exit", json!({}))],
                &[("/steps/2", "unreachable step \"notify_exit\"")],
            ),
            (vec![set("/entry/reentry", json!("once"))], &[]),
            (vec![set("/entry/reentry", json!("if_not_active"))], &[]),
            (vec![set("/entry/where", json!([]))], &[]),
            (vec![set("/name", json!("é".repeat(73)))], &[]),
            (vec![set("/id", json!("a".repeat(64)))], &[]),
            (vec![set("/id", json!("a_b-9"))], &[]),
            (vec![set("/steps/0/max_hold", json!("365d"))], &[]),
            (vec![set("/steps/0/max_hold", json!("1s"))], &[]),
            (vec![set("/steps/0/max_hold", json!("52w"))], &[]),
            // Without on_timeout a timeout completes the instance; without max_hold the hold never times out.
            (vec![del("/steps/0/on_timeout"), del("/steps/1")], &[]),
            (
                vec![
                    del("/steps/0/max_hold"),
                    del("/steps/0/on_timeout"),
                    del("/steps/1"),
                ],
                &[],
            ),
            (
                vec![set("/steps/0/on_timeout", json!(null)), del("/steps/1")],
                &[],
            ),
            // A reset_timer branch may spell out that it has no next.
            (vec![set("/steps/0/branches/0/next", json!(null))], &[]),
            (
                vec![
                    set("/steps/0/branches/0/reset_timer", json!(false)),
                    set("/steps/0/branches/0/next", json!("remind")),
                ],
                &[],
            ),
            (vec![set("/steps/1/mapping", json!({"event": "x"}))], &[]),
            (vec![set("/steps/1/traits", json!([]))], &[]),
            // Operators with unusual but valid operands.
            (
                vec![set(
                    "/entry/where/0",
                    json!({"property": "cart_ID", "equals": null}),
                )],
                &[],
            ),
            (
                vec![set(
                    "/entry/where/0",
                    json!({"path": "context.locale", "in": []}),
                )],
                &[],
            ),
            (
                vec![set(
                    "/entry/where/0",
                    json!({"property": "a.0.b", "lte": -1.5}),
                )],
                &[],
            ),
        ],
    );
}

#[test]
fn top_level() {
    check(&json!([]), &[("", "expected an object, got an array")]);
    check(
        &json!("journey"),
        &[("", "expected an object, got a string")],
    );
    check(
        &json!({}),
        &[
            ("/id", "missing field \"id\""),
            ("/entry", "missing field \"entry\""),
            ("/steps", "missing field \"steps\""),
        ],
    );
    // Unknown keys are reported with their JSON pointer escaped (RFC 6901).
    check(
        &edit(spec_example(), &[set("/x", json!(1))]),
        &[("/x", "unknown field \"x\"")],
    );
    let mut doc = spec_example();
    doc["a/b~c"] = json!(1);
    check(&doc, &[("/a~1b~0c", "unknown field \"a/b~c\"")]);
}

#[test]
fn top_level_fields() {
    check_edits(
        spec_example,
        &[
            (vec![del("/id")], &[("/id", "missing field \"id\"")]),
            (
                vec![set("/id", json!(7))],
                &[("/id", "expected a string, got a number")],
            ),
            (
                vec![set("/id", json!(null))],
                &[("/id", "expected a string, got null")],
            ),
            (vec![set("/id", json!(""))], &[("/id", "must not be empty")]),
            (
                vec![set("/id", json!("Cart Abandonment"))],
                &[(
                    "/id",
                    "bad id \"Cart Abandonment\": use 1 to 64 characters from a-z, 0-9, _ and -",
                )],
            ),
            (
                vec![set("/name", json!("n".repeat(74)))],
                &[("/name", "name has 74 characters, at most 73")],
            ),
            (
                vec![set("/name", json!(["x"]))],
                &[("/name", "expected a string, got an array")],
            ),
            (
                vec![set("/nmae", json!("x"))],
                &[("/nmae", "unknown field \"nmae\"")],
            ),
        ],
    );
    let long = "a".repeat(65);
    check(
        &edit(spec_example(), &[set("/id", json!(long))]),
        &[(
            "/id",
            &format!("bad id \"{long}\": use 1 to 64 characters from a-z, 0-9, _ and -"),
        )],
    );
}

#[test]
fn entry() {
    check_edits(
        spec_example,
        &[
            (
                vec![del("/entry")],
                &[("/entry", "missing field \"entry\"")],
            ),
            (
                vec![set("/entry", json!("Product_Added"))],
                &[("/entry", "expected an object, got a string")],
            ),
            (
                vec![del("/entry/event")],
                &[("/entry/event", "missing field \"event\"")],
            ),
            (
                vec![set("/entry/event", json!(""))],
                &[("/entry/event", "must not be empty")],
            ),
            (
                vec![set("/entry/where", json!({}))],
                &[("/entry/where", "expected an array, got an object")],
            ),
            (
                vec![set("/entry/reentry", json!("sometimes"))],
                &[(
                    "/entry/reentry",
                    "unknown reentry \"sometimes\": expected every_time, if_not_active or once",
                )],
            ),
            (
                vec![set("/entry/reentry", json!(true))],
                &[("/entry/reentry", "expected a string, got a boolean")],
            ),
            (
                vec![set("/entry/unique_by", json!(""))],
                &[("/entry/unique_by", "must not be empty")],
            ),
            (
                vec![set("/entry/evnt", json!("x"))],
                &[("/entry/evnt", "unknown field \"evnt\"")],
            ),
        ],
    );
}

#[test]
fn exit() {
    let eleven: Vec<Value> = (0..11).map(|i| json!({"event": format!("E{i}")})).collect();
    let ten = eleven[..10].to_vec();
    check_edits(
        spec_example,
        &[
            (vec![set("/exit/events", json!(ten))], &[]),
            (
                vec![set("/exit/events", json!(eleven))],
                &[("/exit/events", "too many exit events: 11, at most 10")],
            ),
            (
                vec![set("/exit", json!([]))],
                &[
                    ("/exit", "expected an object, got an array"),
                    ("/steps/2", "unreachable step \"notify_exit\""),
                ],
            ),
            (
                vec![set("/exit/events/0", json!({}))],
                &[("/exit/events/0/event", "missing field \"event\"")],
            ),
            (
                vec![set("/exit/events/0", json!("Account_Deleted"))],
                &[("/exit/events/0", "expected an object, got a string")],
            ),
            (
                vec![set(
                    "/exit/events/0/where",
                    json!([{"property": "reason", "equals": "gdpr"}]),
                )],
                &[],
            ),
            (
                vec![set("/exit/events/0/where", json!([{"property": "reason"}]))],
                &[(
                    "/exit/events/0/where/0",
                    "condition needs one operator: equals, not_equals, in, not_in, exists, gt, gte, lt, lte, contains, starts_with",
                )],
            ),
            (
                vec![set("/exit/events/0/when", json!([]))],
                &[("/exit/events/0/when", "unknown field \"when\"")],
            ),
            (
                vec![set("/exit/sned", json!("x"))],
                &[("/exit/sned", "unknown field \"sned\"")],
            ),
            (
                vec![set("/exit/send", json!("notify_exitt"))],
                &[("/exit/send", "unknown step \"notify_exitt\"")],
            ),
            (
                vec![set("/exit/send", json!("wait_for_order"))],
                &[
                    (
                        "/exit/send",
                        "exit.send must name a send step, \"wait_for_order\" is a hold_until step",
                    ),
                    ("/steps/2", "unreachable step \"notify_exit\""),
                ],
            ),
            // A wrong-typed reference hides part of the graph, so reachability is not judged.
            (
                vec![set("/exit/send", json!(2))],
                &[("/exit/send", "expected a step id or null, got a number")],
            ),
        ],
    );
}

#[test]
fn steps_list() {
    let chain = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| {
                let next = if i + 1 < n {
                    json!(format!("s{}", i + 1))
                } else {
                    json!(null)
                };
                json!({"id": format!("s{i}"), "type": "send", "destination": "d", "next": next})
            })
            .collect()
    };
    check_edits(
        spec_example,
        &[
            (
                vec![del("/steps"), del("/exit/send")],
                &[("/steps", "missing field \"steps\"")],
            ),
            // With no steps at all, the exit.send reference is not worth a second problem.
            (
                vec![set("/steps", json!({}))],
                &[("/steps", "expected an array, got an object")],
            ),
            (
                vec![set("/steps", json!([])), del("/exit/send")],
                &[("/steps", "a journey needs at least one step")],
            ),
            (
                vec![set("/steps", json!(chain(50))), del("/exit/send")],
                &[],
            ),
            (
                vec![set("/steps", json!(chain(51))), del("/exit/send")],
                &[("/steps", "too many steps: 51, at most 50")],
            ),
            (
                vec![set("/steps/3", json!("remind"))],
                &[("/steps/3", "expected an object, got a string")],
            ),
            (
                vec![del("/steps/1/id")],
                &[
                    ("/steps/1/id", "missing field \"id\""),
                    ("/steps/0/on_timeout", "unknown step \"remind\""),
                ],
            ),
            (
                vec![set("/steps/1/id", json!(""))],
                &[
                    ("/steps/1/id", "must not be empty"),
                    ("/steps/0/on_timeout", "unknown step \"remind\""),
                ],
            ),
            (
                vec![set("/steps/2/id", json!("remind"))],
                &[
                    ("/steps/2/id", "duplicate step id \"remind\""),
                    ("/exit/send", "unknown step \"notify_exit\""),
                ],
            ),
            (
                vec![del("/steps/1/type")],
                &[("/steps/1/type", "missing field \"type\"")],
            ),
            (
                vec![set("/steps/1/type", json!("email"))],
                &[(
                    "/steps/1/type",
                    "unknown step type \"email\": expected hold_until, delay, split, random_split or send",
                )],
            ),
            (
                vec![set("/steps/1/type", json!(1))],
                &[("/steps/1/type", "expected a string, got a number")],
            ),
            // Keys belong to a step type: `next` means nothing on a hold.
            (
                vec![set("/steps/0/next", json!("remind"))],
                &[("/steps/0/next", "unknown field \"next\"")],
            ),
            (
                vec![set("/steps/1/nxt", json!(null))],
                &[("/steps/1/nxt", "unknown field \"nxt\"")],
            ),
            (
                vec![set("/steps/1/name", json!("x"))],
                &[("/steps/1/name", "unknown field \"name\"")],
            ),
        ],
    );
}

#[test]
fn hold_until() {
    let ten: Vec<Value> = (0..10).map(|i| json!({"event": format!("E{i}")})).collect();
    check_edits(
        spec_example,
        &[
            (
                vec![set("/steps/0/branches", json!([]))],
                &[("/steps/0/branches", "expected 1 to 9 branches, got 0")],
            ),
            (
                vec![set("/steps/0/branches", json!(ten))],
                &[("/steps/0/branches", "expected 1 to 9 branches, got 10")],
            ),
            (vec![set("/steps/0/branches", json!(ten[..9]))], &[]),
            (
                vec![del("/steps/0/branches")],
                &[("/steps/0/branches", "missing field \"branches\"")],
            ),
            (
                vec![del("/steps/0/branches/1/event")],
                &[("/steps/0/branches/1/event", "missing field \"event\"")],
            ),
            (
                vec![set("/steps/0/branches/1/event", json!(""))],
                &[("/steps/0/branches/1/event", "must not be empty")],
            ),
            (
                vec![set("/steps/0/branches/1/name", json!(""))],
                &[("/steps/0/branches/1/name", "must not be empty")],
            ),
            (
                vec![set("/steps/0/branches/1/as", json!(""))],
                &[("/steps/0/branches/1/as", "must not be empty")],
            ),
            (
                vec![set("/steps/0/branches/1/as", json!(["o"]))],
                &[("/steps/0/branches/1/as", "expected a string, got an array")],
            ),
            (
                vec![set("/steps/0/branches/0/reset_timer", json!("yes"))],
                &[(
                    "/steps/0/branches/0/reset_timer",
                    "expected a boolean, got a string",
                )],
            ),
            (
                vec![set("/steps/0/branches/0/next", json!("remind"))],
                &[(
                    "/steps/0/branches/0/next",
                    "a reset_timer branch stays at this step, so its next must be null or absent",
                )],
            ),
            (
                vec![set("/steps/0/branches/1/next", json!("remindr"))],
                &[("/steps/0/branches/1/next", "unknown step \"remindr\"")],
            ),
            (
                vec![set("/steps/0/branches/1/next", json!(5))],
                &[(
                    "/steps/0/branches/1/next",
                    "expected a step id or null, got a number",
                )],
            ),
            (
                vec![set("/steps/0/branches/1/nxt", json!(null))],
                &[("/steps/0/branches/1/nxt", "unknown field \"nxt\"")],
            ),
            (
                vec![set("/steps/0/branches/1", json!("Order"))],
                &[("/steps/0/branches/1", "expected an object, got a string")],
            ),
            (
                vec![del("/steps/0/max_hold")],
                &[(
                    "/steps/0/on_timeout",
                    "on_timeout needs max_hold: without it the hold never times out",
                )],
            ),
            (
                vec![set("/steps/0/on_timeout", json!("remindr"))],
                &[("/steps/0/on_timeout", "unknown step \"remindr\"")],
            ),
            (
                vec![set("/steps/0/max_hold", json!("90x"))],
                &[("/steps/0/max_hold", "bad duration \"90x\"")],
            ),
            (
                vec![set("/steps/0/max_hold", json!("0s"))],
                &[(
                    "/steps/0/max_hold",
                    "duration \"0s\" is out of range (1s to 365d)",
                )],
            ),
            (
                vec![set("/steps/0/max_hold", json!("366d"))],
                &[(
                    "/steps/0/max_hold",
                    "duration \"366d\" is out of range (1s to 365d)",
                )],
            ),
            (
                vec![set("/steps/0/max_hold", json!("53w"))],
                &[(
                    "/steps/0/max_hold",
                    "duration \"53w\" is out of range (1s to 365d)",
                )],
            ),
            (
                vec![set("/steps/0/max_hold", json!(7200))],
                &[(
                    "/steps/0/max_hold",
                    "expected a duration string such as \"90m\", got a number",
                )],
            ),
        ],
    );
}

#[test]
fn delay() {
    check_edits(
        all_types,
        &[
            (
                vec![del("/steps/0/duration")],
                &[("/steps/0/duration", "missing field \"duration\"")],
            ),
            (
                vec![set("/steps/0/duration", json!("1.5h"))],
                &[("/steps/0/duration", "bad duration \"1.5h\"")],
            ),
            // A dangling reference is reported alone: the steps it leaves unreached are not echoed.
            (
                vec![set("/steps/0/next", json!("pik"))],
                &[("/steps/0/next", "unknown step \"pik\"")],
            ),
            (
                vec![set("/steps/0/max_hold", json!("1d"))],
                &[("/steps/0/max_hold", "unknown field \"max_hold\"")],
            ),
            // A delay whose next is null completes the instance, which leaves the rest unreachable.
            (
                vec![set("/steps/0/next", json!(null))],
                &[
                    ("/steps/1", "unreachable step \"pick\""),
                    ("/steps/2", "unreachable step \"ab\""),
                    ("/steps/3", "unreachable step \"hold\""),
                    ("/steps/4", "unreachable step \"nudge\""),
                ],
            ),
        ],
    );
}

#[test]
fn split() {
    check_edits(
        all_types,
        &[
            (
                vec![del("/steps/1/branches/0/where")],
                &[("/steps/1/branches/0/where", "missing field \"where\"")],
            ),
            (vec![set("/steps/1/branches/0/where", json!([]))], &[]),
            (
                vec![set(
                    "/steps/1/branches/0/where/0",
                    json!({"path": "context.Signed_Up.plan", "exists": true}),
                )],
                &[],
            ),
            (
                vec![set(
                    "/steps/1/branches/0/where/0",
                    json!({"property": "plan", "equals": "pro"}),
                )],
                &[(
                    "/steps/1/branches/0/where/0/property",
                    "a split reads the journey context and the profile: use \"path\" starting with context. or traits.",
                )],
            ),
            (
                vec![set(
                    "/steps/1/branches/0/where/0",
                    json!({"path": "properties.plan", "equals": "pro"}),
                )],
                &[(
                    "/steps/1/branches/0/where/0/path",
                    "split path \"properties.plan\" must start with context. or traits.",
                )],
            ),
            (
                vec![set(
                    "/steps/1/branches/0/where/0",
                    json!({"path": "traits", "exists": true}),
                )],
                &[(
                    "/steps/1/branches/0/where/0/path",
                    "split path \"traits\" must start with context. or traits.",
                )],
            ),
            (
                vec![set("/steps/1/else", json!("b"))],
                &[("/steps/1/else", "unknown step \"b\"")],
            ),
            (
                vec![set("/steps/1/otherwise", json!("ab"))],
                &[("/steps/1/otherwise", "unknown field \"otherwise\"")],
            ),
            (
                vec![set("/steps/1/branches/0/event", json!("x"))],
                &[("/steps/1/branches/0/event", "unknown field \"event\"")],
            ),
            (
                vec![set("/steps/1/branches", json!([]))],
                &[("/steps/1/branches", "expected 1 to 9 branches, got 0")],
            ),
        ],
    );
}

#[test]
fn random_split() {
    check_edits(
        all_types,
        &[
            (
                vec![set("/steps/2/branches/1/percent", json!(60))],
                &[("/steps/2/branches", "percents total 90, must total 100")],
            ),
            (
                vec![set("/steps/2/branches/1/percent", json!(120))],
                &[(
                    "/steps/2/branches/1/percent",
                    "percent 120 is out of range (0 to 100)",
                )],
            ),
            (
                vec![set("/steps/2/branches/1/percent", json!(-5))],
                &[(
                    "/steps/2/branches/1/percent",
                    "percent -5 is out of range (0 to 100)",
                )],
            ),
            (
                vec![set("/steps/2/branches/1/percent", json!(69.5))],
                &[(
                    "/steps/2/branches/1/percent",
                    "expected an integer from 0 to 100, got a number",
                )],
            ),
            (
                vec![set("/steps/2/branches/1/percent", json!("70"))],
                &[(
                    "/steps/2/branches/1/percent",
                    "expected an integer from 0 to 100, got a string",
                )],
            ),
            (
                vec![del("/steps/2/branches/1/percent")],
                &[("/steps/2/branches/1/percent", "missing field \"percent\"")],
            ),
            (
                vec![
                    set("/steps/2/branches/0/percent", json!(0)),
                    set("/steps/2/branches/1/percent", json!(100)),
                ],
                &[],
            ),
            (
                vec![set("/steps/2/sticky", json!(1))],
                &[("/steps/2/sticky", "expected a boolean, got a number")],
            ),
            (
                vec![set("/steps/2/branches/0/weight", json!(1))],
                &[("/steps/2/branches/0/weight", "unknown field \"weight\"")],
            ),
        ],
    );
}

#[test]
fn send() {
    check_edits(
        all_types,
        &[
            (
                vec![del("/steps/4/destination")],
                &[("/steps/4/destination", "missing field \"destination\"")],
            ),
            (
                vec![set("/steps/4/destination", json!(""))],
                &[("/steps/4/destination", "must not be empty")],
            ),
            (
                vec![set("/steps/4/event_name", json!(""))],
                &[("/steps/4/event_name", "must not be empty")],
            ),
            (
                vec![set("/steps/4/traits", json!(["*", "email"]))],
                &[(
                    "/steps/4/traits",
                    "\"*\" means all traits and must be the only entry",
                )],
            ),
            (
                vec![set("/steps/4/traits", json!("*"))],
                &[("/steps/4/traits", "expected an array, got a string")],
            ),
            (
                vec![set("/steps/4/traits", json!(["email", 3]))],
                &[("/steps/4/traits/1", "expected a string, got a number")],
            ),
            (
                vec![set("/steps/4/mapping", json!("x"))],
                &[("/steps/4/mapping", "expected an object, got a string")],
            ),
            (
                vec![set("/steps/4/next", json!("wait"))],
                &[("/steps/4/next", "cycle through step \"wait\"")],
            ),
        ],
    );
}

#[test]
fn graph() {
    let steps = |steps: Value| json!({"id": "g", "entry": {"event": "E"}, "steps": steps});
    // Several branches may join one later step.
    check(
        &steps(json!([
            {"id": "a", "type": "random_split", "branches": [{"percent": 50, "next": "c"}, {"percent": 50, "next": "b"}]},
            {"id": "b", "type": "delay", "duration": "1h", "next": "c"},
            {"id": "c", "type": "send", "destination": "d"}
        ])),
        &[],
    );
    check(
        &steps(json!([
            {"id": "a", "type": "delay", "duration": "1h", "next": "b"},
            {"id": "b", "type": "delay", "duration": "1h", "next": "a"}
        ])),
        &[("/steps/1/next", "cycle through step \"a\"")],
    );
    check(
        &steps(json!([{"id": "a", "type": "delay", "duration": "1h", "next": "a"}])),
        &[("/steps/0/next", "cycle through step \"a\"")],
    );
    // A cycle among steps that nothing reaches is still reported, as is their unreachability.
    check(
        &steps(json!([
            {"id": "a", "type": "send", "destination": "d"},
            {"id": "x", "type": "delay", "duration": "1h", "next": "y"},
            {"id": "y", "type": "split", "branches": [{"where": [], "next": "x"}]}
        ])),
        &[
            ("/steps/2/branches/0/next", "cycle through step \"x\""),
            ("/steps/1", "unreachable step \"x\""),
            ("/steps/2", "unreachable step \"y\""),
        ],
    );
    // exit.send runs once on exit and goes nowhere (SPEC §3.4): a next there is a problem, and
    // the exit send alone makes the step reachable.
    check(
        &json!({"id": "g", "entry": {"event": "E"}, "exit": {"events": [{"event": "X"}], "send": "bye"}, "steps": [
            {"id": "a", "type": "send", "destination": "d"},
            {"id": "bye", "type": "send", "destination": "d", "next": "after"},
            {"id": "after", "type": "delay", "duration": "1h"}
        ]}),
        &[(
            "/steps/1/next",
            "\"bye\" is exit.send: it runs once on exit and goes nowhere, so its next must be null or absent",
        )],
    );
    check(
        &json!({"id": "g", "entry": {"event": "E"}, "exit": {"events": [{"event": "X"}], "send": "bye"}, "steps": [
            {"id": "a", "type": "send", "destination": "d"},
            {"id": "bye", "type": "send", "destination": "d"}
        ]}),
        &[],
    );
    // A step whose type is unknown still leads on, so the steps after it are not called unreachable.
    check(
        &steps(json!([
            {"id": "a", "type": "wait", "next": "b"},
            {"id": "b", "type": "send", "destination": "d"}
        ])),
        &[(
            "/steps/0/type",
            "unknown step type \"wait\": expected hold_until, delay, split, random_split or send",
        )],
    );
}

#[test]
fn conditions() {
    let at = "/entry/where/0";
    let cases: Vec<(Value, Vec<(&str, String)>)> = vec![
        (json!({"property": "a", "equals": 1}), vec![]),
        (json!({"property": "a", "not_equals": [1]}), vec![]),
        (json!({"property": "a", "not_in": ["x", 1]}), vec![]),
        (json!({"path": "context.page.url", "contains": "/cart"}), vec![]),
        (json!({"property": "a", "starts_with": ""}), vec![]),
        (json!({"property": "a", "gte": 0}), vec![]),
        (json!({"property": "a", "lt": 1e3}), vec![]),
        (json!({"equals": 1}), vec![(at, "condition needs \"property\" or \"path\"".into())]),
        (
            json!({"property": "a", "path": "b", "equals": 1}),
            vec![(at, "condition has both \"property\" and \"path\"; use one".into())],
        ),
        (
            json!({"property": "a"}),
            vec![(
                at,
                "condition needs one operator: equals, not_equals, in, not_in, exists, gt, gte, lt, lte, contains, starts_with"
                    .into(),
            )],
        ),
        (
            json!({"property": "a", "equals": 1, "gt": 0}),
            vec![(at, "condition has 2 operators (equals, gt); use one".into())],
        ),
        (
            json!({"property": "a", "equal": 1}),
            vec![
                ("/entry/where/0/equal", "unknown field \"equal\"".into()),
                (
                    at,
                    "condition needs one operator: equals, not_equals, in, not_in, exists, gt, gte, lt, lte, contains, starts_with"
                        .into(),
                ),
            ],
        ),
        (json!({"property": "a..b", "exists": true}), vec![("/entry/where/0/property", "bad path \"a..b\": empty segment".into())]),
        (json!({"path": "", "exists": true}), vec![("/entry/where/0/path", "bad path \"\": empty segment".into())]),
        (json!({"property": "a.", "exists": true}), vec![("/entry/where/0/property", "bad path \"a.\": empty segment".into())]),
        (json!({"property": 3, "exists": true}), vec![("/entry/where/0/property", "expected a dot path string, got a number".into())]),
        (json!({"property": "a", "in": "x"}), vec![("/entry/where/0/in", "expected an array, got a string".into())]),
        (json!({"property": "a", "not_in": null}), vec![("/entry/where/0/not_in", "expected an array, got null".into())]),
        (json!({"property": "a", "exists": "yes"}), vec![("/entry/where/0/exists", "expected a boolean, got a string".into())]),
        (json!({"property": "a", "gt": "5"}), vec![("/entry/where/0/gt", "expected a number, got a string".into())]),
        (json!({"property": "a", "lte": null}), vec![("/entry/where/0/lte", "expected a number, got null".into())]),
        (json!({"property": "a", "contains": 1}), vec![("/entry/where/0/contains", "expected a string, got a number".into())]),
        (json!({"property": "a", "starts_with": ["x"]}), vec![("/entry/where/0/starts_with", "expected a string, got an array".into())]),
        (json!("a = 1"), vec![(at, "expected an object, got a string".into())]),
    ];
    for (condition, expected) in cases {
        let expected: Vec<(&str, &str)> = expected.iter().map(|(p, m)| (*p, m.as_str())).collect();
        check(
            &edit(spec_example(), &[set("/entry/where/0", condition)]),
            &expected,
        );
    }
    // Parsed conditions evaluate as written.
    let journey = parse(&edit(
        spec_example(),
        &[set(
            "/entry/where",
            json!([{"property": "cart.total", "gte": 20}, {"path": "context.locale", "starts_with": "en"}]),
        )],
    ))
    .expect("valid");
    let message = |total: Value| json!({"context": {"locale": "en-US"}, "properties": {"cart": {"total": total}}});
    assert!(all_hold(&journey.entry.conditions, &message(json!(20))));
    assert!(!all_hold(&journey.entry.conditions, &message(json!(19.99))));
    assert!(!all_hold(&journey.entry.conditions, &message(json!("20"))));
}

#[test]
fn every_problem_is_reported() {
    let doc = json!({
        "id": "Bad Id",
        "entry": {"event": "", "where": [{"property": "x"}], "reentry": "twice"},
        "exit": {"send": "a"},
        "steps": [
            {"id": "a", "type": "hold_until", "on_timeout": "b",
             "branches": [{"name": "no event", "next": "c"}, {"event": "E", "reset_timer": true, "next": "b"}]},
            {"id": "b", "type": "delay", "duration": "90x", "next": null},
            {"id": "c", "type": "random_split", "branches": [{"percent": 40, "nxt": "a"}, {"percent": 20, "next": "a"}]},
            {"id": "a", "type": "teleport"},
            {"id": "lonely", "type": "send", "destination": "d", "traits": ["*", "email"]}
        ]
    });
    check(
        &doc,
        &[
            (
                "/id",
                "bad id \"Bad Id\": use 1 to 64 characters from a-z, 0-9, _ and -",
            ),
            ("/entry/event", "must not be empty"),
            (
                "/entry/where/0",
                "condition needs one operator: equals, not_equals, in, not_in, exists, gt, gte, lt, lte, contains, starts_with",
            ),
            (
                "/entry/reentry",
                "unknown reentry \"twice\": expected every_time, if_not_active or once",
            ),
            (
                "/exit/send",
                "exit.send must name a send step, \"a\" is a hold_until step",
            ),
            ("/steps/0/branches/0/event", "missing field \"event\""),
            (
                "/steps/0/branches/1/next",
                "a reset_timer branch stays at this step, so its next must be null or absent",
            ),
            (
                "/steps/0/on_timeout",
                "on_timeout needs max_hold: without it the hold never times out",
            ),
            ("/steps/1/duration", "bad duration \"90x\""),
            ("/steps/2/branches/0/nxt", "unknown field \"nxt\""),
            ("/steps/2/branches", "percents total 60, must total 100"),
            ("/steps/2/branches/1/next", "cycle through step \"a\""),
            ("/steps/3/id", "duplicate step id \"a\""),
            (
                "/steps/3/type",
                "unknown step type \"teleport\": expected hold_until, delay, split, random_split or send",
            ),
            (
                "/steps/4/traits",
                "\"*\" means all traits and must be the only entry",
            ),
            ("/steps/4", "unreachable step \"lonely\""),
        ],
    );
}

#[test]
fn durations() {
    let cases: &[(&str, Option<u64>)] = &[
        ("1s", Some(1_000)),
        ("90m", Some(5_400_000)),
        ("2h", Some(7_200_000)),
        ("365d", Some(31_536_000_000)),
        ("1w", Some(604_800_000)),
        ("0s", Some(0)),
        ("007m", Some(420_000)),
        ("", None),
        ("s", None),
        ("90", None),
        ("90x", None),
        ("1.5h", None),
        ("-1s", None),
        ("+1s", None),
        (" 1s", None),
        ("1 s", None),
        ("1S", None),
        ("1ms", None),
        ("1é", None),
        ("99999999999999999999s", None),
        ("18446744073709551615w", None),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_duration(text), *expected, "{text:?}");
    }
}

#[test]
fn problems_display_and_serialize() {
    let problem = Problem {
        path: "/steps/1/branches/0/next".into(),
        message: "unknown step \"remindr\"".into(),
    };
    assert_eq!(
        problem.to_string(),
        "/steps/1/branches/0/next: unknown step \"remindr\""
    );
    assert_eq!(
        serde_json::to_value(&problem).expect("serializes"),
        json!({"path": "/steps/1/branches/0/next", "message": "unknown step \"remindr\""})
    );
    assert_eq!(
        Problem {
            path: String::new(),
            message: "m".into()
        }
        .to_string(),
        "/: m"
    );
}

#[test]
fn destinations_are_listed_once_in_step_order() {
    let doc = json!({"id": "d", "entry": {"event": "E"}, "steps": [
        {"id": "a", "type": "send", "destination": "crm", "next": "b"},
        {"id": "b", "type": "send", "destination": "slack", "next": "c"},
        {"id": "c", "type": "send", "destination": "crm"}
    ]});
    assert_eq!(parse(&doc).expect("valid").destinations(), ["crm", "slack"]);
}

/// The JSON `type` of a step.
fn type_name(kind: &StepKind) -> &'static str {
    match kind {
        StepKind::HoldUntil { .. } => "hold_until",
        StepKind::Delay { .. } => "delay",
        StepKind::Split { .. } => "split",
        StepKind::RandomSplit { .. } => "random_split",
        StepKind::Send { .. } => "send",
    }
}
