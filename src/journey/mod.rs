//! Journey definitions (SPEC §3): the types a journey document parses into, its validation, and the
//! evaluation of conditions. Pure: no IO, no clock, so `journeyd check`, the admin API and the engine
//! all see the same rules.
//!
//! Layout: this file holds the definition types and small helpers; `parse.rs` turns a JSON document
//! into a [`Journey`] while collecting every [`Problem`] with its JSON pointer (with the readers of
//! [`crate::validate`]); `graph.rs` checks step references (dangling, cycles, unreachable steps);
//! `condition.rs` holds [`Condition`] and its evaluation.
//!
//! Helpers:
//! - [`HoldBranch::label`], [`SplitBranch::label`], [`RandomBranch::label`]: the key a branch is
//!   counted under in stats (its `name`, else a hold branch's `event`, else `"branch {index}"` with
//!   the branch's 0-based position, the same index its JSON pointer uses).
//! - [`HoldBranch::context_key`]: the journey-context key a hold branch event is stored under (`as`, else its event).
//! - A send step's `event_name` is already defaulted to the step id by the parser, so callers need not default it.
//! - [`Target::lookup`], [`condition::lookup`]: evaluation helpers.
//! - The limits as constants: [`MAX_STEPS`], [`MAX_BRANCHES`], [`MAX_EXIT_EVENTS`], [`MAX_NAME_CHARS`],
//!   [`MIN_DURATION_MS`], [`MAX_DURATION_MS`].
//!
//! Decisions where the spec is silent: JSON `null` in an optional field means the same as leaving it out
//! (for step references that is the spec's "completes here"); names, events, ids and keys must be
//! non-empty strings (the journey's free-text `name` aside); `"*"` in a send step's `traits` must stand alone;
//! a split path must have a key after `context.`/`traits.`. Unreachable steps are only reported once every
//! step reference resolves and reads, since a typo such as `"remindr"` would otherwise also make its intended
//! target look unreachable. A cycle is reported at the reference that closes it in a depth-first walk from
//! the first step. `equals`/`in` compare JSON values, numbers by value (`1` equals `1.0`).

mod condition;
mod graph;
mod parse;
#[cfg(test)]
mod tests;

pub(crate) use crate::validate::Problem;
pub(crate) use condition::{Condition, all_hold, lookup, same};
#[cfg(test)]
pub(crate) use condition::{Op, Target};

/// At most this many steps in a journey (SPEC §3).
pub(crate) const MAX_STEPS: usize = 50;
/// At most this many branches in one step (SPEC §3).
pub(crate) const MAX_BRANCHES: usize = 9;
/// At most this many exit events (SPEC §3.4).
pub(crate) const MAX_EXIT_EVENTS: usize = 10;
/// The longest journey name, counted in characters rather than bytes so that non-ASCII names are not penalised.
pub(crate) const MAX_NAME_CHARS: usize = 73;
/// The shortest duration a journey may use: `1s`.
pub(crate) const MIN_DURATION_MS: u64 = 1_000;
/// The longest duration a journey may use: `365d`.
pub(crate) const MAX_DURATION_MS: u64 = 365 * 24 * 3_600_000;

/// Where a journey is in its life (SPEC §4): taking entries, paused, or archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Active,
    Paused,
    Archived,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Paused => "paused",
            Status::Archived => "archived",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "active" => Status::Active,
            "paused" => Status::Paused,
            "archived" => Status::Archived,
            _ => return None,
        })
    }
}

/// A validated journey definition. Every step reference in it names an existing step, the steps form
/// a DAG, and there is at least one step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Journey {
    pub(crate) id: String,
    /// The document's `name`, or the id when it has none.
    pub(crate) name: String,
    pub(crate) entry: Entry,
    pub(crate) exit: Exit,
    pub(crate) steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) event: String,
    /// JSON `where`; empty when absent.
    pub(crate) conditions: Vec<Condition>,
    pub(crate) reentry: Reentry,
    pub(crate) unique_by: Option<String>,
}

