//! The operator commands that are one or two admin API calls each (SPEC §8): `journeys`,
//! `profiles`, `deliveries` and `keys`. Tables for people; with `--json`, the server's JSON as
//! it answered (a command that makes two calls prints both under their names).

use std::process::ExitCode;

use serde_json::{Value, json};

use super::client::{Api, query, seg};
use super::table::{Table, print_json, text};
use crate::config::{
    DeliveriesCommand, IdArgs, JourneysCommand, KeyKind, KeysCommand, ProfilesCommand,
};

type Outcome = anyhow::Result<ExitCode>;

const OK: Outcome = Ok(ExitCode::SUCCESS);

pub(super) fn journeys(cmd: JourneysCommand) -> Outcome {
    match cmd {
        JourneysCommand::List(args) => {
            let api = Api::admin(&args.remote)?;
            let items = api.get_all("/v1/journeys")?;
            if args.remote.json {
                print_json(&json!({"items": items, "next_cursor": null}));
                return OK;
            }
            let mut t = Table::new(&[
                "ID",
                "STATUS",
                "VERSION",
                "ENTERED",
                "ACTIVE",
                "COMPLETED",
                "EXITED",
                "NAME",
            ]);
            for j in &items {
                let c = &j["counts"];
                t.row(vec![
                    text(&j["id"]),
                    text(&j["status"]),
                    text(&j["version"]),
                    count(&c["entered"]),
                    count(&c["active"]),
                    count(&c["completed"]),
                    count(&c["exited"]),
                    text(&j["name"]),
                ]);
            }
            print_table_or(&t, "no journeys");
            OK
        }
        JourneysCommand::Show(args) => {
            let api = Api::admin(&args.remote)?;
            let path = format!("/v1/journeys/{}", seg(&args.id));
            let journey = api.get(&path)?;
            let (version, stats) = match args.version {
                Some(n) => (
                    Some(api.get(&format!("{path}/versions/{n}"))?),
                    api.get(&format!("{path}/stats?version={n}"))?,
                ),
                None => (None, api.get(&format!("{path}/stats"))?),
            };
            if args.remote.json {
                let mut out = json!({"journey": journey, "stats": stats});
                if let Some(v) = version {
                    out["version"] = v;
                }
                print_json(&out);
                return OK;
            }
            let definition = match &version {
                Some(v) => &v["definition"],
                None => &journey["definition"],
            };
            let name = journey["name"].as_str().filter(|n| !n.is_empty());
            match name {
                Some(name) => println!("{}  \"{name}\"", text(&journey["id"])),
                None => println!("{}", text(&journey["id"])),
            }
            let shown = match args.version {
                Some(n) => format!(", showing version {n}"),
                None => String::new(),
            };
            println!(
                "{}, version {}{shown}",
                text(&journey["status"]),
                text(&journey["version"])
            );
            println!(
                "entered {}  active {}  completed {}  exited {}  skipped {}  archived {}",
                count(&stats["entered"]),
                count(&stats["active"]),
                count(&stats["completed"]),
                count(&stats["exited"]),
                count(&stats["skipped"]),
                count(&stats["archived"]),
            );
            println!();
            for line in super::diagram::render(definition, &stats) {
                println!("{line}");
            }
            OK
        }
        JourneysCommand::Pause(args) => journey_action(args, "pause"),
        JourneysCommand::Resume(args) => journey_action(args, "resume"),
        JourneysCommand::Archive(args) => journey_action(args, "archive"),
    }
}

/// Pause, resume or archive a journey.
fn journey_action(args: IdArgs, action: &str) -> Outcome {
    let api = Api::admin(&args.remote)?;
    let path = format!("/v1/journeys/{}", seg(&args.id));
    let answer = match action {
        "archive" => api.call("DELETE", &path, None)?,
        _ => api.call("POST", &format!("{path}/{action}"), None)?,
    };
    if args.remote.json {
        print_json(&answer.body);
        return OK;
    }
    let b = &answer.body;
    match action {
        "archive" => println!(
            "journey {} archived ({} active instances ended)",
            args.id,
            count(&b["instances_ended"])
        ),
        _ => println!("journey {} is {}", args.id, text(&b["status"])),
    }
    OK
}

