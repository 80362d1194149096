//! The JSON shapes of the admin API, in one place: how each thing the store returns is shown.
//!
//! One vocabulary throughout: a journey is `journey`, an instance `instance` (or `id` on the
//! instance itself), a step `step`, a profile `profile`; times are [`Timestamp`]s (RFC 3339, UTC,
//! milliseconds), except in simulation traces, where they are offsets from the start (`+2h`).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::clock::Timestamp;
use crate::engine::stats::{Stat, TIMEOUT, Total};
use crate::engine::{State, Transition, What};
use crate::journey::{Journey, StepKind};
use crate::sim;
use crate::store::{
    DeliveryView, DestinationView, InstanceView, JourneyDetail, JourneySummary, KeyView, Page,
    ProfileView, StreamEvent, TimelineItem, TransitionRow,
};

/// A page of a list: `{"items": [...], "next_cursor": "..." | null}`.
pub(crate) fn page<T>(page: &Page<T>, item: impl Fn(&T) -> Value) -> Value {
    json!({
        "items": page.items.iter().map(item).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
    })
}

fn ts(ms: i64) -> Value {
    json!(Timestamp(ms))
}

/// A transition, stored or simulated: `{at, instance, journey, version, what, step?, detail?}`,
/// its time shown as the caller says (a timestamp, or an offset in a simulation).
fn transition_at(t: &Transition, at: Value) -> Value {
    let mut v = json!({
        "at": at,
        "instance": t.instance,
        "journey": t.journey_id,
        "version": t.version,
        "what": t.what.as_str(),
    });
    if let Some(step) = &t.step {
        v["step"] = json!(step);
    }
    if let Some(detail) = &t.detail {
        v["detail"] = json!(detail);
    }
    v
}

/// A stored transition: its fields and its `seq` in the commit order.
pub(crate) fn transition(row: &TransitionRow) -> Value {
    let mut v = transition_at(&row.transition, ts(row.transition.at));
    v["seq"] = json!(row.seq);
    v
}

pub(crate) fn timeline_item(item: &TimelineItem) -> Value {
    match item {
        TimelineItem::Event { seq, message } => {
            json!({"kind": "event", "seq": seq, "message": message})
        }
        TimelineItem::Transition(t) => {
            let mut v = transition(t);
            v["kind"] = json!("transition");
            v
        }
        TimelineItem::Merged {
            seq,
            at,
            absorbed,
            survivor,
        } => {
            json!({"kind": "merged", "seq": seq, "at": ts(*at), "from": absorbed, "into": survivor})
        }
    }
}

pub(crate) fn instance(i: &InstanceView) -> Value {
    let mut v = json!({
        "id": i.id,
        "profile": i.profile_key,
        "journey": i.journey_id,
        "version": i.version,
        "state": i.state.as_str(),
        "step": i.step,
        "context": i.context,
        "resets": i.resets,
        "due_at": i.due_at.map(Timestamp),
        "entered_at": ts(i.entered_at),
        "updated_at": ts(i.updated_at),
    });
    if let Some(u) = &i.unique_value {
        v["unique_value"] = u.clone();
    }
    if i.state != State::Active {
        v["outcome"] = json!(i.state.as_str());
    }
    v
}

/// One instance with its history.
pub(crate) fn instance_detail(i: &InstanceView) -> Value {
    let mut v = instance(i);
    v["history"] = i.history.iter().map(transition).collect();
    v
}

/// A profile in a list: its id, linked ids and traits.
pub(crate) fn profile_summary(p: &ProfileView) -> Value {
    json!({
        "id": p.key,
        "traits": p.traits,
        "ids": p.ids,
        "created_at": ts(p.created_at),
        "updated_at": ts(p.updated_at),
    })
}

/// An admin token or write key as listed: never the key.
pub(crate) fn key(k: &KeyView) -> Value {
    json!({"id": k.id, "kind": k.kind, "created_at": ts(k.created_at)})
}

/// A committed change for `GET /v1/stream`: its SSE event name and its JSON.
pub(crate) fn stream_event(event: &StreamEvent) -> (&'static str, Value) {
    match event {
        StreamEvent::Transition {
            profile,
            transition,
        } => {
            let mut v = transition_at(transition, ts(transition.at));
            v["profile"] = json!(profile);
            ("transition", v)
        }
        StreamEvent::Delivery(d) => (
            "delivery",
            json!({
                "id": d.id,
                "destination": d.destination,
                "journey": d.journey,
                "instance": d.instance,
                "status": d.status.as_str(),
                "attempts": d.attempts,
                "last_status": d.http_status,
                "last_error": d.error,
                "at": ts(d.at),
            }),
        ),
    }
}