/// When a trigger event may start a new instance (SPEC §3, `entry.reentry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Reentry {
    /// `"every_time"`: every trigger starts an instance.
    #[default]
    EveryTime,
    /// `"if_not_active"`: only when the profile has no active instance of this journey.
    IfNotActive,
    /// `"once"`: once per profile, ever, for this journey id.
    Once,
}

/// Exit rules (SPEC §3.4); the default (no events, no send) when the document has no `exit`.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Exit {
    pub(crate) events: Vec<ExitEvent>,
    /// The id of a `send` step to run once when an exit rule ends an instance.
    pub(crate) send: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExitEvent {
    pub(crate) event: String,
    /// JSON `where`; empty when absent.
    pub(crate) conditions: Vec<Condition>,
    /// Ends only the instance whose `unique_by` value the event carries (SPEC §3.4); otherwise
    /// every active instance of the journey for the profile.
    pub(crate) match_unique_by: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Step {
    pub(crate) id: String,
    pub(crate) kind: StepKind,
}

/// What a step does (SPEC §3.2). Every `Option<String>` step reference is `None` when the instance
/// completes there. Durations are milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StepKind {
    HoldUntil {
        branches: Vec<HoldBranch>,
        max_hold: Option<u64>,
        on_timeout: Option<String>,
    },
    /// Waits `duration`, or until the time an event in the context names (`until`), with
    /// `duration` as the fallback when that time is missing or unreadable (SPEC §3.2).
    Delay {
        duration: Option<u64>,
        until: Option<Until>,
        next: Option<String>,
    },
    Split {
        branches: Vec<SplitBranch>,
        /// JSON `else`.
        otherwise: Option<String>,
    },
    RandomSplit {
        branches: Vec<RandomBranch>,
        sticky: bool,
    },
    Send {
        destination: String,
        /// Already defaulted to the step id when the document leaves it out.
        event_name: String,
        /// Trait names to copy from the profile; `["*"]` means all of them.
        traits: Vec<String>,
        /// A JSON object template (SPEC §5), or `None` for the default payload.
        mapping: Option<serde_json::Value>,
        /// When the send may go out, in the person's time (SPEC §3.5).
        window: Option<Window>,
        next: Option<String>,
    },
}

/// A contextual delay's target: an ISO 8601 time found at a context path, plus an offset.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Until {
    /// The path, resolved against the journey's context keys: `["context", key, rest...]`.
    pub(crate) path: Vec<String>,
    /// Milliseconds added to the time found (negative: before it).
    pub(crate) offset_ms: i64,
}

/// A send window (SPEC §3.5): the days and local hours a send may go out, in a time zone.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Window {
    /// Monday first.
    pub(crate) days: [bool; 7],
    /// Minutes after local midnight: the window is `[from, to)`.
    pub(crate) from: u32,
    pub(crate) to: u32,
    pub(crate) time_zone: ZoneSource,
    /// The zone when `time_zone` names none, or one that is not known (default UTC).
    pub(crate) default_time_zone: chrono_tz::Tz,
}

