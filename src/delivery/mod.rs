//! Destinations and delivery (SPEC §5). This file holds the destination settings (their JSON
//! shape, validation and defaults) and the retry policy, both pure; `sign` the webhook signature;
//! `worker` the dispatcher that takes due rows from the outbox and sends them.

pub(crate) mod sign;
pub(crate) mod worker;

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::validate::{Checker, Problem};

/// Fields of a destination that are never returned by the API.
pub(crate) const SECRET_FIELDS: [&str; 2] = ["secret", "write_key"];

pub(crate) const DEFAULT_TIMEOUT_MS: u64 = 10_000;
pub(crate) const DEFAULT_MAX_ATTEMPTS: u32 = 8;
/// Requests in flight to one destination at once, unless it says otherwise.
pub(crate) const DEFAULT_CONCURRENCY: u32 = 8;
/// Retries stop this long after a delivery was written (SPEC §5: at most 24 hours).
pub(crate) const RETRY_WINDOW_MS: i64 = 24 * 3_600_000;
/// The first retry waits about this long; each further one twice as long, up to [`MAX_BACKOFF_MS`].
pub(crate) const BASE_BACKOFF_MS: i64 = 1_000;
pub(crate) const MAX_BACKOFF_MS: i64 = 3_600_000;

/// Where a delivery is in its life (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Waiting for its next attempt (or in flight).
    Pending,
    Succeeded,
    /// A dead letter: refused, or out of attempts; kept, listable and retryable.
    Failed,
    /// Over the destination's frequency cap: recorded, never sent.
    Capped,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Capped => "capped",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "pending" => Status::Pending,
            "succeeded" => Status::Succeeded,
            "failed" => Status::Failed,
            "capped" => Status::Capped,
            _ => return None,
        })
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
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
    pub(crate) fn from_status(status: u16, retry_after_ms: Option<i64>) -> Outcome {
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
pub(crate) fn backoff_ms(attempt: u32, jitter: f64, retry_after_ms: Option<i64>) -> i64 {
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
pub(crate) fn parse_retry_after(value: &str, now: i64) -> Option<i64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<i64>() {
        return Some(secs.max(0).saturating_mul(1000));
    }
    chrono::DateTime::parse_from_rfc2822(value)
        .ok()
        .map(|t| (t.timestamp_millis() - now).max(0))
}

/// A validated destination.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Destination {
    pub(crate) kind: Kind,
    pub(crate) url: String,
    pub(crate) method: String,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) timeout_ms: u64,
    pub(crate) max_attempts: u32,
    /// Most requests per second to this destination, when limited.
    pub(crate) rate_limit: Option<u32>,
    /// Most requests in flight to this destination at once.
    pub(crate) concurrency: u32,
    /// Most sends per profile over a period, across journeys (SPEC §3.5).
    pub(crate) frequency_cap: Option<Cap>,
}

/// A frequency cap: at most `max` sends to one profile in any `per_ms` (SPEC §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cap {
    pub(crate) max: u32,
    pub(crate) per_ms: u64,
}

impl Cap {
    /// Whether one more send at `at` stays within the cap, given the times of the sends that
    /// counted so far (any order).
    pub(crate) fn allows(&self, sent: &[i64], at: i64) -> bool {
        let since = at.saturating_sub(self.per_ms as i64);
        (sent.iter().filter(|t| **t > since).count() as u32) < self.max
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Webhook,
    Segment,
}

/// A destination id: like a journey id, with capitals and dots allowed.
pub(crate) fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// A validated destination document: the settings, and the secret fields it carried (`null`
/// clears a stored one; a field left out keeps it).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Document {
    pub(crate) destination: Destination,
    pub(crate) secrets: Map<String, Value>,
}

const FIELDS: &[&str] = &[
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
    "frequency_cap",
];

