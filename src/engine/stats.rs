//! Journey stats (SPEC §6 `GET /v1/journeys/{id}/stats`) as counters derived from transitions.
//! Pure: the one place that says how a transition moves the counters; the store adds the deltas
//! up in the transaction of the transitions, and the API reads the counters back.

use super::{Transition, What};
use crate::journey::{Journey, StepKind};

/// The per-journey totals, each shown even at zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Total {
    Entered,
    Active,
    Completed,
    Exited,
    Skipped,
    Archived,
    /// Sends over a destination's frequency cap.
    Capped,
}

impl Total {
    pub(crate) const ALL: [Total; 7] = [
        Total::Entered,
        Total::Active,
        Total::Completed,
        Total::Exited,
        Total::Skipped,
        Total::Archived,
        Total::Capped,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Total::Entered => "entered",
            Total::Active => "active",
            Total::Completed => "completed",
            Total::Exited => "exited",
            Total::Skipped => "skipped",
            Total::Archived => "archived",
            Total::Capped => "capped",
        }
    }

    fn parse(s: &str) -> Option<Total> {
        Total::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One counter of a journey version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Stat {
    Total(Total),
    /// Instances that reached a step.
    Reached(String),
    /// Instances waiting at a step (a hold or a delay) now.
    Waiting(String),
    /// Times a branch of a step was taken, by its label (`timeout` for a hold's timeout).
    Branch(String, String),
}

/// A counter and the journey version it counts for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct StatKey {
    pub(crate) journey_id: String,
    pub(crate) version: i64,
    pub(crate) stat: Stat,
}

/// The label a hold's timeout is counted under.
pub(crate) const TIMEOUT: &str = "timeout";

impl Stat {
    /// The stats table's `(kind, step_id, label)` columns.
    pub(crate) fn columns(&self) -> (&'static str, &str, &str) {
        match self {
            Stat::Total(t) => ("total", "", t.as_str()),
            Stat::Reached(step) => ("reached", step, ""),
            Stat::Waiting(step) => ("waiting", step, ""),
            Stat::Branch(step, label) => ("branch", step, label),
        }
    }

    /// The counter stored in those columns; `None` for a row this version does not know.
    pub(crate) fn from_columns(kind: &str, step: String, label: String) -> Option<Stat> {
        Some(match kind {
            "total" => Stat::Total(Total::parse(&label)?),
            "reached" => Stat::Reached(step),
            "waiting" => Stat::Waiting(step),
            "branch" => Stat::Branch(step, label),
            _ => return None,
        })
    }
}

/// Whether instances wait at this step (its counter of waiting instances moves).
fn waits(journey: Option<&Journey>, step: &str) -> bool {
    journey
        .and_then(|j| j.step(step))
        .is_some_and(|s| matches!(s.kind, StepKind::HoldUntil { .. } | StepKind::Delay { .. }))
}