/// A profile with its newest instances: the summary plus `instances`.
pub(crate) fn profile(p: &ProfileView, instances: &[InstanceView]) -> Value {
    let mut v = profile_summary(p);
    v["instances"] = instances.iter().map(instance).collect();
    v
}

fn totals(counts: &BTreeMap<Total, i64>) -> Map<String, Value> {
    counts
        .iter()
        .map(|(t, n)| (t.as_str().to_string(), json!(n)))
        .collect()
}

pub(crate) fn journey_summary(s: &JourneySummary) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "status": s.status.as_str(),
        "version": s.version,
        "counts": totals(&s.counts),
        "created_at": ts(s.created_at),
        "updated_at": ts(s.updated_at),
    })
}

pub(crate) fn journey_detail(d: &JourneyDetail) -> Value {
    let mut v = journey_summary(&d.summary);
    v["definition"] = d.definition.clone();
    v["versions"] = d
        .versions
        .iter()
        .map(|(n, at)| json!({"version": n, "created_at": ts(*at)}))
        .collect();
    v
}

/// The stats of a journey (SPEC §6): totals, then every step of `definition` (the version asked
/// for, else the newest) with its reached and active counts, and every branch, each listed even
/// at zero.
pub(crate) fn stats(
    id: &str,
    version: Option<i64>,
    definition: Option<&Journey>,
    counters: &[(Stat, i64)],
) -> Value {
    let mut totals: BTreeMap<Total, i64> = Total::ALL.into_iter().map(|t| (t, 0)).collect();
    let mut steps: BTreeMap<String, BTreeMap<&str, i64>> = BTreeMap::new();
    let mut branches: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for step in definition.map(|j| &j.steps[..]).unwrap_or_default() {
        steps.insert(step.id.clone(), [("reached", 0), ("active", 0)].into());
        let labels: Vec<String> = match &step.kind {
            StepKind::HoldUntil {
                branches, max_hold, ..
            } => {
                let mut l: Vec<String> = branches.iter().map(|b| b.label()).collect();
                if max_hold.is_some() {
                    l.push(TIMEOUT.into());
                }
                l
            }
            StepKind::Split { branches, .. } => {
                let mut l: Vec<String> = branches
                    .iter()
                    .enumerate()
                    .map(|(n, b)| b.label(n))
                    .collect();
                l.push("else".into());
                l
            }
            StepKind::RandomSplit { branches, .. } => branches
                .iter()
                .enumerate()
                .map(|(n, b)| b.label(n))
                .collect(),
            _ => continue,
        };
        branches.insert(
            step.id.clone(),
            labels.into_iter().map(|l| (l, 0)).collect(),
        );
    }
    for (stat, count) in counters {
        match stat {
            Stat::Total(t) => *totals.entry(*t).or_default() += count,
            Stat::Reached(step) => {
                *steps
                    .entry(step.clone())
                    .or_default()
                    .entry("reached")
                    .or_default() += count
            }
            Stat::Waiting(step) => {
                *steps
                    .entry(step.clone())
                    .or_default()
                    .entry("active")
                    .or_default() += count
            }
            Stat::Branch(step, label) => {
                *branches
                    .entry(step.clone())
                    .or_default()
                    .entry(label.clone())
                    .or_default() += count
            }
        }
    }
    let mut out = json!({"id": id, "version": version, "steps": steps, "branches": branches});
    for (k, v) in self::totals(&totals) {
        out[k] = v;
    }
    out
}

pub(crate) fn destination(d: &DestinationView) -> Value {
    let mut v = d.config.clone();
    // Write-only values stay hidden, also for destinations stored before they were masked.
    if let Some(headers) = v.get_mut("headers").and_then(Value::as_object_mut) {
        for value in headers.values_mut() {
            *value = json!(crate::delivery::MASK);
        }
    }
    if let Some(url) = v.get("url").and_then(Value::as_str) {
        v["url"] = json!(crate::delivery::mask_password(url));
    }
    v["id"] = json!(d.id);
    for field in crate::delivery::SECRET_FIELDS {
        v[format!("{field}_set")] = json!(d.secrets_set.iter().any(|s| s == field));
    }
    v["created_at"] = ts(d.created_at);
    v["updated_at"] = ts(d.updated_at);
    v
}

pub(crate) fn delivery(d: &DeliveryView) -> Value {
    json!({
        "id": d.id,
        "status": d.status.as_str(),
        "destination": d.destination,
        "profile": d.profile_key,
        "journey": d.journey_id,
        "instance": d.instance_id,
        "step": d.step_id,
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at.map(Timestamp),
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created_at": ts(d.created_at),
        "updated_at": ts(d.updated_at),
        "payload": d.payload,
    })
}