/// Validates a destination document, reporting every problem with its JSON path. A segment
/// destination also needs a write key, given here or stored before: the API checks that, since
/// it knows what is stored (this function also reads stored settings back).
pub(crate) fn parse(doc: &Value) -> Result<Document, Vec<Problem>> {
    let mut check = Checker::default();
    let Some(f) = check.fields(doc, "", FIELDS) else {
        return Err(check.problems);
    };
    let kind = match check.required_string(&f, "type").as_deref() {
        Some("webhook") | None => Kind::Webhook,
        Some("segment") => Kind::Segment,
        Some(other) => {
            check.report(
                "/type",
                format!("unknown destination type \"{other}\": use \"webhook\" or \"segment\""),
            );
            Kind::Webhook
        }
    };
    let url = check.required_string(&f, "url").unwrap_or_default();
    if !url.is_empty() {
        let parsed = url.parse::<hyper::Uri>();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            check.report(
                "/url",
                format!("\"{url}\" must start with http:// or https://"),
            );
        } else if !parsed.is_ok_and(|u| u.host().is_some()) {
            check.report("/url", format!("\"{url}\" is not a valid URL"));
        }
    }
    let method = match f.get("method") {
        None => "POST".to_string(),
        Some(Value::String(m))
            if ["POST", "PUT", "PATCH"].contains(&m.to_ascii_uppercase().as_str()) =>
        {
            m.to_ascii_uppercase()
        }
        Some(m) => {
            check.report(
                "/method",
                format!("method must be POST, PUT or PATCH, got {m}"),
            );
            "POST".into()
        }
    };
    let mut headers = BTreeMap::new();
    for (k, v) in check.optional_object(&f, "headers").into_iter().flatten() {
        if reserved_header(k) {
            check.report(
                &crate::validate::join(&f.path("headers"), k),
                format!("\"{k}\" is set by journeyd and may not be given"),
            );
            continue;
        }
        match v.as_str() {
            Some(v)
                if k.parse::<hyper::header::HeaderName>().is_ok()
                    && v.parse::<hyper::header::HeaderValue>().is_ok() =>
            {
                headers.insert(k.clone(), v.to_string());
            }
            _ => check.report(
                &crate::validate::join(&f.path("headers"), k),
                "expected a valid header name with a string value",
            ),
        }
    }
    let timeout_ms = check
        .duration(&f, "timeout", false, 1000..=300_000, "1s to 5m")
        .unwrap_or(DEFAULT_TIMEOUT_MS);
    let max_attempts = check
        .optional_integer(&f, "max_attempts", 1..=100)
        .map_or(DEFAULT_MAX_ATTEMPTS, |n| n as u32);
    let rate_limit = check
        .optional_integer(&f, "rate_limit", 1..=100_000)
        .map(|n| n as u32);
    let concurrency = check
        .optional_integer(&f, "concurrency", 1..=256)
        .map_or(DEFAULT_CONCURRENCY, |n| n as u32);
    let frequency_cap = match f.get("frequency_cap") {
        None => None,
        Some(v) => check
            .fields(v, &f.path("frequency_cap"), &["max", "per"])
            .and_then(|cf| {
                let max = check.optional_integer(&cf, "max", 1..=1_000_000);
                if cf.get("max").is_none() {
                    check.report(&cf.path("max"), "missing field \"max\" (at least 1)");
                }
                let per = check.duration(
                    &cf,
                    "per",
                    true,
                    crate::journey::MIN_DURATION_MS..=crate::journey::MAX_DURATION_MS,
                    "1s to 365d",
                );
                Some(Cap {
                    max: max? as u32,
                    per_ms: per?,
                })
            }),
    };
    let mut secrets = Map::new();
    for key in SECRET_FIELDS {
        match f.map.get(key) {
            None => {}
            Some(v @ (Value::Null | Value::String(_))) => {
                secrets.insert(key.into(), v.clone());
            }
            Some(other) => check.wrong_type(&f.path(key), "a string", other),
        }
    }
    let destination = Destination {
        kind,
        url,
        method,
        headers,
        timeout_ms,
        max_attempts,
        rate_limit,
        concurrency,
        frequency_cap,
    };
    check.finish(Some(Document {
        destination,
        secrets,
    }))
}

/// What a write-only value (a header value, a password in a URL) is shown as. Sent back in a
/// `PUT`, it stands for the value stored before.
pub(crate) const MASK: &str = "********";

impl Destination {
    /// The settings as stored in the clear and shown: header values and a password in the URL
    /// masked (SPEC §5).
    pub(crate) fn public(&self) -> Value {
        let headers: BTreeMap<&str, &str> =
            self.headers.keys().map(|k| (k.as_str(), MASK)).collect();
        json!({
            "type": match self.kind { Kind::Webhook => "webhook", Kind::Segment => "segment" },
            "url": mask_password(&self.url),
            "method": self.method,
            "headers": headers,
            "timeout": format!("{}s", self.timeout_ms / 1000),
            "max_attempts": self.max_attempts,
            "rate_limit": self.rate_limit,
            "concurrency": self.concurrency,
            "frequency_cap": self.frequency_cap.map(|c| json!({
                "max": c.max,
                "per": crate::sim::format_offset(c.per_ms as i64).trim_start_matches('+').to_string(),
            })),
        })
    }

