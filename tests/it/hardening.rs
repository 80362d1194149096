//! Hostile clients, stalled disks and operator slips (SPEC §9, invariant 8): each test reproduces
//! one way the appliance used to fall over, through the real binary.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::server::run_cli_in;
use crate::support::{
    Options, Receiver, Reply, Server, basic, bearer, describe, file_names, run_cli, temp_dir,
};

fn addr(srv: &Server) -> SocketAddr {
    srv.addr()
}

/// Sends raw bytes on a fresh connection and reads the answer until the server closes it or
/// `timeout` passes.
fn raw(addr: SocketAddr, request: &[u8], timeout: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A GET of /healthz on a fresh connection, with how long it took.
fn healthz(addr: SocketAddr) -> (String, Duration) {
    let started = Instant::now();
    let answer = raw(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    (answer, started.elapsed())
}

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

/// Whether the server has closed `s` (a read returns end of file or an error within `wait`).
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(0) | Err(_))
        && !matches!(s.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// POSTs `body` to `url` (the batch endpoint) on a connection of its own, waiting up to a minute
/// for the answer, whatever its status.
fn post_batch(
    url: &str,
    auth: &str,
    body: &str,
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    ureq::post(url)
        .config()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .header("Authorization", auth)
        .send(body.as_bytes())
}

/// Runs `journeyd serve` on `db` and expects it to refuse to start: exit code 1, never listening.
/// Returns what it said on stderr.
fn serve_is_refused(db: &Path) -> String {
    let out = run_cli(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--db",
        db.to_str().unwrap(),
        "--admin-token",
        "t",
        "--write-key",
        "k",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Publishes `fwd`, a journey that sends every `Go` to the destination `d` (which must exist),
/// and tracks one `Go`.
fn forward_go_to_d(srv: &Server) {
    srv.admin(
        "PUT",
        "/v1/journeys/fwd",
        Some(&json!({"id": "fwd", "entry": {"event": "Go"},
                     "steps": [{"id": "send", "type": "send", "destination": "d"}]})),
    )
    .expect(201);
    srv.ingest_ok("/v1/track", &json!({"userId": "u", "event": "Go"}));
}

/// 3,000 connections that send half a header hold nothing but themselves: /healthz answers
/// within a second meanwhile, and their header timeout (10 s) closes them.
#[test]
fn stalled_clients_do_not_take_the_server_down() {
    let srv = Server::start();
    let addr = addr(&srv);
    let mut stalled: Vec<TcpStream> = (0..3000)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Le")
                .unwrap();
            s
        })
        .collect();
    let (answer, took) = healthz(addr);
    assert!(status_line(&answer).contains("200"), "{answer}");
    // Within a second on an idle machine; the bound leaves room for a loaded one.
    assert!(took < Duration::from_secs(3), "/healthz took {took:?}");
    let ok = srv.ingest("/v1/track", &json!({"userId": "u", "event": "E"}));
    assert_eq!(ok.status, 200, "{ok}");
    // The header timeout is 10 s from each connection's start.
    std::thread::sleep(Duration::from_secs(10));
    let first = &mut stalled[0];
    assert!(
        closed_within(first, Duration::from_secs(5)),
        "a stalled connection was not closed"
    );
    let last = stalled.last_mut().unwrap();
    assert!(
        closed_within(last, Duration::from_secs(5)),
        "a stalled connection was not closed"
    );
}

/// Beyond --max-connections, new connections wait in the accept queue and are served as soon
/// as one closes.
#[test]
fn connections_beyond_the_cap_wait_their_turn() {
    let srv = Server::start_with(Options::with_args(&["--max-connections", "4"]));
    let addr = addr(&srv);
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            // A complete request on a kept-alive connection: served, then the connection idles.
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).contains("200"));
            s
        })
        .collect();
    let mut waiting = TcpStream::connect(addr).unwrap();
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 512];
    assert!(
        waiting.read(&mut buf).is_err(),
        "a fifth connection was served while four were open"
    );
    drop(held.pop());
    waiting
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let n = waiting.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
}

