//! The black-box harness: starts the real `journeyd` binary on a loopback port in a temp dir of its own,
//! talks to it over HTTP with ureq, and owns the child process so that no test leaks a server.
//!
//! The server announces its port with a `listening on 127.0.0.1:PORT` line on stdout; a thread reads stdout
//! until that line, hands every line to the test through a channel, and keeps draining afterwards so that
//! the pipe never fills. Stderr (the logs) goes to `server.log` in the server's directory, which is printed
//! when a test fails while the server is alive, and kept on disk in that case.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::Value;

/// The admin token and write key that tests start servers with, unless a test wants generated ones.
pub const ADMIN_TOKEN: &str = "it-admin-token";
pub const WRITE_KEY: &str = "it-write-key";

/// How long a server may take to print its `listening on` line, and a CLI command to finish.
/// Generous because a debug build on a loaded two-core machine can be slow to open a fresh database.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_journeyd")
}

/// A unique name, also across test threads and concurrent test processes: pid, counter and clock.
pub fn uid(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{n}-{nanos:x}", std::process::id())
}

/// A fresh directory under the system temp dir; removed by its owner.
pub fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(uid(&format!("journeyd-it-{prefix}")));
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// An agent for which 4xx and 5xx are answers, not errors, with a global timeout so that a hung server
/// fails a test instead of hanging it.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// `Authorization` value for a write key as the Basic user name, with the empty password's colon.
pub fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

/// The same, without the colon (some clients send only the user name).
pub fn basic_no_colon(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for ids and cursors in URLs.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One HTTP answer, read whole, with a description of the request for failure messages.
pub struct Resp {
    pub request: String,
    pub status: u16,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; a body that is not JSON fails the test with the body shown.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}):\n{self}", self.request))
    }

    /// Asserts the status and returns the JSON body.
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "{}: expected status {status}, got:\n{self}",
            self.request
        );
        self.json()
    }
}

impl std::fmt::Display for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = self.text();
        if text.len() > 4000 {
            text.truncate(4000);
            text.push_str("... (truncated)");
        }
        write!(f, "HTTP {} {}", self.status, text)
    }
}

/// Sends one request. `Err` only for transport failures (refused, reset, timeout): the crash and
/// backup tests count those as "not acknowledged"; the other tests unwrap through [`request`].
pub fn try_request(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Resp, ureq::Error> {
    let request = format!("{method} {url}");
    let mut res = match method {
        "GET" => {
            let mut b = agent.get(url);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.call()?
        }
        "DELETE" => {
            let mut b = agent.delete(url);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.call()?
        }
        "POST" | "PUT" => {
            let mut b = if method == "POST" {
                agent.post(url)
            } else {
                agent.put(url)
            };
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.send(body.unwrap_or(&[]))?
        }
        other => panic!("harness does not send {other}"),
    };
    let status = res.status().as_u16();
    let body = res.body_mut().with_config().limit(u64::MAX).read_to_vec()?;
    Ok(Resp {
        request,
        status,
        body,
    })
}

pub fn request(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    try_request(agent, method, url, headers, body)
        .unwrap_or_else(|e| panic!("{method} {url}: transport error: {e}"))
}

/// How to start a server. `Default` is the usual: fixed admin token and write key, a fresh db.
#[derive(Clone)]
pub struct Options {
    /// `None` starts without `--admin-token`, so the server generates one on first start.
    pub admin_token: Option<String>,
    /// Empty starts without `--write-key`, so the server generates one on first start.
    pub write_keys: Vec<String>,
    /// `None`: `j.db` in the server's own temp dir.
    pub db: Option<PathBuf>,
    /// More arguments for `journeyd serve` (`--max-active-per-profile 2`, say).
    pub extra_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            admin_token: Some(ADMIN_TOKEN.to_string()),
            write_keys: vec![WRITE_KEY.to_string()],
            db: None,
            extra_args: Vec::new(),
        }
    }
}

