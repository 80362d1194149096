//! Reading a journey document into a [`Journey`], collecting every problem with its JSON pointer,
//! with the field readers of [`crate::validate`]; the graph checks that need the whole document
//! are in `graph.rs`.

use super::condition::{Condition, Op, Target};
use super::graph::{self, Graph, Node, Ref};
use super::{
    Entry, Exit, ExitEvent, HoldBranch, Journey, MAX_BRANCHES, MAX_DURATION_MS, MAX_EXIT_EVENTS,
    MAX_NAME_CHARS, MAX_STEPS, MIN_DURATION_MS, Problem, RandomBranch, Reentry, SplitBranch, Step,
    StepKind, Until, Window, ZoneSource,
};
use crate::validate::{Checker, Fields};
use serde_json::Value;
use std::collections::HashSet;

pub(super) fn parse(doc: &Value) -> Result<Journey, Vec<Problem>> {
    let mut parser = Parser::default();
    let journey = parser.journey(doc);
    graph::check(&parser.graph, &mut parser.check.problems);
    parser.check.finish(journey)
}

const TOP_KEYS: &[&str] = &["id", "name", "entry", "exit", "steps"];
const ENTRY_KEYS: &[&str] = &["event", "where", "reentry", "unique_by"];
const EXIT_KEYS: &[&str] = &["events", "send"];
const EXIT_EVENT_KEYS: &[&str] = &["event", "where", "match_unique_by"];
const HOLD_KEYS: &[&str] = &["id", "type", "branches", "max_hold", "on_timeout"];
const HOLD_BRANCH_KEYS: &[&str] = &["name", "event", "where", "reset_timer", "as", "next"];
const DELAY_KEYS: &[&str] = &["id", "type", "duration", "until", "next"];
const UNTIL_KEYS: &[&str] = &["path", "offset"];
const WINDOW_KEYS: &[&str] = &["days", "from", "to", "time_zone", "default_time_zone"];
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const SPLIT_KEYS: &[&str] = &["id", "type", "branches", "else"];
const SPLIT_BRANCH_KEYS: &[&str] = &["name", "where", "next"];
const RANDOM_KEYS: &[&str] = &["id", "type", "branches", "sticky"];
const RANDOM_BRANCH_KEYS: &[&str] = &["name", "percent", "next"];
const SEND_KEYS: &[&str] = &[
    "id",
    "type",
    "destination",
    "event_name",
    "traits",
    "mapping",
    "window",
    "next",
];
const TARGET_KEYS: &[&str] = &["property", "path"];
/// In the order the spec lists them, which is the order messages name them in.
const OPERATORS: &[&str] = &[
    "equals",
    "not_equals",
    "in",
    "not_in",
    "exists",
    "gt",
    "gte",
    "lt",
    "lte",
    "contains",
    "starts_with",
];

#[derive(Default)]
struct Parser {
    check: Checker,
    graph: Graph,
}

impl Parser {
    /// A step reference: a step id, or null/absent for "the instance completes here". The reference is
    /// recorded on the current step's graph node (or as `exit.send`) for the whole-document checks.
    fn step_ref(&mut self, f: &Fields, key: &str) -> Option<String> {
        let path = f.path(key);
        match f.get(key)? {
            Value::String(target) => {
                let r = Ref {
                    path,
                    target: target.clone(),
                };
                match self.graph.nodes.last_mut() {
                    Some(node) => node.refs.push(r),
                    None => self.graph.exit_send = Some(r),
                }
                Some(target.clone())
            }
            other => {
                self.check.wrong_type(&path, "a step id or null", other);
                self.graph.complete = false;
                None
            }
        }
    }

    /// A duration field in milliseconds, within the allowed range.
    fn duration(&mut self, f: &Fields, key: &str, required: bool) -> Option<u64> {
        self.check.duration(
            f,
            key,
            required,
            MIN_DURATION_MS..=MAX_DURATION_MS,
            "1s to 365d",
        )
    }

