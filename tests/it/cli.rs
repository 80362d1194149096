//! The offline commands (SPEC §1): `journeyd check`, `journeyd simulate`, `journeyd backup` on a
//! missing database, and `--help`.

use std::fs;
use std::path::Path;

use serde_json::{Value, json};

use crate::support::{
    Server, cart_events, cart_journey, describe, many_problems_journey, run_cli, temp_dir, uid,
};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn cli_help_lists_the_commands() {
    let out = run_cli(&["--help"]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["serve", "check", "simulate", "backup"] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().next() == Some(cmd)),
            "--help does not list {cmd}:\n{}",
            describe(&out)
        );
    }
}

#[test]
fn cli_check_valid_and_invalid_files() {
    let dir = temp_dir("check");
    let valid = write(&dir, "valid.json", &cart_journey().to_string());
    let out = run_cli(&["check", &valid]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok"),
        "a valid file prints ok:\n{}",
        describe(&out)
    );

    // An invalid file: exit 1, each problem printed with its JSON path. The problems are those the
    // API reports for the same document.
    let doc = many_problems_journey("bad");
    let invalid = write(&dir, "invalid.json", &doc.to_string());
    let out = run_cli(&["check", &invalid]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let srv = Server::start();
    let resp = srv.admin_put("/v1/journeys/bad", &doc);
    let details = resp.expect(422)["error"]["details"].clone();
    let details = details.as_array().unwrap();
    assert!(details.len() >= 5, "{resp}");
    for d in details {
        let (path, message) = (d["path"].as_str().unwrap(), d["message"].as_str().unwrap());
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(path) && l.contains(message)),
            "check does not print the problem {path}: {message}\n{}",
            describe(&out)
        );
    }
    assert!(
        stdout.contains("/steps/1/branches/0/next") && stdout.contains("unknown step \"remindr\""),
        "{stdout}"
    );

    // Several files: every one is checked; one invalid makes the exit 1.
    let out = run_cli(&["check", &valid, &invalid]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("valid.json") && l.contains("ok")),
        "{stdout}"
    );
    assert!(stdout.contains("/steps/1/branches/0/next"), "{stdout}");

    // Not JSON, and a missing file: invalid, not a crash.
    let garbage = write(&dir, "garbage.json", "{\"id\": ");
    for file in [garbage, dir.join("missing.json").display().to_string()] {
        let out = run_cli(&["check", &file]);
        assert_eq!(out.status.code(), Some(1), "{file}: {}", describe(&out));
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn cli_simulate_matches_the_api() {
    let dir = temp_dir("simulate");
    let user = uid("cli-sim");
    let journey = write(&dir, "journey.json", &cart_journey().to_string());
    let events = cart_events(&user);
    let lines: Vec<String> = events.iter().map(Value::to_string).collect();
    let events_file = write(&dir, "events.jsonl", &(lines.join("\n") + "\n"));

    let out = run_cli(&["simulate", &journey, "--events", &events_file]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let printed: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("simulate does not print JSON ({e}):\n{}", describe(&out)));
    assert!(printed["trace"].is_array(), "{printed}");
    assert!(printed["deliveries"].is_array(), "{printed}");
    assert!(
        !printed["deliveries"].as_array().unwrap().is_empty(),
        "{printed}"
    );

    let srv = Server::start();
    let api = srv
        .admin_post(
            "/v1/simulate",
            &json!({"journey": cart_journey(), "events": events}),
        )
        .expect(200);
    assert_eq!(
        printed["trace"], api["trace"],
        "trace differs from POST /v1/simulate"
    );
    assert_eq!(
        printed["deliveries"], api["deliveries"],
        "deliveries differ from POST /v1/simulate"
    );

    // An invalid journey: exit 1 with the problem's path.
    let mut bad = cart_journey();
    bad["steps"][0]["on_timeout"] = json!("remindr");
    let bad_file = write(&dir, "bad.json", &bad.to_string());
    let out = run_cli(&["simulate", &bad_file, "--events", &events_file]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("on_timeout"), "{}", describe(&out));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn cli_backup_of_a_missing_database_fails() {
    let dir = temp_dir("backup-missing");
    let db = dir.join("no-such.db");
    let dest = dir.join("copy.db");
    let out = run_cli(&[
        "backup",
        &dest.display().to_string(),
        "--db",
        &db.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(!db.exists(), "backup created the missing database");
    assert!(
        !String::from_utf8_lossy(&out.stderr).trim().is_empty(),
        "backup fails silently:\n{}",
        describe(&out)
    );
    let _ = fs::remove_dir_all(&dir);
}