/// Where a window's time zone comes from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ZoneSource {
    /// The default zone.
    Default,
    /// An IANA zone named in the definition.
    Named(chrono_tz::Tz),
    /// A path into the profile's traits (`traits.timezone`) or the context, to a zone name.
    Path(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HoldBranch {
    pub(crate) name: Option<String>,
    pub(crate) event: String,
    /// JSON `where`; empty when absent.
    pub(crate) conditions: Vec<Condition>,
    /// When true the branch restarts the hold instead of leaving it; `next` is then always `None`.
    pub(crate) reset_timer: bool,
    /// JSON `as`: the context key the event is stored under.
    pub(crate) as_key: Option<String>,
    pub(crate) next: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SplitBranch {
    pub(crate) name: Option<String>,
    /// Path conditions over `context.` and `traits.`; an empty list always holds.
    pub(crate) conditions: Vec<Condition>,
    pub(crate) next: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RandomBranch {
    pub(crate) name: Option<String>,
    /// 0 to 100; the branches of one step total exactly 100.
    pub(crate) percent: u32,
    pub(crate) next: Option<String>,
}

/// Parses and validates a journey document. On failure returns every problem found, not just the
/// first, each with its JSON pointer, roughly in document order (graph problems, which need the
/// whole document, come after the problems of the fields themselves).
pub(crate) fn parse(doc: &serde_json::Value) -> Result<Journey, Vec<Problem>> {
    parse::parse(doc)
}

/// Parses a duration: a whole number and a unit `s`, `m`, `h`, `d` or `w` (`"90m"` is 5_400_000 ms).
/// `None` when malformed or too large for a u64. The 1s..=365d range is a validation rule, not a
/// syntax rule, so `"0s"` parses here and is rejected by [`parse`].
pub(crate) fn parse_duration(s: &str) -> Option<u64> {
    let unit_ms: u64 = match s.chars().last()? {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        'w' => 604_800_000,
        _ => return None,
    };
    let digits = &s[..s.len() - 1];
    // `u64::from_str` would also accept a leading `+`; the spec's format is digits only.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(unit_ms)
}

/// `+90m`, `+2h30m`, `+1500ms` (the `+` optional) to milliseconds; `None` when malformed or
/// too large.
pub(crate) fn parse_offset(s: &str) -> Option<i64> {
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return None;
    }
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = [
            ("ms", 1),
            ("s", 1_000),
            ("m", 60_000),
            ("h", 3_600_000),
            ("d", 86_400_000),
            ("w", 604_800_000),
        ]
        .into_iter()
        .find(|(u, _)| rest.starts_with(u))
        .map(|(u, size)| (size, u.len()))?;
        rest = &rest[len..];
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    Some(total)
}

/// A signed offset: `-1h`, `+30m`, `2h30m` (no sign: after).
pub(crate) fn parse_signed_offset(s: &str) -> Option<i64> {
    match s.strip_prefix('-') {
        Some(rest) if !rest.starts_with(['+', '-']) => parse_offset(rest).map(|ms| -ms),
        _ => parse_offset(s),
    }
}

impl Journey {
    /// The step with this id.
    pub(crate) fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|step| step.id == id)
    }

    /// The step an instance starts at. Always `Some` for a journey that came out of [`parse`].
    pub(crate) fn first_step(&self) -> Option<&Step> {
        self.steps.first()
    }

    /// Whether a step draws a random-split branch (the draw depends on the entry's ordinal).
    pub(crate) fn has_random_split(&self) -> bool {
        self.steps
            .iter()
            .any(|step| matches!(step.kind, StepKind::RandomSplit { .. }))
    }

    /// Every destination id named by a send step, each once, in step order (for the API's
    /// "destination must exist" check and for refusing to delete a destination in use).
    pub(crate) fn destinations(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for step in &self.steps {
            if let StepKind::Send { destination, .. } = &step.kind
                && !out.contains(&destination.as_str())
            {
                out.push(destination);
            }
        }
        out
    }
}

impl HoldBranch {
    /// The key this branch is counted under in stats: its `name`, else its `event`.
    pub(crate) fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.event.clone())
    }

    /// The journey-context key the branch's event is stored under (SPEC §3.3): `as`, else the event name.
    pub(crate) fn context_key(&self) -> &str {
        self.as_key.as_deref().unwrap_or(&self.event)
    }
}

impl SplitBranch {
    /// The key this branch is counted under in stats: its `name`, else `"branch {index}"` where
    /// `index` is the branch's 0-based position in the step.
    pub(crate) fn label(&self, index: usize) -> String {
        branch_label(&self.name, index)
    }
}

impl RandomBranch {
    /// The key this branch is counted under in stats: its `name`, else `"branch {index}"` where
    /// `index` is the branch's 0-based position in the step.
    pub(crate) fn label(&self, index: usize) -> String {
        branch_label(&self.name, index)
    }
}

fn branch_label(name: &Option<String>, index: usize) -> String {
    name.clone().unwrap_or_else(|| format!("branch {index}"))
}