    /// The write-only parts, kept with the secrets: header values, and the URL when it carries
    /// a password (`null` otherwise, which clears a stored one).
    pub(crate) fn hidden(&self) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("headers".into(), json!(self.headers));
        let url = (mask_password(&self.url) != self.url).then(|| self.url.clone());
        out.insert("url".into(), json!(url));
        out
    }

    /// Puts back the write-only parts that `public` masked, from stored secrets. Returns the
    /// JSON path of a masked value with nothing stored to stand for.
    pub(crate) fn unmask(&mut self, secrets: &Map<String, Value>) -> Result<(), String> {
        let stored = secrets.get("headers").and_then(Value::as_object);
        for (name, value) in self.headers.iter_mut() {
            if value == MASK {
                *value = stored
                    .and_then(|h| h.get(name))
                    .and_then(Value::as_str)
                    .ok_or_else(|| crate::validate::join("/headers", name))?
                    .to_string();
            }
        }
        if let Some((before, MASK, after)) = split_password(&self.url) {
            let stored = secrets.get("url").and_then(Value::as_str);
            let password = stored
                .and_then(split_password)
                .map(|(_, p, _)| p.to_string());
            let password = password.ok_or_else(|| "/url".to_string())?;
            self.url = format!("{before}{password}{after}");
        }
        Ok(())
    }
}

/// A URL's password, with what comes before and after it: `https://user:pw@host/` gives
/// (`https://user:`, `pw`, `@host/`).
fn split_password(url: &str) -> Option<(&str, &str, &str)> {
    let scheme_end = url.find("://")? + 3;
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    let at = url[scheme_end..authority_end].rfind('@')? + scheme_end;
    let colon = url[scheme_end..at].find(':')? + scheme_end;
    Some((&url[..colon + 1], &url[colon + 1..at], &url[at..]))
}

/// The URL with its password, if any, masked.
pub(crate) fn mask_password(url: &str) -> String {
    match split_password(url) {
        Some((before, _, after)) => format!("{before}{MASK}{after}"),
        None => url.to_string(),
    }
}

/// Headers a destination may not set: they frame the request or carry the signature (SPEC §5).
fn reserved_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
    ]
    .contains(&name.as_str())
        || name.starts_with("webhook-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_masked_and_restored() {
        assert_eq!(
            mask_password("https://u:pw@h.example/x?a=b@c"),
            "https://u:********@h.example/x?a=b@c"
        );
        assert_eq!(
            mask_password("https://u@h.example/"),
            "https://u@h.example/"
        );
        assert_eq!(
            mask_password("https://h.example/a@b"),
            "https://h.example/a@b"
        );
        let doc = json!({"type": "webhook", "url": "https://u:pw@h.example/", "headers": {"X-Key": "k1"}});
        let dest = parse(&doc).unwrap().destination;
        let stored = dest.hidden();
        let shown = dest.public();
        assert_eq!(shown["url"], "https://u:********@h.example/");
        assert_eq!(shown["headers"]["X-Key"], MASK);
        let mut back = parse(&shown).unwrap().destination;
        back.unmask(&stored).unwrap();
        assert_eq!(back, dest);
        let mut nothing_stored = parse(&shown).unwrap().destination;
        assert_eq!(
            nothing_stored.unmask(&Map::new()),
            Err("/headers/X-Key".into())
        );
    }

    #[test]
    fn framing_and_signature_headers_are_refused() {
        for name in [
            "Host",
            "content-length",
            "Transfer-Encoding",
            "Connection",
            "Upgrade",
            "webhook-id",
            "Webhook-Signature",
        ] {
            let doc =
                json!({"type": "webhook", "url": "https://h.example/", "headers": {name: "x"}});
            let problems = parse(&doc).unwrap_err();
            assert_eq!(problems.len(), 1, "{name}: {problems:?}");
            assert_eq!(problems[0].path, format!("/headers/{name}"));
        }
    }
}
