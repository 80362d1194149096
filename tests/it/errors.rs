//! Each ingest error answers its status and code, and changes nothing (SPEC §0.6): the profile the bad
//! request names stays unknown.

use serde_json::{Value, json};

use crate::support::{Server, WRITE_KEY, basic, check_all, gzip, uid};

struct Case {
    name: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    gzipped: bool,
    /// The user the body names: after the error, that profile must still be unknown.
    user: String,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

/// A JSON-typed, uncompressed case whose body is made for a fresh user.
fn case(
    name: &'static str,
    path: &'static str,
    body: impl Fn(&str) -> Vec<u8>,
    status: u16,
    code: &'static str,
) -> Case {
    let user = uid("user");
    Case {
        name,
        path,
        content_type: Some("application/json"),
        gzipped: false,
        body: body(&user),
        user,
        status,
        code,
    }
}

fn check(srv: &Server, c: &Case) {
    let auth = basic(WRITE_KEY);
    let mut headers = vec![("Authorization", auth.as_str())];
    if let Some(ct) = c.content_type {
        headers.push(("Content-Type", ct));
    }
    if c.gzipped {
        headers.push(("Content-Encoding", "gzip"));
    }
    let resp = srv.post(c.path, &headers, &c.body);
    let body = resp.expect(c.status);
    let ctx = format!(
        "case {:?}: POST {} ({} bytes):\n{resp}",
        c.name,
        c.path,
        c.body.len()
    );
    assert_eq!(body["success"], false, "{ctx}");
    assert_eq!(body["code"], c.code, "{ctx}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error needs a message: {ctx}"
    );
    let profile = srv.profile(&c.user);
    assert_eq!(
        profile.status, 404,
        "case {:?}: a rejected request must store nothing, but {} exists:\n{profile}",
        c.name, c.user
    );
}

fn bytes(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

fn track(user: &str) -> Value {
    json!({"type": "track", "event": "E", "userId": user})
}

/// A batch of `n` messages of about `pad` bytes each.
fn padded_batch(user: &str, n: usize, pad: usize) -> Value {
    let msgs: Vec<Value> = (0..n)
        .map(|_| json!({"type": "track", "event": "E", "userId": user, "properties": {"pad": "x".repeat(pad)}}))
        .collect();
    json!({"batch": msgs})
}

#[test]
fn ingest_errors() {
    let srv = Server::start();
    let cases = vec![
        case(
            "not json",
            "/v1/track",
            |u| format!("{{\"userId\": \"{u}\", ").into_bytes(),
            400,
            "invalid_json",
        ),
        case(
            "not json batch",
            "/v1/batch",
            |u| format!("{{\"batch\": [{{\"userId\": \"{u}\"").into_bytes(),
            400,
            "invalid_json",
        ),
        Case {
            gzipped: true,
            ..case(
                "gzip header, plain body",
                "/v1/track",
                |u| bytes(&track(u)),
                400,
                "invalid_json",
            )
        },
        Case {
            gzipped: true,
            ..case(
                "truncated gzip",
                "/v1/batch",
                |u| {
                    let mut g = gzip(&bytes(&json!({"batch": [track(u)]})));
                    g.truncate(g.len() / 2);
                    g
                },
                400,
                "invalid_json",
            )
        },
        // 20 messages of 30 KB: each under the message limit, 600 KB together.
        case(
            "request over 500 KB",
            "/v1/batch",
            |u| bytes(&padded_batch(u, 20, 30_000)),
            400,
            "too_large",
        ),
        // Compressed it is tiny; the limit is on the request as decoded.
        Case {
            gzipped: true,
            ..case(
                "request over 500 KB gzipped",
                "/v1/batch",
                |u| gzip(&bytes(&padded_batch(u, 20, 30_000))),
                400,
                "too_large",
            )
        },
        case(
            "single message over 32 KB",
            "/v1/track",
            |u| {
                bytes(
                    &json!({"event": "E", "userId": u, "properties": {"pad": "x".repeat(40_000)}}),
                )
            },
            400,
            "too_large",
        ),
        case(
            "batch over 2500 messages",
            "/v1/batch",
            |u| bytes(&json!({"batch": (0..2501).map(|_| track(u)).collect::<Vec<_>>()})),
            400,
            "too_many_messages",
        ),
        case(
            "track without event",
            "/v1/track",
            |u| bytes(&json!({"userId": u})),
            400,
            "invalid_message",
        ),
        case(
            "track with null event",
            "/v1/t",
            |u| bytes(&json!({"type": "track", "event": null, "userId": u})),
            400,
            "invalid_message",
        ),
        // These name no id at all, so the "nothing stored" check is trivially true for them.
        case(
            "identify without ids",
            "/v1/identify",
            |u| bytes(&json!({"traits": {"email": u}})),
            400,
            "invalid_message",
        ),
        case(
            "identify with null ids",
            "/v1/identify",
            |u| bytes(&json!({"userId": null, "anonymousId": null, "traits": {"email": u}})),
            400,
            "invalid_message",
        ),
        case(
            "alias without previousId",
            "/v1/alias",
            |u| bytes(&json!({"userId": u})),
            400,
            "invalid_message",
        ),
        case(
            "alias with null previousId",
            "/v1/a",
            |u| bytes(&json!({"type": "alias", "userId": u, "previousId": null})),
            400,
            "invalid_message",
        ),
    ];
    check_all(cases, |c| c.name.to_string(), |c| check(&srv, c));
}

#[test]
fn limits_are_not_off_by_one() {
    let srv = Server::start();
    // 2500 messages is the limit, not over it; a message just under 32 KB (32,000 bytes, below both
    // readings of "KB") is accepted alone and in a batch.
    let user = uid("user");
    let batch: Vec<Value> = (0..2500)
        .map(|i| {
            json!({"type": "track", "event": "E", "userId": user, "messageId": format!("{user}-{i}")})
        })
        .collect();
    let resp = srv.ingest("/v1/batch", &json!({"batch": batch}));
    assert_eq!(
        resp.expect(200),
        json!({"success": true}),
        "a batch of exactly 2500:\n{resp}"
    );
    assert_eq!(srv.events(&user).len(), 2500, "all 2500 stored");

    let user = uid("user");
    let msg = json!({"type": "track", "event": "E", "userId": user, "properties": {"pad": "x".repeat(31_000)}});
    assert!(msg.to_string().len() < 32_000);
    srv.ingest_ok("/v1/track", &msg);
    srv.ingest_ok("/v1/batch", &json!({"batch": [msg]}));
    assert_eq!(srv.events(&user).len(), 2, "both 31 KB messages stored");
}

/// Content-Type is not checked (docs/decisions.md): `curl -d` sends a form type, and the body must
/// be JSON whatever the header says.
#[test]
fn any_content_type_with_a_json_body_is_accepted() {
    let srv = Server::start();
    let auth = basic(WRITE_KEY);
    for ct in ["application/xml", "application/x-www-form-urlencoded"] {
        let user = uid("ct");
        let body = bytes(&json!({"batch": [track(&user)]}));
        let resp = srv.post(
            "/v1/batch",
            &[("Authorization", auth.as_str()), ("Content-Type", ct)],
            &body,
        );
        assert_eq!(resp.expect(200), json!({"success": true}), "{ct}:\n{resp}");
        assert_eq!(
            srv.profile(&user).status,
            200,
            "{ct}: the message must be stored"
        );
    }
}