/// The answer of `POST /v1/simulate` and the output of `journeyd simulate` (SPEC §6.7).
pub(crate) fn simulation(out: &sim::Output) -> Value {
    let offset = |at: i64| json!(sim::format_offset(at - out.start));
    let trace: Vec<Value> = out
        .trace
        .iter()
        .map(|t| {
            let mut v = transition_at(t, offset(t.at));
            // A simulation explains what did nothing: why a trigger entered no instance (the
            // per-profile cap included), which exit event ended none.
            let explained = match t.what {
                What::NotEntered => Some("reason"),
                What::Skipped => {
                    v["what"] = json!("not_entered");
                    v["reason"] = json!("cap");
                    None
                }
                What::ExitUnmatched => Some("event"),
                _ => None,
            };
            if let (Some(key), Some(obj)) = (explained, v.as_object_mut()) {
                let detail = obj.remove("detail").unwrap_or(Value::Null);
                obj.insert(key.into(), detail);
            }
            if (t.what.is_note() || t.what == What::Skipped)
                && let Some(obj) = v.as_object_mut()
            {
                obj.remove("instance");
                obj.remove("detail");
            }
            v
        })
        .collect();
    let deliveries: Vec<Value> = out
        .deliveries
        .iter()
        .map(|d| {
            json!({
                "at": offset(d.at),
                "instance": d.instance_id,
                "step": d.step_id,
                "destination": d.destination,
                "payload": d.payload_value(),
            })
        })
        .collect();
    json!({"trace": trace, "deliveries": deliveries})
}

/// A journey laid out for the console (`GET /v1/journeys/{id}/layout`): pixels, rounded to tenths.
pub(crate) fn layout(id: &str, version: Option<i64>, l: &super::console::layout::Layout) -> Value {
    let r = |v: f64| (v * 10.0).round() / 10.0;
    let rect = |b: &super::console::layout::Rect| json!({"x": r(b.x), "y": r(b.y), "w": r(b.w), "h": r(b.h)});
    json!({
        "id": id,
        "version": version,
        "width": r(l.width),
        "height": r(l.height),
        "nodes": l.nodes.iter().map(|n| json!({
            "id": n.id,
            "kind": n.kind.as_str(),
            "step": !n.id.starts_with('@'),
            "title": n.title,
            "detail": n.detail,
            "loops": n.loops,
            "rect": rect(&n.rect),
        })).collect::<Vec<_>>(),
        "edges": l.edges.iter().map(|e| json!({
            "from": e.from,
            "to": e.to,
            "kind": e.kind.as_str(),
            "branch": e.branch,
            "label": e.label,
            "label_rect": e.label_rect.as_ref().map(rect),
            "points": e.points.iter().map(|&(x, y)| [r(x), r(y)]).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// The answer of a backtest (SPEC §6.8): the stats shape of §6 over the period, deliveries per
/// destination, up to 20 sample payloads, and the instances still active at the end.
pub(crate) fn backtest(
    input: &sim::Input,
    result: &sim::Backtested,
    start: i64,
    end: i64,
    took: std::time::Duration,
) -> Value {
    let journey = &input.journey;
    let mut counters: BTreeMap<Stat, i64> = BTreeMap::new();
    for t in &result.output.trace {
        for (stat, by) in crate::engine::stats::deltas(t, Some(journey)) {
            *counters.entry(stat).or_default() += by;
        }
    }
    let counters: Vec<(Stat, i64)> = counters.into_iter().collect();
    let mut out = stats(&journey.id, None, Some(journey), &counters);
    let mut per_destination: BTreeMap<&str, u64> = BTreeMap::new();
    for d in &result.output.deliveries {
        *per_destination.entry(&d.destination).or_default() += 1;
    }
    out["deliveries"] = json!(per_destination);
    out["samples"] = result
        .output
        .deliveries
        .iter()
        .take(20)
        .map(|d| json!({"at": ts(d.at), "destination": d.destination, "step": d.step_id, "payload": d.payload_value()}))
        .collect();
    out["active_instances"] = result
        .active
        .iter()
        .take(100)
        .map(|(profile, i)| {
            json!({"profile": profile, "step": i.step, "entered_at": ts(i.entered_at),
                   "due_at": i.due_at.map(Timestamp)})
        })
        .collect();
    out["since"] = ts(start);
    out["until"] = ts(end);
    out["events"] = json!(result.events);
    out["took_ms"] = json!(took.as_millis() as u64);
    out
}