pub(super) fn profiles(cmd: ProfilesCommand) -> Outcome {
    match cmd {
        ProfilesCommand::Show(args) => {
            let api = Api::admin(&args.remote)?;
            let path = format!("/v1/profiles/{}", seg(&args.id));
            let profile = api.get(&path)?;
            // Timelines are oldest first: read them to the end, keep the last entries.
            let timeline = api.get_all(&format!("{path}/timeline"))?;
            let total = timeline.len();
            let last: Vec<Value> = timeline
                .into_iter()
                .skip(total.saturating_sub(args.last))
                .collect();
            if args.remote.json {
                print_json(&json!({"profile": profile, "timeline": last}));
                return OK;
            }
            println!(
                "profile {}  (created {}, updated {})",
                text(&profile["id"]),
                text(&profile["created_at"]),
                text(&profile["updated_at"])
            );
            let ids: Vec<String> = profile["ids"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            println!(
                "linked ids: {}",
                if ids.is_empty() {
                    "none".to_string()
                } else {
                    ids.join(", ")
                }
            );
            println!();
            let traits = profile["traits"].as_object().filter(|t| !t.is_empty());
            match traits {
                None => println!("traits: none"),
                Some(traits) => {
                    println!("traits:");
                    let mut t = Table::new(&["  NAME", "VALUE"]);
                    for (k, v) in traits {
                        t.row(vec![format!("  {k}"), text(v)]);
                    }
                    t.print();
                }
            }
            println!();
            let instances = profile["instances"].as_array().cloned().unwrap_or_default();
            println!("instances: {}", instances.len());
            let mut t = Table::new(&[
                "ID", "JOURNEY", "VERSION", "STATE", "STEP", "DUE", "ENTERED",
            ]);
            for i in &instances {
                t.row(vec![
                    text(&i["id"]),
                    text(&i["journey"]),
                    text(&i["version"]),
                    text(&i["state"]),
                    text(&i["step"]),
                    text(&i["due_at"]),
                    text(&i["entered_at"]),
                ]);
            }
            if !t.is_empty() {
                t.print();
            }
            println!();
            println!(
                "timeline: last {} of {total} entries, oldest first",
                last.len()
            );
            let mut t = Table::new(&["SEQ", "AT", "KIND", "WHAT"]);
            for item in &last {
                let (at, what) = timeline_item(item);
                t.row(vec![text(&item["seq"]), at, text(&item["kind"]), what]);
            }
            if !t.is_empty() {
                t.print();
            }
            OK
        }
        ProfilesCommand::Forget(args) => {
            let api = Api::admin(&args.remote)?;
            api.call("DELETE", &format!("/v1/profiles/{}", seg(&args.id)), None)?;
            if !args.remote.json {
                println!(
                    "profile {} forgotten: its events, traits, linked ids, instances and deliveries are deleted",
                    args.id
                );
            }
            OK
        }
    }
}

/// A timeline entry's time and a one-line summary.
fn timeline_item(item: &Value) -> (String, String) {
    match item["kind"].as_str() {
        Some("event") => {
            let m = &item["message"];
            let kind = m["type"].as_str().unwrap_or("track");
            let what = match kind {
                "track" => format!("track {}", text(&m["event"])),
                "identify" => {
                    let keys: Vec<&str> = m["traits"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, _)| k.as_str())
                        .collect();
                    format!("identify {}", keys.join(", "))
                }
                "alias" => format!("alias {} -> {}", text(&m["previousId"]), text(&m["userId"])),
                "page" | "screen" => format!("{kind} {}", text(&m["name"])),
                "group" => format!("group {}", text(&m["groupId"])),
                other => other.to_string(),
            };
            (text(&m["receivedAt"]), what)
        }
        Some("merged") => (
            text(&item["at"]),
            format!(
                "{} merged into {}",
                text(&item["from"]),
                text(&item["into"])
            ),
        ),
        _ => (text(&item["at"]), transition_line(item)),
    }
}

/// A transition in one line: `journey #instance what step -> detail`.
pub(super) fn transition_line(t: &Value) -> String {
    format!(
        "{} #{} {}",
        text(&t["journey"]),
        text(&t["instance"]),
        transition_what(t)
    )
}

/// What a transition did: `what step -> detail` (step and detail where it has them).
pub(super) fn transition_what(t: &Value) -> String {
    let mut s = text(&t["what"]);
    if let Some(step) = t["step"].as_str() {
        s.push(' ');
        s.push_str(step);
    }
    if !t["detail"].is_null() {
        s.push_str(" -> ");
        s.push_str(&text(&t["detail"]));
    }
    s
}

