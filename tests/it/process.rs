//! The process contract: SIGTERM exits 0 and keeps what was acknowledged; usage errors exit 2 with a
//! message; generated credentials are printed once and survive restarts; credentials given at a restart are
//! added to the stored ones.

use serde_json::json;

use crate::support::load::{BATCH, Load, check_stored, stored_counts};
use crate::support::{Options, Server, bearer, check_all, describe, run_cli, temp_dir, track, uid};

#[test]
fn sigterm_exits_zero_and_keeps_acknowledged_events() {
    let mut srv = Server::start();
    let user = uid("user");
    let mid = uid("mid");
    srv.ingest_ok("/v1/track", &track(&user, &mid));
    let status = srv.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM must exit 0, got {status}\n{}",
        srv.log_tail()
    );
    srv.restart();
    srv.event(&user, &mid);
}

/// Runs `journeyd ARGS` and expects exit code 2 and something on stderr.
fn check_usage_error(name: &str, args: &[&str]) {
    let out = run_cli(args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{name}: journeyd {args:?} must exit 2: {}",
        describe(&out)
    );
    assert!(
        !out.stderr.is_empty(),
        "{name}: journeyd {args:?} must say what is wrong on stderr: {}",
        describe(&out)
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = temp_dir("usage");
    let db = dir.join("j.db");
    let db = db.to_str().unwrap();
    let cases: &[(&str, &[&str])] = &[
        ("unknown flag", &["serve", "--db", db, "--no-such-flag"]),
        ("unknown subcommand", &["frobnicate"]),
        (
            "listen without port",
            &["serve", "--db", db, "--listen", "127.0.0.1"],
        ),
        (
            "listen not an address",
            &["serve", "--db", db, "--listen", "not-an-address"],
        ),
        (
            "listen port out of range",
            &["serve", "--db", db, "--listen", "127.0.0.1:70000"],
        ),
        ("flag without value", &["serve", "--db", db, "--listen"]),
        ("backup without destination", &["backup", "--db", db]),
    ];
    check_all(
        cases,
        |c| c.0.to_string(),
        |(name, args)| check_usage_error(name, args),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn generated_credentials_are_printed_once_and_persist() {
    let mut srv = Server::start_with(Options {
        admin_token: None,
        write_keys: vec![],
        db: None,
        extra_args: Vec::new(),
    });
    let lines = srv.startup_lines().to_vec();
    let has = |prefix: &str, lines: &[String]| lines.iter().any(|l| l.trim().starts_with(prefix));
    assert!(
        has("admin token: ", &lines),
        "first start must print `admin token: ...` on stdout: {lines:?}"
    );
    assert!(
        has("write key: ", &lines),
        "first start must print `write key: ...` on stdout: {lines:?}"
    );
    let (token, key) = (srv.admin_token().to_string(), srv.write_key().to_string());
    assert!(
        !token.is_empty() && !key.is_empty() && token != key,
        "token {token:?}, key {key:?}"
    );

    let use_both = |srv: &Server, when: &str| {
        let user = uid("user");
        let resp = srv.ingest("/v1/track", &track(&user, &uid("mid")));
        assert_eq!(
            resp.expect(200),
            json!({"success": true}),
            "{when}: the generated write key must work:\n{resp}"
        );
        let resp = srv.get(
            &format!("/v1/profiles/{user}"),
            &[("Authorization", &bearer(&token))],
        );
        resp.expect(200);
    };
    use_both(&srv, "first start");

    srv.restart();
    let lines = srv.startup_lines().to_vec();
    assert!(
        !has("admin token: ", &lines),
        "a second start must not print a token: {lines:?}"
    );
    assert!(
        !has("write key: ", &lines),
        "a second start must not print a key: {lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains(&token) || l.contains(&key)),
        "the secrets must not be printed again: {lines:?}"
    );
    use_both(&srv, "after restart");
}

#[test]
fn credentials_given_at_restart_are_added() {
    let mut srv = Server::start_with(Options {
        admin_token: Some("token-one".into()),
        write_keys: vec!["key-one".into()],
        db: None,
        extra_args: Vec::new(),
    });
    srv.set_options(Options {
        admin_token: Some("token-two".into()),
        write_keys: vec!["key-two".into()],
        db: None,
        extra_args: Vec::new(),
    });
    srv.restart();
    for key in ["key-one", "key-two"] {
        let user = uid("user");
        let body = json!({"event": "E", "userId": user, "writeKey": key});
        let resp = srv.post(
            "/v1/track",
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        );
        assert_eq!(
            resp.expect(200),
            json!({"success": true}),
            "write key {key} after restart:\n{resp}"
        );
        for token in ["token-one", "token-two"] {
            let resp = srv.get(
                &format!("/v1/profiles/{user}"),
                &[("Authorization", &bearer(token))],
            );
            assert_eq!(
                resp.status, 200,
                "admin token {token} after restart:\n{resp}"
            );
        }
    }
}

/// SIGTERM while clients are posting: in-flight requests finish, the exit is 0, and nothing acknowledged is
/// lost.
#[test]
fn sigterm_under_load_exits_zero_and_loses_nothing() {
    let mut srv = Server::start();
    let mut load = Load::start(&srv, 3, 3, std::time::Duration::from_secs(2));
    load.wait_for_acks(10 * BATCH, std::time::Duration::from_secs(10));
    let status = srv.terminate();
    load.stop();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM under load must exit 0, got {status}\n{}",
        srv.log_tail()
    );
    let acked = load.acked_snapshot();
    let sent = load.shared.sent.lock().unwrap().clone();
    srv.restart();
    check_stored(
        "after SIGTERM under load",
        &stored_counts(&srv, &load.users),
        &acked,
        &sent,
    );
}
