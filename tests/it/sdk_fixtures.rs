//! The requests captured from the official Segment server SDKs (tests/fixtures/sdk-requests/), replayed
//! unchanged against a server whose write key is `WRITE_KEY`: method, path and headers as captured, the
//! body as the fixture holds it (the JSON text exactly as it stands in the file, so its key order is
//! kept, or the gzip bytes decoded from `body_base64`). Each must answer 200 with nothing rejected.

use std::path::Path;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::{Options, Server};

/// The JSON text of the top-level `"body"` member of a fixture, exactly as written in the file.
fn raw_body(text: &str) -> Option<&str> {
    let start = text.find("\"body\":")? + "\"body\":".len();
    let rest = &text[start..];
    let open = rest.find('{')?;
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for (i, c) in rest[open..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_str => escaped = true,
            '"' => in_str = !in_str,
            '{' | '[' if !in_str => depth += 1,
            '}' | ']' if !in_str => {
                depth -= 1;
                if depth == 0 {
                    return Some(&rest[open..open + i + 1]);
                }
            }
            _ => {}
        }
    }
    None
}

struct Fixture {
    file: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The decoded JSON body, to know what the request carried.
    json: Value,
}

fn load(name: &str) -> Fixture {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sdk-requests")
        .join(name);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["method"], "POST", "{name}");
    let headers = doc["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let (body, json) = match doc["body_base64"].as_str() {
        Some(b64) => {
            let gz = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            let mut plain = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut plain)
                .unwrap();
            (gz, serde_json::from_slice(&plain).unwrap())
        }
        None => {
            let raw = raw_body(&text).unwrap_or_else(|| panic!("{name}: no body"));
            let json: Value = serde_json::from_str(raw).unwrap();
            assert_eq!(json, doc["body"], "{name}: raw body extraction");
            (raw.as_bytes().to_vec(), json)
        }
    };
    Fixture {
        file: name.to_string(),
        path: doc["path"].as_str().unwrap().to_string(),
        headers,
        body,
        json,
    }
}

/// What a fixture must leave behind, beyond a clean 200.
struct Expect {
    traits: Value,
}

fn check(name: &str, expect: Expect) {
    let fx = load(name);
    let srv = Server::start_with(Options {
        write_keys: vec!["WRITE_KEY".to_string()],
        ..Options::default()
    });
    let headers: Vec<(&str, &str)> = fx
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let resp = srv.post(&fx.path, &headers, &fx.body);
    assert_eq!(
        resp.expect(200),
        json!({"success": true}),
        "{}: replay must answer 200 with no rejects:\n{resp}",
        fx.file
    );

    // The identify (with `"anonymousId": null` in the python captures) lands in profile user-23 with its traits.
    let profile_resp = srv.profile("user-23");
    let profile = profile_resp.expect(200);
    assert_eq!(profile["id"], "user-23", "{name}:\n{profile_resp}");
    for (k, v) in expect.traits.as_object().unwrap() {
        assert_eq!(
            &profile["traits"][k], v,
            "{name}: trait {k}:\n{profile_resp}"
        );
    }
    // The alias previousId anon-7 -> user-23 links the two.
    let ids = profile["ids"].as_array().cloned().unwrap_or_default();
    for id in ["user-23", "anon-7"] {
        assert!(
            ids.contains(&json!(id)),
            "{name}: ids must contain {id}:\n{profile_resp}"
        );
    }
    let via_anon = srv.profile("anon-7");
    assert_eq!(
        via_anon.expect(200)["id"],
        "user-23",
        "{name}: anon-7 resolves to user-23:\n{via_anon}"
    );

    // Every message is stored, once, with its original fields and the server's.
    let mut stored = srv.events("user-23");
    // anon-7 resolves to user-23; its timeline is read too in case the Cart_Viewed that anon-7 sent before the
    // alias stayed under the anonymous key.
    let extra: Vec<Value> = srv
        .events("anon-7")
        .into_iter()
        .filter(|m| !stored.contains(m))
        .collect();
    stored.extend(extra);
    let sent = fx.json["batch"].as_array().unwrap();
    for msg in sent {
        let mid = &msg["messageId"];
        let copies: Vec<&Value> = stored.iter().filter(|m| &m["messageId"] == mid).collect();
        assert_eq!(
            copies.len(),
            1,
            "{name}: {} {mid} must be stored once in the timelines of user-23/anon-7; stored: {:?}",
            msg["type"],
            stored
                .iter()
                .map(|m| (m["type"].clone(), m["messageId"].clone()))
                .collect::<Vec<_>>()
        );
        let got = copies[0];
        for key in [
            "type",
            "event",
            "properties",
            "traits",
            "name",
            "groupId",
            "previousId",
            "_metadata",
        ] {
            if msg.get(key).is_some() {
                assert_eq!(
                    &got[key], &msg[key],
                    "{name}: field {key} of {mid}: stored {got:#}"
                );
            }
        }
        assert_eq!(
            got["context"]["library"], msg["context"]["library"],
            "{name}: context of {mid}: {got:#}"
        );
    }
    // Checked last, so that a format problem does not hide a missing message: the server's timestamps
    // are RFC 3339 UTC with milliseconds and `Z`, also when the SDK sent `+00:00` and microseconds
    // (`originalTimestamp` is the client's value, kept as sent).
    for got in &stored {
        for field in ["receivedAt", "timestamp"] {
            assert!(
                crate::support::is_stored_timestamp(&got[field]),
                "{name}: {field} of {}: {got:#}",
                got["messageId"]
            );
        }
    }
}

#[test]
fn analytics_python() {
    check(
        "analytics-python-2.4.0.json",
        Expect {
            traits: json!({"email": "ada@example.com", "first_name": "Ada"}),
        },
    );
}

#[test]
fn analytics_python_gzip() {
    check(
        "analytics-python-2.4.0-gzip.json",
        Expect {
            traits: json!({"email": "ada@example.com", "first_name": "Ada"}),
        },
    );
}

#[test]
fn analytics_node() {
    check(
        "analytics-node-3.1.0.json",
        Expect {
            traits: json!({"email": "ada@example.com"}),
        },
    );
}

/// The fixtures themselves load: the raw body text parses to the fixture's `body`, the gzip decodes.
#[test]
fn fixtures_load() {
    for name in [
        "analytics-python-2.4.0.json",
        "analytics-python-2.4.0-gzip.json",
        "analytics-node-3.1.0.json",
    ] {
        let fx = load(name);
        assert_eq!(fx.path, "/v1/batch", "{name}");
        assert!(
            fx.json["batch"].as_array().is_some_and(|b| b.len() >= 5),
            "{name}"
        );
        assert!(!fx.headers.is_empty() && !fx.body.is_empty(), "{name}");
    }
}