pub(super) fn deliveries(cmd: DeliveriesCommand) -> Outcome {
    match cmd {
        DeliveriesCommand::List(args) => {
            let api = Api::admin(&args.remote)?;
            let limit = args.limit.to_string();
            let path = format!(
                "/v1/deliveries{}",
                query(&[
                    ("status", args.status.as_deref()),
                    ("destination", args.destination.as_deref()),
                    ("limit", Some(&limit)),
                    ("cursor", args.cursor.as_deref()),
                ])
            );
            let page = api.get(&path)?;
            if args.remote.json {
                print_json(&page);
                return OK;
            }
            let mut t = Table::new(&[
                "ID",
                "STATUS",
                "DESTINATION",
                "JOURNEY",
                "STEP",
                "PROFILE",
                "ATTEMPTS",
                "CREATED",
                "LAST",
            ]);
            for d in page["items"].as_array().into_iter().flatten() {
                let last = match (&d["last_status"], &d["last_error"]) {
                    (Value::Null, Value::Null) => "-".to_string(),
                    (s, Value::Null) => format!("HTTP {}", text(s)),
                    (Value::Null, e) => text(e),
                    (s, e) => format!("HTTP {}: {}", text(s), text(e)),
                };
                t.row(vec![
                    text(&d["id"]),
                    text(&d["status"]),
                    text(&d["destination"]),
                    text(&d["journey"]),
                    text(&d["step"]),
                    text(&d["profile"]),
                    text(&d["attempts"]),
                    text(&d["created_at"]),
                    last.chars().take(80).collect(),
                ]);
            }
            print_table_or(&t, "no deliveries");
            if let Some(next) = page["next_cursor"].as_str() {
                eprintln!("more: add --cursor {next}");
            }
            OK
        }
        DeliveriesCommand::Retry(args) => {
            let api = Api::admin(&args.remote)?;
            let answer = match &args.id {
                Some(id) if !args.failed => {
                    api.call("POST", &format!("/v1/deliveries/{}/retry", seg(id)), None)?
                }
                _ => api.call(
                    "POST",
                    &format!(
                        "/v1/deliveries/retry{}",
                        query(&[
                            ("status", Some("failed")),
                            ("destination", args.destination.as_deref()),
                        ])
                    ),
                    None,
                )?,
            };
            let b = &answer.body;
            if args.remote.json {
                print_json(b);
            } else if args.failed {
                let to = args
                    .destination
                    .as_deref()
                    .map_or(String::new(), |d| format!(" to {d}"));
                println!("retried {} failed deliveries{to}", count(&b["retried"]));
            } else {
                println!(
                    "delivery {} is {} (to {}, attempts {})",
                    text(&b["id"]),
                    text(&b["status"]),
                    text(&b["destination"]),
                    text(&b["attempts"])
                );
            }
            OK
        }
    }
}

pub(super) fn keys(cmd: KeysCommand) -> Outcome {
    match cmd {
        KeysCommand::List(args) => {
            let api = Api::admin(&args.remote)?;
            let page = api.get("/v1/keys")?;
            if args.remote.json {
                print_json(&page);
                return OK;
            }
            let mut t = Table::new(&["ID", "KIND", "CREATED"]);
            for k in page["items"].as_array().into_iter().flatten() {
                t.row(vec![
                    text(&k["id"]),
                    text(&k["kind"]),
                    text(&k["created_at"]),
                ]);
            }
            print_table_or(&t, "no keys");
            OK
        }
        KeysCommand::Add(args) => {
            let api = Api::admin(&args.remote)?;
            let kind = match args.kind {
                KeyKind::Write => "write",
                KeyKind::Admin => "admin",
            };
            let answer = api.call("POST", "/v1/keys", Some(&json!({"kind": kind})))?;
            let b = &answer.body;
            if args.remote.json {
                print_json(b);
            } else {
                // The key alone on stdout, so that `KEY=$(journeyd keys add write)` works.
                println!("{}", text(&b["key"]));
                eprintln!(
                    "added {kind} key {}: this is the only time the key is shown",
                    text(&b["id"])
                );
            }
            OK
        }
        KeysCommand::Revoke(args) => {
            let api = Api::admin(&args.remote)?;
            api.call("DELETE", &format!("/v1/keys/{}", seg(&args.id)), None)?;
            if !args.remote.json {
                println!("key {} revoked", args.id);
            }
            OK
        }
    }
}

/// A count, `0` when the server left it out.
fn count(v: &Value) -> String {
    v.as_i64().unwrap_or(0).to_string()
}

fn print_table_or(t: &Table, none: &str) {
    if t.is_empty() {
        println!("{none}");
    } else {
        t.print();
    }
}