    fn journey(&mut self, doc: &Value) -> Option<Journey> {
        let f = self.check.fields(doc, "", TOP_KEYS)?;
        self.graph.complete = true;

        let id = self.check.required_string(&f, "id");
        if let Some(id) = &id {
            let well_formed = id.len() <= 64
                && id.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !well_formed {
                self.check.report(
                    "/id",
                    format!("bad id \"{id}\": use 1 to 64 characters from a-z, 0-9, _ and -"),
                );
            }
        }
        let name = match f.get("name") {
            None => None,
            Some(Value::String(name)) => {
                let chars = name.chars().count();
                if chars > MAX_NAME_CHARS {
                    self.check.report(
                        "/name",
                        format!("name has {chars} characters, at most {MAX_NAME_CHARS}"),
                    );
                }
                Some(name.clone())
            }
            Some(other) => {
                self.check.wrong_type("/name", "a string", other);
                None
            }
        };

        let entry = self
            .check
            .required(&f, "entry")
            .and_then(|value| self.entry(value));
        let exit = f
            .get("exit")
            .map(|value| self.exit(value))
            .unwrap_or_default();
        let steps = self.steps(&f);

        let id = id?;
        let mut journey = Journey {
            name: name.unwrap_or_else(|| id.clone()),
            id,
            entry: entry?,
            exit,
            steps,
        };
        for (i, e) in journey.exit.events.iter().enumerate() {
            if e.match_unique_by && journey.entry.unique_by.is_none() {
                self.check.report(
                    &format!("/exit/events/{i}/match_unique_by"),
                    "match_unique_by needs entry.unique_by",
                );
            }
        }
        // Split paths into the journey context name a context key, which may contain dots: they
        // can only be read once every key is known. (Skipped while other problems stand: the
        // paths below count parsed steps, which are the document's steps only when all parsed.)
        if self.check.problems.is_empty() {
            self.resolve_context_paths(&mut journey);
        }
        Some(journey)
    }

    /// Resolves each split condition's `context.<key>.<rest>` path against the journey's
    /// context keys (SPEC §3.1), longest key first; a path that names none is a problem.
    fn resolve_context_paths(&mut self, journey: &mut Journey) {
        let mut keys: Vec<String> = std::iter::once(journey.entry.event.clone())
            .chain(journey.steps.iter().flat_map(|s| {
                match &s.kind {
                    StepKind::HoldUntil { branches, .. } => branches
                        .iter()
                        .map(|b| b.context_key().to_string())
                        .collect(),
                    _ => Vec::new(),
                }
            }))
            .collect();
        keys.sort_by_key(|k| std::cmp::Reverse(k.len()));
        keys.dedup();
        let mut resolve = |segments: &mut Vec<String>, path: String| {
            if segments[0] != "context" {
                return;
            }
            let rest = segments[1..].join(".");
            let key = keys
                .iter()
                .find(|k| rest == **k || rest.starts_with(&format!("{k}.")));
            match key {
                Some(key) => {
                    let after = rest[key.len()..].trim_start_matches('.');
                    let mut resolved = vec!["context".to_string(), key.clone()];
                    if !after.is_empty() {
                        resolved.extend(after.split('.').map(str::to_string));
                    }
                    *segments = resolved;
                }
                None => self.check.report(
                    &path,
                    format!(
                        "\"context.{rest}\" names no context key of this journey (its keys: {})",
                        keys.join(", ")
                    ),
                ),
            }
        };
        for (i, step) in journey.steps.iter_mut().enumerate() {
            match &mut step.kind {
                StepKind::Split { branches, .. } => {
                    for (b, branch) in branches.iter_mut().enumerate() {
                        for (c, condition) in branch.conditions.iter_mut().enumerate() {
                            if let Target::Path(segments) = &mut condition.target {
                                resolve(
                                    segments,
                                    format!("/steps/{i}/branches/{b}/where/{c}/path"),
                                );
                            }
                        }
                    }
                }
                StepKind::Delay {
                    until: Some(until), ..
                } => resolve(&mut until.path, format!("/steps/{i}/until/path")),
                StepKind::Send {
                    window: Some(window),
                    ..
                } => {
                    if let ZoneSource::Path(segments) = &mut window.time_zone {
                        resolve(segments, format!("/steps/{i}/window/time_zone"));
                    }
                }
                _ => {}
            }
        }
    }

