//! Normalisation checked message by message: each case is a body, and either the fields the
//! stored message must have or the rejection it must get.

use super::*;
use serde_json::json;

const NOW: i64 = 1_795_861_062_000; // 2026-11-28T10:17:42.000Z

fn run(endpoint: Endpoint, body: Value) -> Result<(Vec<Message>, Vec<Reject>), RequestError> {
    let bytes = serde_json::to_vec(&body).unwrap();
    let mut n = 0;
    let mut ids = || {
        n += 1;
        format!("gen-{n}")
    };
    Parsed::new(endpoint, &bytes)?.messages(NOW, &mut ids)
}

fn single(call: CallType, body: Value) -> Result<Message, RequestError> {
    run(Endpoint::Single(call), body).map(|(mut m, _)| m.remove(0))
}

#[test]
fn server_fields_and_skew() {
    let m = single(
        CallType::Track,
        json!({"userId": "u1", "event": "E", "timestamp": "2020-01-01T00:00:00.000Z", "sentAt": "2020-01-01T00:00:10.000Z"}),
    )
    .unwrap();
    assert_eq!(m.timestamp, NOW - 10_000);
    assert_eq!(m.body()["timestamp"], json!("2026-11-28T10:17:32.000Z"));
    assert_eq!(
        m.body()["originalTimestamp"],
        json!("2020-01-01T00:00:00.000Z")
    );
    assert_eq!(m.body()["receivedAt"], json!("2026-11-28T10:17:42.000Z"));
    assert_eq!(m.body()["messageId"], json!("gen-1"));
    assert_eq!(m.body()["type"], json!("track"));

    let no_sent = single(
        CallType::Track,
        json!({"userId": "u1", "event": "E", "timestamp": "2020-01-01T00:00:00+00:00"}),
    )
    .unwrap();
    assert_eq!(
        no_sent.body()["timestamp"],
        json!("2020-01-01T00:00:00.000Z")
    );
    let none = single(CallType::Page, json!({"anonymousId": "a"})).unwrap();
    assert_eq!(none.timestamp, NOW);
    assert!(none.body().get("originalTimestamp").is_none());
}

#[test]
fn single_call_rejections() {
    let cases = [
        (CallType::Track, json!({"event": "E"}), "invalid_message"),
        (
            CallType::Track,
            json!({"userId": null, "anonymousId": null, "event": "E"}),
            "invalid_message",
        ),
        (CallType::Track, json!({"userId": "u"}), "invalid_message"),
        (CallType::Alias, json!({"userId": "u"}), "invalid_message"),
        (
            CallType::Track,
            json!({"userId": "u", "event": "E", "properties": [1]}),
            "invalid_message",
        ),
        (
            CallType::Track,
            json!({"userId": "u", "event": "E", "timestamp": "yesterday"}),
            "invalid_message",
        ),
        (CallType::Track, json!(["not an object"]), "invalid_message"),
    ];
    for (call, body, code) in cases {
        let err = single(call, body.clone()).expect_err(&body.to_string());
        assert_eq!(err.code(), code, "{body}");
    }
}

#[test]
fn batch_merges_and_rejects_by_index() {
    let (messages, rejected) = run(
        Endpoint::Batch,
        json!({
            "batch": [
                {"type": "track", "userId": "u", "event": "E", "context": {"ip": "1.2.3.4"}},
                {"type": "track", "userId": "u"},
                {"userId": "u", "event": "E"},
                {"type": "identify", "anonymousId": "a", "traits": {"x": 1}, "integrations": {"All": false}},
                {"type": "track", "userId": "u", "event": "E", "properties": {"pad": "x".repeat(MAX_MESSAGE_BYTES)}},
            ],
            "context": {"library": {"name": "test"}, "ip": "9.9.9.9"},
            "integrations": {"All": true, "Mixpanel": false},
            "writeKey": "K",
        }),
    )
    .unwrap();
    assert_eq!(messages.len(), 2);
    let indexes: Vec<_> = rejected.iter().map(|r| (r.index, r.code)).collect();
    assert_eq!(
        indexes,
        [
            (1, "invalid_message"),
            (2, "invalid_message"),
            (4, "too_large")
        ]
    );
    assert_eq!(
        messages[0].body()["context"],
        json!({"ip": "1.2.3.4", "library": {"name": "test"}})
    );
    assert_eq!(
        messages[1].body()["integrations"],
        json!({"All": false, "Mixpanel": false})
    );
    assert!(messages[1].body().get("writeKey").is_none());
}

#[test]
fn request_level_errors() {
    let too_many =
        json!({"batch": vec![json!({"type": "page", "userId": "u"}); MAX_BATCH_MESSAGES + 1]});
    assert_eq!(
        run(Endpoint::Batch, too_many).unwrap_err().code(),
        "too_many_messages"
    );
    assert_eq!(
        Parsed::new(Endpoint::Batch, b"{nope").err().unwrap().code(),
        "invalid_json"
    );
    let big = vec![b' '; MAX_REQUEST_BYTES + 1];
    assert_eq!(
        Parsed::new(Endpoint::Batch, &big).err().unwrap().code(),
        "too_large"
    );
    let body = serde_json::to_vec(
        &json!({"userId": "u", "event": "E", "p": "x".repeat(MAX_MESSAGE_BYTES)}),
    )
    .unwrap();
    assert_eq!(
        Parsed::new(Endpoint::Single(CallType::Track), &body)
            .err()
            .unwrap()
            .code(),
        "too_large"
    );
}

#[test]
fn write_key_from_body() {
    let body = serde_json::to_vec(&json!({"batch": [], "writeKey": "K"})).unwrap();
    assert_eq!(
        Parsed::new(Endpoint::Batch, &body).unwrap().write_key(),
        Some("K")
    );
    let body = serde_json::to_vec(&json!({"userId": "u", "event": "E", "writeKey": "K2"})).unwrap();
    assert_eq!(
        Parsed::new(Endpoint::Single(CallType::Track), &body)
            .unwrap()
            .write_key(),
        Some("K2")
    );
}
