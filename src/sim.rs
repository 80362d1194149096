//! Simulation (SPEC §6.7): one journey run against timed events on a virtual clock, in memory,
//! through the same [`engine`](crate::engine) calls as the live path. Writes and sends nothing.
//!
//! Each message goes through what ingest does live: the same validation and normalisation
//! ([`crate::ingest::replayed`]), `messageId` deduplication over 24 hours, and the same identity
//! rules ([`crate::ingest::Message::identity`]): an identify with both ids, or an alias, links the
//! other id to the message's profile. The virtual clock starts at `start` (default: the unix
//! epoch, so that the same input always gives the same output). Before each event, every timer
//! due by the event's time fires, in due order; after the last event, the remaining timers fire
//! until none is left. Due timers come from a heap, so a simulation's cost grows with its events
//! and timers, not with their product.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::engine::{
    Catalog, Delivery, Engine, EventView, Ledger, ProfileState, State, Transition,
};
use crate::ingest::{DEDUP_WINDOW_MS, Message};
use crate::journey::{self, Journey};
use crate::validate::{Checker, Problem};

/// A validated simulation request.
#[derive(Debug, Clone)]
pub(crate) struct Input {
    pub(crate) journey: Arc<Journey>,
    /// Traits every profile starts with.
    pub(crate) traits: Map<String, Value>,
    /// Normalised messages, received at their virtual time, in order.
    pub(crate) events: Vec<Message>,
    pub(crate) start: i64,
    /// The frequency caps of the destinations the journey sends to (the server fills them in
    /// from its destinations).
    pub(crate) caps: HashMap<String, crate::delivery::Cap>,
}

/// What a simulation produced, with times as offsets from the start.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Output {
    pub(crate) trace: Vec<Transition>,
    pub(crate) deliveries: Vec<Delivery>,
    pub(crate) start: i64,
}

const FIELDS: &[&str] = &["journey", "traits", "events", "start"];
const EVENT_FIELDS: &[&str] = &["at", "message"];

/// Parses `{"journey", "traits"?, "events": [{"at": "+90m", "message": {...}}], "start"?}`.
pub(crate) fn parse(doc: &Value) -> Result<Input, Vec<Problem>> {
    let mut check = Checker::default();
    let Some(f) = check.fields(doc, "", FIELDS) else {
        return Err(check.problems);
    };
    let journey = check
        .required(&f, "journey")
        .and_then(|j| match journey::parse(j) {
            Ok(j) => Some(Arc::new(j)),
            Err(problems) => {
                let problems = problems.into_iter().map(|p| p.under("/journey"));
                check.problems.extend(problems);
                None
            }
        });
    let traits = check
        .optional_object(&f, "traits")
        .cloned()
        .unwrap_or_default();
    let start = match check.optional_string(&f, "start") {
        None => 0,
        Some(s) => crate::clock::Timestamp::parse(&s).map_or_else(
            || {
                check.report(
                    "/start",
                    format!("expected an ISO 8601 date-time, got \"{s}\""),
                );
                0
            },
            |t| t.ms(),
        ),
    };
    let mut timed = Vec::new();
    for (n, item) in check
        .array(&f, "events", false)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("/events/{n}");
        let Some(ef) = check.fields(item, &path, EVENT_FIELDS) else {
            continue;
        };
        let at = check.required_string(&ef, "at").and_then(|s| {
            let at = parse_offset(&s);
            if at.is_none() {
                check.report(
                    &ef.path("at"),
                    format!("bad offset \"{s}\": use +<n><ms|s|m|h|d|w>, compound as in +2h30m"),
                );
            }
            at
        });
        let message = check.required(&ef, "message").and_then(|m| match m {
            Value::Object(m) => Some(m.clone()),
            other => {
                check.wrong_type(&ef.path("message"), "an object", other);
                None
            }
        });
        if let (Some(at), Some(message)) = (at, message) {
            timed.push((at, n, message));
        }
    }
    // Events apply in time order; equal times keep their order in the input.
    timed.sort_by_key(|(at, n, _)| (*at, *n));
    let mut ids = 0u64;
    let mut new_id = || {
        ids += 1;
        format!("sim-message-{ids}")
    };
    let mut events = Vec::with_capacity(timed.len());
    for (at, n, message) in timed {
        let Some(received_at) = start.checked_add(at) else {
            check.report(&format!("/events/{n}/at"), "offset is too large");
            continue;
        };
        match crate::ingest::replayed(message, received_at, &mut new_id) {
            Ok(m) => events.push(m),
            Err(why) => check.report(&format!("/events/{n}/message"), why),
        }
    }
    let input = journey.map(|journey| Input {
        journey,
        traits,
        events,
        start,
        caps: HashMap::new(),
    });
    check.finish(input)
}

