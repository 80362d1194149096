//! `journeyd journeys show`: a journey's steps as a text diagram, with the counts of
//! `GET /v1/journeys/{id}/stats` beside each step and branch.
//!
//! The graph comes from the journey's own parser ([`crate::journey::parse`]): it follows the
//! first step's `next`, each branch's `next` and each hold's `on_timeout`, depth first. A step
//! that several paths join is drawn once, where it is first reached; later arrows to it say
//! `(above)`. A straight run of steps (`delay`, `send`) stays at one indentation; the arrows of
//! a hold or split fan out one level deeper each. Steps reached only by `exit.send` are drawn
//! under the exit rule.
//!
//! ```text
//! entry: Product_Added (reentry every_time, unique by cart_ID, 1 condition)
//! │
//! wait_for_order  hold until (at most 2h)                reached 5  active 1
//! ├─ cart changed: Cart_Modified (resets the timer)      2
//! ├─ ordered: Order_Confirmation ─► end                  1
//! └─ timeout ─►                                          2
//!    remind  send "Cart Reminder" to crm                 reached 2  active 0
//!    └─► end
//! ```

use std::collections::HashSet;

use serde_json::Value;

use super::table::{text, width};
use crate::engine::stats::TIMEOUT;
use crate::journey::{Journey, StepKind};

/// Where an arrow goes.
enum Target {
    Step(String),
    /// The instance completes.
    End,
    /// A `reset_timer` branch: the hold starts over.
    Stay,
}

/// One arrow out of a step: what it says, how often it was taken, where it goes.
struct Edge {
    label: String,
    count: Option<i64>,
    target: Target,
}

struct Diagram<'a> {
    journey: &'a Journey,
    definition: &'a Value,
    stats: &'a Value,
    /// `(drawing, counts)` per line.
    lines: Vec<(String, String)>,
    shown: HashSet<String>,
}

/// The diagram of a journey definition with its stats, as lines.
pub(super) fn render(definition: &Value, stats: &Value) -> Vec<String> {
    let journey = match crate::journey::parse(definition) {
        Ok(j) => j,
        Err(problems) => {
            // A stored definition always parsed once; if this journeyd reads it differently,
            // still show the counts.
            let mut lines = vec![format!(
                "(the definition does not parse here: {})",
                problems.first().map_or(String::new(), |p| p.to_string())
            )];
            for (id, counts) in stats["steps"].as_object().into_iter().flatten() {
                lines.push(format!(
                    "{id}  reached {}  active {}",
                    text(&counts["reached"]),
                    text(&counts["active"])
                ));
            }
            return lines;
        }
    };
    let mut d = Diagram {
        journey: &journey,
        definition,
        stats,
        lines: Vec::new(),
        shown: HashSet::new(),
    };
    d.push(d.entry(), String::new());
    if let Some(first) = journey.first_step() {
        d.push("│".into(), String::new());
        d.walk(&first.id, "");
    }
    if let Some(exit) = d.exit() {
        d.push(String::new(), String::new());
        match journey.exit.send.as_deref() {
            Some(send) => d.arrow_to(send, "", &exit, String::new()),
            None => d.push(exit, String::new()),
        }
    }
    let unreached: Vec<String> = journey
        .steps
        .iter()
        .filter(|s| !d.shown.contains(&s.id))
        .map(|s| s.id.clone())
        .collect();
    if !unreached.is_empty() {
        d.push(String::new(), String::new());
        d.push("not reached from the entry:".into(), String::new());
        for id in unreached {
            if !d.shown.contains(&id) {
                d.walk(&id, "");
            }
        }
    }
    d.finish()
}

