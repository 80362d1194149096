//! Destinations and delivery (SPEC §5). This file holds the destination settings (their JSON
//! shape, validation and defaults) and the retry policy, both pure; `sign` the webhook signature;
//! `worker` the dispatcher that takes due rows from the outbox and sends them.

pub mod sign;
pub mod worker;

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::journey::Problem;

/// Fields of a destination that are never returned by the API.
pub const SECRET_FIELDS: [&str; 2] = ["secret", "write_key"];

pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
/// Retries stop this long after a delivery was written (SPEC §5: at most 24 hours).
pub const RETRY_WINDOW_MS: i64 = 24 * 3_600_000;
/// The first retry waits about this long; each further one twice as long, up to [`MAX_BACKOFF_MS`].
pub const BASE_BACKOFF_MS: i64 = 1_000;
pub const MAX_BACKOFF_MS: i64 = 3_600_000;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A 2xx.
    Delivered { status: u16 },
    /// Worth trying again: connection error, timeout, 408, 429, 5xx. `retry_after_ms` is the
    /// receiver's `Retry-After`, when it sent one.
    Retry {
        status: Option<u16>,
        error: String,
        retry_after_ms: Option<i64>,
    },
    /// Any other status: the delivery fails now.
    Fail { status: Option<u16>, error: String },
}

impl Outcome {
    /// Classifies an HTTP status (SPEC §5).
    pub fn from_status(status: u16, retry_after_ms: Option<i64>) -> Outcome {
        match status {
            200..=299 => Outcome::Delivered { status },
            408 | 429 | 500..=599 => Outcome::Retry {
                status: Some(status),
                error: format!("status {status}"),
                retry_after_ms,
            },
            _ => Outcome::Fail {
                status: Some(status),
                error: format!("status {status}"),
            },
        }
    }
}

/// The wait before retry number `attempt` (1 = the first retry): exponential, with full jitter
/// over its upper half so that many deliveries failing together do not retry together. `jitter`
/// is a number in [0, 1). A receiver's `Retry-After` wins when it asks for longer.
pub fn backoff_ms(attempt: u32, jitter: f64, retry_after_ms: Option<i64>) -> i64 {
    let exp = BASE_BACKOFF_MS
        .saturating_mul(1i64 << attempt.saturating_sub(1).min(30))
        .min(MAX_BACKOFF_MS);
    let wait = exp / 2 + ((exp / 2) as f64 * jitter) as i64;
    match retry_after_ms {
        Some(ra) => wait.max(ra.min(RETRY_WINDOW_MS)),
        None => wait,
    }
}

/// Parses a `Retry-After` header: seconds, or an HTTP date, relative to `now`.
pub fn parse_retry_after(value: &str, now: i64) -> Option<i64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<i64>() {
        return Some(secs.max(0) * 1000);
    }
    chrono::DateTime::parse_from_rfc2822(value)
        .ok()
        .map(|t| (t.timestamp_millis() - now).max(0))
}

/// A validated destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    pub kind: Kind,
    pub url: String,
    pub method: String,
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: u64,
    pub max_attempts: u32,
    /// Most requests per second to this destination, when limited.
    pub rate_limit: Option<u32>,
    /// Most requests in flight to this destination at once.
    pub concurrency: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Webhook,
    Segment,
}

/// A destination id: like a journey id, with capitals and dots allowed.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// A validated destination document: the settings, the public settings as JSON (what the API
/// shows back, defaults filled in), and the secret fields it carried (`null` clears one).
pub type Parsed = (Destination, Map<String, Value>, Map<String, Value>);