pub(crate) use crate::journey::parse_offset;

/// Milliseconds to the largest whole unit: `+2h`, `+90m`, `+1500ms`.
pub(crate) fn format_offset(ms: i64) -> String {
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

impl OneJourney {
    /// Whether the journey uses events of this name (entry, hold branch, exit): other events
    /// cannot move it, so a backtest passes over them without parsing them.
    fn listens_to(&self, event: &str) -> bool {
        let j = &self.0;
        j.entry.event == event
            || j.exit.events.iter().any(|e| e.event == event)
            || j.steps.iter().any(|s| match &s.kind {
                crate::journey::StepKind::HoldUntil { branches, .. } => {
                    branches.iter().any(|b| b.event == event)
                }
                _ => false,
            })
    }
}

impl Catalog for OneJourney {
    fn version(&self, journey_id: &str, version: i64) -> Option<Arc<Journey>> {
        (journey_id == self.0.id && version == 1).then(|| self.0.clone())
    }

    fn entries_for(&self, event: &str) -> Vec<(i64, Arc<Journey>, bool)> {
        if self.0.entry.event == event {
            vec![(1, self.0.clone(), true)]
        } else {
            Vec::new()
        }
    }
}

/// Counters standing in for the store's sequences, and the sends counted against the
/// destinations' frequency caps.
#[derive(Default)]
struct Counters {
    instances: i64,
    deliveries: i64,
    caps: HashMap<String, crate::delivery::Cap>,
    sent: HashMap<(String, String), Vec<i64>>,
}

impl Ledger for Counters {
    fn instance_id(&mut self) -> i64 {
        self.instances += 1;
        self.instances
    }

    fn delivery_id(&mut self, _instance: i64, _step: &str, _exit: bool) -> String {
        self.deliveries += 1;
        format!("sim-{}", self.deliveries)
    }

    fn allow_send(&mut self, profile: &str, destination: &str, at: i64) -> bool {
        let Some(cap) = self.caps.get(destination) else {
            return true;
        };
        let sent = self
            .sent
            .entry((profile.to_string(), destination.to_string()))
            .or_default();
        let allowed = cap.allows(sent, at);
        if allowed {
            sent.push(at);
        }
        allowed
    }
}

/// The simulated world: profiles, identity links, seen message ids, and pending timers.
struct World<'a> {
    input: &'a Input,
    catalog: OneJourney,
    ids: Counters,
    max_active: usize,
    profiles: BTreeMap<String, ProfileState>,
    /// Linked ids to the profile key they belong to (an id not here is its own key).
    links: HashMap<String, String>,
    /// messageId to when it was last received, for deduplication.
    seen: HashMap<String, i64>,
    /// (due, instance, profile key); an entry whose instance moved on is skipped when popped.
    timers: BinaryHeap<Reverse<(i64, i64, String)>>,
    out: Output,
}

/// Runs the simulation.
pub(crate) fn run(input: &Input, max_active: usize) -> Output {
    let mut world = World::new(input, max_active);
    for m in &input.events {
        world.fire_until(m.received_at);
        world.apply(m);
    }
    world.fire_until(i64::MAX);
    world.out
}

/// One stored event to replay in a backtest: the profile it now belongs to (after the identity
/// links made since), that profile as it is now (given the first time the profile comes up:
/// whether it is anonymous, its traits), and the message as stored.
pub(crate) struct Replayed {
    pub(crate) profile: String,
    pub(crate) now: Option<(bool, Map<String, Value>)>,
    pub(crate) message: Message,
}