/// Another process holding the database's write lock stalls the writer: ingest answers 503 with
/// Retry-After (never 500, never internal text), queued bytes stay bounded, and once the lock
/// is gone everything acknowledged is there.
#[test]
fn stalled_writer_answers_503_and_bounds_queued_memory() {
    let srv = Server::start_with(Options::with_args(&["--max-queued-bytes", "2MiB"]));
    let lock = rusqlite::Connection::open(srv.db_path()).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let big: Vec<Value> = (0..900)
        .map(|n| json!({"type": "track", "userId": format!("u{n}"), "event": "Big", "messageId": format!("big-{n}"),
                        "properties": {"pad": "x".repeat(400)}}))
        .collect();
    let body = json!({"batch": big}).to_string();
    assert!(body.len() > 400_000 && body.len() < 500_000);
    let url = srv.url("/v1/batch");
    let auth = basic(srv.write_key());
    let answers: Vec<(u16, Option<String>, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12)
            .map(|_| {
                let (url, auth, body) = (&url, &auth, &body);
                s.spawn(move || {
                    let mut res = post_batch(url, auth, body).unwrap();
                    let retry = res
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_string());
                    (
                        res.status().as_u16(),
                        retry,
                        res.body_mut().read_to_string().unwrap(),
                    )
                })
            })
            .collect();
        // Hold the lock a little past the writer's busy timeout, then let go.
        std::thread::sleep(Duration::from_secs(6));
        lock.execute_batch("COMMIT").unwrap();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, retry, body) in &answers {
        assert!(*status == 200 || *status == 503, "status {status}: {body}");
        if *status == 503 {
            assert_eq!(retry.as_deref(), Some("1"), "{body}");
            assert!(!body.contains("database"), "internal text leaked: {body}");
        }
    }
    let refused = answers.iter().filter(|a| a.0 == 503).count();
    assert!(
        refused >= 8,
        "only {refused} of 12 were refused with 2 MiB queued at most"
    );
    // Nothing acknowledged is lost: retry the refused ones now.
    let ok = srv.post("/v1/batch", &[("Authorization", &auth)], body.as_bytes());
    assert_eq!(ok.status, 200, "{ok}");
    let stored: i64 = rusqlite::Connection::open(srv.db_path())
        .unwrap()
        .query_row(
            "SELECT count(DISTINCT message_id) FROM events WHERE event = 'Big'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, 900);
}

