//! Clock-skew correction: with `sentAt`, the stored `timestamp` is `receivedAt - (sentAt - timestamp)` and the
//! client's value is kept as `originalTimestamp`; without `sentAt`, `timestamp` is the client's value, or
//! `receivedAt` when the client sent none. Every stored timestamp is RFC 3339 UTC with milliseconds and `Z`.

use chrono::TimeDelta;
use serde_json::{Value, json};

use crate::support::{Server, check_all, fmt_ts, is_stored_timestamp, now, parse_ts, uid};

/// What the stored `timestamp` must be.
enum Expect {
    /// `receivedAt` minus this many microseconds (to the millisecond).
    ReceivedMinus(i64),
    /// Exactly this string.
    Exactly(String),
    /// Equal to `receivedAt`.
    Received,
}

struct Case {
    name: &'static str,
    batch: bool,
    timestamp: Option<String>,
    /// `sentAt` on the message itself.
    sent_at: Option<String>,
    /// `sentAt` at the top of the batch, as the SDKs send it.
    batch_sent_at: Option<String>,
    expect: Expect,
    /// The stored `originalTimestamp`: `None` means absent (or null).
    original: Option<String>,
}

fn check(srv: &Server, c: &Case) {
    let user = uid("user");
    let mid = uid("mid");
    let mut msg = json!({"type": "track", "event": "Skewed", "userId": user, "messageId": mid});
    if let Some(t) = &c.timestamp {
        msg["timestamp"] = json!(t);
    }
    if let Some(s) = &c.sent_at {
        msg["sentAt"] = json!(s);
    }
    let body = if c.batch {
        let mut b = json!({"batch": [msg]});
        if let Some(s) = &c.batch_sent_at {
            b["sentAt"] = json!(s);
        }
        b
    } else {
        msg
    };
    let before = now();
    let resp = srv.ingest(if c.batch { "/v1/batch" } else { "/v1/track" }, &body);
    let after = now();
    assert_eq!(
        resp.expect(200),
        json!({"success": true}),
        "{}: {body}:\n{resp}",
        c.name
    );

    let stored = srv.event(&user, &mid);
    let ctx = format!("case {:?}: sent {body}\nstored {stored:#}", c.name);
    for field in ["receivedAt", "timestamp"] {
        assert!(
            is_stored_timestamp(&stored[field]),
            "{field} not in the stored form: {ctx}"
        );
    }
    let received = parse_ts(stored["receivedAt"].as_str().unwrap()).unwrap();
    // Stored values have milliseconds; allow for the truncation on both sides.
    let ms = TimeDelta::milliseconds(1);
    assert!(
        received >= before - ms && received <= after + ms,
        "receivedAt {} is not between {} and {}: {ctx}",
        fmt_ts(received),
        fmt_ts(before),
        fmt_ts(after)
    );
    let timestamp = parse_ts(stored["timestamp"].as_str().unwrap()).unwrap();
    match &c.expect {
        Expect::ReceivedMinus(skew) => {
            let want = received - TimeDelta::microseconds(*skew);
            assert!(
                (timestamp - want).abs() <= ms,
                "timestamp {} should be receivedAt - {} ms = {}: {ctx}",
                fmt_ts(timestamp),
                *skew as f64 / 1000.0,
                fmt_ts(want)
            );
        }
        Expect::Exactly(s) => assert_eq!(stored["timestamp"], json!(s), "{ctx}"),
        Expect::Received => assert_eq!(stored["timestamp"], stored["receivedAt"], "{ctx}"),
    }
    match &c.original {
        Some(s) => assert_eq!(
            stored["originalTimestamp"],
            json!(s),
            "originalTimestamp: {ctx}"
        ),
        None => assert!(
            stored.get("originalTimestamp").is_none_or(Value::is_null),
            "no originalTimestamp expected: {ctx}"
        ),
    }
}

#[test]
fn timestamps_are_corrected_for_skew() {
    let srv = Server::start();
    let s = |v: &str| Some(v.to_string());
    let now = now();
    // A client whose clock runs an hour fast: the event happened 2 s before it was sent.
    let ahead_ts = fmt_ts(now + TimeDelta::seconds(3600));
    let ahead_sent = fmt_ts(now + TimeDelta::seconds(3602));
    let base = || Case {
        name: "",
        batch: false,
        timestamp: None,
        sent_at: None,
        batch_sent_at: None,
        expect: Expect::Received,
        original: None,
    };
    let cases = vec![
        Case {
            name: "sentAt on a single message",
            timestamp: s("2020-01-01T00:00:00.000Z"),
            sent_at: s("2020-01-01T00:00:10.000Z"),
            expect: Expect::ReceivedMinus(10_000_000),
            original: s("2020-01-01T00:00:00.000Z"),
            ..base()
        },
        Case {
            name: "sentAt at the top of a batch",
            batch: true,
            timestamp: s("2020-01-01T00:00:00.000Z"),
            batch_sent_at: s("2020-01-01T00:00:05.000Z"),
            expect: Expect::ReceivedMinus(5_000_000),
            original: s("2020-01-01T00:00:00.000Z"),
            ..base()
        },
        Case {
            name: "offsets and a whole-second sentAt",
            timestamp: s("2020-01-01T01:00:00.000+01:00"),
            sent_at: s("2020-01-01T00:00:03Z"),
            expect: Expect::ReceivedMinus(3_000_000),
            original: s("2020-01-01T01:00:00.000+01:00"),
            ..base()
        },
        Case {
            name: "client clock ahead",
            timestamp: Some(ahead_ts.clone()),
            sent_at: Some(ahead_sent),
            expect: Expect::ReceivedMinus(2_000_000),
            original: Some(ahead_ts),
            ..base()
        },
        Case {
            // As analytics-python sends them: `+00:00`, and microseconds in sentAt.
            name: "python-style microseconds",
            batch: true,
            timestamp: s("2026-11-28T10:17:39.406+00:00"),
            batch_sent_at: s("2026-11-28T10:17:39.906342+00:00"),
            expect: Expect::ReceivedMinus(500_342),
            // originalTimestamp is the client's value, kept exactly as sent.
            original: s("2026-11-28T10:17:39.406+00:00"),
            ..base()
        },
        Case {
            name: "no sentAt: the client's timestamp",
            timestamp: s("2021-06-01T12:00:00.250Z"),
            expect: Expect::Exactly("2021-06-01T12:00:00.250Z".to_string()),
            original: s("2021-06-01T12:00:00.250Z"),
            ..base()
        },
        Case {
            name: "no sentAt, offset timestamp: normalised to UTC",
            batch: true,
            timestamp: s("2021-06-01T14:00:00.250+02:00"),
            expect: Expect::Exactly("2021-06-01T12:00:00.250Z".to_string()),
            original: s("2021-06-01T14:00:00.250+02:00"),
            ..base()
        },
        Case {
            name: "no timestamp, no sentAt: receivedAt",
            ..base()
        },
        Case {
            name: "no timestamp, no sentAt, in a batch",
            batch: true,
            ..base()
        },
    ];
    check_all(cases, |c| c.name.to_string(), |c| check(&srv, c));
}
