//! Simulation (SPEC §6.7): one journey run against timed events on a virtual clock, in memory,
//! through the same [`engine`](crate::engine) calls as the live path. Writes and sends nothing.
//!
//! The virtual clock starts at `start` (default: the unix epoch, so that the same input always
//! gives the same output). Before each event, every timer due by the event's time fires, in due
//! order; after the last event, the remaining timers fire until none is left.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::engine::{Catalog, Delivery, Engine, EventView, Ids, ProfileState, State, Transition};
use crate::journey::{self, Journey, Problem};

/// A validated simulation request.
#[derive(Debug, Clone)]
pub struct Input {
    pub journey: Arc<Journey>,
    /// Traits every profile starts with.
    pub traits: Map<String, Value>,
    /// Messages with their offsets from the start, in milliseconds, in order.
    pub events: Vec<(i64, Value)>,
    pub start: i64,
}

/// What a simulation produced, with times as offsets from the start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    pub trace: Vec<Transition>,
    pub deliveries: Vec<Delivery>,
    pub start: i64,
}

/// Parses `{"journey", "traits"?, "events": [{"at": "+90m", "message": {...}}], "start"?}`.
pub fn parse(doc: &Value) -> Result<Input, Vec<Problem>> {
    let mut problems = Vec::new();
    let problem = |path: &str, message: String| Problem {
        path: path.into(),
        message,
    };
    let journey = match doc.get("journey") {
        Some(j) => journey::parse(j).map_err(|ps| {
            ps.into_iter()
                .map(|p| problem(&format!("/journey{}", p.path), p.message))
                .collect::<Vec<_>>()
        }),
        None => Err(vec![problem(
            "/journey",
            "missing field \"journey\"".into(),
        )]),
    };
    let journey = match journey {
        Ok(j) => Some(Arc::new(j)),
        Err(ps) => {
            problems.extend(ps);
            None
        }
    };
    let traits = match doc.get("traits") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            problems.push(problem("/traits", "expected an object".into()));
            Map::new()
        }
    };
    let start = match doc.get("start") {
        None | Some(Value::Null) => 0,
        Some(v) => match v.as_str().and_then(crate::ingest::parse_rfc3339) {
            Some(t) => t,
            None => {
                problems.push(problem(
                    "/start",
                    format!("expected an ISO 8601 date-time, got {v}"),
                ));
                0
            }
        },
    };
    let mut events = Vec::new();
    match doc.get("events") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (n, item) in items.iter().enumerate() {
                match parse_event(item) {
                    Ok(e) => events.push(e),
                    Err((field, message)) => {
                        problems.push(problem(&format!("/events/{n}{field}"), message))
                    }
                }
            }
        }
        Some(_) => problems.push(problem("/events", "expected an array".into())),
    }
    // Events apply in time order; equal times keep their order in the input.
    events.sort_by_key(|(at, _)| *at);
    match (journey, problems.is_empty()) {
        (Some(journey), true) => Ok(Input {
            journey,
            traits,
            events,
            start,
        }),
        _ => Err(problems),
    }
}

/// Parses one `{"at": "+90m", "message": {...}}`.
pub fn parse_event(item: &Value) -> Result<(i64, Value), (&'static str, String)> {
    let at = match item.get("at") {
        Some(Value::String(s)) => {
            parse_offset(s).ok_or(("/at", format!("bad offset \"{s}\": use +<n><s|m|h|d|w>")))?
        }
        Some(v) => {
            return Err((
                "/at",
                format!("expected an offset such as \"+90m\", got {v}"),
            ));
        }
        None => return Err(("/at", "missing field \"at\"".into())),
    };
    match item.get("message") {
        Some(m @ Value::Object(_)) => Ok((at, m.clone())),
        Some(_) => Err(("/message", "expected an object".into())),
        None => Err(("/message", "missing field \"message\"".into())),
    }
}

/// `+90m` (or `90m`, `+0s`, `+1500ms`) to milliseconds.
pub fn parse_offset(s: &str) -> Option<i64> {
    let s = s.strip_prefix('+').unwrap_or(s);
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse::<i64>().ok().filter(|v| *v >= 0);
    }
    journey::parse_duration(s).map(|v| v as i64)
}

/// Milliseconds to the largest whole unit: `+2h`, `+90m`, `+1500ms`.
pub fn format_offset(ms: i64) -> String {
    const UNITS: [(i64, &str); 5] = [
        (604_800_000, "w"),
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
    ];
    if ms == 0 {
        return "+0s".into();
    }
    for (size, unit) in UNITS {
        if ms % size == 0 {
            return format!("+{}{unit}", ms / size);
        }
    }
    format!("+{ms}ms")
}

struct OneJourney(Arc<Journey>);

