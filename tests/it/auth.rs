//! Ingest auth: the write key as Basic user name (with or without the colon) or as `writeKey` in the body;
//! a wrong or missing key is a 401 that stores nothing.

use serde_json::json;

use crate::support::{
    ADMIN_TOKEN, Server, WRITE_KEY, basic, basic_no_colon, bearer, check_all, uid,
};

enum Key<'a> {
    None,
    Header(String),
    Body(&'a str),
    Both(String, &'a str),
}

fn check(srv: &Server, name: &str, path: &str, key: &Key, expect_ok: bool) {
    let user = uid("user");
    let mid = uid("mid");
    let mut msg = json!({"type": "track", "event": "Auth_Test", "userId": user, "messageId": mid});
    let mut body = if path.ends_with("batch") {
        json!({"batch": [msg.take()]})
    } else {
        msg
    };
    let mut headers = vec![("Content-Type", "application/json".to_string())];
    match key {
        Key::None => {}
        Key::Header(h) => headers.push(("Authorization", h.clone())),
        Key::Body(k) => body["writeKey"] = json!(k),
        Key::Both(h, k) => {
            headers.push(("Authorization", h.clone()));
            body["writeKey"] = json!(k);
        }
    }
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let resp = srv.post(path, &headers, body.to_string().as_bytes());
    if expect_ok {
        assert_eq!(
            resp.expect(200),
            json!({"success": true}),
            "{name}: {path} {body}:\n{resp}"
        );
        srv.event(&user, &mid);
    } else {
        let got = resp.expect(401);
        assert_eq!(got["success"], false, "{name}:\n{resp}");
        assert_eq!(got["code"], "unauthorized", "{name}:\n{resp}");
        assert!(
            got["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}: needs a message:\n{resp}"
        );
        let profile = srv.profile(&user);
        assert_eq!(
            profile.status, 404,
            "{name}: a rejected call must store nothing, but {user} exists:\n{profile}"
        );
    }
}

#[test]
fn write_key_forms() {
    let srv = Server::start();
    let mut cases: Vec<(&str, &str, Key, bool)> = Vec::new();
    for path in ["/v1/track", "/v1/batch"] {
        cases.extend([
            ("basic KEY:", path, Key::Header(basic(WRITE_KEY)), true),
            (
                "basic KEY, no colon",
                path,
                Key::Header(basic_no_colon(WRITE_KEY)),
                true,
            ),
            ("writeKey in body", path, Key::Body(WRITE_KEY), true),
            (
                "both, same key",
                path,
                Key::Both(basic(WRITE_KEY), WRITE_KEY),
                true,
            ),
            ("missing", path, Key::None, false),
            (
                "wrong basic",
                path,
                Key::Header(basic("not-the-key")),
                false,
            ),
            (
                "wrong basic, no colon",
                path,
                Key::Header(basic_no_colon("not-the-key")),
                false,
            ),
            (
                "wrong writeKey in body",
                path,
                Key::Body("not-the-key"),
                false,
            ),
            ("empty basic user", path, Key::Header(basic("")), false),
            (
                "basic, not base64",
                path,
                Key::Header("Basic %%%".into()),
                false,
            ),
            (
                "write key as bearer",
                path,
                Key::Header(bearer(WRITE_KEY)),
                false,
            ),
            (
                "admin token as write key",
                path,
                Key::Header(basic(ADMIN_TOKEN)),
                false,
            ),
        ]);
    }
    check_all(
        cases,
        |c| format!("{} {}", c.0, c.1),
        |(name, path, key, ok)| check(&srv, name, path, key, *ok),
    );
}

#[test]
fn every_given_write_key_works() {
    let srv = Server::start_with(crate::support::Options {
        write_keys: vec!["key-one".to_string(), "key-two".to_string()],
        ..Default::default()
    });
    let cases = [
        ("first key", "/v1/track", Key::Header(basic("key-one"))),
        ("second key", "/v1/track", Key::Header(basic("key-two"))),
        ("second key in body", "/v1/batch", Key::Body("key-two")),
    ];
    check_all(
        cases,
        |c| c.0.to_string(),
        |(name, path, key)| check(&srv, name, path, key, true),
    );
}