/// `journeyd backup` never writes over the live database or its files, nor over a file that is
/// not a journeyd backup unless --force; a refused or failed backup leaves no temporary file.
#[test]
fn backup_refuses_the_live_database_and_foreign_files() {
    let mut srv = Server::start();
    srv.ingest_ok(
        "/v1/track",
        &json!({"userId": "u", "event": "E", "messageId": "m1"}),
    );
    let db = srv.db_path().to_path_buf();
    let dir = db.parent().unwrap().to_path_buf();
    let db_arg = db.display().to_string();
    let name = db.file_name().unwrap().to_str().unwrap().to_string();
    for dest in [
        name.clone(),
        format!("{name}-wal"),
        format!("{name}-shm"),
        format!("./{name}"),
    ] {
        let out = run_cli_in(&dir, &["backup", &dest, "--db", &db_arg]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "backup to {dest}: {}",
            describe(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("live database"),
            "{}",
            describe(&out)
        );
    }
    let foreign = dir.join("notes.txt");
    std::fs::write(&foreign, "keep me").unwrap();
    let out = run_cli(&["backup", foreign.to_str().unwrap(), "--db", &db_arg]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(std::fs::read_to_string(&foreign).unwrap(), "keep me");
    let out = run_cli(&[
        "backup",
        foreign.to_str().unwrap(),
        "--db",
        &db_arg,
        "--force",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    // A journeyd backup may be replaced without --force.
    let out = run_cli(&["backup", foreign.to_str().unwrap(), "--db", &db_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let mode = std::fs::metadata(&foreign).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "backups are readable by the owner only");
    // A backup into a directory that does not exist fails and leaves nothing behind.
    let out = run_cli(&[
        "backup",
        dir.join("nope/b.db").to_str().unwrap(),
        "--db",
        &db_arg,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let leftovers: Vec<String> = file_names(&dir)
        .into_iter()
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The live database is intact after a restart.
    srv.restart();
    let events = srv.events("u");
    assert_eq!(events.len(), 1);
    let check: String = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

/// Scheduled backups into the database's own directory, with the database named like a
/// backup: rotation deletes only its own files, never the live database.
#[test]
fn backup_rotation_never_deletes_the_live_database() {
    let dir = temp_dir("rotate");
    let db = dir.join("journeyd-backup-20200101T000000.000Z.db");
    let other = dir.join("journeyd-backup-latest.db");
    std::fs::write(&other, "not a backup").unwrap();
    let srv = Server::start_with(Options {
        db: Some(db.clone()),
        ..Options::scheduled_backups(&dir, 1)
    });
    srv.ingest_ok("/v1/track", &json!({"userId": "u", "event": "E"}));
    let backups = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = file_names(dir)
            .into_iter()
            .filter(|n| {
                n.starts_with("journeyd-backup-2") && !n.starts_with("journeyd-backup-2020")
            })
            .filter(|n| n.ends_with(".db"))
            .collect();
        v.sort();
        v
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 3 && Instant::now() < deadline {
        seen.extend(backups(&dir));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(seen.len() >= 3, "scheduled backups taken: {seen:?}");
    assert!(
        backups(&dir).len() <= 2,
        "rotation keeps 1: {:?}",
        backups(&dir)
    );
    assert!(db.exists(), "the live database was deleted");
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "not a backup");
    assert_eq!(srv.events("u").len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A second `journeyd serve` on the same file is refused at start, naming the holder.
#[test]
fn a_second_server_on_the_same_file_is_refused() {
    let srv = Server::start();
    let err = serve_is_refused(srv.db_path());
    assert!(err.contains("in use by process"), "{err}");
    // The first one is unharmed.
    srv.ingest_ok("/v1/track", &json!({"userId": "u", "event": "E"}));
}

/// A failed first start (port taken) generates no credentials: the next start prints them.
#[test]
fn a_failed_first_start_uses_up_no_credentials() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let dir = temp_dir("first-start");
    let db = dir.join("j.db");
    let out = run_cli(&["serve", "--listen", &port, "--db", db.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("admin token"),
        "{}",
        describe(&out)
    );
    drop(taken);
    let srv = Server::start_with(Options {
        admin_token: None,
        write_keys: Vec::new(),
        db: Some(db.clone()),
        ..Options::default()
    });
    assert!(
        srv.startup_lines()
            .iter()
            .any(|l| l.starts_with("admin token: ")),
        "{:?}",
        srv.startup_lines()
    );
    assert!(srv.admin_get("/v1/journeys").status == 200);
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The database and its WAL are readable by the owner only.
#[test]
fn database_files_are_private() {
    let srv = Server::start();
    srv.ingest_ok("/v1/track", &json!({"userId": "u", "event": "E"}));
    for suffix in ["", "-wal", "-shm"] {
        let mut p = srv.db_path().as_os_str().to_owned();
        p.push(suffix);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", Path::new(&p).display());
    }
}

/// A database with a damaged page is refused at start with a message on restoring a backup.
#[test]
fn a_damaged_database_is_refused_at_start() {
    let mut srv = Server::start();
    for round in 0..3 {
        let batch: Vec<Value> = (0..1000)
            .map(|n| json!({"type": "track", "userId": format!("u{round}-{n}"), "event": "E", "properties": {"pad": "y".repeat(200)}}))
            .collect();
        srv.ingest("/v1/batch", &json!({"batch": batch}))
            .expect(200);
    }
    let db = srv.db_path().to_path_buf();
    srv.terminate();
    // Everything into the main file, then overwrite a page in its middle (past the schema).
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let mut bytes = std::fs::read(&db).unwrap();
    let page = 4096;
    let middle = (bytes.len() / page / 2) * page;
    assert!(
        middle > 4 * page,
        "database too small: {} bytes",
        bytes.len()
    );
    for b in &mut bytes[middle + 16..middle + 4000] {
        *b = 0xA5;
    }
    std::fs::write(&db, &bytes).unwrap();
    let err = serve_is_refused(&db);
    assert!(err.contains("damaged") && err.contains("backup"), "{err}");
}

/// /healthz says 503 with the reason when the disk is full, and 200 again once there is room.
/// Needs root (a small tmpfs); skipped otherwise.
#[test]
fn healthz_reports_a_full_disk() {
    let Some(mount) = Tmpfs::mount("4m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let srv = Server::start_with(Options {
        db: Some(mount.dir.join("j.db")),
        ..Options::default()
    });
    assert_eq!(srv.get("/healthz", &[]).status, 200);
    // Fill the disk.
    let filler = mount.dir.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    // Write until the disk has no room left for the WAL either. A failed batch can leave room
    // in the WAL file for the health check's one-page write (it then rightly says 200), so the
    // writing goes on until the health check's own write fails too.
    let mut refused = false;
    let mut h = srv.get("/healthz", &[]);
    for round in 0..40 {
        let big: Vec<Value> = (0..1000)
            .map(|n| json!({"type": "track", "userId": format!("u{round}-{n}"), "event": "E", "properties": {"pad": "z".repeat(200)}}))
            .collect();
        let answer = srv.ingest("/v1/batch", &json!({"batch": big}));
        assert!(answer.status == 503 || answer.status == 200, "{answer}");
        if answer.status == 503 {
            assert_eq!(answer.json()["code"], "unavailable", "{answer}");
            refused = true;
            h = srv.get("/healthz", &[]);
            if h.status == 503 {
                break;
            }
        }
    }
    assert!(refused, "the disk never filled");
    assert_eq!(h.status, 503, "{h}");
    assert!(h.text().contains("full"), "{h}");
    std::fs::remove_file(&filler).unwrap();
    let h = srv.get("/healthz", &[]);
    assert_eq!(h.status, 200, "{h}");
    drop(srv);
}

/// /healthz says 503 when the database file cannot be written (made immutable, which stops even
/// root), and ingest answers 503 with a generic body; both recover once it can be written again.
/// Needs root on a file system with `chattr +i` (ext4 here); skipped otherwise.
#[test]
fn healthz_reports_a_database_that_cannot_be_written() {
    let srv = Server::start();
    srv.ingest_ok("/v1/track", &json!({"userId": "u", "event": "E"}));
    let files: Vec<std::path::PathBuf> = ["", "-wal"]
        .into_iter()
        .map(|s| {
            let mut p = srv.db_path().as_os_str().to_owned();
            p.push(s);
            p.into()
        })
        .collect();
    let chattr = |flag: &str| {
        files.iter().all(|f| {
            std::process::Command::new("chattr")
                .arg(flag)
                .arg(f)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    };
    if !chattr("+i") {
        chattr("-i");
        eprintln!("skipped: chattr +i needs root and a file system that supports it");
        return;
    }
    // Let the last commit's moment pass, so /healthz writes for real.
    std::thread::sleep(Duration::from_millis(1100));
    let h = srv.get("/healthz", &[]);
    let answer = srv.ingest("/v1/track", &json!({"userId": "u", "event": "E2"}));
    chattr("-i");
    assert_eq!(h.status, 503, "{h}");
    assert_eq!(answer.status, 503, "{answer}");
    assert!(
        answer.text().contains("retry later") && !answer.text().contains("disk"),
        "{answer}"
    );
    let h = srv.get("/healthz", &[]);
    assert_eq!(h.status, 200, "{h}");
    srv.ingest_ok("/v1/track", &json!({"userId": "u", "event": "E2"}));
    assert_eq!(srv.events("u").len(), 2);
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs {
    dir: std::path::PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = temp_dir("tmpfs");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l"])
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// More than 10,000 events in a simulation is a 413; a large one runs off the serving threads,
/// so /healthz answers meanwhile.
#[test]
fn simulations_are_bounded_and_never_stall_the_server() {
    let srv = Server::start();
    let journey = json!({"id": "s", "entry": {"event": "Go"},
        "steps": [{"id": "wait", "type": "delay", "duration": "1h", "next": null}]});
    let events = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"at": format!("+{i}s"), "message": {"type": "track", "userId": format!("u{i}"), "event": "Go"}}))
            .collect()
    };
    let too_many = srv.admin(
        "POST",
        "/v1/simulate",
        Some(&json!({"journey": journey, "events": events(10_001)})),
    );
    assert_eq!(too_many.status, 413, "{too_many}");
    let url = srv.url("/v1/simulate");
    let token = bearer(srv.admin_token());
    let doc = json!({"journey": journey, "events": events(10_000)}).to_string();
    let a = addr(&srv);
    std::thread::scope(|s| {
        let sims: Vec<_> = (0..2)
            .map(|_| {
                let (url, token, doc) = (&url, &token, &doc);
                s.spawn(move || {
                    ureq::post(url)
                        .config()
                        .http_status_as_error(false)
                        .build()
                        .header("Authorization", token)
                        .send(doc.as_bytes())
                        .unwrap()
                        .status()
                        .as_u16()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        for _ in 0..5 {
            let (answer, took) = healthz(a);
            assert!(status_line(&answer).contains("200"), "{answer}");
            // Within a second on an idle machine; the bound leaves room for a loaded one and still
            // catches simulations that hold the serving threads (they stalled it for 12 s).
            assert!(
                took < Duration::from_secs(3),
                "/healthz took {took:?} during simulations"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        for sim in sims {
            assert_eq!(sim.join().unwrap(), 200);
        }
    });
}

/// A validation answer lists at most 100 problems, then says how many more there were.
#[test]
fn validation_answers_are_truncated() {
    let srv = Server::start();
    let journey = json!({"id": "s", "entry": {"event": "Go"}, "steps": [{"id": "a", "type": "delay", "duration": "1h"}]});
    let bad: Vec<Value> = (0..1000)
        .map(|_| json!({"at": "soon", "message": 1}))
        .collect();
    let r = srv.admin(
        "POST",
        "/v1/simulate",
        Some(&json!({"journey": journey, "events": bad})),
    );
    let body = r.expect(422);
    assert_eq!(
        body["error"]["details"].as_array().unwrap().len(),
        100,
        "{r}"
    );
    assert_eq!(body["error"]["truncated"], 1900, "{r}");
    assert!(r.body.len() < 20_000, "{} bytes", r.body.len());
}

/// A profile links at most 1,000 ids; its views stay answerable with all of them.
#[test]
fn linked_ids_are_capped_and_profile_views_stay_answerable() {
    let srv = Server::start();
    let aliases: Vec<Value> = (0..1000)
        .map(|n| json!({"type": "alias", "userId": "many", "previousId": format!("anon-{n}")}))
        .collect();
    let r = srv.ingest("/v1/batch", &json!({"batch": aliases}));
    assert_eq!(r.expect(200), json!({"success": true}));
    let one_more = srv.ingest(
        "/v1/alias",
        &json!({"userId": "many", "previousId": "anon-1000"}),
    );
    let body = one_more.expect(400);
    assert_eq!(body["code"], "too_many_ids", "{one_more}");
    // In a batch, the one refused is listed and the others are taken.
    let r = srv.ingest(
        "/v1/batch",
        &json!({"batch": [
            {"type": "alias", "userId": "many", "previousId": "anon-1001"},
            {"type": "track", "userId": "anon-5", "event": "E"}
        ]}),
    );
    let body = r.expect(200);
    assert_eq!(body["rejected"][0]["index"], 0, "{r}");
    assert_eq!(body["rejected"][0]["code"], "too_many_ids", "{r}");
    let p = srv.profile("many").expect(200);
    assert_eq!(
        p["ids"].as_array().unwrap().len(),
        1001,
        "the key and 1,000 linked ids"
    );
    let timeline = srv.timeline("anon-5");
    assert!(timeline.iter().any(|i| i["message"]["event"] == "E"));
}

/// Destinations may not set the headers that frame a request or carry its signature; header
/// values and URL passwords are write-only, and a masked value sent back keeps the stored one.
#[test]
fn destination_headers_are_checked_and_write_only() {
    let srv = Server::start();
    for name in [
        "Content-Length",
        "Host",
        "webhook-id",
        "Transfer-Encoding",
        "Connection",
        "Upgrade",
    ] {
        let r = srv.admin(
            "PUT",
            "/v1/destinations/d",
            Some(
                &json!({"type": "webhook", "url": "http://127.0.0.1:9/x", "headers": {name: "0"}}),
            ),
        );
        let body = r.expect(422);
        assert_eq!(
            body["error"]["details"][0]["path"],
            format!("/headers/{name}"),
            "{r}"
        );
    }
    let rx = Receiver::start(Vec::new());
    let url = rx.url("/in").replace("http://", "http://user:pa55@");
    let r = srv.admin(
        "PUT",
        "/v1/destinations/d",
        Some(&json!({"type": "webhook", "url": url, "headers": {"X-Api-Key": "s3cret"}})),
    );
    let shown = r.expect(201);
    assert_eq!(shown["headers"]["X-Api-Key"], "********", "{r}");
    assert!(
        !r.text().contains("s3cret") && !r.text().contains("pa55"),
        "{r}"
    );
    let got = srv.admin_get("/v1/destinations/d").expect(200);
    assert!(
        !got.to_string().contains("s3cret") && !got.to_string().contains("pa55"),
        "{got}"
    );
    // What GET showed, sent back with a change, keeps the stored secrets.
    let mut edited = got.clone();
    edited["max_attempts"] = json!(3);
    for k in [
        "id",
        "created_at",
        "updated_at",
        "secret_set",
        "write_key_set",
    ] {
        edited.as_object_mut().unwrap().remove(k);
    }
    srv.admin("PUT", "/v1/destinations/d", Some(&edited))
        .expect(200);
    forward_go_to_d(&srv);
    let got = rx.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("x-api-key"), Some("s3cret"));
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode("user:pa55");
    assert_eq!(
        got[0].header("authorization"),
        Some(format!("Basic {basic}").as_str())
    );
    // A masked value with nothing stored behind it is a 422.
    let r = srv.admin(
        "PUT",
        "/v1/destinations/e",
        Some(&json!({"type": "webhook", "url": "http://127.0.0.1:9/x", "headers": {"X-Api-Key": "********"}})),
    );
    assert_eq!(r.status, 422, "{r}");
}

/// Unknown paths are 404 and wrong methods 405, whatever credentials the request carries;
/// the Bearer and Basic schemes are case-insensitive.
#[test]
fn routes_come_before_credentials() {
    let srv = Server::start();
    let token = srv.admin_token().to_string();
    for auth in [
        None,
        Some("Bearer wrong".to_string()),
        Some(format!("Bearer {token}")),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        assert_eq!(srv.get("/v1/nowhere", &headers).status, 404);
        assert_eq!(srv.get("/v1/track", &headers).status, 405);
        let r = srv.post("/v1/journeys", &headers, b"{}");
        assert_eq!(r.status, 405, "{r}");
    }
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let auth = format!("{scheme} {token}");
        assert_eq!(
            srv.get("/v1/journeys", &[("Authorization", &auth)]).status,
            200,
            "{scheme}"
        );
    }
    let key = srv.write_key().to_string();
    use base64::Engine as _;
    let auth = format!(
        "BASIC {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    );
    let r = srv.post(
        "/v1/track",
        &[("Authorization", &auth)],
        br#"{"userId": "u", "event": "E"}"#,
    );
    assert_eq!(r.status, 200, "{r}");
}

/// A batch item that cannot be read says why.
#[test]
fn batch_items_say_why_they_were_refused() {
    let srv = Server::start();
    let r = srv.ingest(
        "/v1/batch",
        &json!({"batch": [[1, 2], "text", {"type": "track", "userId": "u", "event": "E"}]}),
    );
    let body = r.expect(200);
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2, "{r}");
    assert!(
        rejected[0]["message"]
            .as_str()
            .unwrap()
            .contains("an array"),
        "{r}"
    );
    assert!(
        rejected[1]["message"]
            .as_str()
            .unwrap()
            .contains("a string"),
        "{r}"
    );
}

/// One backup download at a time: a second one while the first is being sent is a 503.
#[test]
fn one_backup_download_at_a_time() {
    let srv = Server::start();
    // A database larger than what the kernel buffers for a client that does not read: padding
    // that does not compress (stored bodies are zstd frames), about 8 MB in all.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut noise = || -> String {
        (0..420)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                    [(seed % 64) as usize] as char
            })
            .collect()
    };
    for round in 0..24 {
        let batch: Vec<Value> = (0..1000)
            .map(|n| json!({"type": "track", "userId": format!("u{round}-{n}"), "event": "E", "properties": {"pad": noise()}}))
            .collect();
        srv.ingest("/v1/batch", &json!({"batch": batch}))
            .expect(200);
    }
    let a = addr(&srv);
    // Start a download on a connection with a small receive window, and read only its start.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut first = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(a).await.unwrap().into_std().unwrap()
    });
    first.set_nonblocking(false).unwrap();
    write!(
        first,
        "GET /v1/backup HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        srv.admin_token()
    )
    .unwrap();
    let mut buf = [0u8; 1024];
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let n = first.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
    std::thread::sleep(Duration::from_millis(300));
    let second = srv.admin_get("/v1/backup");
    assert_eq!(second.status, 503, "{}", second.status);
    assert!(second.text().contains("backup"), "{second}");
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = srv.admin_get("/v1/backup");
        if r.status == 200 {
            assert!(r.body.starts_with(b"SQLite format 3\0"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first download never ended: {}",
            r.status
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The server's resident memory, from /proc (its pid is in the database's lock file).
fn rss_mb(db: &Path) -> f64 {
    let mut lock = db.as_os_str().to_owned();
    lock.push(".lock");
    let pid = std::fs::read_to_string(lock).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

/// 300 clients posting 480 KB batches at once while the writer is stalled: queued bytes stay
/// within --max-queued-bytes (the default, 64 MiB), the rest are told to retry, and the
/// server's memory stays far from growing with the clients.
#[test]
fn a_flood_of_large_batches_keeps_memory_bounded() {
    let srv = Server::start();
    let lock = rusqlite::Connection::open(srv.db_path()).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let big: Vec<Value> = (0..1000)
        .map(|n| {
            json!({"type": "track", "userId": format!("u{n}"), "event": "Big",
                        "properties": {"pad": "x".repeat(420)}})
        })
        .collect();
    let body = json!({"batch": big}).to_string();
    assert!(
        body.len() > 470_000 && body.len() < 500_000,
        "{}",
        body.len()
    );
    let url = srv.url("/v1/batch");
    let auth = basic(srv.write_key());
    let db = srv.db_path().to_path_buf();
    let (statuses, peak) = std::thread::scope(|s| {
        let clients: Vec<_> = (0..300)
            .map(|_| {
                let (url, auth, body) = (&url, &auth, &body);
                s.spawn(move || {
                    post_batch(url, auth, body)
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0)
                })
            })
            .collect();
        let mut peak: f64 = 0.0;
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            peak = peak.max(rss_mb(&db));
            std::thread::sleep(Duration::from_millis(50));
        }
        lock.execute_batch("COMMIT").unwrap();
        let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        (statuses, peak)
    });
    let mut counts = std::collections::BTreeMap::new();
    for s in &statuses {
        *counts.entry(*s).or_insert(0) += 1;
    }
    let refused = counts.get(&503).copied().unwrap_or(0);
    assert!(
        counts.keys().all(|s| *s == 200 || *s == 503),
        "answers by status (0: no answer): {counts:?}"
    );
    assert!(
        refused >= 150,
        "only {refused} of 300 were told to retry: {counts:?}"
    );
    assert!(peak < 400.0, "RSS reached {peak:.0} MB");
}

/// A receiver's absurd Retry-After neither overflows nor stops retries past the 24-hour window.
#[test]
fn an_absurd_retry_after_is_capped() {
    let rx = Receiver::start(vec![Reply::Status(
        503,
        vec![("retry-after", "9223372036854775807".into())],
    )]);
    let srv = Server::start();
    srv.admin(
        "PUT",
        "/v1/destinations/d",
        Some(&json!({"type": "webhook", "url": rx.url("/in")})),
    )
    .expect(201);
    forward_go_to_d(&srv);
    assert_eq!(rx.wait_for(1, Duration::from_secs(10)).len(), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let d = loop {
        let list = srv.admin_get("/v1/deliveries").expect(200);
        let d = list["items"][0].clone();
        if d["attempts"] == 1 {
            break d;
        }
        assert!(Instant::now() < deadline, "attempt never recorded: {d}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        d["status"], "failed",
        "a retry beyond the window gives up: {d}"
    );
    assert!(d["last_error"].as_str().unwrap().contains("503"), "{d}");
}