/// A backtest (SPEC §6.8): stored events replayed through a journey on a virtual clock, with
/// the simulation engine; [`Backtest::finish`] fires the timers due by the end of the period and
/// leaves later ones' instances active. Writes and sends nothing.
pub(crate) struct Backtest<'a> {
    world: World<'a>,
    replayed: u64,
}

impl<'a> Backtest<'a> {
    pub(crate) fn new(input: &'a Input, max_active: usize) -> Backtest<'a> {
        Backtest {
            world: World::new(input, max_active),
            replayed: 0,
        }
    }

    /// Replays one stored event, in commit order.
    pub(crate) fn replay(&mut self, e: Replayed) {
        let now = e.message.received_at;
        self.world.fire_until(now);
        if let Some((anonymous, traits)) = e.now {
            self.world
                .profiles
                .entry(e.profile.clone())
                .or_insert_with(|| ProfileState {
                    key: e.profile.clone(),
                    anonymous,
                    traits,
                    ..ProfileState::default()
                });
        }
        self.world.replay(&e.profile, &e.message);
        self.replayed += 1;
    }

    /// How many events went through so far.
    pub(crate) fn replayed(&self) -> u64 {
        self.replayed
    }

    /// Fires the timers due by `end` and says what the journey did.
    pub(crate) fn finish(mut self, end: i64) -> Backtested {
        self.world.fire_until(end);
        let active = self
            .world
            .profiles
            .values()
            .flat_map(|p| p.instances.iter().map(move |i| (p.key.clone(), i.clone())))
            .collect();
        Backtested {
            output: self.world.out,
            events: self.replayed,
            active,
        }
    }
}

/// What a backtest found.
#[derive(Debug, Clone)]
pub(crate) struct Backtested {
    pub(crate) output: Output,
    pub(crate) events: u64,
    /// The instances still active at the end, with their profile.
    pub(crate) active: Vec<(String, crate::engine::Instance)>,
}

impl<'a> World<'a> {
    fn new(input: &'a Input, max_active: usize) -> World<'a> {
        World {
            input,
            catalog: OneJourney(input.journey.clone()),
            ids: Counters {
                caps: input.caps.clone(),
                ..Counters::default()
            },
            max_active,
            profiles: BTreeMap::new(),
            links: HashMap::new(),
            seen: HashMap::new(),
            timers: BinaryHeap::new(),
            out: Output {
                start: input.start,
                ..Output::default()
            },
        }
    }

    /// Applies a stored event to the profile it belongs to now: identity and deduplication were
    /// settled when it was stored, and the profile starts with its traits of today, so an
    /// identify changes nothing. Only events the journey listens to are parsed.
    fn replay(&mut self, key: &str, m: &Message) {
        self.profile(key, m.user_id.is_none());
        let Some(name) = &m.event else { return };
        if !self.catalog.listens_to(name) {
            return;
        }
        let message = m.body();
        let event = EventView {
            name,
            message: &message,
        };
        let now = m.received_at;
        self.run_engine(key, |engine, profile| engine.on_event(profile, &event, now));
    }
}

impl World<'_> {
    fn resolve(&self, id: &str) -> String {
        self.links
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }

    fn profile(&mut self, key: &str, anonymous: bool) -> &mut ProfileState {
        let traits = &self.input.traits;
        self.profiles
            .entry(key.to_string())
            .or_insert_with(|| ProfileState {
                key: key.to_string(),
                anonymous,
                traits: traits.clone(),
                ..ProfileState::default()
            })
    }

