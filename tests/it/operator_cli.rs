//! The operator CLI (SPEC §8) against a real server: each command as a subprocess, talking to a
//! `journeyd serve` subprocess through `JOURNEYD_URL` and `JOURNEYD_ADMIN_TOKEN` (or the flags).
//! Output and exit codes are checked, error paths included; the erasure test reads the database
//! file itself; `restore` is checked against a running and a stopped server (invariant 8).

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::server::{bin, run_cli_env};
use crate::support::{
    ADMIN_TOKEN, Receiver, Reply, Server, WAIT, WRITE_KEY, basic, cart_journey, describe, enc,
    eventually, file_names, many_problems_journey, put_destination, put_journey, run_cli,
    settled_deliveries, temp_dir, track_event, uid, webhook,
};

/// Runs `journeyd ARGS` against `srv` (its URL and admin token in the environment).
fn jd(srv: &Server, args: &[&str]) -> Output {
    jd_as(srv, ADMIN_TOKEN, args)
}

/// The same with another admin token.
fn jd_as(srv: &Server, token: &str, args: &[&str]) -> Output {
    let cwd = temp_dir("opcli");
    let url = srv.url("");
    let out = run_cli_env(
        &cwd,
        args,
        &[("JOURNEYD_URL", &url), ("JOURNEYD_ADMIN_TOKEN", token)],
    );
    let _ = fs::remove_dir_all(&cwd);
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit code and returns stdout.
fn expect(out: &Output, code: i32) -> String {
    assert_eq!(out.status.code(), Some(code), "{}", describe(out));
    stdout(out)
}

/// Asserts that the command failed with exit code `code` and said `says` on stderr.
fn expect_failure(out: &Output, code: i32, says: &str) {
    assert_eq!(out.status.code(), Some(code), "{}", describe(out));
    assert!(stderr(out).contains(says), "{}", describe(out));
}

fn write_json(dir: &Path, name: &str, doc: &Value) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, serde_json::to_string_pretty(doc).unwrap()).unwrap();
    path
}

/// The line of `text` that contains every one of `parts`.
fn line_with<'a>(text: &'a str, parts: &[&str]) -> &'a str {
    text.lines()
        .find(|l| parts.iter().all(|p| l.contains(p)))
        .unwrap_or_else(|| panic!("no line with {parts:?} in:\n{text}"))
}

/// A child process killed when the test is done with it.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `journeyd ARGS` against `srv`, with its stdout and stderr lines on channels.
fn spawn(srv: &Server, args: &[&str]) -> (Spawned, mpsc::Receiver<String>, mpsc::Receiver<String>) {
    let mut child = Command::new(bin())
        .args(args)
        .env_remove("JOURNEYD_WRITE_KEY")
        .env("JOURNEYD_URL", srv.url(""))
        .env("JOURNEYD_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = |pipe: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let out = lines(Box::new(child.stdout.take().unwrap()));
    let err = lines(Box::new(child.stderr.take().unwrap()));
    (Spawned(child), out, err)
}

/// Waits for a line with every one of `parts`; returns it and the lines before it.
fn wait_line(rx: &mpsc::Receiver<String>, parts: &[&str]) -> (String, Vec<String>) {
    let deadline = Instant::now() + WAIT;
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if parts.iter().all(|p| line.contains(p)) => return (line, before),
            Ok(line) => before.push(line),
            Err(e) => panic!("no line with {parts:?} ({e}); saw: {before:#?}"),
        }
    }
}

/// A directory holding the `crm` destination (pointing at `url`) and the cart journey.
fn config_dir(url: &str) -> PathBuf {
    let dir = temp_dir("push");
    // The destination's id comes from its `id` field, not from the file name.
    write_json(
        &dir,
        "customer-system.json",
        &json!({"id": "crm", "type": "webhook", "url": url, "timeout": "2s"}),
    );
    fs::create_dir_all(dir.join("journeys")).unwrap();
    write_json(&dir.join("journeys"), "cart.json", &cart_journey());
    fs::write(dir.join("README.md"), "not pushed").unwrap();
    dir
}

