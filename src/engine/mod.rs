//! The journey engine (SPEC §3-4): what an event or a due timer does to one profile's journey
//! instances. Pure: no IO and no clock. The caller passes the time, the profile's state as loaded
//! from the store (or the simulator's memory), the journey catalog and an id source; the engine
//! changes that state in place and returns the [`Effect`]s (transitions and deliveries) the caller
//! must persist in the same transaction.
//!
//! The live path and the simulator call the same functions, so a journey behaves the same in both.

mod payload;
pub(crate) mod stats;
#[cfg(test)]
mod tests;
mod window;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::journey::{Journey, Reentry, StepKind, all_hold};

pub(crate) use payload::render_mapping;

/// A `reset_timer` branch restarts a hold at most this many times per instance (SPEC §3.2).
pub(crate) const MAX_RESETS: u32 = 100;
/// Default cap on active instances per profile across all journeys (SPEC §4).
pub(crate) const DEFAULT_MAX_ACTIVE: usize = 25;

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Active,
    Completed,
    Exited,
    Archived,
}

impl State {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Completed => "completed",
            State::Exited => "exited",
            State::Archived => "archived",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<State> {
        Some(match s {
            "active" => State::Active,
            "completed" => State::Completed,
            "exited" => State::Exited,
            "archived" => State::Archived,
            _ => return None,
        })
    }
}

/// One instance of a journey for one profile.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Instance {
    pub(crate) id: i64,
    pub(crate) journey_id: String,
    pub(crate) version: i64,
    pub(crate) state: State,
    /// The step it waits at (hold or delay) or, once ended, the last step it reached.
    pub(crate) step: Option<String>,
    /// The entry event's `unique_by` property value, when the journey has one.
    pub(crate) unique_value: Option<Value>,
    /// Journey context (SPEC §3.3): key to event properties.
    pub(crate) context: Map<String, Value>,
    /// How often a `reset_timer` branch restarted a hold of this instance.
    pub(crate) resets: u32,
    /// When its timer falls due, while it waits at a hold with `max_hold` or at a delay.
    pub(crate) due_at: Option<i64>,
    pub(crate) entered_at: i64,
    /// Which entry of this profile into this journey it is (1, 2, ...): seeds random splits so that
    /// a live run and a simulation of the same inputs pick the same branches.
    pub(crate) ordinal: i64,
    /// Set when the engine changed it: the caller writes dirty instances back.
    pub(crate) dirty: bool,
    /// Set when the engine changed `context` (a new instance, or a hold branch keeping its
    /// event's properties): the caller rewrites a stored context only then.
    pub(crate) context_changed: bool,
    /// `context` as JSON text, when known: as stored (the caller loads it), or as serialised for
    /// a payload. A change to `context` clears it; a send and the caller's write of a changed
    /// context then serialise it once between them.
    pub(crate) context_text: Option<String>,
}

/// What a profile remembers about one journey beyond its instances.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Memory {
    /// How many instances of the journey the profile entered (for `reentry: once`, and as the
    /// ordinal of random-split draws): every entry while the journey's version has a random
    /// split, otherwise only the first (see `Engine::entry`).
    pub(crate) entries: i64,
    /// Branch index per `random_split` step id, for `sticky: true`.
    pub(crate) sticky: BTreeMap<String, usize>,
    pub(crate) dirty: bool,
}

impl Memory {
    /// Takes over what another profile remembers of the same journey, when the two profiles
    /// merge: entries add up (so `once` holds if either entered, and new entries get fresh
    /// ordinals); a sticky branch the survivor has wins, the other's fill the rest.
    pub(crate) fn absorb(&mut self, other: &Memory) {
        self.entries += other.entries;
        for (step, branch) in &other.sticky {
            self.sticky.entry(step.clone()).or_insert(*branch);
        }
        self.dirty = true;
    }
}

/// Merges profile `absorbed` into `survivor` (SPEC §2 Identity): traits fill the keys the
/// survivor lacks; active instances, with their timers, and journey memory move to it. Nothing
/// ends and nothing is duplicated: two active instances of one journey both go on. The store
/// does the same in SQL; the simulator calls this.
pub(crate) fn merge(survivor: &mut ProfileState, absorbed: ProfileState) {
    for (k, v) in absorbed.traits {
        survivor.traits.entry(k).or_insert(v);
    }
    survivor.instances.extend(
        absorbed
            .instances
            .into_iter()
            .filter(|i| i.state == State::Active),
    );
    survivor.instances.sort_by_key(|i| i.id);
    for (journey, memory) in absorbed.memory {
        survivor.memory.entry(journey).or_default().absorb(&memory);
    }
}