    fn entry(&mut self, value: &Value) -> Option<Entry> {
        let f = self.check.fields(value, "/entry", ENTRY_KEYS)?;
        let event = self.check.required_string(&f, "event");
        let conditions = self.conditions(&f, false, false);
        let reentry = match f.get("reentry") {
            None => Reentry::EveryTime,
            Some(Value::String(s)) => match s.as_str() {
                "every_time" => Reentry::EveryTime,
                "if_not_active" => Reentry::IfNotActive,
                "once" => Reentry::Once,
                other => {
                    self.check.report(
                        "/entry/reentry",
                        format!("unknown reentry \"{other}\": expected every_time, if_not_active or once"),
                    );
                    Reentry::EveryTime
                }
            },
            Some(other) => {
                self.check.wrong_type("/entry/reentry", "a string", other);
                Reentry::EveryTime
            }
        };
        let unique_by = self.check.optional_string(&f, "unique_by");
        Some(Entry {
            event: event?,
            conditions,
            reentry,
            unique_by,
        })
    }

    fn exit(&mut self, value: &Value) -> Exit {
        let Some(f) = self.check.fields(value, "/exit", EXIT_KEYS) else {
            return Exit::default();
        };
        let mut events = Vec::new();
        if let Some(items) = self.check.array(&f, "events", false) {
            if items.len() > MAX_EXIT_EVENTS {
                self.check.report(
                    "/exit/events",
                    format!(
                        "too many exit events: {}, at most {MAX_EXIT_EVENTS}",
                        items.len()
                    ),
                );
            }
            for (i, item) in items.iter().enumerate() {
                let Some(ef) =
                    self.check
                        .fields(item, &format!("/exit/events/{i}"), EXIT_EVENT_KEYS)
                else {
                    continue;
                };
                let event = self.check.required_string(&ef, "event");
                let conditions = self.conditions(&ef, false, false);
                let match_unique_by = self
                    .check
                    .optional_bool(&ef, "match_unique_by")
                    .unwrap_or(false);
                if let Some(event) = event {
                    events.push(ExitEvent {
                        event,
                        conditions,
                        match_unique_by,
                    });
                }
            }
        }
        // Read before any step node exists, so `step_ref` files it as `exit.send`.
        let send = self.step_ref(&f, "send");
        Exit { events, send }
    }