impl Catalog for OneJourney {
    fn version(&self, journey_id: &str, version: i64) -> Option<Arc<Journey>> {
        (journey_id == self.0.id && version == 1).then(|| self.0.clone())
    }

    fn entries_for(&self, event: &str) -> Vec<(i64, Arc<Journey>)> {
        if self.0.entry.event == event {
            vec![(1, self.0.clone())]
        } else {
            Vec::new()
        }
    }
}

/// Counters standing in for the store's sequences.
#[derive(Default)]
struct Counters {
    instances: i64,
    deliveries: i64,
}

impl Ids for Counters {
    fn instance_id(&mut self) -> i64 {
        self.instances += 1;
        self.instances
    }

    fn delivery_id(&mut self) -> String {
        self.deliveries += 1;
        format!("sim-{}", self.deliveries)
    }
}

/// Runs the simulation.
pub fn run(input: &Input, max_active: usize) -> Output {
    let catalog = OneJourney(input.journey.clone());
    let mut ids = Counters::default();
    let mut profiles: BTreeMap<String, ProfileState> = BTreeMap::new();
    let mut out = Output {
        start: input.start,
        ..Output::default()
    };

    for (offset, message) in &input.events {
        let now = input.start + offset;
        fire_until(&catalog, &mut ids, &mut profiles, now, max_active, &mut out);
        let Some(key) = ["userId", "anonymousId"].iter().find_map(|k| {
            message.get(*k).and_then(|v| {
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| v.as_i64().map(|n| n.to_string()))
            })
        }) else {
            continue;
        };
        let profile = profiles.entry(key.clone()).or_insert_with(|| ProfileState {
            anonymous: message.get("userId").is_none_or(Value::is_null),
            key,
            traits: input.traits.clone(),
            ..ProfileState::default()
        });
        if let Some(Value::Object(traits)) = message.get("traits")
            && message.get("type").and_then(Value::as_str) == Some("identify")
        {
            for (k, v) in traits {
                profile.traits.insert(k.clone(), v.clone());
            }
        }
        let is_track = message
            .get("type")
            .and_then(Value::as_str)
            .is_none_or(|t| t == "track");
        let Some(name) = message
            .get("event")
            .and_then(Value::as_str)
            .filter(|_| is_track)
        else {
            continue;
        };
        let mut engine = Engine::new(&catalog, &mut ids, max_active);
        engine.on_event(profile, &EventView { name, message }, now);
        collect(engine, profile, &mut out);
    }
    fire_until(
        &catalog,
        &mut ids,
        &mut profiles,
        i64::MAX,
        max_active,
        &mut out,
    );
    out
}

/// Fires every pending timer due by `until`, across profiles, in due order.
fn fire_until(
    catalog: &OneJourney,
    ids: &mut Counters,
    profiles: &mut BTreeMap<String, ProfileState>,
    until: i64,
    max_active: usize,
    out: &mut Output,
) {
    loop {
        let next = profiles
            .iter()
            .flat_map(|(k, p)| {
                p.instances
                    .iter()
                    .filter_map(move |i| i.due_at.map(|d| (d, i.id, k.clone())))
            })
            .filter(|(d, _, _)| *d <= until)
            .min();
        let Some((due, id, key)) = next else { return };
        let profile = profiles.get_mut(&key).expect("key came from the map");
        let mut engine = Engine::new(catalog, ids, max_active);
        engine.on_timer(profile, id, due);
        collect(engine, profile, out);
    }
}

fn collect(engine: Engine, profile: &mut ProfileState, out: &mut Output) {
    out.trace.extend(engine.effects.transitions);
    out.deliveries.extend(engine.effects.deliveries);
    profile.instances.retain(|i| i.state == State::Active);
}

impl Output {
    /// The JSON answer of `POST /v1/simulate` and the output of `journeyd simulate`.
    pub fn to_json(&self) -> Value {
        let trace: Vec<Value> = self
            .trace
            .iter()
            .map(|t| transition_json(t, self.start))
            .collect();
        let deliveries: Vec<Value> = self
            .deliveries
            .iter()
            .map(|d| {
                json!({
                    "at": format_offset(d.at - self.start),
                    "instance": d.instance_id,
                    "step": d.step_id,
                    "destination": d.destination,
                    "payload": d.payload,
                })
            })
            .collect();
        json!({"trace": trace, "deliveries": deliveries})
    }

    /// One line per transition: `+2h #1 cart-abandonment timeout wait_for_order -> remind`.
    pub fn lines(&self) -> Vec<String> {
        self.trace
            .iter()
            .map(|t| format!("{} {t}", format_offset(t.at - self.start)))
            .collect()
    }
}

/// A transition as JSON, its time given as an offset from `start`.
pub fn transition_json(t: &Transition, start: i64) -> Value {
    let mut v = json!({
        "at": format_offset(t.at - start),
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