/// The part of one profile's state the engine reads and changes.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProfileState {
    pub(crate) key: String,
    /// Whether the key is an anonymousId (no userId known): deliveries then carry `anonymousId`.
    pub(crate) anonymous: bool,
    pub(crate) traits: Map<String, Value>,
    /// Its active instances (and, after a call, the ones that call ended).
    pub(crate) instances: Vec<Instance>,
    /// Per journey id.
    pub(crate) memory: BTreeMap<String, Memory>,
}

/// The journey definitions the engine may use.
pub(crate) trait Catalog {
    /// A version of a journey (instances stay on the version they entered).
    fn version(&self, journey_id: &str, version: i64) -> Option<Arc<Journey>>;
    /// The journeys whose trigger is `event` (newest version), in a stable order, each with
    /// whether it takes entries now (a paused journey does not).
    fn entries_for(&self, event: &str) -> Vec<(i64, Arc<Journey>, bool)>;
}

/// What the engine asks of the world it runs in: new ids (the store's sequences live, counters
/// in a simulation), and the frequency caps of destinations (SPEC §3.5), counted by whoever
/// holds the sends of the profile.
pub(crate) trait Ledger {
    fn instance_id(&mut self) -> i64;
    /// The id of the delivery a send step writes for an instance: a function of the instance,
    /// the step, and whether it is the exit send, so that a step run again (after a crash or a
    /// restore) writes the same id (SPEC invariant 9).
    fn delivery_id(&mut self, instance: i64, step: &str, exit: bool) -> String;
    /// Whether one more send to `destination` for the profile at `at` stays within the
    /// destination's frequency cap; when it does, the send is counted.
    fn allow_send(&mut self, profile: &str, destination: &str, at: i64) -> bool;
}

/// What happened, in order, to record in the timeline, count in stats and show in traces.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Transition {
    pub(crate) at: i64,
    /// `None` for a skipped entry, which made no instance.
    pub(crate) instance: Option<i64>,
    pub(crate) journey_id: String,
    pub(crate) version: i64,
    pub(crate) what: What,
    pub(crate) step: Option<String>,
    /// The branch label, destination, or next step, depending on `what`.
    pub(crate) detail: Option<String>,
}

/// The kinds of transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum What {
    /// Entered the journey.
    Entered,
    /// An entry refused by the per-profile cap.
    Skipped,
    /// Reached a step.
    Step,
    /// Took a branch of a hold or split (detail: its label).
    Branch,
    /// A hold's `max_hold` passed.
    Timeout,
    /// A delay's duration passed.
    Timer,
    /// A `reset_timer` branch restarted a hold (detail: its label).
    Reset,
    /// A send step wrote a delivery (detail: the destination).
    Send,
    /// A send step reached outside its send window: the instance waits there (detail: when the
    /// window opens).
    Window,
    /// A send step's delivery was over the destination's frequency cap: recorded, not sent
    /// (detail: the destination).
    Capped,
    Completed,
    Exited,
    Archived,
    /// A trigger event that started no instance (detail: the reason); traced in simulations,
    /// not stored.
    NotEntered,
    /// An exit event that ended no instance (detail: the event); traced in simulations, not
    /// stored.
    ExitUnmatched,
}

impl What {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            What::Entered => "entered",
            What::Skipped => "skipped",
            What::Step => "step",
            What::Branch => "branch",
            What::Timeout => "timeout",
            What::Timer => "timer",
            What::Reset => "reset",
            What::Send => "send",
            What::Window => "window",
            What::Capped => "capped",
            What::Completed => "completed",
            What::Exited => "exited",
            What::Archived => "archived",
            What::NotEntered => "not_entered",
            What::ExitUnmatched => "exit_unmatched",
        }
    }

    /// Whether it only explains a simulation (and is neither stored nor counted).
    pub(crate) fn is_note(self) -> bool {
        matches!(self, What::NotEntered | What::ExitUnmatched)
    }

    pub(crate) fn parse(s: &str) -> Option<What> {
        Some(match s {
            "entered" => What::Entered,
            "skipped" => What::Skipped,
            "step" => What::Step,
            "branch" => What::Branch,
            "timeout" => What::Timeout,
            "timer" => What::Timer,
            "reset" => What::Reset,
            "send" => What::Send,
            "window" => What::Window,
            "capped" => What::Capped,
            "completed" => What::Completed,
            "exited" => What::Exited,
            "archived" => What::Archived,
            "not_entered" => What::NotEntered,
            "exit_unmatched" => What::ExitUnmatched,
            _ => return None,
        })
    }
}

