//! Timestamps as Segment writes them (ISO 8601 / RFC 3339) to and from unix milliseconds.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};

/// Parses an ISO 8601 date-time into unix milliseconds. An offset is honoured; a value without
/// one is taken as UTC, since some SDKs omit the `Z`.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

/// Formats unix milliseconds as `2026-11-28T10:17:41.908Z`.
pub fn format_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}