impl Diagram<'_> {
    fn push(&mut self, drawing: String, counts: String) {
        self.lines.push((drawing, counts));
    }

    /// The lines, with the counts in one column.
    fn finish(self) -> Vec<String> {
        let column = self
            .lines
            .iter()
            .filter(|(_, c)| !c.is_empty())
            .map(|(d, _)| width(d))
            .max()
            .unwrap_or(0)
            + 3;
        self.lines
            .into_iter()
            .map(|(d, c)| {
                if c.is_empty() {
                    d.trim_end().to_string()
                } else {
                    format!("{d}{}{c}", " ".repeat(column - width(&d)))
                }
            })
            .collect()
    }

    fn entry(&self) -> String {
        let entry = &self.definition["entry"];
        let mut notes = vec![format!(
            "reentry {}",
            entry["reentry"].as_str().unwrap_or("every_time")
        )];
        if let Some(u) = entry["unique_by"].as_str() {
            notes.push(format!("unique by {u}"));
        }
        match entry["where"].as_array().map_or(0, Vec::len) {
            0 => {}
            1 => notes.push("1 condition".into()),
            n => notes.push(format!("{n} conditions")),
        }
        format!("entry: {} ({})", self.journey.entry.event, notes.join(", "))
    }

    fn exit(&self) -> Option<String> {
        let events: Vec<&str> = self
            .journey
            .exit
            .events
            .iter()
            .map(|e| e.event.as_str())
            .collect();
        if events.is_empty() && self.journey.exit.send.is_none() {
            return None;
        }
        Some(format!("exit: {}", events.join(", ")))
    }

    /// A step's line, then its arrows (and the steps they lead to, when not drawn yet).
    fn walk(&mut self, id: &str, pad: &str) {
        self.shown.insert(id.to_string());
        let Some(step) = self.journey.step(id) else {
            self.push(format!("{pad}{id}  (unknown step)"), String::new());
            return;
        };
        let stats = &self.stats["steps"][id];
        self.push(
            format!("{pad}{id}  {}", self.describe(id)),
            format!(
                "reached {}  active {}",
                stats["reached"].as_i64().unwrap_or(0),
                stats["active"].as_i64().unwrap_or(0)
            ),
        );
        match &step.kind {
            StepKind::Delay { next, .. } | StepKind::Send { next, .. } => match next {
                Some(t) if !self.shown.contains(t) => {
                    self.push(format!("{pad}│"), String::new());
                    let t = t.clone();
                    self.walk(&t, pad);
                }
                Some(t) => self.push(format!("{pad}└─► {t} (above)"), String::new()),
                None => self.push(format!("{pad}└─► end"), String::new()),
            },
            _ => {
                let edges = self.edges(id, &step.kind);
                let n = edges.len();
                for (i, edge) in edges.into_iter().enumerate() {
                    let last = i + 1 == n;
                    let (branch, deeper) = if last {
                        ("└─ ", "   ")
                    } else {
                        ("├─ ", "│  ")
                    };
                    let count = edge.count.map_or(String::new(), |c| c.to_string());
                    let drawing = format!("{pad}{branch}{}", edge.label);
                    match edge.target {
                        Target::Stay => self.push(drawing, count),
                        Target::End => self.push(format!("{drawing} ─► end"), count),
                        Target::Step(t) => {
                            self.arrow_to(&t, &format!("{pad}{deeper}"), &drawing, count)
                        }
                    }
                }
            }
        }
    }

    /// An arrow line to step `t`: the step is drawn under it at `child_pad`, or named as drawn
    /// above.
    fn arrow_to(&mut self, t: &str, child_pad: &str, drawing: &str, count: String) {
        if self.shown.contains(t) {
            self.push(format!("{drawing} ─► {t} (above)"), count);
        } else {
            self.push(format!("{drawing} ─►"), count);
            self.walk(t, child_pad);
        }
    }

    /// The arrows of a hold or split, with the counts of their branches.
    fn edges(&self, id: &str, kind: &StepKind) -> Vec<Edge> {
        let counts = &self.stats["branches"][id];
        let count = |label: &str| Some(counts[label].as_i64().unwrap_or(0));
        let to = |next: &Option<String>| match next {
            Some(t) => Target::Step(t.clone()),
            None => Target::End,
        };
        match kind {
            StepKind::HoldUntil {
                branches,
                max_hold,
                on_timeout,
                ..
            } => {
                let mut edges: Vec<Edge> = branches
                    .iter()
                    .map(|b| {
                        let mut label = match &b.name {
                            Some(name) if name != &b.event => format!("{name}: {}", b.event),
                            _ => b.event.clone(),
                        };
                        if !b.conditions.is_empty() {
                            label.push_str(" (where ...)");
                        }
                        if b.reset_timer {
                            label.push_str(" (resets the timer)");
                        }
                        Edge {
                            count: count(&b.label()),
                            target: if b.reset_timer {
                                Target::Stay
                            } else {
                                to(&b.next)
                            },
                            label,
                        }
                    })
                    .collect();
                if max_hold.is_some() {
                    edges.push(Edge {
                        label: TIMEOUT.to_string(),
                        count: count(TIMEOUT),
                        target: to(on_timeout),
                    });
                }
                edges
            }
            StepKind::Split {
                branches,
                otherwise,
                ..
            } => {
                let mut edges: Vec<Edge> = branches
                    .iter()
                    .enumerate()
                    .map(|(n, b)| Edge {
                        label: b.label(n),
                        count: count(&b.label(n)),
                        target: to(&b.next),
                    })
                    .collect();
                edges.push(Edge {
                    label: "else".into(),
                    count: count("else"),
                    target: to(otherwise),
                });
                edges
            }
            StepKind::RandomSplit { branches, .. } => branches
                .iter()
                .enumerate()
                .map(|(n, b)| Edge {
                    label: format!("{} ({}%)", b.label(n), b.percent),
                    count: count(&b.label(n)),
                    target: to(&b.next),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// What a step does, in a few words, from its definition.
    fn describe(&self, id: &str) -> String {
        let doc = self.definition["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["id"] == id)
            .cloned()
            .unwrap_or(Value::Null);
        let s = |key: &str| doc[key].as_str().map(str::to_string);
        match doc["type"].as_str().unwrap_or("") {
            "hold_until" => match s("max_hold") {
                Some(d) => format!("hold until (at most {d})"),
                None => "hold until (no time limit)".into(),
            },
            "delay" => {
                let until = doc["until"]["path"].as_str().map(|path| {
                    let offset = doc["until"]["offset"]
                        .as_str()
                        .map_or(String::new(), |o| format!(" {o}"));
                    format!("until {path}{offset}")
                });
                match (until, s("duration")) {
                    (Some(u), Some(d)) => format!("delay {u} (else {d})"),
                    (Some(u), None) => format!("delay {u}"),
                    (None, Some(d)) => format!("delay {d}"),
                    (None, None) => "delay".into(),
                }
            }
            "split" => "split".into(),
            "random_split" if doc["sticky"] == true => "random split (sticky)".into(),
            "random_split" => "random split".into(),
            "send" => {
                let mut d = format!(
                    "send \"{}\" to {}",
                    s("event_name").unwrap_or_else(|| id.to_string()),
                    text(&doc["destination"])
                );
                let window = &doc["window"];
                if window.is_object() {
                    let days = window["days"].as_array().map_or("every day".into(), |d| {
                        d.iter().map(text).collect::<Vec<_>>().join(",")
                    });
                    d.push_str(&format!(
                        " (window {days} {}-{})",
                        text(&window["from"]),
                        text(&window["to"])
                    ));
                }
                d
            }
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_hold_with_a_timeout_and_an_exit_send() {
        let def = json!({
            "id": "cart",
            "entry": {"event": "Product_Added", "unique_by": "cart_ID"},
            "exit": {"events": [{"event": "Account_Deleted"}], "send": "notify_exit"},
            "steps": [
                {"id": "wait", "type": "hold_until", "max_hold": "2h",
                 "branches": [{"name": "cart changed", "event": "Cart_Modified", "reset_timer": true},
                              {"name": "ordered", "event": "Order_Confirmation", "next": null}],
                 "on_timeout": "remind"},
                {"id": "remind", "type": "send", "destination": "crm", "event_name": "Cart Reminder"},
                {"id": "notify_exit", "type": "send", "destination": "crm"}
            ]
        });
        let stats = json!({
            "steps": {"wait": {"reached": 5, "active": 1}, "remind": {"reached": 2, "active": 0},
                      "notify_exit": {"reached": 1, "active": 0}},
            "branches": {"wait": {"cart changed": 2, "ordered": 1, "timeout": 2}}
        });
        let lines = render(&def, &stats);
        let text = lines.join("\n");
        let expected = [
            "entry: Product_Added (reentry every_time, unique by cart_ID)",
            "│",
            "wait  hold until (at most 2h)",
            "├─ cart changed: Cart_Modified (resets the timer)",
            "├─ ordered: Order_Confirmation ─► end",
            "└─ timeout ─►",
            "   remind  send \"Cart Reminder\" to crm",
            "   └─► end",
            "exit: Account_Deleted ─►",
            "notify_exit  send \"notify_exit\" to crm",
        ];
        let mut rest = text.as_str();
        for e in expected {
            let at = rest
                .find(e)
                .unwrap_or_else(|| panic!("{e:?} not found in order in:\n{text}"));
            rest = &rest[at + e.len()..];
        }
        let wait = lines.iter().find(|l| l.starts_with("wait ")).unwrap();
        assert!(wait.ends_with("reached 5  active 1"), "{text}");
        let timeout = lines.iter().find(|l| l.contains("timeout")).unwrap();
        assert!(timeout.ends_with(" 2"), "{text}");
        // The counts line up in one column.
        let columns: HashSet<usize> = lines
            .iter()
            .filter_map(|l| l.find("reached").map(|i| width(&l[..i])))
            .collect();
        assert_eq!(columns.len(), 1, "{text}");
    }

    #[test]
    fn joins_are_drawn_once() {
        let def = json!({
            "id": "j",
            "entry": {"event": "Go"},
            "steps": [
                {"id": "pick", "type": "split",
                 "branches": [{"name": "vip", "where": [{"path": "traits.vip", "equals": true}], "next": "thanks"}],
                 "else": "wait"},
                {"id": "wait", "type": "delay", "duration": "1d", "next": "thanks"},
                {"id": "thanks", "type": "send", "destination": "crm"}
            ]
        });
        let text = render(&def, &json!({})).join("\n");
        assert_eq!(text.matches("thanks  send").count(), 1, "{text}");
        assert!(text.contains("thanks (above)"), "{text}");
        assert!(text.contains("wait  delay 1d"), "{text}");
    }
}