    /// Links `id` to the profile `survivor`, as the store does: an id that is a profile of its
    /// own merges into the survivor ([`crate::engine::merge`]), with the ids linked to it; an id
    /// linked elsewhere moves; a new id is linked.
    fn link(&mut self, id: &str, survivor: &str) {
        let current = self.resolve(id);
        if current == survivor {
            return;
        }
        if current == id {
            if let Some(absorbed) = self.profiles.remove(id) {
                let moved: Vec<(i64, i64)> = absorbed
                    .instances
                    .iter()
                    .filter_map(|i| i.due_at.map(|d| (d, i.id)))
                    .collect();
                crate::engine::merge(self.profile(survivor, false), absorbed);
                // Its sends count against the survivor's frequency caps.
                let sends: Vec<_> = self
                    .ids
                    .sent
                    .extract_if(|(profile, _), _| profile == id)
                    .collect();
                for ((_, destination), at) in sends {
                    let sent = self.ids.sent.entry((survivor.to_string(), destination));
                    sent.or_default().extend(at);
                }
                // Their timers now belong to the survivor.
                for (due, id) in moved {
                    self.timers.push(Reverse((due, id, survivor.to_string())));
                }
            }
            for linked in self.links.values_mut() {
                if linked == id {
                    *linked = survivor.to_string();
                }
            }
        }
        self.links.insert(id.to_string(), survivor.to_string());
    }

    fn apply(&mut self, m: &Message) {
        let now = m.received_at;
        if let Some(seen) = self.seen.get(&m.message_id)
            && now - seen < DEDUP_WINDOW_MS
        {
            return;
        }
        self.seen.insert(m.message_id.clone(), now);
        let identity = m.identity();
        let key = self.resolve(identity.id);
        self.profile(&key, !identity.known);
        if let Some(other) = identity.link {
            self.link(other, &key);
        }
        if let Some(traits) = &m.traits {
            let profile = self.profile(&key, !identity.known);
            for (k, v) in traits {
                profile.traits.insert(k.clone(), v.clone());
            }
        }
        let Some(name) = &m.event else { return };
        let message = m.body();
        let event = EventView {
            name,
            message: &message,
        };
        self.run_engine(&key, |engine, profile| {
            engine.on_event(profile, &event, now)
        });
    }

    /// Fires every pending timer due by `until`, across profiles, in due order.
    fn fire_until(&mut self, until: i64) {
        while let Some(Reverse((due, id, _))) = self.timers.peek()
            && *due <= until
        {
            let (due, id) = (*due, *id);
            let Reverse((_, _, key)) = self.timers.pop().expect("peeked");
            let live = self.profiles.get(&key).is_some_and(|p| {
                p.instances
                    .iter()
                    .any(|i| i.id == id && i.due_at == Some(due))
            });
            if live {
                self.run_engine(&key, |engine, profile| {
                    engine.on_timer(profile, id, due);
                });
            }
        }
    }

    fn run_engine(&mut self, key: &str, f: impl FnOnce(&mut Engine, &mut ProfileState)) {
        let profile = self.profiles.get_mut(key).expect("the profile exists");
        let mut engine = Engine::new(&self.catalog, &mut self.ids, self.max_active);
        f(&mut engine, profile);
        self.out.trace.extend(engine.effects.transitions);
        // A send over a frequency cap is in the trace (`capped`) but delivers nothing.
        self.out
            .deliveries
            .extend(engine.effects.deliveries.into_iter().filter(|d| !d.capped));
        profile.instances.retain(|i| i.state == State::Active);
        for inst in &profile.instances {
            if let Some(due) = inst.due_at {
                self.timers.push(Reverse((due, inst.id, key.to_string())));
            }
        }
    }
}

impl Output {
    #[cfg(test)]
    /// One line per transition: `+2h #1 cart-abandonment timeout wait_for_order -> remind`.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.trace
            .iter()
            .map(|t| format!("{} {t}", format_offset(t.at - self.start)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets() {
        for (s, ms) in [
            ("+0s", Some(0)),
            ("90m", Some(5_400_000)),
            ("+2h30m", Some(9_000_000)),
            ("+1500ms", Some(1_500)),
            ("+1m30s250ms", Some(90_250)),
            ("+", None),
            ("+5", None),
            ("+5x", None),
            ("+m", None),
            ("+-5s", None),
            ("+99999999999999999w", None),
        ] {
            assert_eq!(parse_offset(s), ms, "{s}");
        }
    }
}