    fn steps(&mut self, f: &Fields) -> Vec<Step> {
        let Some(items) = self.check.array(f, "steps", true) else {
            return Vec::new();
        };
        self.graph.steps_known = true;
        if items.is_empty() {
            self.check
                .report("/steps", "a journey needs at least one step");
        } else if items.len() > MAX_STEPS {
            self.check.report(
                "/steps",
                format!("too many steps: {}, at most {MAX_STEPS}", items.len()),
            );
        }
        let mut seen = HashSet::new();
        let mut steps = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if let Some(step) = self.step(item, &format!("/steps/{i}"), &mut seen) {
                steps.push(step);
            }
        }
        steps
    }

    fn step(&mut self, value: &Value, path: &str, seen: &mut HashSet<String>) -> Option<Step> {
        self.graph.nodes.push(Node::default());
        let Value::Object(map) = value else {
            self.check.wrong_type(path, "an object", value);
            self.graph.complete = false;
            return None;
        };
        // Read id and type before checking the keys, because which keys are allowed depends on the type.
        let loose = Fields {
            map,
            path: path.to_string(),
        };
        let id = self.check.required_string(&loose, "id");
        if let Some(id) = &id {
            let node = self.graph.nodes.last_mut().expect("pushed above");
            node.id = Some(id.clone());
            if !seen.insert(id.clone()) {
                node.duplicate = true;
                self.check
                    .report(&loose.path("id"), format!("duplicate step id \"{id}\""));
            }
        }
        let type_name = self.check.required_string(&loose, "type");
        let (allowed, type_name): (&[&str], &'static str) = match type_name.as_deref() {
            Some("hold_until") => (HOLD_KEYS, "hold_until"),
            Some("delay") => (DELAY_KEYS, "delay"),
            Some("split") => (SPLIT_KEYS, "split"),
            Some("random_split") => (RANDOM_KEYS, "random_split"),
            Some("send") => (SEND_KEYS, "send"),
            unknown => {
                if let Some(unknown) = unknown {
                    self.check.report(
                        &loose.path("type"),
                        format!(
                            "unknown step type \"{unknown}\": expected hold_until, delay, split, random_split or send"
                        ),
                    );
                }
                self.generic_refs(&loose);
                return None;
            }
        };
        self.graph.nodes.last_mut().expect("pushed above").type_name = Some(type_name);
        let f = self.check.fields(value, path, allowed)?;
        let kind = match type_name {
            "hold_until" => self.hold_until(&f),
            "delay" => self.delay(&f),
            "split" => self.split(&f),
            "random_split" => self.random_split(&f),
            _ => self.send(&f, id.as_deref().unwrap_or_default()),
        };
        Some(Step {
            id: id?,
            kind: kind?,
        })
    }

    /// For a step whose type is missing or unknown, records the references it seems to make, without
    /// reporting anything about them here: the type problem is the one to fix, and the references keep
    /// the steps they lead to from also being reported as unreachable.
    fn generic_refs(&mut self, f: &Fields) {
        let node = self.graph.nodes.last_mut().expect("a step node exists");
        let mut record = |path: String, value: Option<&Value>| {
            if let Some(Value::String(target)) = value {
                node.refs.push(Ref {
                    path,
                    target: target.clone(),
                });
            }
        };
        for key in ["next", "on_timeout", "else"] {
            record(f.path(key), f.map.get(key));
        }
        if let Some(Value::Array(branches)) = f.map.get("branches") {
            for (i, branch) in branches.iter().enumerate() {
                record(format!("{}/branches/{i}/next", f.path), branch.get("next"));
            }
        }
    }

    /// The `branches` array of a step, with its length checked.
    fn branches<'a>(&mut self, f: &Fields<'a>) -> Option<&'a Vec<Value>> {
        let items = self.check.array(f, "branches", true);
        let Some(items) = items else {
            // Without the branches the step's references are unknown.
            self.graph.complete = false;
            return None;
        };
        if items.is_empty() || items.len() > MAX_BRANCHES {
            self.check.report(
                &f.path("branches"),
                format!("expected 1 to {MAX_BRANCHES} branches, got {}", items.len()),
            );
        }
        Some(items)
    }

    /// A branch object; a branch that is not an object hides its references.
    fn branch<'a>(
        &mut self,
        f: &Fields,
        i: usize,
        value: &'a Value,
        allowed: &[&str],
    ) -> Option<Fields<'a>> {
        let branch = self
            .check
            .fields(value, &format!("{}/branches/{i}", f.path), allowed);
        if branch.is_none() {
            self.graph.complete = false;
        }
        branch
    }

    fn hold_until(&mut self, f: &Fields) -> Option<StepKind> {
        let mut branches = Vec::new();
        for (i, item) in self.branches(f).into_iter().flatten().enumerate() {
            let Some(bf) = self.branch(f, i, item, HOLD_BRANCH_KEYS) else {
                continue;
            };
            let name = self.check.optional_string(&bf, "name");
            let event = self.check.required_string(&bf, "event");
            let conditions = self.conditions(&bf, false, false);
            let reset_timer = self
                .check
                .optional_bool(&bf, "reset_timer")
                .unwrap_or(false);
            let as_key = self.check.optional_string(&bf, "as");
            let next = if reset_timer && bf.get("next").is_some() {
                // The branch never leaves the step, so a `next` here is a misunderstanding to point out,
                // not a reference to follow.
                self.check.report(
                    &bf.path("next"),
                    "a reset_timer branch stays at this step, so its next must be null or absent",
                );
                None
            } else {
                self.step_ref(&bf, "next")
            };
            if let Some(event) = event {
                branches.push(HoldBranch {
                    name,
                    event,
                    conditions,
                    reset_timer,
                    as_key,
                    next,
                });
            }
        }
        let max_hold = self.duration(f, "max_hold", false);
        let on_timeout = self.step_ref(f, "on_timeout");
        if on_timeout.is_some() && f.get("max_hold").is_none() {
            self.check.report(
                &f.path("on_timeout"),
                "on_timeout needs max_hold: without it the hold never times out",
            );
        }
        Some(StepKind::HoldUntil {
            branches,
            max_hold,
            on_timeout,
        })
    }

    fn delay(&mut self, f: &Fields) -> Option<StepKind> {
        let until = f.get("until").and_then(|u| self.until(u, &f.path("until")));
        let duration = self.duration(f, "duration", f.get("until").is_none());
        let next = self.step_ref(f, "next");
        if f.get("duration").is_some() && duration.is_none() {
            return None;
        }
        Some(StepKind::Delay {
            duration,
            until,
            next,
        })
    }

    /// A contextual delay's `until`: a context path to an ISO 8601 time, and an offset. The path
    /// is resolved against the context keys once the whole journey is read.
    fn until(&mut self, value: &Value, path: &str) -> Option<Until> {
        let f = self.check.fields(value, path, UNTIL_KEYS)?;
        let target = self.check.required_string(&f, "path");
        let segments = target.and_then(|t| {
            let segments: Vec<String> = t.split('.').map(String::from).collect();
            if segments.len() < 3
                || segments[0] != "context"
                || segments.iter().any(String::is_empty)
            {
                self.check.report(
                    &f.path("path"),
                    format!(
                        "\"{t}\" must be a path into the journey context: context.<key>.<property>"
                    ),
                );
                return None;
            }
            Some(segments)
        });
        let offset_ms = match self.check.optional_string(&f, "offset") {
            None => Some(0),
            Some(text) => match super::parse_signed_offset(&text) {
                Some(ms) if ms.unsigned_abs() <= MAX_DURATION_MS => Some(ms),
                _ => {
                    self.check.report(
                        &f.path("offset"),
                        format!("bad offset \"{text}\": a signed duration such as \"-1h\" (at most 365d)"),
                    );
                    None
                }
            },
        };
        Some(Until {
            path: segments?,
            offset_ms: offset_ms?,
        })
    }

    /// A send window (SPEC §3.5).
    fn window(&mut self, value: &Value, path: &str) -> Option<Window> {
        let f = self.check.fields(value, path, WINDOW_KEYS)?;
        let mut days = [true; 7];
        if let Some(items) = self.check.array(&f, "days", false) {
            days = [false; 7];
            if items.is_empty() {
                self.check
                    .report(&f.path("days"), "a window needs at least one day");
            }
            for (i, item) in items.iter().enumerate() {
                let day_path = format!("{}/{i}", f.path("days"));
                match item
                    .as_str()
                    .and_then(|d| DAYS.iter().position(|x| x.eq_ignore_ascii_case(d)))
                {
                    Some(n) => days[n] = true,
                    None => self.check.report(
                        &day_path,
                        format!("expected a day: {}, got {item}", DAYS.join(", ")),
                    ),
                }
            }
        }
        let time = |check: &mut crate::validate::Checker, key: &str| -> Option<u32> {
            let text = check.required_string(&f, key)?;
            let parsed = text.split_once(':').and_then(|(h, m)| {
                let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
                (h <= 24 && m < 60 && h * 60 + m <= 24 * 60 && text.len() == 5)
                    .then_some(h * 60 + m)
            });
            if parsed.is_none() {
                check.report(
                    &f.path(key),
                    format!("bad time \"{text}\": use HH:MM, 00:00 to 24:00"),
                );
            }
            parsed
        };
        let from = time(&mut self.check, "from");
        let to = time(&mut self.check, "to");
        if let (Some(a), Some(b)) = (from, to)
            && a >= b
        {
            self.check.report(
                &f.path("from"),
                "from must come before to (a window cannot span midnight: use two send steps)",
            );
        }
        let zone = |check: &mut crate::validate::Checker, key: &str, text: &str| {
            let tz = text.parse::<chrono_tz::Tz>().ok();
            if tz.is_none() {
                check.report(
                    &f.path(key),
                    format!("unknown time zone \"{text}\": use an IANA name such as Europe/Berlin"),
                );
            }
            tz
        };
        let time_zone = match self.check.optional_string(&f, "time_zone") {
            None => Some(ZoneSource::Default),
            Some(t) if t.starts_with("traits.") || t.starts_with("context.") => {
                let segments: Vec<String> = t.split('.').map(String::from).collect();
                if segments.iter().any(String::is_empty) || segments.len() < 2 {
                    self.check
                        .report(&f.path("time_zone"), format!("bad path \"{t}\""));
                    None
                } else {
                    Some(ZoneSource::Path(segments))
                }
            }
            Some(t) => zone(&mut self.check, "time_zone", &t).map(ZoneSource::Named),
        };
        let default_time_zone = match self.check.optional_string(&f, "default_time_zone") {
            None => Some(chrono_tz::Tz::UTC),
            Some(t) => zone(&mut self.check, "default_time_zone", &t),
        };
        Some(Window {
            days,
            from: from?,
            to: to?,
            time_zone: time_zone?,
            default_time_zone: default_time_zone?,
        })
    }

    fn split(&mut self, f: &Fields) -> Option<StepKind> {
        let mut branches = Vec::new();
        for (i, item) in self.branches(f).into_iter().flatten().enumerate() {
            let Some(bf) = self.branch(f, i, item, SPLIT_BRANCH_KEYS) else {
                continue;
            };
            let name = self.check.optional_string(&bf, "name");
            let conditions = self.conditions(&bf, true, true);
            let next = self.step_ref(&bf, "next");
            branches.push(SplitBranch {
                name,
                conditions,
                next,
            });
        }
        let otherwise = self.step_ref(f, "else");
        Some(StepKind::Split {
            branches,
            otherwise,
        })
    }

    fn random_split(&mut self, f: &Fields) -> Option<StepKind> {
        let mut branches = Vec::new();
        let mut total = Some(0u32);
        let items = self.branches(f);
        for (i, item) in items.into_iter().flatten().enumerate() {
            let Some(bf) = self.branch(f, i, item, RANDOM_BRANCH_KEYS) else {
                total = None;
                continue;
            };
            let name = self.check.optional_string(&bf, "name");
            let percent = match self.check.required(&bf, "percent") {
                None => None,
                Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {
                    let percent = n
                        .as_u64()
                        .and_then(|p| u32::try_from(p).ok())
                        .filter(|p| *p <= 100);
                    if percent.is_none() {
                        self.check.report(
                            &bf.path("percent"),
                            format!("percent {n} is out of range (0 to 100)"),
                        );
                    }
                    percent
                }
                Some(other) => {
                    self.check
                        .wrong_type(&bf.path("percent"), "an integer from 0 to 100", other);
                    None
                }
            };
            let next = self.step_ref(&bf, "next");
            total = total.zip(percent).map(|(t, p)| t + p);
            branches.push(RandomBranch {
                name,
                percent: percent.unwrap_or_default(),
                next,
            });
        }
        // Only a total of readable percents is worth reporting; otherwise the problem is already named.
        if let (Some(total), Some(items)) = (total, items)
            && total != 100
            && !items.is_empty()
        {
            self.check.report(
                &f.path("branches"),
                format!("percents total {total}, must total 100"),
            );
        }
        let sticky = self.check.optional_bool(f, "sticky").unwrap_or(false);
        Some(StepKind::RandomSplit { branches, sticky })
    }

    fn send(&mut self, f: &Fields, step_id: &str) -> Option<StepKind> {
        let destination = self.check.required_string(f, "destination");
        let event_name = self
            .check
            .optional_string(f, "event_name")
            .unwrap_or_else(|| step_id.to_string());
        let mut traits = Vec::new();
        if let Some(items) = self.check.array(f, "traits", false) {
            for (i, item) in items.iter().enumerate() {
                if let Some(name) = self.check.string(item, &format!("{}/traits/{i}", f.path)) {
                    traits.push(name);
                }
            }
            if items.len() > 1 && items.iter().any(|item| item == "*") {
                self.check.report(
                    &f.path("traits"),
                    "\"*\" means all traits and must be the only entry",
                );
            }
        }
        let mapping = match f.get("mapping") {
            None => None,
            Some(value @ Value::Object(_)) => Some(value.clone()),
            Some(other) => {
                self.check
                    .wrong_type(&f.path("mapping"), "an object", other);
                None
            }
        };
        let window = match f.get("window") {
            None => None,
            Some(w) => Some(self.window(w, &f.path("window"))?),
        };
        let next = self.step_ref(f, "next");
        Some(StepKind::Send {
            destination: destination?,
            event_name,
            traits,
            mapping,
            window,
            next,
        })
    }

    /// The `where` list of `f`. In a split (`in_split`) conditions read the journey context and the
    /// profile, so they must use a `path` under `context.` or `traits.`.
    fn conditions(&mut self, f: &Fields, required: bool, in_split: bool) -> Vec<Condition> {
        let Some(items) = self.check.array(f, "where", required) else {
            return Vec::new();
        };
        let base = f.path("where");
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.condition(item, &format!("{base}/{i}"), in_split))
            .collect()
    }

    fn condition(&mut self, value: &Value, path: &str, in_split: bool) -> Option<Condition> {
        let allowed: Vec<&str> = TARGET_KEYS.iter().chain(OPERATORS).copied().collect();
        let f = self.check.fields(value, path, &allowed)?;
        // Presence, not `Fields::get`: in a condition `"equals": null` is a meaningful operand.
        let targets: Vec<&str> = TARGET_KEYS
            .iter()
            .copied()
            .filter(|k| f.map.contains_key(*k))
            .collect();
        let ops: Vec<&str> = OPERATORS
            .iter()
            .copied()
            .filter(|k| f.map.contains_key(*k))
            .collect();

        let target = match targets.as_slice() {
            [] => {
                self.check
                    .report(path, "condition needs \"property\" or \"path\"");
                None
            }
            [key] => self.target(&f, key, in_split),
            _ => {
                self.check.report(
                    path,
                    "condition has both \"property\" and \"path\"; use one",
                );
                None
            }
        };
        let op = match ops.as_slice() {
            [] => {
                self.check.report(
                    path,
                    format!("condition needs one operator: {}", OPERATORS.join(", ")),
                );
                None
            }
            [key] => self.operand(key, &f.map[*key], &f.path(key)),
            _ => {
                self.check.report(
                    path,
                    format!(
                        "condition has {} operators ({}); use one",
                        ops.len(),
                        ops.join(", ")
                    ),
                );
                None
            }
        };
        Some(Condition {
            target: target?,
            op: op?,
        })
    }

    fn target(&mut self, f: &Fields, key: &str, in_split: bool) -> Option<Target> {
        let path = f.path(key);
        let text = match &f.map[key] {
            Value::String(s) => s,
            other => {
                self.check.wrong_type(&path, "a dot path string", other);
                return None;
            }
        };
        let segments: Vec<String> = text.split('.').map(String::from).collect();
        if segments.iter().any(String::is_empty) {
            self.check
                .report(&path, format!("bad path \"{text}\": empty segment"));
            return None;
        }
        if in_split {
            if key == "property" {
                self.check.report(
                    &path,
                    "a split reads the journey context and the profile: use \"path\" starting with context. or traits.",
                );
                return None;
            }
            if segments.len() < 2 || !matches!(segments[0].as_str(), "context" | "traits") {
                self.check.report(
                    &path,
                    format!("split path \"{text}\" must start with context. or traits."),
                );
                return None;
            }
        }
        Some(if key == "property" {
            Target::Property(segments)
        } else {
            Target::Path(segments)
        })
    }

    fn operand(&mut self, key: &str, value: &Value, path: &str) -> Option<Op> {
        let op = match (key, value) {
            ("equals", v) => Op::Equals(v.clone()),
            ("not_equals", v) => Op::NotEquals(v.clone()),
            ("in", Value::Array(items)) => Op::In(items.clone()),
            ("not_in", Value::Array(items)) => Op::NotIn(items.clone()),
            ("exists", Value::Bool(b)) => Op::Exists(*b),
            ("gt" | "gte" | "lt" | "lte", Value::Number(n)) => {
                // Only arbitrary-precision numbers lack an f64, and that serde_json feature is off;
                // NaN would make every comparison false, the safe reading.
                let n = n.as_f64().unwrap_or(f64::NAN);
                match key {
                    "gt" => Op::Gt(n),
                    "gte" => Op::Gte(n),
                    "lt" => Op::Lt(n),
                    _ => Op::Lte(n),
                }
            }
            ("contains", Value::String(s)) => Op::Contains(s.clone()),
            ("starts_with", Value::String(s)) => Op::StartsWith(s.clone()),
            (key, other) => {
                let expected = match key {
                    "in" | "not_in" => "an array",
                    "exists" => "a boolean",
                    "contains" | "starts_with" => "a string",
                    _ => "a number",
                };
                self.check.wrong_type(path, expected, other);
                return None;
            }
        };
        Some(op)
    }
}
