//! `journeyd replay EVENTS.jsonl [--speed N]`: sends the `{"at", "message"}` lines of an event
//! script (the format of `journeyd simulate`) to a running server, each at its offset divided
//! by N on the wall clock, so that an example can be watched live. Each message goes alone in a
//! `POST /v1/batch` with the write key; a message without `type` is a `track` call, as in a
//! simulation. The whole script is checked before the first message is sent; lines are sent in
//! file order, and a line whose offset is earlier than the previous one's is sent at once.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use super::client::Api;
use super::table::text;
use crate::config::{ConfigError, ReplayArgs};

/// One line of the script.
#[derive(Debug)]
struct Line {
    number: usize,
    at: String,
    offset_ms: i64,
    message: Value,
}

pub(super) fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let key = args
        .write_key
        .as_deref()
        .and_then(|k| k.split(',').map(str::trim).find(|k| !k.is_empty()))
        .ok_or_else(|| {
            ConfigError("no write key: pass --write-key or set JOURNEYD_WRITE_KEY".into())
        })?;
    let api = Api::ingest(&args.server, key)?;
    let name = args.events.display().to_string();
    let script =
        std::fs::read_to_string(&args.events).with_context(|| format!("reading {name}"))?;
    let lines = parse(&script).map_err(|problems| {
        anyhow::anyhow!(
            "{name} is not a script of {{\"at\", \"message\"}} lines; nothing was sent:\n{}",
            problems
                .iter()
                .map(|p| format!("  {name}: {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let started = Instant::now();
    let mut refused = 0;
    for line in &lines {
        let due = Duration::from_secs_f64(line.offset_ms.max(0) as f64 / 1000.0 / args.speed);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        let mut message = line.message.clone();
        if message.get("type").is_none_or(Value::is_null) {
            message["type"] = json!("track");
        }
        let answer = api.request("POST", "/v1/batch", Some(&json!({"batch": [message]})))?;
        let rejected = answer.body["rejected"]
            .as_array()
            .and_then(|r| r.first())
            .map(|r| text(&r["message"]));
        let outcome = match (answer.status, rejected) {
            (200..300, None) => "accepted".to_string(),
            (200..300, Some(why)) => {
                refused += 1;
                format!("rejected: {why}")
            }
            (401, _) => anyhow::bail!(
                "the server refused the write key (401): pass --write-key or set JOURNEYD_WRITE_KEY"
            ),
            (status, _) => {
                refused += 1;
                format!("refused (HTTP {status}): {}", text(&answer.body["message"]))
            }
        };
        if args.json {
            println!(
                "{}",
                json!({"line": line.number, "at": line.at, "status": answer.status, "answer": answer.body})
            );
        } else {
            println!(
                "{}  (after {:.1}s)  {}: {outcome}",
                line.at,
                started.elapsed().as_secs_f64(),
                summary(&message)
            );
        }
    }
    if refused > 0 {
        anyhow::bail!("{refused} of {} messages were not accepted", lines.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// The script's lines, or every problem with its line number.
fn parse(script: &str) -> Result<Vec<Line>, Vec<String>> {
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    for (n, raw) in script.lines().enumerate() {
        let number = n + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let doc: Value = match serde_json::from_str(raw) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("line {number}: not valid JSON: {e}"));
                continue;
            }
        };
        let at = doc["at"].as_str().unwrap_or("+0s").to_string();
        let Some(offset_ms) = crate::sim::parse_offset(&at) else {
            problems.push(format!(
                "line {number}: /at: \"{at}\" is not an offset such as +90m or +2h30m"
            ));
            continue;
        };
        if !doc["message"].is_object() {
            problems.push(format!("line {number}: /message: expected an object"));
            continue;
        }
        lines.push(Line {
            number,
            at,
            offset_ms,
            message: doc["message"].clone(),
        });
    }
    if problems.is_empty() {
        Ok(lines)
    } else {
        Err(problems)
    }
}

/// `track Product_Added 23`, `identify 23`.
fn summary(m: &Value) -> String {
    let who = m["userId"]
        .as_str()
        .or_else(|| m["anonymousId"].as_str())
        .map_or_else(|| text(&m["userId"]), str::to_string);
    match m["type"].as_str() {
        Some("track") => format!("track {} {who}", text(&m["event"])),
        Some(kind) => format!("{kind} {who}"),
        None => who,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_checked_whole() {
        let ok = "{\"at\": \"+2h30m\", \"message\": {\"userId\": \"1\", \"event\": \"E\"}}\n\n{\"message\": {\"type\": \"identify\", \"userId\": \"1\"}}\n";
        let lines = parse(ok).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].offset_ms, 9_000_000);
        assert_eq!((lines[1].number, lines[1].offset_ms), (3, 0));
        let bad = "{\"at\": \"soon\", \"message\": {}}\nnot json\n{\"at\": \"+1s\"}\n";
        let problems = parse(bad).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("line 1: /at"), "{problems:?}");
        assert!(problems[2].starts_with("line 3: /message"), "{problems:?}");
    }
}
