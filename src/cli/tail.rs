//! `journeyd tail`: follows `GET /v1/stream` (Server-Sent Events) and prints one line per
//! committed transition and delivery outcome until interrupted; with `--json`, one JSON object
//! per line: `{"event": "transition" | "delivery", "data": <the server's JSON>}`.
//!
//! A stream that ends (the server restarted, or dropped this client for reading too slowly) is
//! reopened, after 1 s and then backing off to 10 s, with a note on stderr: what was committed
//! in between is not shown (the stream has no replay). A first connection that fails, and a
//! token the server refuses, end the command with exit 1.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

use super::client::{Api, ApiError, query};
use super::table::text;
use crate::config::TailArgs;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

pub(super) fn run(args: TailArgs) -> anyhow::Result<ExitCode> {
    let api = Api::admin(&args.remote)?;
    let path = format!(
        "/v1/stream{}",
        query(&[("journey", args.journey.as_deref())])
    );
    let mut reader = api.stream(&path)?;
    eprintln!("following {}{path} (Ctrl-C to stop)", api.base());
    loop {
        let why = match follow(reader.as_mut(), args.remote.json) {
            Ok(Followed::Ended) => "the server closed it".to_string(),
            Ok(Followed::OutputClosed) => return Ok(ExitCode::SUCCESS),
            Err(e) => e.to_string(),
        };
        eprintln!("journeyd: the stream ended ({why}); reconnecting");
        let mut backoff = FIRST_BACKOFF;
        reader = loop {
            std::thread::sleep(backoff);
            match api.stream(&path) {
                Ok(r) => break r,
                Err(e) => {
                    if let Some(refused) = e.downcast_ref::<ApiError>()
                        && matches!(refused.status, 401 | 403 | 404)
                    {
                        return Err(e);
                    }
                    eprintln!("journeyd: {e:#}; retrying");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        eprintln!("following again: what was committed while disconnected is not shown");
    }
}

enum Followed {
    /// The server ended the stream.
    Ended,
    /// Whoever read our output went away (`| head`).
    OutputClosed,
}

/// Reads events until the stream ends, printing each.
fn follow(reader: &mut dyn BufRead, json: bool) -> std::io::Result<Followed> {
    let mut out = std::io::stdout().lock();
    let mut event = String::new();
    let mut data = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(Followed::Ended);
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            // The end of one event.
            if !data.is_empty() {
                let shown = show(&event, &data, json);
                if writeln!(out, "{shown}").and_then(|()| out.flush()).is_err() {
                    return Ok(Followed::OutputClosed);
                }
            }
            event.clear();
            data.clear();
        } else if line.starts_with(':') {
            // A comment: the greeting and keep-alives.
        } else {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event = value.to_string(),
                "data" => {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value);
                }
                _ => {}
            }
        }
    }
}

/// One event as a line.
fn show(event: &str, data: &str, json: bool) -> String {
    let value: Value = serde_json::from_str(data).unwrap_or_else(|_| json!(data));
    if json {
        return json!({"event": event, "data": value}).to_string();
    }
    line(event, &value)
}

/// `AT  JOURNEY #INSTANCE  profile P  what step -> detail`, or for a delivery
/// `AT  JOURNEY #INSTANCE  delivery ID to DEST: status (attempt n, HTTP s, error)`.
fn line(event: &str, v: &Value) -> String {
    let head = format!(
        "{}  {} #{}",
        text(&v["at"]),
        text(&v["journey"]),
        text(&v["instance"])
    );
    match event {
        "transition" => format!(
            "{head}  profile {}  {}",
            text(&v["profile"]),
            super::operate::transition_what(v)
        ),
        "delivery" => {
            let mut notes = vec![format!("attempt {}", text(&v["attempts"]))];
            if !v["last_status"].is_null() {
                notes.push(format!("HTTP {}", text(&v["last_status"])));
            }
            if !v["last_error"].is_null() {
                notes.push(text(&v["last_error"]));
            }
            format!(
                "{head}  delivery {} to {}: {} ({})",
                text(&v["id"]),
                text(&v["destination"]),
                text(&v["status"]),
                notes.join(", ")
            )
        }
        other => format!("{head}  {other} {v}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_become_lines() {
        let stream = ": journeyd stream\n\n\
            event: transition\ndata: {\"at\":\"T1\",\"journey\":\"j\",\"instance\":7,\"version\":1,\"what\":\"timeout\",\"step\":\"wait\",\"detail\":\"remind\",\"profile\":\"23\"}\n\n\
            : keep-alive\n\n\
            event: delivery\ndata: {\"at\":\"T2\",\"journey\":\"j\",\"instance\":7,\"id\":\"d1\",\"destination\":\"crm\",\"status\":\"succeeded\",\"attempts\":1,\"last_status\":200,\"last_error\":null}\n\n";
        let v: Vec<String> = stream
            .split("\n\n")
            .filter_map(|block| {
                let (mut event, mut data) = (String::new(), String::new());
                for l in block.lines() {
                    if let Some(e) = l.strip_prefix("event: ") {
                        event = e.into();
                    } else if let Some(d) = l.strip_prefix("data: ") {
                        data = d.into();
                    }
                }
                (!data.is_empty()).then(|| show(&event, &data, false))
            })
            .collect();
        assert_eq!(
            v,
            vec![
                "T1  j #7  profile 23  timeout wait -> remind",
                "T2  j #7  delivery d1 to crm: succeeded (attempt 1, HTTP 200)",
            ]
        );
        let mut reader = std::io::Cursor::new(stream.as_bytes());
        assert!(matches!(follow(&mut reader, true), Ok(Followed::Ended)));
    }
}
