//! Body encodings and media types that ingest accepts: gzip, `text/plain` (what browsers send to avoid a
//! CORS preflight), `application/json` with a charset, and no `Content-Type` at all.

use serde_json::json;

use crate::support::{Server, WRITE_KEY, basic, check_all, gzip, uid};

/// Posts one track (or a batch of one) with these headers, gzipped or not, and expects it stored.
fn check(srv: &Server, name: &str, path: &str, content_type: Option<&str>, gzipped: bool) {
    let user = uid("user");
    let mid = uid("mid");
    let msg = json!({"type": "track", "event": "Encoded", "userId": user, "messageId": mid,
                     "properties": {"text": "héllo ✓"}});
    let body = if path.ends_with("batch") {
        json!({"batch": [msg]})
    } else {
        msg
    };
    let raw = body.to_string().into_bytes();
    let bytes = if gzipped { gzip(&raw) } else { raw };

    let auth = basic(WRITE_KEY);
    let mut headers = vec![("Authorization", auth.as_str())];
    if let Some(ct) = content_type {
        headers.push(("Content-Type", ct));
    }
    if gzipped {
        headers.push(("Content-Encoding", "gzip"));
    }
    let resp = srv.post(path, &headers, &bytes);
    assert_eq!(
        resp.expect(200),
        json!({"success": true}),
        "{name}: POST {path} {headers:?}:\n{resp}"
    );
    let stored = srv.event(&user, &mid);
    assert_eq!(
        stored["properties"]["text"], "héllo ✓",
        "{name}: body decoded wrongly: {stored:#}"
    );
}

#[test]
fn accepted_encodings_and_media_types() {
    let srv = Server::start();
    let mut cases: Vec<(&str, &str, Option<&str>, bool)> = Vec::new();
    for path in ["/v1/track", "/v1/batch"] {
        cases.extend([
            ("gzip json", path, Some("application/json"), true),
            ("gzip text/plain", path, Some("text/plain"), true),
            ("text/plain", path, Some("text/plain"), false),
            (
                "text/plain, charset",
                path,
                Some("text/plain;charset=UTF-8"),
                false,
            ),
            (
                "json, charset",
                path,
                Some("application/json; charset=utf-8"),
                false,
            ),
            ("no content type", path, None, false),
            ("no content type, gzip", path, None, true),
        ]);
    }
    check_all(
        cases,
        |c| format!("{} {}", c.0, c.1),
        |&(name, path, ct, gz)| check(&srv, name, path, ct, gz),
    );
}