/// Validates a destination document, reporting every problem with its JSON path.
pub fn parse(doc: &Value) -> Result<Parsed, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut bad = |path: &str, message: String| {
        problems.push(Problem {
            path: path.into(),
            message,
        })
    };
    let Some(obj) = doc.as_object() else {
        return Err(vec![Problem {
            path: String::new(),
            message: "expected an object".into(),
        }]);
    };
    for key in obj.keys() {
        if ![
            "type",
            "url",
            "method",
            "headers",
            "secret",
            "timeout",
            "max_attempts",
            "write_key",
            "rate_limit",
            "concurrency",
        ]
        .contains(&key.as_str())
        {
            bad(&format!("/{key}"), format!("unknown field \"{key}\""));
        }
    }
    let kind = match obj.get("type").and_then(Value::as_str) {
        Some("webhook") => Kind::Webhook,
        Some("segment") => Kind::Segment,
        Some(other) => {
            bad(
                "/type",
                format!("unknown destination type \"{other}\": use \"webhook\" or \"segment\""),
            );
            Kind::Webhook
        }
        None => {
            bad("/type", "missing field \"type\"".into());
            Kind::Webhook
        }
    };
    let url = match obj.get("url").and_then(Value::as_str) {
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
            match u.parse::<hyper::Uri>() {
                Ok(parsed) if parsed.host().is_some() => u.to_string(),
                _ => {
                    bad("/url", format!("\"{u}\" is not a valid URL"));
                    String::new()
                }
            }
        }
        Some(u) => {
            bad(
                "/url",
                format!("\"{u}\" must start with http:// or https://"),
            );
            String::new()
        }
        None => {
            bad("/url", "missing field \"url\"".into());
            String::new()
        }
    };
    let method = match obj.get("method") {
        None | Some(Value::Null) => "POST".to_string(),
        Some(Value::String(m))
            if ["POST", "PUT", "PATCH"].contains(&m.to_ascii_uppercase().as_str()) =>
        {
            m.to_ascii_uppercase()
        }
        Some(m) => {
            bad(
                "/method",
                format!("method must be POST, PUT or PATCH, got {m}"),
            );
            "POST".into()
        }
    };
    let mut headers = BTreeMap::new();
    match obj.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (k, v) in h {
                match v.as_str() {
                    Some(v)
                        if k.parse::<hyper::header::HeaderName>().is_ok()
                            && v.parse::<hyper::header::HeaderValue>().is_ok() =>
                    {
                        headers.insert(k.clone(), v.to_string());
                    }
                    _ => bad(
                        &format!("/headers/{k}"),
                        "expected a valid header name with a string value".into(),
                    ),
                }
            }
        }
        Some(_) => bad("/headers", "expected an object of strings".into()),
    }
    let timeout_ms = match obj.get("timeout") {
        None | Some(Value::Null) => DEFAULT_TIMEOUT_MS,
        Some(Value::String(s)) => match crate::journey::parse_duration(s) {
            Some(ms) if (1000..=300_000).contains(&ms) => ms,
            _ => {
                bad(
                    "/timeout",
                    format!("bad timeout \"{s}\": a duration from 1s to 5m"),
                );
                DEFAULT_TIMEOUT_MS
            }
        },
        Some(v) => {
            bad(
                "/timeout",
                format!("expected a duration such as \"10s\", got {v}"),
            );
            DEFAULT_TIMEOUT_MS
        }
    };
    let mut int = |key: &str, default: Option<u32>, range: std::ops::RangeInclusive<u64>| match obj
        .get(key)
    {
        None | Some(Value::Null) => default,
        Some(v) => match v.as_u64() {
            Some(n) if range.contains(&n) => Some(n as u32),
            _ => {
                bad(
                    &format!("/{key}"),
                    format!(
                        "expected an integer from {} to {}, got {v}",
                        range.start(),
                        range.end()
                    ),
                );
                default
            }
        },
    };
    let max_attempts =
        int("max_attempts", Some(DEFAULT_MAX_ATTEMPTS), 1..=100).unwrap_or(DEFAULT_MAX_ATTEMPTS);
    let rate_limit = int("rate_limit", None, 1..=100_000);
    let concurrency = int("concurrency", Some(8), 1..=256).unwrap_or(8);
    let mut secrets = Map::new();
    for key in SECRET_FIELDS {
        match obj.get(key) {
            None => {}
            Some(v @ (Value::Null | Value::String(_))) => {
                secrets.insert(key.into(), v.clone());
            }
            Some(_) => bad(&format!("/{key}"), "expected a string".into()),
        }
    }
    // A segment destination needs a write key, given here or stored before: the API checks
    // that, since it knows what is stored (this function also reads stored settings back).
    if !problems.is_empty() {
        return Err(problems);
    }
    let dest = Destination {
        kind,
        url,
        method,
        headers,
        timeout_ms,
        max_attempts,
        rate_limit,
        concurrency,
    };
    let public = dest.to_json();
    Ok((
        dest,
        public.as_object().cloned().unwrap_or_default(),
        secrets,
    ))
}

impl Destination {
    /// The public settings, as stored and shown.
    pub fn to_json(&self) -> Value {
        json!({
            "type": match self.kind { Kind::Webhook => "webhook", Kind::Segment => "segment" },
            "url": self.url,
            "method": self.method,
            "headers": self.headers,
            "timeout": format!("{}s", self.timeout_ms / 1000),
            "max_attempts": self.max_attempts,
            "rate_limit": self.rate_limit,
            "concurrency": self.concurrency,
        })
    }
}
