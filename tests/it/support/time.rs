//! Timestamps as journeyd writes them, on chrono: RFC 3339, UTC, milliseconds, `Z`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

/// Is this a timestamp in the stored form: RFC 3339, UTC, exactly milliseconds, `Z`
/// (`2026-11-28T10:17:41.908Z`)?
pub fn is_stored_timestamp(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    let b = s.as_bytes();
    let pattern = b"dddd-dd-ddTdd:dd:dd.dddZ";
    b.len() == pattern.len()
        && b.iter().zip(pattern).all(|(c, p)| {
            if *p == b'd' {
                c.is_ascii_digit()
            } else {
                c == p
            }
        })
        && parse_ts(s).is_some()
}

/// Parses an RFC 3339 timestamp (any fraction, `Z` or an offset).
pub fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Parses a timestamp the server wrote to unix milliseconds; fails the test when it is not one.
pub fn ts_ms(v: &Value) -> i64 {
    v.as_str()
        .and_then(parse_ts)
        .unwrap_or_else(|| panic!("not an RFC 3339 timestamp: {v}"))
        .timestamp_millis()
}

/// Formats a time in the stored form (truncating to the millisecond).
pub fn fmt_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Formats unix milliseconds in the stored form.
pub fn fmt_ms(ms: i64) -> String {
    fmt_ts(DateTime::from_timestamp_millis(ms).expect("a representable time"))
}

/// `"90m"` to milliseconds (SPEC §3: a whole number and one of s, m, h, d, w).
pub fn duration_ms(s: &str) -> u64 {
    let (n, unit) = s.split_at(s.len() - 1);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("bad duration {s:?}"));
    n * match unit {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => panic!("bad duration {s:?}"),
    }
}

/// A script or trace offset (`+90m`, `+0s`, `+1500ms`, compound `+1h30m`) to milliseconds.
pub fn offset_ms(s: &str) -> u64 {
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits]
            .parse()
            .unwrap_or_else(|_| panic!("bad offset {s:?}"));
        if rest[digits..].starts_with("ms") {
            total += n;
            rest = &rest[digits + 2..];
        } else {
            total += duration_ms(&rest[..digits + 1]);
            rest = &rest[digits + 1..];
        }
    }
    total
}

/// The wall clock, for the servers that run on it (the subprocess [`Server`](super::Server)).
pub fn now() -> DateTime<Utc> {
    Utc::now()
}

/// The time helpers, checked against known values (no server needed).
#[test]
fn support_time_helpers() {
    let cases = [
        ("1970-01-01T00:00:00.000Z", Some(0)),
        (
            "2026-11-28T10:17:39.906342+00:00",
            Some(1_795_861_059_906_342),
        ),
        (
            "2026-11-28T11:17:39.906342+01:00",
            Some(1_795_861_059_906_342),
        ),
        ("2000-02-29T23:59:59Z", Some(951_868_799_000_000)),
        ("2026-11-28T10:17:39", None),
        ("yesterday", None),
    ];
    for (s, want) in cases {
        assert_eq!(
            parse_ts(s).map(|t| t.timestamp_micros()),
            want,
            "parse_ts({s:?})"
        );
    }
    for s in [
        "1970-01-01T00:00:00.000Z",
        "2000-02-29T23:59:59.999Z",
        "2026-11-28T10:17:39.906Z",
    ] {
        assert_eq!(fmt_ts(parse_ts(s).unwrap()), s);
        assert_eq!(fmt_ms(ts_ms(&Value::String(s.into()))), s);
        assert!(is_stored_timestamp(&Value::String(s.into())), "{s}");
    }
    // Formatting truncates to the millisecond.
    assert_eq!(
        fmt_ts(parse_ts("2026-11-28T10:17:39.906999Z").unwrap()),
        "2026-11-28T10:17:39.906Z"
    );
    for not_stored in [
        "2026-11-28T10:17:39.906+00:00",
        "2026-11-28T10:17:39Z",
        "2026-11-28T10:17:39.906342Z",
        "2026-11-28 10:17:39.906Z",
        "2026-13-28T10:17:39.906Z",
    ] {
        assert!(
            !is_stored_timestamp(&Value::String(not_stored.into())),
            "{not_stored}"
        );
    }
    assert!(!is_stored_timestamp(&Value::Null));
}