/// How `t` moves the counters of its journey version (`journey` is that version's definition).
pub(crate) fn deltas(t: &Transition, journey: Option<&Journey>) -> Vec<(Stat, i64)> {
    let step = t.step.clone().unwrap_or_default();
    let waiting = |by: i64| (waits(journey, &step)).then(|| (Stat::Waiting(step.clone()), by));
    let mut out = Vec::with_capacity(3);
    match t.what {
        What::Entered => {
            out.push((Stat::Total(Total::Entered), 1));
            out.push((Stat::Total(Total::Active), 1));
        }
        What::Skipped => out.push((Stat::Total(Total::Skipped), 1)),
        What::Step => {
            out.push((Stat::Reached(step.clone()), 1));
            out.extend(waiting(1));
        }
        What::Branch | What::Reset => {
            let label = t.detail.clone().unwrap_or_default();
            out.push((Stat::Branch(step.clone(), label), 1));
            if t.what == What::Branch {
                out.extend(waiting(-1));
            }
        }
        What::Timeout => {
            out.push((Stat::Branch(step.clone(), TIMEOUT.into()), 1));
            out.push((Stat::Waiting(step.clone()), -1));
        }
        What::Timer => out.push((Stat::Waiting(step.clone()), -1)),
        What::Window => out.push((Stat::Waiting(step.clone()), 1)),
        What::Capped => out.push((Stat::Total(Total::Capped), 1)),
        What::Send | What::NotEntered | What::ExitUnmatched => {}
        What::Completed | What::Exited | What::Archived => {
            let total = match t.what {
                What::Completed => Total::Completed,
                What::Exited => Total::Exited,
                _ => Total::Archived,
            };
            out.push((Stat::Total(total), 1));
            out.push((Stat::Total(Total::Active), -1));
            // A completed instance left its last waiting step by a branch or timer already.
            if t.what != What::Completed {
                out.extend(waiting(-1));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    /// Runs the engine traces of a journey through [`deltas`] and compares the counters with the
    /// instances' fates: every entry is active, completed, exited or archived, and the waiting
    /// counters equal the instances still waiting at each step.
    #[test]
    fn counters_follow_the_engine_traces() {
        let journey = json!({
            "id": "j", "entry": {"event": "Go"},
            "exit": {"events": [{"event": "Stop"}]},
            "steps": [
                {"id": "hold", "type": "hold_until", "max_hold": "1h",
                 "branches": [{"name": "more", "event": "More", "reset_timer": true},
                              {"name": "done", "event": "Done", "next": "split"}],
                 "on_timeout": "wait"},
                {"id": "wait", "type": "delay", "duration": "1d", "next": "split"},
                {"id": "split", "type": "split",
                 "branches": [{"name": "vip", "where": [{"path": "traits.vip", "equals": true}], "next": null}],
                 "else": null}
            ]
        });
        let doc = json!({"journey": journey, "events": [
            {"at": "+0s", "message": {"type": "track", "userId": "a", "event": "Go"}},
            {"at": "+0s", "message": {"type": "track", "userId": "b", "event": "Go"}},
            {"at": "+0s", "message": {"type": "track", "userId": "c", "event": "Go"}},
            {"at": "+0s", "message": {"type": "track", "userId": "d", "event": "Go"}},
            {"at": "+10m", "message": {"type": "track", "userId": "a", "event": "More"}},
            {"at": "+20m", "message": {"type": "track", "userId": "a", "event": "Done"}},
            {"at": "+30m", "message": {"type": "track", "userId": "b", "event": "Stop"}},
            {"at": "+2h", "message": {"type": "track", "userId": "d", "event": "Stop"}}
        ]});
        let input = crate::sim::parse(&doc).unwrap();
        let out = crate::sim::run(&input, 25);
        let mut counters: BTreeMap<Stat, i64> = BTreeMap::new();
        for t in &out.trace {
            for (stat, by) in deltas(t, Some(&input.journey)) {
                *counters.entry(stat).or_default() += by;
            }
        }
        let get = |s: Stat| counters.get(&s).copied().unwrap_or(0);
        assert_eq!(get(Stat::Total(Total::Entered)), 4);
        // a: done -> split -> else; c: timeout -> wait 1d -> split; b, d: exited.
        assert_eq!(get(Stat::Total(Total::Completed)), 2);
        assert_eq!(get(Stat::Total(Total::Exited)), 2);
        assert_eq!(get(Stat::Total(Total::Active)), 0);
        assert_eq!(get(Stat::Waiting("hold".into())), 0);
        assert_eq!(get(Stat::Waiting("wait".into())), 0);
        assert_eq!(get(Stat::Reached("hold".into())), 4);
        assert_eq!(get(Stat::Reached("wait".into())), 2);
        assert_eq!(get(Stat::Branch("hold".into(), "more".into())), 1);
        assert_eq!(get(Stat::Branch("hold".into(), "done".into())), 1);
        assert_eq!(get(Stat::Branch("hold".into(), TIMEOUT.into())), 2);
        assert_eq!(get(Stat::Branch("split".into(), "else".into())), 2);
        // Every counter the store writes reads back as itself.
        for stat in counters.keys() {
            let (kind, step, label) = stat.columns();
            assert_eq!(
                Stat::from_columns(kind, step.into(), label.into()).as_ref(),
                Some(stat)
            );
        }
    }
}