#[test]
fn push_creates_then_reports_unchanged_and_updated() {
    let srv = Server::start();
    let dir = config_dir("http://127.0.0.1:9/hook");
    let d = dir.display().to_string();

    // A dry run first: it validates and says what would happen, and writes nothing.
    let out = expect(&jd(&srv, &["push", "--dry-run", &d]), 0);
    line_with(
        &out,
        &["customer-system.json", "destination crm would be created"],
    );
    line_with(
        &out,
        &["cart.json", "journey cart-abandonment would be created"],
    );
    assert_eq!(srv.admin_get("/v1/destinations/crm").status, 404);
    assert_eq!(srv.admin_get("/v1/journeys/cart-abandonment").status, 404);

    // Destinations go first, so the journey's send steps find theirs.
    let out = expect(&jd(&srv, &["push", &d]), 0);
    let dest = line_with(&out, &["destination crm created"]);
    let journey = line_with(&out, &["journey cart-abandonment created (version 1)"]);
    assert!(out.find(dest) < out.find(journey), "{out}");
    assert!(!out.contains("README"), "{out}");
    assert_eq!(srv.admin_json("/v1/destinations/crm")["timeout"], "2s");

    let out = expect(&jd(&srv, &["push", &d]), 0);
    line_with(&out, &["destination crm unchanged"]);
    line_with(&out, &["journey cart-abandonment unchanged (version 1)"]);

    // Change the journey: a dry run says so and changes nothing; the push makes version 2.
    let mut doc = cart_journey();
    doc["steps"][0]["max_hold"] = json!("3h");
    write_json(&dir.join("journeys"), "cart.json", &doc);
    let out = expect(&jd(&srv, &["push", "--dry-run", &d]), 0);
    line_with(&out, &["journey cart-abandonment would be updated"]);
    line_with(&out, &["destination crm unchanged"]);
    assert!(out.contains("nothing was written"), "{out}");
    assert_eq!(
        srv.admin_json("/v1/journeys/cart-abandonment")["version"],
        1
    );
    let out = expect(&jd(&srv, &["push", &d]), 0);
    line_with(&out, &["journey cart-abandonment updated (version 2)"]);
    assert_eq!(
        srv.admin_json("/v1/journeys/cart-abandonment")["definition"]["steps"][0]["max_hold"],
        "3h"
    );

    // A changed destination; and one named by its file, with a secret: write-only values
    // cannot be compared, so it counts as updated every time.
    write_json(
        &dir,
        "customer-system.json",
        &json!({"id": "crm", "type": "webhook", "url": "http://127.0.0.1:9/other"}),
    );
    write_json(
        &dir,
        "audit.json",
        &json!({"type": "webhook", "url": "http://127.0.0.1:9/audit", "secret": "s3cret"}),
    );
    let out = expect(&jd(&srv, &["push", "--json", &d]), 0);
    let report: Value = serde_json::from_str(&out).unwrap();
    let result = |id: &str| {
        report["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == id)
            .unwrap_or_else(|| panic!("{id} not in {report}"))["result"]
            .clone()
    };
    assert_eq!(result("crm"), "updated", "{report}");
    assert_eq!(result("audit"), "created", "{report}");
    assert_eq!(result("cart-abandonment"), "unchanged", "{report}");
    assert_eq!(
        srv.admin_json("/v1/destinations/crm")["url"],
        "http://127.0.0.1:9/other"
    );
    let out = expect(&jd(&srv, &["push", &d]), 0);
    line_with(&out, &["destination audit updated", "write-only"]);
    line_with(&out, &["destination crm unchanged"]);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn push_shows_problems_with_their_json_paths() {
    let srv = Server::start();
    let dir = temp_dir("push-bad");

    // Invalid locally: every problem with its path, and nothing at all is pushed.
    write_json(
        &dir,
        "crm.json",
        &json!({"type": "webhook", "url": "http://127.0.0.1:9/hook"}),
    );
    let bad = write_json(&dir, "bad.json", &many_problems_journey("bad"));
    let out = jd(&srv, &["push", &dir.display().to_string()]);
    let text = expect(&out, 1);
    let line = line_with(&text, &["bad.json", "/steps/1/branches/0/next"]);
    assert!(line.contains("unknown step \"remindr\""), "{text}");
    assert!(
        stderr(&out).contains("nothing was pushed"),
        "{}",
        describe(&out)
    );
    assert_eq!(srv.admin_get("/v1/destinations/crm").status, 404);
    fs::remove_file(&bad).unwrap();

    // Refused by the server: a send step naming a destination that does not exist. The dry
    // run says so beforehand; the push shows the server's problem, with its path.
    let mut doc = cart_journey();
    doc["steps"][1]["destination"] = json!("nowhere");
    write_json(&dir, "journey.json", &doc);
    let d = dir.display().to_string();
    let out = jd(&srv, &["push", "--dry-run", &d]);
    let text = expect(&out, 1);
    line_with(
        &text,
        &["/steps/1/destination", "unknown destination \"nowhere\""],
    );
    assert_eq!(srv.admin_get("/v1/destinations/crm").status, 404);
    let out = jd(&srv, &["push", &d]);
    let text = expect(&out, 1);
    line_with(&text, &["destination crm created"]);
    line_with(&text, &["journey cart-abandonment refused"]);
    line_with(
        &text,
        &["/steps/1/destination", "unknown destination \"nowhere\""],
    );
    assert!(
        stderr(&out).contains("1 of 2 files were refused"),
        "{}",
        describe(&out)
    );
    assert_eq!(srv.admin_get("/v1/journeys/cart-abandonment").status, 404);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn clear_errors_for_a_server_down_a_bad_token_and_bad_usage() {
    // Nothing listens on a port just freed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let out = run_cli(&["journeys", "list", "--url", &url, "--token", "t"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot reach journeyd at {url}"))
            && err.contains("connection refused"),
        "{}",
        describe(&out)
    );

    let srv = Server::start();
    let out = jd_as(&srv, "not-the-token", &["keys", "list"]);
    expect_failure(&out, 1, "admin token is not valid");
    assert!(stdout(&out).is_empty(), "{}", describe(&out));

    // A journey that is not there: the server's message, exit 1.
    let out = jd(&srv, &["journeys", "show", "nope"]);
    expect_failure(&out, 1, "not found");

    // Usage and configuration errors: exit 2.
    for args in [
        vec!["journeys", "frobnicate"],
        vec!["deliveries", "retry"],
        vec!["replay", "x.jsonl", "--speed", "0"],
        vec!["journeys", "list", "--url", "ftp://example.com"],
    ] {
        let out = jd(&srv, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
    }
    let out = run_cli(&["journeys", "list", "--url", &srv.url("")]);
    expect_failure(&out, 2, "no admin token");
}

/// An example played live, as examples/README.md says: push its journey with a `crm`
/// destination, replay its script faster, then look at it with `journeys show`.
#[test]
fn an_example_replayed_and_shown_as_a_diagram() {
    let srv = Server::start();
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cart-abandonment-cart-modified");
    let dir = temp_dir("example");
    write_json(
        &dir,
        "crm.json",
        &json!({"type": "webhook", "url": "http://127.0.0.1:9/hook"}),
    );
    let journey = example.join("journey.json").display().to_string();
    let out = expect(
        &jd(&srv, &["push", &dir.display().to_string(), &journey]),
        0,
    );
    line_with(&out, &["journey cart-abandonment created"]);

    // Five hours of script in half a second.
    let script = example.join("events.jsonl").display().to_string();
    let started = Instant::now();
    let out = jd(
        &srv,
        &[
            "replay",
            &script,
            "--speed",
            "36000",
            "--write-key",
            WRITE_KEY,
        ],
    );
    let text = expect(&out, 0);
    assert!(started.elapsed() >= Duration::from_millis(500), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.ends_with("accepted")).count(),
        5,
        "{text}"
    );
    line_with(&text, &["+1h", "track Cart_Modified 23"]);

    let out = expect(&jd(&srv, &["journeys", "show", "cart-abandonment"]), 0);
    assert!(out.contains("Cart abandonment (cart modified)"), "{out}");
    line_with(&out, &["entered 2", "active 1", "completed 1"]);
    let hold = line_with(&out, &["wait_for_order", "hold until (at most 2h)"]);
    assert!(hold.ends_with("reached 2  active 1"), "{out}");
    assert!(
        line_with(&out, &["cart changed: Cart_Modified"]).ends_with(" 1"),
        "{out}"
    );
    assert!(
        line_with(&out, &["ordered: Order_Confirmation", "end"]).ends_with(" 1"),
        "{out}"
    );
    assert!(line_with(&out, &["timeout"]).ends_with(" 0"), "{out}");
    line_with(
        &out,
        &["remind", "send \"Cart Reminder\" to crm", "reached 0"],
    );

    let out = expect(&jd(&srv, &["journeys", "list"]), 0);
    let row: Vec<&str> = line_with(&out, &["cart-abandonment"])
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..7],
        ["cart-abandonment", "active", "1", "2", "1", "1", "0"],
        "{out}"
    );

    // --json is the server's JSON.
    let out = expect(
        &jd(&srv, &["journeys", "show", "cart-abandonment", "--json"]),
        0,
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["stats"]["entered"], 2);
    assert_eq!(v["journey"]["definition"]["id"], "cart-abandonment");

    // Pause, resume, archive.
    let out = expect(&jd(&srv, &["journeys", "pause", "cart-abandonment"]), 0);
    assert!(out.contains("paused"), "{out}");
    assert_eq!(
        srv.admin_json("/v1/journeys/cart-abandonment")["status"],
        "paused"
    );
    expect(&jd(&srv, &["journeys", "resume", "cart-abandonment"]), 0);
    assert_eq!(
        srv.admin_json("/v1/journeys/cart-abandonment")["status"],
        "active"
    );
    let out = expect(&jd(&srv, &["journeys", "archive", "cart-abandonment"]), 0);
    assert!(out.contains("archived (1 active instances ended)"), "{out}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn replay_keeps_offsets_and_refuses_bad_scripts_and_keys() {
    let srv = Server::start();
    let dir = temp_dir("replay");
    let user = uid("replay");
    let script = dir.join("events.jsonl");
    let lines = [
        json!({"at": "+0s", "message": {"type": "identify", "userId": user, "traits": {"n": 1}}}),
        // No type: a track call, as in a simulation.
        json!({"at": "+2s", "message": {"userId": user, "event": "Second"}}),
        json!({"at": "+1s500ms", "message": {"type": "track", "userId": user, "event": "Third"}}),
    ];
    fs::write(
        &script,
        lines
            .iter()
            .map(|l| l.to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let s = script.display().to_string();
    let started = Instant::now();
    let out = jd(
        &srv,
        &["replay", &s, "--speed", "4", "--write-key", WRITE_KEY],
    );
    expect(&out, 0);
    // +2s at speed 4: half a second at least.
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{}",
        describe(&out)
    );
    let events: Vec<Value> = srv.events(&user);
    let names: Vec<&str> = events
        .iter()
        .map(|m| m["event"].as_str().unwrap_or(m["type"].as_str().unwrap()))
        .collect();
    assert_eq!(names, ["identify", "Second", "Third"]);

    // A wrong write key: exit 1 at the first message.
    let out = jd(&srv, &["replay", &s, "--write-key", "wrong"]);
    expect_failure(&out, 1, "write key");

    // A bad script: every problem, by line, and nothing is sent.
    let bad = dir.join("bad.jsonl");
    let other = uid("replay-bad");
    fs::write(
        &bad,
        format!(
            "{}\n{{\"at\": \"later\", \"message\": {{}}}}\nnot json\n",
            json!({"at": "+0s", "message": {"userId": other, "event": "E"}})
        ),
    )
    .unwrap();
    let out = jd(
        &srv,
        &[
            "replay",
            &bad.display().to_string(),
            "--write-key",
            WRITE_KEY,
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("line 2: /at") && err.contains("line 3: not valid JSON"),
        "{err}"
    );
    assert_eq!(srv.profile(&other).status, 404);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn tail_prints_transitions_committed_after_it_connected() {
    let srv = Server::start();
    put_destination(&srv, "crm", &webhook("http://127.0.0.1:9/hook", json!({})));
    put_journey(&srv, &cart_journey());
    let mut other = cart_journey();
    other["id"] = json!("other-cart");
    put_journey(&srv, &other);

    let (_all, all_out, all_err) = spawn(&srv, &["tail"]);
    let (_one, one_out, one_err) =
        spawn(&srv, &["tail", "--journey", "cart-abandonment", "--json"]);
    wait_line(&all_err, &["following"]);
    wait_line(&one_err, &["following"]);

    let user = uid("tail");
    track_event(&srv, &user, "Product_Added", json!({"cart_ID": "c-1"}));
    let (line, _) = wait_line(&all_out, &[&user, "entered"]);
    assert!(line.contains("#") && line.contains("profile"), "{line}");
    wait_line(&all_out, &[&user, "step wait_for_order"]);

    // The filtered one sees only its journey: both entered in one commit, so the other's line
    // would have come by the time this one's did.
    let (line, before) = wait_line(&one_out, &["\"entered\""]);
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["event"], "transition", "{line}");
    assert_eq!(v["data"]["journey"], "cart-abandonment", "{line}");
    assert_eq!(v["data"]["profile"], user.as_str(), "{line}");
    for l in before.iter().chain(std::iter::once(&line)) {
        assert!(!l.contains("other-cart"), "{l}");
    }
}

#[test]
fn profiles_show_and_forget_leave_nothing_of_the_person() {
    let rx = Receiver::start(vec![]);
    let srv = Server::start();
    put_destination(&srv, "crm", &webhook(&rx.url("/hook"), json!({})));
    put_journey(&srv, &cart_journey());
    let user = uid("erase");
    let anon = uid("anon");
    let old = uid("old");
    let keep = uid("keep");
    let track = |body: Value| srv.ingest_ok("/v1/track", &body);
    // Anonymous first (a profile of its own, with an instance), then identified: the profiles
    // merge. An alias links one more id.
    track(json!({"anonymousId": anon, "event": "Product_Added", "properties": {"cart_ID": "c-1"}}));
    srv.ingest_ok(
        "/v1/identify",
        &json!({"userId": user, "anonymousId": anon, "traits": {"email": "e@example.com"}}),
    );
    srv.ingest_ok("/v1/alias", &json!({"previousId": old, "userId": user}));
    track(json!({"userId": user, "event": "Product_Added", "properties": {"cart_ID": "c-2"}}));
    // The exit rule ends both instances and sends twice; then one more stays active.
    track(json!({"userId": user, "event": "Account_Deleted"}));
    track(json!({"userId": user, "event": "Product_Added", "properties": {"cart_ID": "c-3"}}));
    track_event(&srv, &keep, "Product_Added", json!({"cart_ID": "k-1"}));
    settled_deliveries(&srv, "destination=crm", 2, WAIT);

    let out = expect(&jd(&srv, &["profiles", "show", &anon]), 0);
    assert!(out.contains(&format!("profile {user}")), "{out}");
    line_with(&out, &["linked ids:", &anon, &old]);
    line_with(&out, &["email", "e@example.com"]);
    line_with(&out, &["cart-abandonment", "active", "wait_for_order"]);
    line_with(&out, &["merged into"]);
    line_with(&out, &["event", "track Account_Deleted"]);
    let out = expect(
        &jd(&srv, &["profiles", "show", &user, "--last", "3", "--json"]),
        0,
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["profile"]["id"], user.as_str());
    assert_eq!(v["timeline"].as_array().unwrap().len(), 3, "{v}");

    let totals = |stats: &Value| -> Vec<Value> {
        [
            "entered",
            "active",
            "completed",
            "exited",
            "skipped",
            "archived",
        ]
        .iter()
        .map(|k| stats[k].clone())
        .collect()
    };
    let before = totals(&srv.admin_json("/v1/journeys/cart-abandonment/stats"));
    assert_eq!(before[0], 4, "{before:?}");

    let out = jd(&srv, &["profiles", "forget", &user]);
    let text = expect(&out, 0);
    assert!(text.contains("forgotten"), "{text}");
    for id in [&user, &anon, &old] {
        assert_eq!(srv.profile(id).status, 404, "{id}");
    }
    let after = totals(&srv.admin_json("/v1/journeys/cart-abandonment/stats"));
    assert_eq!(before, after);
    let out = jd(&srv, &["profiles", "forget", &user]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));

    // Nothing of the person in any table, read from the file itself (a second reader of the
    // WAL database the server is writing).
    let db = journeyd::bench_support::inspect(srv.db_path()).unwrap();
    let count = |sql: &str, id: &str| -> i64 {
        db.query_row(sql, [id], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    for id in [&user, &anon, &old] {
        for table in [
            "events",
            "transitions",
            "instances",
            "deliveries",
            "profiles",
            "journey_memory",
            "merges",
            "identities",
        ] {
            let n = count(
                &format!("SELECT count(*) FROM {table} WHERE profile_key = ?1"),
                id,
            );
            assert_eq!(n, 0, "{table} still has rows of {id}");
        }
        for sql in [
            "SELECT count(*) FROM identities WHERE id = ?1",
            "SELECT count(*) FROM merges WHERE absorbed = ?1 OR survivor = ?1",
            "SELECT count(*) FROM events WHERE instr(jd_text(body), ?1) > 0",
            "SELECT count(*) FROM deliveries WHERE instr(jd_text(payload), ?1) > 0",
            "SELECT count(*) FROM instances WHERE instr(jd_text(context), ?1) > 0",
        ] {
            assert_eq!(count(sql, id), 0, "{sql} for {id}");
        }
    }
    // Someone else's rows are still there.
    assert_eq!(
        count("SELECT count(*) FROM events WHERE profile_key = ?1", &keep),
        1
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM instances WHERE profile_key = ?1",
            &keep
        ),
        1
    );
}

#[test]
fn deliveries_list_and_retry() {
    // The receiver refuses the first two requests for good (400: not retried), then accepts.
    let rx = Receiver::start(vec![Reply::status(400), Reply::status(400)]);
    let srv = Server::start();
    put_destination(&srv, "crm", &webhook(&rx.url("/hook"), json!({})));
    put_journey(
        &srv,
        &json!({"id": "notify", "entry": {"event": "Ping"},
                "steps": [{"id": "send", "type": "send", "destination": "crm"}]}),
    );
    let user = uid("dl");
    track_event(&srv, &user, "Ping", json!({}));
    track_event(&srv, &user, "Ping", json!({}));
    let failed = settled_deliveries(&srv, "status=failed", 2, WAIT);
    let ids: Vec<&str> = failed.iter().map(|d| d["id"].as_str().unwrap()).collect();

    let out = expect(&jd(&srv, &["deliveries", "list", "--status", "failed"]), 0);
    for id in &ids {
        line_with(&out, &[id, "failed", "crm", "notify", "HTTP 400"]);
    }
    let out = expect(
        &jd(&srv, &["deliveries", "list", "--destination", "other"]),
        0,
    );
    assert!(out.contains("no deliveries"), "{out}");
    let out = expect(
        &jd(&srv, &["deliveries", "list", "--json", "--limit", "1"]),
        0,
    );
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    assert!(page["next_cursor"].is_string(), "{page}");

    let out = expect(&jd(&srv, &["deliveries", "retry", ids[0]]), 0);
    line_with(&out, &[ids[0], "to crm"]);
    eventually("the retried delivery to succeed", WAIT, || {
        let d = srv.admin_json(&format!("/v1/deliveries/{}", enc(ids[0])));
        if d["status"] == "succeeded" {
            Ok(())
        } else {
            Err(d)
        }
    });
    let out = expect(
        &jd(
            &srv,
            &["deliveries", "retry", "--failed", "--destination", "other"],
        ),
        0,
    );
    assert!(
        out.contains("retried 0 failed deliveries to other"),
        "{out}"
    );
    let out = expect(&jd(&srv, &["deliveries", "retry", "--failed"]), 0);
    assert!(out.contains("retried 1 failed deliveries"), "{out}");
    settled_deliveries(&srv, "status=succeeded", 2, WAIT);
    let out = jd(&srv, &["deliveries", "retry", "no-such-delivery"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
}

#[test]
fn keys_added_listed_and_revoked_at_once() {
    let srv = Server::start();
    let out = jd(&srv, &["keys", "add", "write"]);
    let key = expect(&out, 0).trim().to_string();
    assert!(key.len() >= 20 && !key.contains(' '), "{}", describe(&out));
    let id = stderr(&out)
        .split_whitespace()
        .skip_while(|w| *w != "key")
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    let auth = basic(&key);
    let send = || {
        srv.post(
            "/v1/track",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            json!({"userId": "k", "event": "E"}).to_string().as_bytes(),
        )
        .status
    };
    assert_eq!(send(), 200);
    let out = expect(&jd(&srv, &["keys", "list"]), 0);
    line_with(&out, &[&id, "write"]);
    assert!(!out.contains(&key), "{out}");
    expect(&jd(&srv, &["keys", "revoke", &id]), 0);
    assert_eq!(send(), 401);

    // A second admin token; the first revoked with it; the last one cannot be.
    let out = jd(&srv, &["keys", "add", "admin", "--json"]);
    let added: Value = serde_json::from_str(&expect(&out, 0)).unwrap();
    let token = added["key"].as_str().unwrap().to_string();
    let list: Value = serde_json::from_str(&expect(
        &jd_as(&srv, &token, &["keys", "list", "--json"]),
        0,
    ))
    .unwrap();
    let first = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "admin" && k["id"] != added["id"])
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    expect(&jd_as(&srv, &token, &["keys", "revoke", &first]), 0);
    let out = jd(&srv, &["keys", "list"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let out = jd_as(
        &srv,
        &token,
        &["keys", "revoke", added["id"].as_str().unwrap()],
    );
    expect_failure(&out, 1, "last admin token");
}

#[test]
fn restore_is_refused_while_serving_and_restores_when_stopped() {
    let mut srv = Server::start();
    let before = uid("before");
    let after = uid("after");
    track_event(&srv, &before, "E", json!({}));
    let dir = temp_dir("restore");
    let backup = dir.join("b.db").display().to_string();
    let db = srv.db_path().display().to_string();
    expect(&run_cli(&["backup", &backup, "--db", &db]), 0);
    track_event(&srv, &after, "E", json!({}));

    // Refused while the server holds the file, naming it; nothing changed.
    let out = run_cli(&["restore", &backup, "--db", &db]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let holder = fs::read_to_string(format!("{db}.lock")).unwrap();
    assert!(
        stderr(&out).contains(&format!("in use by process {}", holder.trim())),
        "{}",
        describe(&out)
    );
    assert_eq!(srv.profile(&after).status, 200);

    // Not a journeyd database, or a damaged one: refused, nothing changed.
    srv.kill9();
    let other = dir.join("other.db");
    fs::write(&other, b"not a database at all").unwrap();
    let out = run_cli(&["restore", &other.display().to_string(), "--db", &db]);
    expect_failure(&out, 1, "not a journeyd database");
    let damaged = dir.join("damaged.db");
    let mut bytes = fs::read(&backup).unwrap();
    assert!(bytes.len() > 3 * 4096);
    let page_size = u16::from_be_bytes([bytes[16], bytes[17]]) as usize;
    for b in &mut bytes[page_size..] {
        *b ^= 0x5a;
    }
    fs::write(&damaged, &bytes).unwrap();
    let out = run_cli(&["restore", &damaged.display().to_string(), "--db", &db]);
    expect_failure(&out, 1, "damaged");

    // Stopped (killed: its WAL may still be there): restored, the WAL gone, the file private.
    let out = run_cli(&["restore", &backup, "--db", &db]);
    let text = expect(&out, 0);
    assert!(text.contains("restored"), "{text}");
    assert!(!Path::new(&format!("{db}-wal")).exists());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&db).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let leftovers: Vec<String> = file_names(Path::new(&db).parent().unwrap())
        .into_iter()
        .filter(|n| n.contains(".restore-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The restored server serves the backup's data.
    srv.restart();
    assert_eq!(srv.profile(&before).status, 200);
    assert_eq!(srv.profile(&after).status, 404);
    let _ = fs::remove_dir_all(&dir);
}

/// A journey `chain` entered on `Ping`: eight splits in a row that always take `else`, so many
/// transitions per event.
fn put_split_chain(srv: &Server) {
    let steps: Vec<Value> = (0..8)
        .map(|n| {
            let next = if n < 7 { json!(format!("s{}", n + 1)) } else { json!(null) };
            json!({"id": format!("s{n}"), "type": "split", "else": next,
                   "branches": [{"name": "never", "where": [{"path": "traits.never", "exists": true}],
                                 "next": next}]})
        })
        .collect();
    put_journey(
        srv,
        &json!({"id": "chain", "entry": {"event": "Ping"}, "steps": steps}),
    );
}

/// A raw connection that has sent `GET /v1/stream` (with the admin token) and reads with the
/// usual bound; its response is not read yet.
fn open_stream(srv: &Server) -> TcpStream {
    let mut stream = TcpStream::connect(srv.addr()).unwrap();
    write!(
        stream,
        "GET /v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
    )
    .unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
}

/// A `/v1/stream` client that never reads: the server drops it once more events were committed
/// than the stream's backlog holds, or once it has taken no event for 5 s, and ingest goes on at
/// its usual pace meanwhile.
#[test]
fn a_stream_client_that_never_reads_is_dropped_without_slowing_ingest() {
    let srv = Server::start();
    put_split_chain(&srv);

    let mut stalled = open_stream(&srv);
    // Its headers say the server has subscribed it; from then on it reads nothing.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stalled.read(&mut byte).unwrap(),
            1,
            "the stream's headers did not come"
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );

    // Small commits (about 30 transitions each), and long profile ids, so that the stalled
    // client's socket buffers fill.
    let long = "x".repeat(400);
    let mut slowest = Duration::ZERO;
    for batch in 0..400 {
        let messages: Vec<Value> = (0..3)
            .map(|n| json!({"type": "track", "userId": format!("{long}-{batch}-{n}"), "event": "Ping"}))
            .collect();
        let sent = Instant::now();
        let resp = srv.ingest("/v1/batch", &json!({"batch": messages}));
        slowest = slowest.max(sent.elapsed());
        assert_eq!(resp.status, 200, "{resp}");
    }
    assert!(slowest < Duration::from_secs(2), "a batch took {slowest:?}");
    assert_eq!(srv.get("/healthz", &[]).status, 200);
    // Stuck for longer than the server waits for a client (5 s) before it reads again.
    std::thread::sleep(Duration::from_secs(6));

    // The stalled client was dropped: its response ended (the last chunk) with no further
    // keep-alive pending. Read what the socket holds to its end.
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "the stalled stream did not end");
        match stalled.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                seen.extend_from_slice(&buf[..n]);
                if seen.ends_with(b"\r\n0\r\n\r\n") {
                    break;
                }
            }
            Err(e) => panic!(
                "the stalled stream did not end ({e}) after {} bytes, ending {:?}",
                seen.len(),
                String::from_utf8_lossy(&seen[seen.len().saturating_sub(200)..])
            ),
        }
    }
    // It was cut short: far fewer events than the 12,000 or so transitions committed.
    let events = seen.windows(7).filter(|w| w == b"event: ").count();
    assert!(
        events < 10_000,
        "{events} events reached the stalled client"
    );
    assert_eq!(srv.get("/healthz", &[]).status, 200);
}

/// A `/v1/stream` client that reads keeps up with a commit that publishes thousands of events
/// at once (a 100-message batch through a chain of steps): it sees every instance complete and
/// is not dropped.
#[test]
fn a_stream_client_that_reads_sees_all_of_a_large_commit() {
    let srv = Server::start();
    put_split_chain(&srv);
    let mut reader = BufReader::new(open_stream(&srv));
    let mut line = String::new();
    // The headers: from then on the stream is subscribed.
    while line != "\r\n" {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the stream's headers did not come"
        );
    }
    let messages: Vec<Value> = (0..100)
        .map(|n| json!({"type": "track", "userId": format!("big-{n}"), "event": "Ping"}))
        .collect();
    assert_eq!(
        srv.ingest("/v1/batch", &json!({"batch": messages})).status,
        200
    );
    let (mut events, mut completed) = (0, 0);
    let deadline = Instant::now() + WAIT;
    while completed < 100 {
        assert!(
            Instant::now() < deadline,
            "{completed} of 100 completions seen"
        );
        line.clear();
        let n = reader.read_line(&mut line).unwrap_or(0);
        assert!(
            n > 0,
            "the stream ended after {events} events, {completed} completions"
        );
        if line.starts_with("event: ") {
            events += 1;
        } else if line.starts_with("data: ") && line.contains("\"what\":\"completed\"") {
            completed += 1;
        }
    }
    assert!(
        events >= 1_000,
        "{events} events for 100 instances of 8 steps"
    );
}
