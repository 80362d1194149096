//! Backups under write load, by `GET /v1/backup` and by `journeyd backup DEST`: the copy passes SQLite's
//! integrity check, and served by a second journeyd it holds every messageId acknowledged before the
//! backup began (SPEC §0.4, §1, §6).

use std::path::Path;
use std::time::Duration;

use crate::support::load::{BATCH, Load, check_stored, stored_counts};
use crate::support::{ADMIN_TOKEN, Server, bearer, describe, run_cli, temp_dir};

/// Takes a backup with `take` while a load runs, then checks the copy. `take` writes the copy to the path
/// it is given.
fn check(name: &str, take: impl FnOnce(&Server, &Path)) {
    let srv = Server::start();
    let mut load = Load::start(&srv, 3, 4, Duration::from_secs(5));
    load.wait_for_acks(20 * BATCH, Duration::from_secs(10));

    // Everything acknowledged up to now must be in the copy.
    let before = load.acked_snapshot();
    let dir = temp_dir("backup");
    let copy = dir.join("copy.db");
    take(&srv, &copy);
    let acked_during = load.acked_count() - before.len();
    eprintln!(
        "{name}: {} acknowledged before the backup began, {acked_during} while it ran",
        before.len()
    );
    // Let the load go on a little after the backup, to see the server is still well.
    load.wait_for_acks(load.acked_count() + BATCH, Duration::from_secs(10));
    load.stop();
    assert_eq!(
        load.shared
            .transport_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "{name}: no request may fail while a backup runs; other answers: {:?}",
        load.shared.other_answers.lock().unwrap()
    );

    {
        let conn = rusqlite::Connection::open_with_flags(
            &copy,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap_or_else(|e| panic!("{name}: cannot open the copy {}: {e}", copy.display()));
        let result: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{name}: integrity_check on {}: {e}", copy.display()));
        assert_eq!(
            result,
            "ok",
            "{name}: integrity_check of {}",
            copy.display()
        );
    }

    let restored = Server::serve_db(&copy);
    let counts = stored_counts(&restored, &load.users);
    let sent = load.shared.sent.lock().unwrap().clone();
    check_stored(
        &format!(
            "{name}: in the copy ({} acknowledged during the backup)",
            acked_during
        ),
        &counts,
        &before,
        &sent,
    );
    drop(restored);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn backup_endpoint_under_write_load() {
    check("GET /v1/backup", |srv, copy| {
        let resp = srv.get("/v1/backup", &[("Authorization", &bearer(ADMIN_TOKEN))]);
        assert_eq!(resp.status, 200, "GET /v1/backup:\n{resp}");
        assert!(
            resp.body.starts_with(b"SQLite format 3\0"),
            "GET /v1/backup must answer the database file; got {} bytes starting {:?}",
            resp.body.len(),
            String::from_utf8_lossy(&resp.body[..resp.body.len().min(64)])
        );
        std::fs::write(copy, &resp.body).unwrap();
    });
}

#[test]
fn backup_command_under_write_load() {
    check("journeyd backup", |srv, copy| {
        let out = run_cli(&[
            "backup",
            copy.to_str().unwrap(),
            "--db",
            srv.db_path().to_str().unwrap(),
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "journeyd backup: {}",
            describe(&out)
        );
        assert!(
            copy.exists(),
            "journeyd backup exited 0 but wrote no {}",
            copy.display()
        );
    });
}