pub struct Server {
    child: Option<Child>,
    addr: SocketAddr,
    dir: PathBuf,
    db: PathBuf,
    opts: Options,
    admin_token: String,
    write_key: String,
    /// The stdout lines printed before `listening on`, of the latest start.
    startup_lines: Vec<String>,
    agent: ureq::Agent,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(Options::default())
    }

    /// Serves an existing database file (a backup, say) with the default admin token and write key.
    pub fn serve_db(db: &Path) -> Server {
        Server::start_with(Options {
            db: Some(db.to_path_buf()),
            ..Options::default()
        })
    }

    pub fn start_with(opts: Options) -> Server {
        let dir = temp_dir("srv");
        let db = opts.db.clone().unwrap_or_else(|| dir.join("j.db"));
        let mut srv = Server {
            child: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            dir,
            db,
            admin_token: opts.admin_token.clone().unwrap_or_default(),
            write_key: opts.write_keys.first().cloned().unwrap_or_default(),
            opts,
            startup_lines: Vec::new(),
            agent: agent(),
        };
        srv.spawn();
        srv
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "serve".to_string(),
            "--listen".to_string(),
            "127.0.0.1:0".to_string(),
            "--db".to_string(),
            self.db.display().to_string(),
        ];
        if let Some(t) = &self.opts.admin_token {
            args.extend(["--admin-token".to_string(), t.clone()]);
        }
        for k in &self.opts.write_keys {
            args.extend(["--write-key".to_string(), k.clone()]);
        }
        args.extend(self.opts.extra_args.iter().cloned());
        args
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "spawn while a child is running");
        let args = self.args();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut child = Command::new(bin())
            .args(&args)
            .current_dir(&self.dir)
            // The server's own environment must not leak settings into the test.
            .env_remove("JOURNEYD_LISTEN")
            .env_remove("JOURNEYD_DB")
            .env_remove("JOURNEYD_ADMIN_TOKEN")
            .env_remove("JOURNEYD_WRITE_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin()));

        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            // Keeps reading until the child closes stdout, so the pipe never fills; the receiver may be
            // gone by then, which is fine.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        let mut lines = Vec::new();
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix("listening on ") {
                        let addr: SocketAddr = rest.trim().parse().unwrap_or_else(|e| {
                            panic!("bad `listening on` line {line:?}: {e}\n{}", self.log_tail())
                        });
                        break addr;
                    }
                    lines.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                        panic!(
                            "journeyd {args:?} exited with {status} before listening; stdout: {lines:?}\n{}",
                            self.log_tail()
                        );
                    }
                    if Instant::now() >= deadline {
                        panic!(
                            "journeyd {args:?} did not print `listening on` within {START_TIMEOUT:?}; stdout: {lines:?}\n{}",
                            self.log_tail()
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.as_mut().unwrap().wait().unwrap();
                    panic!(
                        "journeyd {args:?} closed stdout ({status}) before listening; stdout: {lines:?}\n{}",
                        self.log_tail()
                    );
                }
            }
        };
        for line in &lines {
            if let Some(t) = line.trim().strip_prefix("admin token: ") {
                self.admin_token = t.trim().to_string();
            }
            if let Some(k) = line.trim().strip_prefix("write key: ") {
                self.write_key = k.trim().to_string();
            }
        }
        self.addr = addr;
        self.startup_lines = lines;
        // A fresh agent: pooled connections to the previous process are dead.
        self.agent = agent();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn db_path(&self) -> &Path {
        &self.db
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    pub fn write_key(&self) -> &str {
        &self.write_key
    }

    pub fn startup_lines(&self) -> &[String] {
        &self.startup_lines
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The last lines of the server's stderr, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        format!(
            "--- server log {} (last {} lines) ---\n{}",
            self.log_path().display(),
            tail.len(),
            tail.join("\n")
        )
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        request(&self.agent, "POST", &self.url(path), headers, Some(body))
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        request(&self.agent, "GET", &self.url(path), headers, None)
    }

    /// POSTs JSON to an ingest path with the write key as Basic user name.
    pub fn ingest(&self, path: &str, body: &Value) -> Resp {
        let auth = basic(&self.write_key);
        self.post(
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
    }

    /// Ingests and asserts the plain success answer.
    pub fn ingest_ok(&self, path: &str, body: &Value) {
        let resp = self.ingest(path, body);
        let json = resp.expect(200);
        assert_eq!(
            json,
            serde_json::json!({"success": true}),
            "{} with {body}:\n{resp}",
            resp.request
        );
    }

    /// An admin call with a JSON body (or none), as the admin token.
    pub fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        let auth = bearer(&self.admin_token);
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        request(
            &self.agent,
            method,
            &self.url(path),
            &[("Authorization", auth.as_str())],
            bytes.as_deref(),
        )
    }

    pub fn admin_get(&self, path: &str) -> Resp {
        let auth = bearer(&self.admin_token);
        self.get(path, &[("Authorization", &auth)])
    }

    pub fn profile(&self, id: &str) -> Resp {
        self.admin_get(&format!("/v1/profiles/{}", enc(id)))
    }

    /// Every timeline item of a profile, paging with `cursor` until `next_cursor` is null.
    pub fn timeline(&self, id: &str) -> Vec<Value> {
        self.timeline_paged(id, 1000)
    }

    pub fn timeline_paged(&self, id: &str, limit: usize) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _page in 0..10_000 {
            let mut path = format!("/v1/profiles/{}/timeline?limit={limit}", enc(id));
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={}", enc(c)));
            }
            let resp = self.admin_get(&path);
            let body = resp.expect(200);
            let page = body["items"]
                .as_array()
                .unwrap_or_else(|| panic!("{}: no `items` array:\n{resp}", resp.request));
            assert!(
                page.len() <= limit,
                "{}: {} items for limit {limit}",
                resp.request,
                page.len()
            );
            items.extend(page.iter().cloned());
            match &body["next_cursor"] {
                Value::Null => return items,
                Value::String(next) => {
                    assert!(
                        cursor.as_deref() != Some(next.as_str()),
                        "{}: next_cursor did not advance:\n{resp}",
                        resp.request
                    );
                    cursor = Some(next.clone());
                }
                other => panic!(
                    "{}: next_cursor is neither string nor null: {other}",
                    resp.request
                ),
            }
        }
        panic!("timeline of {id} did not end after 10000 pages");
    }

    /// The stored messages of a profile's timeline (items of kind `event`), oldest first.
    pub fn events(&self, id: &str) -> Vec<Value> {
        self.timeline(id)
            .into_iter()
            .filter(|item| item["kind"] == "event")
            .map(|item| item["message"].clone())
            .collect()
    }

    /// The stored message with this messageId in a profile's timeline; fails the test, listing what the
    /// timeline holds, when it is missing or there more than once.
    pub fn event(&self, profile: &str, message_id: &str) -> Value {
        let events = self.events(profile);
        let found: Vec<&Value> = events
            .iter()
            .filter(|m| m["messageId"] == message_id)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected messageId {message_id} once in the timeline of {profile}; it has {} events: {:?}",
            events.len(),
            events
                .iter()
                .map(|m| m["messageId"].clone())
                .collect::<Vec<_>>()
        );
        found[0].clone()
    }

    /// SIGKILL, and reap the child.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the binary again on the same database with the same flags (killing it first if alive).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Changes the flags of the next `restart`.
    pub fn set_options(&mut self, opts: Options) {
        if let Some(t) = &opts.admin_token {
            self.admin_token = t.clone();
        }
        self.opts = Options {
            db: Some(self.db.clone()),
            ..opts
        };
    }

    /// SIGTERM through `kill -TERM`, then waits (bounded) for the exit and returns its status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is not running");
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("cannot run kill");
        assert!(ok.success(), "kill -TERM {} failed", child.id());
        match wait_timeout(&mut child, EXIT_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "journeyd did not exit within {EXIT_TIMEOUT:?} of SIGTERM\n{}",
                    self.log_tail()
                );
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            // Keep the directory for a post-mortem and show where it is.
            eprintln!("{}", self.log_tail());
            eprintln!("server dir kept: {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the binary with these arguments to completion (bounded), capturing its output. The working
/// directory is a fresh temp dir, so that a default `./journeyd.db` never lands in the source tree.
pub fn run_cli(args: &[&str]) -> Output {
    let cwd = temp_dir("cli");
    let out = run_cli_in(&cwd, args);
    let _ = fs::remove_dir_all(&cwd);
    out
}

pub fn run_cli_in(cwd: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .current_dir(cwd)
        .env_remove("JOURNEYD_LISTEN")
        .env_remove("JOURNEYD_DB")
        .env_remove("JOURNEYD_ADMIN_TOKEN")
        .env_remove("JOURNEYD_WRITE_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin()));
    // Drain both pipes on threads so that a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = match wait_timeout(&mut child, EXIT_TIMEOUT) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("journeyd {args:?} did not exit within {EXIT_TIMEOUT:?}");
        }
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

pub fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Is this a timestamp in the stored form: RFC 3339, UTC, milliseconds, `Z` (`2026-11-28T10:17:41.908Z`)?
pub fn is_stored_timestamp(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    let b = s.as_bytes();
    let pattern = b"dddd-dd-ddTdd:dd:dd.dddZ";
    b.len() == pattern.len()
        && b.iter().zip(pattern).all(|(c, p)| {
            if *p == b'd' {
                c.is_ascii_digit()
            } else {
                c == p
            }
        })
        && parse_ts(s).is_some()
}

/// Parses an RFC 3339 timestamp (any fraction, `Z` or `±HH:MM`) to microseconds since the epoch.
pub fn parse_ts(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &s[start..i];
        if frac.is_empty() {
            return None;
        }
        let padded: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
        micros = padded.parse().ok()?;
    }
    let offset_secs = match &s[i..] {
        "Z" | "z" => 0,
        rest if rest.len() == 6
            && (rest.starts_with('+') || rest.starts_with('-'))
            && &rest[3..4] == ":" =>
        {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (rest[1..3].parse::<i64>().ok()? * 3600 + rest[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let (y2, m2) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_secs;
    Some(secs * 1_000_000 + micros)
}

pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// A minimal valid track message for a user, with a messageId.
pub fn track(user: &str, message_id: &str) -> Value {
    serde_json::json!({"type": "track", "event": "Test_Event", "userId": user, "messageId": message_id,
                       "properties": {"n": 1}})
}

/// Formats microseconds since the epoch in the stored form, `YYYY-MM-DDTHH:MM:SS.mmmZ` (truncating).
pub fn fmt_ts(micros: i64) -> String {
    let millis = micros.div_euclid(1000);
    let secs = millis.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        millis.rem_euclid(1000)
    )
}

/// The harness's own time helpers, checked against known values (no server needed).
#[test]
fn harness_time_helpers() {
    let cases = [
        ("1970-01-01T00:00:00.000Z", Some(0)),
        (
            "2026-11-28T10:17:39.906342+00:00",
            Some(1_795_861_059_906_342),
        ),
        (
            "2026-11-28T11:17:39.906342+01:00",
            Some(1_795_861_059_906_342),
        ),
        ("2000-02-29T23:59:59Z", Some(951_868_799_000_000)),
        ("2026-11-28 10:17:39Z", None),
        ("2026-11-28T10:17:39", None),
    ];
    for (s, want) in cases {
        assert_eq!(parse_ts(s), want, "parse_ts({s:?})");
    }
    for s in [
        "1970-01-01T00:00:00.000Z",
        "2000-02-29T23:59:59.999Z",
        "2026-11-28T10:17:39.906Z",
    ] {
        assert_eq!(fmt_ts(parse_ts(s).unwrap()), s);
        assert!(is_stored_timestamp(&Value::String(s.into())), "{s}");
    }
    assert!(!is_stored_timestamp(&Value::String(
        "2026-11-28T10:17:39.906+00:00".into()
    )));
    assert!(!is_stored_timestamp(&Value::String(
        "2026-11-28T10:17:39Z".into()
    )));
}

/// Runs every case through `check`, going on past a failing case so that one run shows every failure; each
/// failure's own message is printed as it happens, and the test then fails naming the failed cases.
pub fn check_all<T>(
    cases: impl IntoIterator<Item = T>,
    name: impl Fn(&T) -> String,
    mut check: impl FnMut(&T),
) {
    let mut failed = Vec::new();
    for case in cases {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&case))).is_err() {
            failed.push(name(&case));
        }
    }
    assert!(
        failed.is_empty(),
        "{} case(s) failed, see the panics above: {failed:#?}",
        failed.len()
    );
}