impl fmt::Display for Transition {
    /// The trace form used by tests: `#1 cart-abandonment step wait_for_order`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.instance {
            Some(id) => write!(f, "#{id} {}", self.journey_id)?,
            None => write!(f, "- {}", self.journey_id)?,
        }
        write!(f, " {}", self.what.as_str())?;
        if let Some(step) = &self.step {
            write!(f, " {step}")?;
        }
        if let Some(detail) = &self.detail {
            write!(f, " -> {detail}")?;
        }
        Ok(())
    }
}

/// A payload to deliver, written to the outbox in the same transaction.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Delivery {
    pub(crate) id: String,
    pub(crate) at: i64,
    pub(crate) instance_id: i64,
    pub(crate) journey_id: String,
    pub(crate) step_id: String,
    pub(crate) destination: String,
    /// The payload as JSON text: what the outbox stores and the destination receives.
    pub(crate) payload: String,
    /// Over the destination's frequency cap: recorded, not sent.
    pub(crate) capped: bool,
}

impl Delivery {
    /// The payload as a JSON value (a simulation's answer shows it so).
    pub(crate) fn payload_value(&self) -> Value {
        serde_json::from_str(&self.payload).expect("the engine writes JSON")
    }
}

/// Everything one call produced, in order.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Effects {
    pub(crate) transitions: Vec<Transition>,
    pub(crate) deliveries: Vec<Delivery>,
}

/// An incoming event as the engine sees it.
pub(crate) struct EventView<'a> {
    /// The event name: a track call's `event`; other call types never trigger journeys.
    pub(crate) name: &'a str,
    /// The stored message; `property` conditions look in its `properties`, `path` ones at its root.
    pub(crate) message: &'a Value,
}

impl EventView<'_> {
    fn properties(&self) -> Value {
        self.message
            .get("properties")
            .filter(|p| p.is_object())
            .cloned()
            .unwrap_or_else(|| json!({}))
    }
}

/// The engine for one call: its inputs and the effects it has produced so far.
pub(crate) struct Engine<'a> {
    pub(crate) catalog: &'a dyn Catalog,
    pub(crate) ids: &'a mut dyn Ledger,
    pub(crate) max_active: usize,
    pub(crate) effects: Effects,
}

