//! Admin API access: a Bearer admin token is required everywhere but `/healthz`; an unknown profile is a 404
//! with the admin error shape.

use serde_json::json;

use crate::support::{ADMIN_TOKEN, Server, WRITE_KEY, basic, bearer, check_all, uid};

/// GETs `path` with this `Authorization` (or none) and checks the status and, for errors, the error code.
fn check(
    srv: &Server,
    name: &str,
    path: &str,
    auth: Option<&str>,
    status: u16,
    code: Option<&str>,
) {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    let resp = srv.get(path, &headers);
    assert_eq!(resp.status, status, "{name}: GET {path}:\n{resp}");
    if let Some(code) = code {
        let body = resp.json();
        assert_eq!(body["error"]["code"], code, "{name}: GET {path}:\n{resp}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}: the error needs a message:\n{resp}"
        );
    }
}

#[test]
fn admin_auth_healthz_and_not_found() {
    let srv = Server::start();
    let user = uid("user");
    srv.ingest_ok("/v1/identify", &json!({"userId": user, "traits": {"x": 1}}));
    let good = bearer(ADMIN_TOKEN);
    let profile = format!("/v1/profiles/{user}");
    let timeline = format!("/v1/profiles/{user}/timeline");
    let unknown = format!("/v1/profiles/{}", uid("nobody"));

    // (name, path, Authorization, status, error code)
    let mut cases: Vec<(&str, String, Option<String>, u16, Option<&str>)> = vec![
        ("healthz, no auth", "/healthz".into(), None, 200, None),
        (
            "healthz, with auth",
            "/healthz".into(),
            Some(good.clone()),
            200,
            None,
        ),
        (
            "own profile",
            profile.clone(),
            Some(good.clone()),
            200,
            None,
        ),
        (
            "own timeline",
            timeline.clone(),
            Some(good.clone()),
            200,
            None,
        ),
        (
            "unknown profile",
            unknown,
            Some(good.clone()),
            404,
            Some("not_found"),
        ),
    ];
    let bad_auth: [(&str, Option<String>); 6] = [
        ("no auth", None),
        ("wrong token", Some(bearer("not-the-token"))),
        ("empty bearer", Some("Bearer ".into())),
        ("write key as bearer", Some(bearer(WRITE_KEY))),
        ("write key as basic", Some(basic(WRITE_KEY))),
        ("token without scheme", Some(ADMIN_TOKEN.into())),
    ];
    for path in [&profile, &timeline, "/v1/backup", "/v1/profiles/nobody"] {
        for (name, auth) in &bad_auth {
            cases.push((
                name,
                path.to_string(),
                auth.clone(),
                401,
                Some("unauthorized"),
            ));
        }
    }
    check_all(
        cases,
        |c| format!("{} {}", c.0, c.1),
        |(name, path, auth, status, code)| check(&srv, name, path, auth.as_deref(), *status, *code),
    );
}