impl<'a> Engine<'a> {
    pub(crate) fn new(
        catalog: &'a dyn Catalog,
        ids: &'a mut dyn Ledger,
        max_active: usize,
    ) -> Engine<'a> {
        Engine {
            catalog,
            ids,
            max_active,
            effects: Effects::default(),
        }
    }

    /// Applies one event at `now` (SPEC §4): first the profile's timers already due by `now` fire,
    /// so the outcome does not depend on how late the scheduler is; then exit rules, then holds,
    /// then entries. An instance the event starts does not also take it as a hold event.
    pub(crate) fn on_event(&mut self, profile: &mut ProfileState, event: &EventView, now: i64) {
        self.fire_due(profile, now);
        let existing = profile.instances.len();
        // Exit events per journey version that carries them, and whether one ended anything.
        let mut exits: Vec<(String, i64, bool)> = Vec::new();
        for i in 0..existing {
            if let Some(key) = self.exit_rules(profile, i, event, now) {
                match exits
                    .iter_mut()
                    .find(|(j, v, _)| *j == key.0 && *v == key.1)
                {
                    Some(e) => e.2 |= key.2,
                    None => exits.push(key),
                }
            }
        }
        for (journey_id, version, ended) in exits {
            if !ended {
                self.note(now, journey_id, version, What::ExitUnmatched, event.name);
            }
        }
        for i in 0..existing {
            self.hold_event(profile, i, event, now);
        }
        for (version, journey, accepting) in self.catalog.entries_for(event.name) {
            if accepting {
                self.entry(profile, &journey, version, event, now);
            } else {
                self.note(now, journey.id.clone(), version, What::NotEntered, "paused");
            }
        }
    }

    /// Records why an event did nothing, for simulation traces.
    fn note(&mut self, at: i64, journey_id: String, version: i64, what: What, detail: &str) {
        self.effects.transitions.push(Transition {
            at,
            instance: None,
            journey_id,
            version,
            what,
            step: None,
            detail: Some(detail.to_string()),
        });
    }

    /// Fires every timer of the profile due at or before `now`, earliest first, each at its own
    /// due time.
    pub(crate) fn fire_due(&mut self, profile: &mut ProfileState, now: i64) {
        loop {
            let next = profile
                .instances
                .iter()
                .enumerate()
                .filter(|(_, i)| i.state == State::Active)
                .filter_map(|(n, i)| i.due_at.filter(|d| *d <= now).map(|d| (d, i.id, n)))
                .min();
            let Some((due, _, index)) = next else { break };
            self.fire(profile, index, due);
        }
    }

    /// Fires the timer of instance `id` if it is due by `now`; returns whether it fired.
    pub(crate) fn on_timer(&mut self, profile: &mut ProfileState, id: i64, now: i64) -> bool {
        let Some(index) = profile.instances.iter().position(|i| i.id == id) else {
            return false;
        };
        let inst = &profile.instances[index];
        match inst.due_at {
            Some(due) if inst.state == State::Active && due <= now => {
                self.fire(profile, index, due);
                true
            }
            _ => false,
        }
    }

    fn fire(&mut self, profile: &mut ProfileState, index: usize, due: i64) {
        let Some(journey) = self.journey_of(&profile.instances[index]) else {
            profile.instances[index].due_at = None;
            profile.instances[index].dirty = true;
            return;
        };
        let inst = &mut profile.instances[index];
        inst.due_at = None;
        inst.dirty = true;
        let step_id = inst.step.clone().unwrap_or_default();
        let next = match journey.step(&step_id).map(|s| &s.kind) {
            Some(StepKind::HoldUntil { on_timeout, .. }) => {
                self.transition(inst, due, What::Timeout, Some(&step_id), on_timeout.clone());
                on_timeout.clone()
            }
            Some(StepKind::Delay { next, .. }) => {
                self.transition(inst, due, What::Timer, Some(&step_id), next.clone());
                next.clone()
            }
            // The send window opened: send, then go on.
            Some(StepKind::Send { next, .. }) => {
                self.transition(inst, due, What::Timer, Some(&step_id), next.clone());
                let next = next.clone();
                self.send(profile, index, &journey, &step_id, due, false);
                next
            }
            // A timer on a step that no longer waits cannot happen with a valid definition.
            _ => return,
        };
        self.advance(profile, index, &journey, next, due);
    }

    fn journey_of(&self, inst: &Instance) -> Option<Arc<Journey>> {
        self.catalog.version(&inst.journey_id, inst.version)
    }

    /// The journey version of an instance that an event may still move: an active one.
    fn active_journey(&self, inst: &Instance) -> Option<Arc<Journey>> {
        (inst.state == State::Active)
            .then(|| self.journey_of(inst))
            .flatten()
    }

    /// Whether an event reaches an instance under `unique_by` (SPEC §3: same value, same property).
    fn reaches(journey: &Journey, inst: &Instance, event: &EventView) -> bool {
        match &journey.entry.unique_by {
            None => true,
            Some(prop) => {
                let value = event.message.get("properties").and_then(|p| p.get(prop));
                match (value, &inst.unique_value) {
                    (Some(v), Some(u)) => crate::journey::same(v, u),
                    _ => false,
                }
            }
        }
    }

    /// Applies the exit rules of instance `index`'s journey to `event` (SPEC §3.4): by default
    /// an exit event ends every active instance of the journey for the profile; one with
    /// `match_unique_by` only the instance whose `unique_by` value it carries. Returns, when the
    /// event is an exit event of that journey, the journey version and whether it ended this
    /// instance.
    fn exit_rules(
        &mut self,
        profile: &mut ProfileState,
        index: usize,
        event: &EventView,
        now: i64,
    ) -> Option<(String, i64, bool)> {
        let inst = &profile.instances[index];
        let journey = self.active_journey(inst)?;
        let rules: Vec<&crate::journey::ExitEvent> = journey
            .exit
            .events
            .iter()
            .filter(|e| e.event == event.name && all_hold(&e.conditions, event.message))
            .collect();
        if rules.is_empty() {
            return None;
        }
        let key = (inst.journey_id.clone(), inst.version);
        let ends = rules
            .iter()
            .any(|e| !e.match_unique_by || Self::reaches(&journey, inst, event));
        if !ends {
            return Some((key.0, key.1, false));
        }
        let inst = &mut profile.instances[index];
        inst.state = State::Exited;
        inst.due_at = None;
        inst.dirty = true;
        let step = inst.step.clone();
        self.transition(inst, now, What::Exited, step.as_deref(), None);
        if let Some(send) = &journey.exit.send {
            // The exit send counts as reached; the instance stays where it exited.
            self.transition(&profile.instances[index], now, What::Step, Some(send), None);
            self.send(profile, index, &journey, send, now, true);
        }
        Some((key.0, key.1, true))
    }

    fn hold_event(
        &mut self,
        profile: &mut ProfileState,
        index: usize,
        event: &EventView,
        now: i64,
    ) {
        let inst = &profile.instances[index];
        let Some(journey) = self.active_journey(inst) else {
            return;
        };
        let step_id = inst.step.clone().unwrap_or_default();
        let Some(StepKind::HoldUntil {
            branches, max_hold, ..
        }) = journey.step(&step_id).map(|s| &s.kind)
        else {
            return;
        };
        if !Self::reaches(&journey, inst, event) {
            return;
        }
        let resets = inst.resets;
        let Some(branch) = branches.iter().find(|b| {
            b.event == event.name
                && !(b.reset_timer && resets >= MAX_RESETS)
                && all_hold(&b.conditions, event.message)
        }) else {
            return;
        };
        let inst = &mut profile.instances[index];
        inst.context
            .insert(branch.context_key().to_string(), event.properties());
        inst.dirty = true;
        inst.context_changed = true;
        inst.context_text = None;
        if branch.reset_timer {
            inst.resets += 1;
            inst.due_at = max_hold.map(|ms| now + ms as i64);
            self.transition(inst, now, What::Reset, Some(&step_id), Some(branch.label()));
            return;
        }
        inst.due_at = None;
        self.transition(
            inst,
            now,
            What::Branch,
            Some(&step_id),
            Some(branch.label()),
        );
        let next = branch.next.clone();
        self.advance(profile, index, &journey, next, now);
    }

    fn entry(
        &mut self,
        profile: &mut ProfileState,
        journey: &Arc<Journey>,
        version: i64,
        event: &EventView,
        now: i64,
    ) {
        let entry = &journey.entry;
        if entry.event != event.name {
            return;
        }
        let not_entered = |engine: &mut Self, reason| {
            engine.note(now, journey.id.clone(), version, What::NotEntered, reason)
        };
        if !all_hold(&entry.conditions, event.message) {
            return not_entered(self, "where");
        }
        let active = |p: &ProfileState| {
            p.instances
                .iter()
                .filter(|i| i.state == State::Active && i.journey_id == journey.id)
                .count()
        };
        let unique_value = match &entry.unique_by {
            None => None,
            Some(prop) => match event.message.get("properties").and_then(|p| p.get(prop)) {
                // A trigger without the unique_by property cannot be told apart: it does not enter.
                None | Some(Value::Null) => return not_entered(self, "missing_unique_by"),
                Some(v) => Some(v.clone()),
            },
        };
        if let Some(v) = &unique_value
            && profile.instances.iter().any(|i| {
                i.state == State::Active
                    && i.journey_id == journey.id
                    && i.unique_value
                        .as_ref()
                        .is_some_and(|u| crate::journey::same(u, v))
            })
        {
            return not_entered(self, "unique_by");
        }
        let entered_before = profile
            .memory
            .get(&journey.id)
            .is_some_and(|m| m.entries > 0);
        match entry.reentry {
            Reentry::EveryTime => {}
            Reentry::IfNotActive if active(profile) > 0 => return not_entered(self, "reentry"),
            Reentry::IfNotActive => {}
            Reentry::Once if entered_before => return not_entered(self, "reentry"),
            Reentry::Once => {}
        }
        let all_active = profile
            .instances
            .iter()
            .filter(|i| i.state == State::Active)
            .count();
        if all_active >= self.max_active {
            self.effects.transitions.push(Transition {
                at: now,
                instance: None,
                journey_id: journey.id.clone(),
                version,
                what: What::Skipped,
                step: None,
                detail: Some(format!("{} active instances", all_active)),
            });
            return;
        }
        // Entries are counted for `once` (was there a first one?) and for random splits (the
        // draw's ordinal): a journey with no random split counts only a person's first entry, so
        // that entering it again writes no journey memory (issue 15).
        let memory = profile.memory.entry(journey.id.clone()).or_default();
        if memory.entries == 0 || journey.has_random_split() {
            memory.entries += 1;
            memory.dirty = true;
        }
        let ordinal = memory.entries;
        let mut context = Map::new();
        context.insert(entry.event.clone(), event.properties());
        let inst = Instance {
            id: self.ids.instance_id(),
            journey_id: journey.id.clone(),
            version,
            state: State::Active,
            step: None,
            unique_value,
            context,
            resets: 0,
            due_at: None,
            entered_at: now,
            ordinal,
            dirty: true,
            context_changed: true,
            context_text: None,
        };
        self.transition(&inst, now, What::Entered, None, None);
        profile.instances.push(inst);
        let index = profile.instances.len() - 1;
        let first = journey.first_step().map(|s| s.id.clone());
        self.advance(profile, index, journey, first, now);
    }

    /// Runs steps from `next` until the instance waits (hold, delay) or completes.
    fn advance(
        &mut self,
        profile: &mut ProfileState,
        index: usize,
        journey: &Journey,
        mut next: Option<String>,
        at: i64,
    ) {
        // Steps form a DAG of at most 50 steps, so this loop ends; the bound guards bad input.
        for _ in 0..=journey.steps.len() {
            let Some(step_id) = next.take() else {
                let inst = &mut profile.instances[index];
                inst.state = State::Completed;
                inst.due_at = None;
                inst.dirty = true;
                let step = inst.step.clone();
                self.transition(inst, at, What::Completed, step.as_deref(), None);
                return;
            };
            let Some(step) = journey.step(&step_id) else {
                return;
            };
            {
                let inst = &mut profile.instances[index];
                inst.step = Some(step_id.clone());
                inst.dirty = true;
                self.transition(inst, at, What::Step, Some(&step_id), None);
            }
            match &step.kind {
                StepKind::HoldUntil { max_hold, .. } => {
                    profile.instances[index].due_at = max_hold.map(|ms| at + ms as i64);
                    return;
                }
                StepKind::Delay {
                    duration,
                    until,
                    next: to,
                } => {
                    // A contextual time that has passed continues at once; a missing or
                    // unreadable one falls back to the duration, and without one to that too.
                    let target = until.as_ref().and_then(|u| {
                        window::until(
                            &u.path,
                            u.offset_ms,
                            &Self::root(&profile.instances[index], profile),
                        )
                    });
                    let due = match (target, duration) {
                        (Some(t), _) => Some(t),
                        (None, Some(d)) => Some(at + *d as i64),
                        (None, None) => None,
                    };
                    match due.filter(|d| *d > at) {
                        Some(due) => {
                            profile.instances[index].due_at = Some(due);
                            return;
                        }
                        None => {
                            self.transition(
                                &profile.instances[index],
                                at,
                                What::Timer,
                                Some(&step_id),
                                to.clone(),
                            );
                            next = to.clone();
                            continue;
                        }
                    }
                }
                StepKind::Split {
                    branches,
                    otherwise,
                } => {
                    let root = Self::root(&profile.instances[index], profile);
                    let taken = branches
                        .iter()
                        .enumerate()
                        .find(|(_, b)| all_hold(&b.conditions, &root));
                    let (label, to) = match taken {
                        Some((n, b)) => (b.label(n), b.next.clone()),
                        None => ("else".to_string(), otherwise.clone()),
                    };
                    self.transition(
                        &profile.instances[index],
                        at,
                        What::Branch,
                        Some(&step_id),
                        Some(label),
                    );
                    next = to;
                }
                StepKind::RandomSplit { branches, sticky } => {
                    let n = self.pick(profile, index, journey, &step_id, branches, *sticky);
                    let label = branches[n].label(n);
                    self.transition(
                        &profile.instances[index],
                        at,
                        What::Branch,
                        Some(&step_id),
                        Some(label),
                    );
                    next = branches[n].next.clone();
                }
                StepKind::Send {
                    next: to, window, ..
                } => {
                    if let Some(window) = window {
                        let root = Self::root(&profile.instances[index], profile);
                        let tz = window::zone(window, &root);
                        if let Some(opening) = window::next_opening(window, tz, at) {
                            let inst = &mut profile.instances[index];
                            inst.due_at = Some(opening);
                            let when = crate::clock::Timestamp(opening).to_string();
                            self.transition(inst, at, What::Window, Some(&step_id), Some(when));
                            return;
                        }
                    }
                    self.send(profile, index, journey, &step_id, at, false);
                    next = to.clone();
                }
            }
        }
    }

    /// What paths in splits, send windows and contextual delays read: `{"context", "traits"}`.
    fn root(inst: &Instance, profile: &ProfileState) -> Value {
        json!({
            "context": Value::Object(inst.context.clone()),
            "traits": Value::Object(profile.traits.clone()),
        })
    }

    /// Picks a random-split branch by weight. The draw is a hash of the profile, journey, step and
    /// entry ordinal: deterministic, so a simulation picks what the live engine picks.
    fn pick(
        &mut self,
        profile: &mut ProfileState,
        index: usize,
        journey: &Journey,
        step_id: &str,
        branches: &[crate::journey::RandomBranch],
        sticky: bool,
    ) -> usize {
        if sticky
            && let Some(&n) = profile
                .memory
                .get(&journey.id)
                .and_then(|m| m.sticky.get(step_id))
            && n < branches.len()
        {
            return n;
        }
        let seed = format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}",
            profile.key, journey.id, step_id, profile.instances[index].ordinal
        );
        let draw = (fnv1a(seed.as_bytes()) % 100) as u32;
        let mut total = 0;
        let mut chosen = branches.len() - 1;
        for (n, b) in branches.iter().enumerate() {
            total += b.percent;
            if draw < total {
                chosen = n;
                break;
            }
        }
        if sticky {
            let memory = profile.memory.entry(journey.id.clone()).or_default();
            memory.sticky.insert(step_id.to_string(), chosen);
            memory.dirty = true;
        }
        chosen
    }

    /// Writes the delivery of a send step (SPEC §5's default payload, or its mapping).
    fn send(
        &mut self,
        profile: &mut ProfileState,
        index: usize,
        journey: &Journey,
        step_id: &str,
        at: i64,
        exit: bool,
    ) {
        let Some(StepKind::Send {
            destination,
            event_name,
            traits,
            mapping,
            ..
        }) = journey.step(step_id).map(|s| &s.kind)
        else {
            return;
        };
        let inst = &mut profile.instances[index];
        let id = self.ids.delivery_id(inst.id, step_id, exit);
        inst.context_text.get_or_insert_with(|| {
            serde_json::to_string(&inst.context).expect("a JSON map serialises")
        });
        let inst = &profile.instances[index];
        let payload = payload::default_payload(profile, inst, step_id, event_name, traits, &id, at);
        let payload = match mapping {
            Some(template) => {
                let value = serde_json::from_str(&payload).expect("the default payload is JSON");
                render_mapping(template, &value).to_string()
            }
            None => payload,
        };
        // Over the destination's frequency cap, the delivery is recorded as capped and not
        // sent; the instance goes on either way.
        let capped = !self.ids.allow_send(&profile.key, destination, at);
        let what = if capped { What::Capped } else { What::Send };
        self.transition(inst, at, what, Some(step_id), Some(destination.clone()));
        self.effects.deliveries.push(Delivery {
            id,
            at,
            instance_id: inst.id,
            journey_id: inst.journey_id.clone(),
            step_id: step_id.to_string(),
            destination: destination.clone(),
            payload,
            capped,
        });
    }

    fn transition(
        &mut self,
        inst: &Instance,
        at: i64,
        what: What,
        step: Option<&str>,
        detail: Option<String>,
    ) {
        self.effects.transitions.push(Transition {
            at,
            instance: Some(inst.id),
            journey_id: inst.journey_id.clone(),
            version: inst.version,
            what,
            step: step.map(str::to_string),
            detail,
        });
    }
}

/// FNV-1a, 64 bits: a small stable hash (std's hasher is randomly seeded per process).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}
