//! The web console (SPEC §7): its assets and headers and the two endpoints it added, over HTTP;
//! then the console itself in a real headless Chromium, driven over WebDriver by the small
//! client below (chromedriver on a loopback port).
//!
//! The browser tests need Debian's `chromium` and `chromium-driver` (`.ci/run` installs them).
//! Without them they are skipped with a message, unless `JOURNEYD_BROWSER_TESTS=1`, which CI sets:
//! then a missing browser fails them. One Chromium runs at a time (they take turns on a lock), and
//! each test saves a screenshot in `target/console-screenshots/`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::{
    Appliance, Client, Reply, WAIT, enc, eventually, put_destination, put_journey, signed_webhook,
    temp_dir, track_event,
};

// ---------------------------------------------------------------------------------------------
// Over HTTP: the page, its assets and headers; the layout and validate endpoints
// ---------------------------------------------------------------------------------------------

/// A raw HTTP/1.1 GET, so that the headers and body are exactly what the server sent (the test
/// agent would decompress gzip).
fn raw_get(
    c: &Client,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, BTreeMap<String, String>, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(c.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        c.addr()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = raw[split + 4..].to_vec();
    (status, headers, body)
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn the_console_is_served_self_contained_with_strict_headers() {
    let app = Appliance::start();
    let (status, h, page) = raw_get(&app, "/", &[]);
    assert_eq!(status, 200);
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["cache-control"], "no-cache");
    let csp = &h["content-security-policy"];
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "CSP {csp} lacks {directive}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval") && !csp.contains("http")
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-frame-options"], "DENY");
    let page = String::from_utf8(page).unwrap();
    assert!(!page.contains("<style") && !page.contains("style=") && !page.contains("<script>"));

    // Every asset the page links is served, content-hashed and immutable; gzip when asked for;
    // 304 for its ETag. None of them loads anything from elsewhere.
    let linked: Vec<String> = page
        .split("/assets/")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect();
    assert!(
        linked
            .iter()
            .any(|a| a.starts_with("app.") && a.ends_with(".js")),
        "{linked:?}"
    );
    assert!(
        linked
            .iter()
            .any(|a| a.starts_with("app.") && a.ends_with(".css")),
        "{linked:?}"
    );
    let (_, _, page_gz) = raw_get(&app, "/", &[("Accept-Encoding", "gzip")]);
    let mut gzipped_total = page_gz.len();
    let mut seen = std::collections::BTreeSet::new();
    for asset in &linked {
        if !seen.insert(asset.clone()) {
            continue;
        }
        let path = format!("/assets/{asset}");
        let (status, h, plain) = raw_get(&app, &path, &[]);
        assert_eq!(status, 200, "{path}");
        assert_eq!(
            h["cache-control"], "public, max-age=31536000, immutable",
            "{path}"
        );
        assert!(h.contains_key("content-security-policy"), "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let text = String::from_utf8_lossy(&plain);
        for external in ["https://", "//fonts.", "@import", "url(http"] {
            assert!(!text.contains(external), "{path} names {external}");
        }
        assert!(
            text.matches("http://").count() == text.matches("http://www.w3.org/2000/svg").count(),
            "{path} names an http URL other than the SVG namespace"
        );
        let (status, hz, gz) = raw_get(&app, &path, &[("Accept-Encoding", "gzip, deflate, br")]);
        assert_eq!(status, 200);
        assert_eq!(hz["content-encoding"], "gzip", "{path}");
        assert_eq!(gunzip(&gz), plain, "{path}");
        gzipped_total += gz.len();
        let (status, _, body) = raw_get(&app, &path, &[("If-None-Match", &h["etag"])]);
        assert_eq!((status, body.len()), (304, 0), "{path}");
    }
    assert!(
        gzipped_total < 300 * 1024,
        "assets are {gzipped_total} bytes gzipped"
    );
    eprintln!("console assets: {gzipped_total} bytes gzipped in all");
    let (status, _, _) = raw_get(&app, "/assets/nothing.js", &[]);
    assert_eq!(status, 404);
    // The console needs no token; the API behind it does.
    assert_eq!(app.get("/v1/journeys", &[]).status, 401);
}

fn example(dir: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(dir)
        .join("journey.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn examples() -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("journey.json").exists())
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| example(p.file_name().unwrap().to_str().unwrap()))
        .collect()
}

/// A valid 50-step journey with every step type, branches that skip ahead and join (the one the
/// layout's unit tests generate).
fn fifty_steps() -> Value {
    serde_json::from_str(include_str!("../fixtures/journeys/fifty-steps.json"))
        .expect("the fifty-step journey is JSON")
}

/// The rectangles of a layout answer that must not overlap: boxes and labels.
fn layout_rects(layout: &Value) -> Vec<(String, [f64; 4])> {
    let rect = |r: &Value| {
        [
            r["x"].as_f64().unwrap(),
            r["y"].as_f64().unwrap(),
            r["w"].as_f64().unwrap(),
            r["h"].as_f64().unwrap(),
        ]
    };
    let mut out: Vec<(String, [f64; 4])> = layout["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (format!("box {}", n["id"]), rect(&n["rect"])))
        .collect();
    for e in layout["edges"].as_array().unwrap() {
        if !e["label_rect"].is_null() {
            out.push((
                format!("label {} {}->{}", e["label"], e["from"], e["to"]),
                rect(&e["label_rect"]),
            ));
        }
    }
    out
}

/// Fails naming the first two rectangles that overlap (by more than `slack` px each way).
fn assert_no_overlaps(what: &str, rects: &[(String, [f64; 4])], slack: f64) {
    for (i, (a, ra)) in rects.iter().enumerate() {
        for (b, rb) in &rects[i + 1..] {
            let overlap_x = (ra[0] + ra[2]).min(rb[0] + rb[2]) - ra[0].max(rb[0]);
            let overlap_y = (ra[1] + ra[3]).min(rb[1] + rb[3]) - ra[1].max(rb[1]);
            assert!(
                overlap_x <= slack || overlap_y <= slack,
                "{what}: {a} {ra:?} overlaps {b} {rb:?}"
            );
        }
    }
}

#[test]
fn layout_draws_every_version_without_overlaps() {
    let app = Appliance::start();
    put_destination(&app, "crm", &signed_webhook("http://127.0.0.1:9/"));
    let mut docs = examples();
    assert!(docs.len() >= 7);
    docs.push(fifty_steps());
    for doc in &docs {
        put_journey(&app, doc);
        let id = doc["id"].as_str().unwrap();
        let layout = app.admin_json(&format!("/v1/journeys/{}/layout", enc(id)));
        assert_eq!(layout["id"], id);
        assert_eq!(layout["version"], 1);
        let steps: Vec<&str> = layout["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["step"] == true)
            .map(|n| n["id"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = doc["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(steps, want, "{id}");
        assert_no_overlaps(id, &layout_rects(&layout), 0.0);
        for e in layout["edges"].as_array().unwrap() {
            assert!(e["points"].as_array().unwrap().len() >= 2, "{id}: {e}");
        }
    }
    // A version by number; a second version draws its own steps.
    let mut doc = example("cart-abandonment-cart-modified");
    doc["steps"][1]["id"] = json!("remind_by_mail");
    doc["steps"][0]["on_timeout"] = json!("remind_by_mail");
    assert_eq!(put_journey(&app, &doc)["version"], 2);
    let newest = app.admin_json("/v1/journeys/cart-abandonment/layout");
    let first = app.admin_json("/v1/journeys/cart-abandonment/layout?version=1");
    assert_eq!(newest["version"], 2);
    assert_eq!(first["version"], 1);
    let has = |l: &Value, step: &str| {
        l["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == step)
    };
    assert!(has(&newest, "remind_by_mail") && !has(&newest, "remind"));
    assert!(has(&first, "remind") && !has(&first, "remind_by_mail"));
    // Branch edges name the stats key their count is under.
    let ordered = first["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["label"] == "ordered")
        .unwrap();
    assert_eq!(
        (&ordered["from"], &ordered["branch"], &ordered["kind"]),
        (
            &json!("wait_for_order"),
            &json!("ordered"),
            &json!("branch")
        )
    );
    let stats = app.admin_json("/v1/journeys/cart-abandonment/stats?version=1");
    assert_eq!(stats["branches"]["wait_for_order"]["ordered"], 0);
    // Errors.
    assert_eq!(app.admin_get("/v1/journeys/nope/layout").status, 404);
    assert_eq!(
        app.admin_get("/v1/journeys/cart-abandonment/layout?version=9")
            .status,
        404
    );
    assert_eq!(
        app.admin_get("/v1/journeys/cart-abandonment/layout?version=x")
            .status,
        400
    );
    assert_eq!(
        app.get("/v1/journeys/cart-abandonment/layout", &[]).status,
        401
    );
}

#[test]
fn validate_checks_like_put_and_publishes_nothing() {
    let app = Appliance::start();
    let doc = example("cart-abandonment-cart-modified");
    // The destination does not exist yet: the same 422 and path as a PUT.
    let resp = app.admin_post("/v1/journeys/validate", &doc);
    let body = resp.expect(422);
    assert_eq!(body["error"]["code"], "invalid_journey");
    assert_eq!(
        body["error"]["details"],
        json!([{"path": "/steps/1/destination", "message": "unknown destination \"crm\""}])
    );
    let put = app
        .admin_put("/v1/journeys/cart-abandonment", &doc)
        .expect(422);
    assert_eq!(put["error"]["details"], body["error"]["details"]);

    put_destination(&app, "crm", &signed_webhook("http://127.0.0.1:9/"));
    let ok = app.admin_post("/v1/journeys/validate", &doc).expect(200);
    assert_eq!(
        (&ok["valid"], &ok["id"], &ok["publish"]),
        (&json!(true), &json!("cart-abandonment"), &json!("create"))
    );
    assert!(
        ok["layout"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == "wait_for_order")
    );
    assert_eq!(
        app.admin_get("/v1/journeys/cart-abandonment").status,
        404,
        "validate published"
    );

    put_journey(&app, &doc);
    let same = app.admin_post("/v1/journeys/validate", &doc).expect(200);
    assert_eq!(same["publish"], "unchanged");
    let mut changed = doc.clone();
    changed["steps"][0]["max_hold"] = json!("3h");
    assert_eq!(
        app.admin_post("/v1/journeys/validate", &changed)
            .expect(200)["publish"],
        "new_version"
    );
    assert_eq!(
        app.admin_json("/v1/journeys/cart-abandonment")["version"],
        1
    );

    // Every problem with its JSON path.
    let mut bad = doc.clone();
    bad["steps"][0]["on_timeout"] = json!("remindr");
    bad["steps"][0]["max_hold"] = json!("2 hours");
    let body = app.admin_post("/v1/journeys/validate", &bad).expect(422);
    let paths: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"/steps/0/on_timeout"), "{body}");
    assert!(paths.contains(&"/steps/0/max_hold"), "{body}");
    assert_eq!(
        app.send("POST", "/v1/journeys/validate", &[], Some(b"{}"))
            .status,
        401
    );
    let auth = crate::support::bearer(app.admin_token());
    assert_eq!(
        app.send(
            "POST",
            "/v1/journeys/validate",
            &[("Authorization", &auth)],
            Some(b"{")
        )
        .status,
        400
    );
}

// ---------------------------------------------------------------------------------------------
// A small WebDriver client
// ---------------------------------------------------------------------------------------------

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The key codes WebDriver uses for Tab and Enter.
const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One Chromium at a time: the browser tests take turns.
static BROWSER_LOCK: Mutex<()> = Mutex::new(());

/// A chromedriver process and one browser session; both end when it is dropped.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    profile: PathBuf,
    name: String,
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// An element reference.
#[derive(Clone)]
struct El(Value);

/// Starts chromedriver on a port of its choosing; returns it with the port it says it took.
fn start_driver(chromedriver: &str) -> Result<(Child, u16), String> {
    let mut driver = Command::new(chromedriver)
        .arg("--port=0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {chromedriver}: {e}"));
    // chromedriver says "... started successfully on port N." (without a newline).
    let mut out = driver.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        let mut byte = [0u8; 1];
        let mut sent = false;
        while let Ok(1) = out.read(&mut byte) {
            if sent {
                continue; // keep draining
            }
            seen.push(byte[0] as char);
            if let Some(rest) = seen.split("successfully on port ").nth(1)
                && let Some(port) = rest.strip_suffix('.')
            {
                let _ = tx.send(port.parse::<u16>().ok());
                sent = true;
            }
        }
    });
    match rx.recv_timeout(WAIT) {
        Ok(Some(port)) => Ok((driver, port)),
        other => {
            let _ = driver.kill();
            let _ = driver.wait();
            Err(format!("{other:?}"))
        }
    }
}

impl Browser {
    /// A browser for the test `name`, or `None` (with the reason printed) when Chromium is not
    /// installed and `JOURNEYD_BROWSER_TESTS` is not `1`.
    fn open(name: &str) -> Option<Browser> {
        let chromium = std::env::var("JOURNEYD_CHROMIUM").unwrap_or(CHROMIUM.into());
        let chromedriver = std::env::var("JOURNEYD_CHROMEDRIVER").unwrap_or(CHROMEDRIVER.into());
        let required = std::env::var("JOURNEYD_BROWSER_TESTS").as_deref() == Ok("1");
        let missing: Vec<&str> = [&chromium, &chromedriver]
            .into_iter()
            .filter(|p| !Path::new(p).exists())
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            assert!(
                !required,
                "JOURNEYD_BROWSER_TESTS=1 but {missing:?} is missing: apt-get install chromium chromium-driver"
            );
            // Straight to stderr, past the test harness's capture, so that a skip is seen.
            let _ = writeln!(
                std::io::stderr(),
                "console::{name} skipped: {missing:?} not found (apt-get install chromium chromium-driver; \
                 JOURNEYD_BROWSER_TESTS=1 makes this a failure)"
            );
            return None;
        }
        let turn = BROWSER_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        // Seen once under load: chromedriver not saying its port within WAIT. A second try
        // tells a slow start from a broken install.
        let (driver, port) = start_driver(&chromedriver)
            .or_else(|first| {
                start_driver(&chromedriver).map_err(|again| format!("{first}; again: {again}"))
            })
            .unwrap_or_else(|e| panic!("chromedriver did not say its port: {e}"));
        let profile = temp_dir("chromium");
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            agent: crate::support::agent(),
            profile,
            name: name.to_string(),
            _turn: turn,
        };
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--window-size=1280,800",
            &format!("--user-data-dir={}", browser.profile.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let answer = eventually("a WebDriver session", WAIT, || {
            browser.call("POST", "/session", Some(&caps))
        });
        browser.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id: {answer}"))
            .to_string();
        browser.viewport(1280, 800);
        Some(browser)
    }

    /// One WebDriver command: its `value`, or the error it answered.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        let resp = crate::support::try_request(
            &self.agent,
            method,
            &url,
            &[("Content-Type", "application/json")],
            bytes
                .as_deref()
                .or(if method == "POST" { Some(b"{}") } else { None }),
        )
        .map_err(|e| format!("{method} {path}: {e}"))?;
        let v: Value = serde_json::from_slice(&resp.body)
            .map_err(|e| format!("{method} {path}: not JSON ({e}): {}", resp.text()))?;
        if resp.status != 200 {
            return Err(format!("{method} {path}: {} {}", resp.status, v["value"]));
        }
        Ok(v["value"].clone())
    }

    fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let body = if method == "GET" { None } else { Some(&body) };
        self.call(method, &path, body)
            .unwrap_or_else(|e| panic!("{}: WebDriver {e}", self.name))
    }

    /// Sets the viewport (not the window) to `w` × `h` CSS pixels, as a phone of that size has.
    fn viewport(&self, w: u32, h: u32) {
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            json!({"cmd": "Emulation.setDeviceMetricsOverride",
                   "params": {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": w < 600}}),
        );
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({"url": url}));
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page and returns its value.
    fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
    }

    /// Waits until `script` returns something truthy, and returns it.
    fn wait(&self, what: &str, script: &str, args: Value) -> Value {
        eventually(what, WAIT, || {
            let v = self.js(script, args.clone());
            match &v {
                Value::Null | Value::Bool(false) => Err(self.describe()),
                Value::String(s) if s.is_empty() => Err(self.describe()),
                _ => Ok(v),
            }
        })
    }

    /// What the page shows, for failure messages.
    fn describe(&self) -> String {
        self.js(
            "return location.hash + ' ready=' + document.body.dataset.ready + ' | ' + \
             document.querySelector('main').innerText.slice(0, 600)",
            json!([]),
        )
        .to_string()
    }

    /// Waits for the view `name` to be drawn after a navigation that `go` starts.
    fn navigate(&self, name: &str, go: impl FnOnce()) {
        self.js("document.body.dataset.ready = ''", json!([]));
        go();
        self.wait(
            &format!("the {name} view"),
            "return document.body.dataset.ready === arguments[0]",
            json!([name]),
        );
    }

    fn hash(&self, name: &str, hash: &str) {
        self.navigate(name, || {
            self.js("location.hash = arguments[0]", json!([hash]));
        });
    }

    fn find(&self, css: &str) -> El {
        El(self.cmd(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        ))
    }

    /// The button (or link) whose text is `text`, inside `within` (a CSS selector) if given.
    fn control(&self, text: &str, within: &str) -> El {
        let v = self.wait(
            &format!("a control named {text:?}"),
            "const root = arguments[1] ? document.querySelector(arguments[1]) : document; \
             if (!root) return null; \
             return [...root.querySelectorAll('button, a')].find(b => \
               b.textContent.trim() === arguments[0] && b.offsetParent !== null) || null;",
            json!([text, within]),
        );
        El(v)
    }

    fn id(el: &El) -> String {
        el.0[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("not an element: {}", el.0))
            .to_string()
    }

    fn click(&self, el: &El) {
        self.cmd(
            "POST",
            &format!("/element/{}/click", Self::id(el)),
            json!({}),
        );
    }

    fn click_on(&self, text: &str) {
        let el = self.control(text, "");
        self.click(&el);
    }

    fn type_into(&self, el: &El, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{}/value", Self::id(el)),
            json!({"text": text}),
        );
    }

    /// Presses keys on whatever has focus.
    fn keys(&self, keys: &[&str]) {
        let mut actions = Vec::new();
        for k in keys {
            actions.push(json!({"type": "keyDown", "value": k}));
            actions.push(json!({"type": "keyUp", "value": k}));
        }
        self.cmd(
            "POST",
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]}),
        );
    }

    /// Sets a text field's value as a paste would (an `input` event follows).
    fn paste(&self, css: &str, text: &str) {
        self.js(
            "const el = document.querySelector(arguments[0]); el.focus(); el.value = arguments[1]; \
             el.dispatchEvent(new Event('input', {bubbles: true}));",
            json!([css, text]),
        );
    }

    /// Saves a screenshot of the viewport as `target/console-screenshots/<name>.png`.
    fn screenshot(&self, name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .join("console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.cmd("GET", "/screenshot", json!(null));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Opens the console at `c` and signs in by typing the admin token.
    fn sign_in(&self, c: &Client) {
        self.goto(&c.url("/"));
        let field = self.find("input[type=password]");
        // The field is labelled "Admin token".
        let label = self.js(
            "const i = document.querySelector('input[type=password]'); \
             return i.labels[0].textContent.trim();",
            json!([]),
        );
        assert!(
            label.as_str().unwrap().starts_with("Admin token"),
            "{label}"
        );
        self.navigate("journeys", || {
            self.type_into(&field, c.admin_token());
            self.keys(&[ENTER]);
        });
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The rectangles of every box and edge label drawn, in page pixels.
fn drawn_rects(b: &Browser) -> Vec<(String, [f64; 4])> {
    let v = b.js(
        "return [...document.querySelectorAll('.graph .node, .graph .edge-label')].map(el => { \
           const r = el.getBoundingClientRect(); \
           return [(el.dataset.step || el.dataset.node || el.dataset.edgeLabel) + ' ' + el.className, \
                   [r.x, r.y, r.width, r.height]]; })",
        json!([]),
    );
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let r: Vec<f64> = p[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_f64().unwrap())
                .collect();
            (p[0].as_str().unwrap().to_string(), [r[0], r[1], r[2], r[3]])
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// In the browser
// ---------------------------------------------------------------------------------------------

#[test]
fn signs_in_by_keyboard_and_counts_move_live() {
    let Some(b) = Browser::open("signs_in_by_keyboard_and_counts_move_live") else {
        return;
    };
    let app = Appliance::start();
    let hook = app.receiver(vec![]);
    put_destination(&app, "crm", &signed_webhook(&hook.url("/crm")));
    put_journey(&app, &example("cart-abandonment-cart-modified"));
    put_journey(&app, &example("real-time-event-forwarding"));
    b.sign_in(&app);
    b.wait(
        "the journey rows",
        "return document.querySelectorAll('[data-journey]').length === 2",
        json!([]),
    );
    // The token is in this tab's sessionStorage only.
    let kept = b.js(
        "return [sessionStorage.getItem('journeyd.admin-token'), localStorage.length, \
                 document.cookie, location.href]",
        json!([]),
    );
    assert_eq!(kept[0], app.admin_token());
    assert_eq!((&kept[1], &kept[2]), (&json!(0), &json!("")));
    assert!(!kept[3].as_str().unwrap().contains(app.admin_token()));
    // The navigation SPEC §7 names.
    let nav = b.js(
        "return [...document.querySelectorAll('nav a')].map(a => a.textContent.trim())",
        json!([]),
    );
    assert_eq!(
        nav,
        json!([
            "Journeys",
            "Profiles",
            "Deliveries",
            "Destinations",
            "Editor"
        ])
    );

    // To the journey by keyboard alone: Tab until its link has focus, then Enter.
    let mut tabs = 0;
    loop {
        let on = b.js(
            "const a = document.activeElement; \
             return a && a.closest('[data-journey]') ? a.closest('[data-journey]').dataset.journey : null",
            json!([]),
        );
        if on == "cart-abandonment" {
            break;
        }
        tabs += 1;
        assert!(
            tabs < 40,
            "Tab never reached the journey's link: {}",
            b.describe()
        );
        b.keys(&[TAB]);
    }
    b.navigate("journey", || b.keys(&[ENTER]));
    assert_eq!(
        b.js("return location.hash", json!([])),
        "#/journeys/cart-abandonment"
    );
    b.js("window.stillThisPage = true", json!([]));
    let counts = |step: &str| {
        b.js(
            "const el = document.querySelector(`[data-step=\"${arguments[0]}\"]`); \
             return el ? [el.querySelector('.reached').textContent, el.querySelector('.active').textContent] : null",
            json!([step]),
        )
    };
    assert_eq!(counts("wait_for_order"), json!(["0", "0"]));

    // Events arrive: the counts change without a reload.
    track_event(&app, "u1", "Product_Added", json!({"cart_ID": "c1"}));
    track_event(&app, "u2", "Product_Added", json!({"cart_ID": "c2"}));
    b.wait(
        "wait_for_order to show 2 reached, 2 active",
        "const el = document.querySelector('[data-step=\"wait_for_order\"]'); \
         return el.querySelector('.reached').textContent === '2' && el.querySelector('.active').textContent === '2'",
        json!([]),
    );
    track_event(&app, "u1", "Order_Confirmation", json!({"cart_ID": "c1"}));
    b.wait(
        "the ordered branch to count 1",
        "const l = document.querySelector('.edge-label[data-branch=\"ordered\"] b'); \
         return l && l.textContent === '1' && \
           document.querySelector('[data-step=\"wait_for_order\"] .active').textContent === '1' && \
           document.querySelector('[data-total=\"completed\"] b').textContent === '1'",
        json!([]),
    );
    let loads = b.js(
        "return window.stillThisPage === true && performance.getEntriesByType('navigation').length",
        json!([]),
    );
    assert_eq!(loads, 1, "the page was reloaded");
    b.wait(
        "the count highlights to fade",
        "return document.getAnimations().length === 0",
        json!([]),
    );
    b.screenshot("journey");

    // A step's box lists its instances; one instance shows its context and history; its
    // profile its timeline.
    b.click(&b.find("[data-step=\"wait_for_order\"]"));
    b.wait(
        "u2's instance listed at wait_for_order",
        "return location.hash.includes('step=wait_for_order') && \
           [...document.querySelectorAll('#instances-title ~ div tbody tr')].some(r => r.textContent.includes('u2'))",
        json!([]),
    );
    b.navigate("instance", || {
        let link = b.js(
            "return [...document.querySelectorAll('#instances-title ~ div tbody tr')] \
               .find(r => r.textContent.includes('u2')).querySelector('a')",
            json!([]),
        );
        b.click(&El(link))
    });
    let shown = b.js("return document.querySelector('main').innerText", json!([]));
    let shown = shown.as_str().unwrap();
    assert!(
        shown.contains("\"cart_ID\": \"c2\"") && shown.contains("wait_for_order"),
        "{shown}"
    );
    b.navigate("profile", || {
        b.click(&b.find("main a[href=\"#/profiles/u2\"]"))
    });
    b.wait(
        "u2's timeline",
        "return document.querySelectorAll('.timeline li').length >= 3",
        json!([]),
    );
    b.hash("journey", "#/journeys/cart-abandonment");

    // Pause and resume.
    b.click_on("Pause");
    b.wait(
        "the paused badge",
        "return document.querySelector('.head .badge').textContent === 'paused'",
        json!([]),
    );
    assert_eq!(
        app.admin_json("/v1/journeys/cart-abandonment")["status"],
        "paused"
    );
    b.click_on("Resume");
    b.wait(
        "the active badge",
        "return document.querySelector('.head .badge').textContent === 'active'",
        json!([]),
    );
    assert_eq!(
        app.admin_json("/v1/journeys/cart-abandonment")["status"],
        "active"
    );

    // The list's counts move live too.
    b.hash("journeys", "#/journeys");
    track_event(&app, "u3", "Order_Confirmation", json!({"cart_ID": "c3"}));
    b.wait(
        "order-confirmation to count 1 entered",
        "const r = document.querySelector('[data-journey=\"order-confirmation\"] [data-count=\"entered\"]'); \
         return r && r.textContent === '1'",
        json!([]),
    );
    // Archive, with its confirmation.
    b.hash("journey", "#/journeys/cart-abandonment");
    b.click_on("Archive");
    b.click_on("Archive journey");
    b.wait(
        "the archived badge",
        "return document.querySelector('.head .badge').textContent === 'archived'",
        json!([]),
    );
    assert_eq!(
        app.admin_json("/v1/journeys/cart-abandonment")["status"],
        "archived"
    );
}

#[test]
fn every_example_and_fifty_steps_draw_without_overlaps() {
    let Some(b) = Browser::open("every_example_and_fifty_steps_draw_without_overlaps") else {
        return;
    };
    let app = Appliance::start();
    put_destination(&app, "crm", &signed_webhook("http://127.0.0.1:9/"));
    let mut docs = examples();
    docs.push(fifty_steps());
    for doc in &docs {
        put_journey(&app, doc);
    }
    b.sign_in(&app);
    for doc in &docs {
        let id = doc["id"].as_str().unwrap();
        b.hash("journey", &format!("#/journeys/{id}"));
        let steps = b.js(
            "return document.querySelectorAll('[data-step]').length",
            json!([]),
        );
        assert_eq!(steps, doc["steps"].as_array().unwrap().len(), "{id}");
        let rects = drawn_rects(&b);
        assert!(
            rects.len() > steps.as_u64().unwrap() as usize,
            "{id}: {rects:?}"
        );
        // Boxes and labels overlap nowhere (half a pixel of rounding allowed).
        assert_no_overlaps(id, &rects, 0.5);
        // Step names fit their boxes in the examples; edge labels fit theirs.
        if id != "fifty" {
            let cut = b.js(
                "return [...document.querySelectorAll('.node .title, .edge-label .text')] \
                   .filter(el => el.scrollWidth > el.clientWidth + 1).map(el => el.textContent)",
                json!([]),
            );
            assert_eq!(cut, json!([]), "{id}: truncated text");
        }
    }
    b.js(
        "document.querySelector('[data-step=\"step_10\"]').scrollIntoView()",
        json!([]),
    );
    b.screenshot("fifty-steps");
}

#[test]
fn retries_a_failed_delivery_and_all_failed() {
    let Some(b) = Browser::open("retries_a_failed_delivery_and_all_failed") else {
        return;
    };
    let app = Appliance::start();
    // 400 fails a delivery at once (dead letter); later attempts get 200.
    let hook = app.receiver(vec![
        Reply::status(400),
        Reply::status(400),
        Reply::status(400),
    ]);
    put_destination(&app, "crm", &signed_webhook(&hook.url("/crm")));
    put_journey(&app, &example("real-time-event-forwarding"));
    for user in ["a", "b", "c"] {
        track_event(&app, user, "Order_Confirmation", json!({"cart_ID": user}));
    }
    let failed = crate::support::settled_deliveries(&app, "status=failed", 3, WAIT);
    assert_eq!(failed.len(), 3);
    b.sign_in(&app);
    b.hash("deliveries", "#/deliveries?status=failed");
    let first = failed[0]["id"].as_str().unwrap().to_string();
    b.wait(
        "three failed rows",
        "return document.querySelectorAll('tr[data-status=\"failed\"]').length === 3",
        json!([]),
    );
    b.click(&b.control("Retry", &format!("tr[data-delivery=\"{first}\"]")));
    crate::support::wait_delivery(&app, &first, "succeeded", WAIT);
    b.wait(
        "the retried row to leave the failed list",
        "return document.querySelectorAll('tr[data-status=\"failed\"]').length === 2",
        json!([]),
    );
    b.click_on("Retry all failed");
    b.wait(
        "the bulk retry's answer",
        "const s = document.querySelector('[role=status].notice'); return s && s.textContent.startsWith('2 failed')",
        json!([]),
    );
    for d in &failed[1..] {
        crate::support::wait_delivery(&app, d["id"].as_str().unwrap(), "succeeded", WAIT);
    }
    assert_eq!(hook.wait_for(6, WAIT).len(), 6);
    b.hash("deliveries", "#/deliveries");
    b.wait(
        "three succeeded rows",
        "return document.querySelectorAll('tr[data-status=\"succeeded\"]').length === 3",
        json!([]),
    );
    b.screenshot("deliveries");

    // A test send from the destinations page.
    b.hash("destinations", "#/destinations");
    b.click(&b.control("Test", "tr[data-destination=\"crm\"]"));
    b.wait(
        "the test send's answer",
        "const r = document.querySelector('[data-test-result=\"crm\"]'); return r && r.textContent.includes('HTTP 200')",
        json!([]),
    );
    let got = hook.wait_for(7, WAIT);
    assert_eq!(
        got[6].json()["properties"]["journey_metadata"]["test"],
        true
    );
}

#[test]
fn the_editor_validates_simulates_and_publishes() {
    let Some(b) = Browser::open("the_editor_validates_simulates_and_publishes") else {
        return;
    };
    let app = Appliance::start();
    put_destination(&app, "crm", &signed_webhook("http://127.0.0.1:9/"));
    b.sign_in(&app);
    b.navigate("editor", || b.click_on("Editor"));
    let mut doc = example("cart-abandonment-cart-modified");
    doc["steps"][0]["on_timeout"] = json!("remindr");
    b.paste(
        "#journey-text",
        &serde_json::to_string_pretty(&doc).unwrap(),
    );
    b.click_on("Validate");
    let shown = b.wait(
        "the problem with its path",
        "const li = document.querySelector('.problems li[data-path=\"/steps/0/on_timeout\"]'); \
         return li && li.offsetParent !== null ? li.textContent : null",
        json!([]),
    );
    let shown = shown.as_str().unwrap();
    assert!(
        shown.starts_with("/steps/0/on_timeout") && shown.contains("remindr"),
        "{shown}"
    );

    doc["steps"][0]["on_timeout"] = json!("remind");
    b.paste(
        "#journey-text",
        &serde_json::to_string_pretty(&doc).unwrap(),
    );
    b.click_on("Validate");
    b.wait(
        "valid, with a preview",
        "return document.querySelector('[data-valid]') && document.querySelectorAll('[data-step]').length === 2",
        json!([]),
    );
    let script = [
        json!({"at": "+0s", "message": {"type": "identify", "userId": "u1", "traits": {"email": "u1@example.com"}}}),
        json!({"at": "+0s", "message": {"type": "track", "userId": "u1", "event": "Product_Added", "properties": {"cart_ID": "c1"}}}),
        json!({"at": "+1h", "message": {"type": "track", "userId": "u1", "event": "Cart_Modified", "properties": {"cart_ID": "c1"}}}),
    ]
    .iter()
    .map(Value::to_string)
    .collect::<Vec<_>>()
    .join("\n");
    b.paste("#events-text", &script);
    b.click_on("Simulate");
    b.wait(
        "the trace and the payload",
        "return document.querySelector('tr[data-trace=\"entered\"]') && document.querySelector('tr[data-trace=\"timeout\"]') && \
           document.querySelector('[data-payload=\"remind\"] pre')",
        json!([]),
    );
    let payload = b.js(
        "return JSON.parse(document.querySelector('[data-payload=\"remind\"] pre').textContent)",
        json!([]),
    );
    assert_eq!(payload["event"], "Cart Reminder");
    assert_eq!(payload["properties"]["email"], "u1@example.com");
    b.js(
        "document.querySelector('#simulation').scrollIntoView()",
        json!([]),
    );
    b.screenshot("editor");
    assert_eq!(
        app.admin_get("/v1/journeys/cart-abandonment").status,
        404,
        "simulating published"
    );

    b.click_on("Publish");
    b.wait(
        "the published notice",
        "return document.querySelector('[data-published=\"cart-abandonment\"]')",
        json!([]),
    );
    let published = app.admin_json("/v1/journeys/cart-abandonment");
    assert_eq!(published["version"], 1);
    assert_eq!(published["definition"]["steps"][0]["on_timeout"], "remind");
    b.navigate("journey", || b.click_on("Open the journey"));
}

#[test]
fn a_phone_sized_screen_never_scrolls_sideways() {
    let Some(b) = Browser::open("a_phone_sized_screen_never_scrolls_sideways") else {
        return;
    };
    let app = Appliance::start();
    put_destination(&app, "crm", &signed_webhook("http://127.0.0.1:9/"));
    for doc in examples() {
        put_journey(&app, &doc);
    }
    track_event(&app, "someone@example.com", "Website_Viewed", json!({}));
    b.viewport(390, 844);
    b.sign_in(&app);
    let size = b.js("return [innerWidth, innerHeight]", json!([]));
    assert_eq!(size, json!([390, 844]));
    for (view, hash) in [
        ("journeys", "#/journeys"),
        ("journey", "#/journeys/onboarding"),
        ("profiles", "#/profiles"),
        ("profile", "#/profiles/someone%40example.com"),
        ("deliveries", "#/deliveries"),
        ("destinations", "#/destinations"),
        ("editor", "#/editor"),
        ("journey", "#/journeys/browse-abandonment"),
    ] {
        b.hash(view, hash);
        // Every field has a label; every button says what it does.
        let unlabelled = b.js(
            "return [...document.querySelectorAll('input, select, textarea')] \
               .filter(e => !e.labels.length && !e.getAttribute('aria-label')).map(e => e.outerHTML) \
               .concat([...document.querySelectorAll('button')] \
                 .filter(e => !e.textContent.trim() && !e.getAttribute('aria-label')).map(e => e.outerHTML))",
            json!([]),
        );
        assert_eq!(unlabelled, json!([]), "{hash}");
        let widths = b.js(
            "return [document.documentElement.scrollWidth, innerWidth]",
            json!([]),
        );
        assert!(
            widths[0].as_f64() <= widths[1].as_f64(),
            "{hash} scrolls sideways: {widths}"
        );
    }
    b.screenshot("phone-journey");
}

#[test]
fn journey_pages_are_interactive_quickly_with_fifty_journeys() {
    let Some(b) = Browser::open("journey_pages_are_interactive_quickly_with_fifty_journeys") else {
        return;
    };
    let app = Appliance::start();
    put_destination(&app, "crm", &signed_webhook("http://127.0.0.1:9/"));
    for n in 0..50 {
        let mut doc = example("complex-multi-step-onboarding");
        doc["id"] = json!(format!("onboarding-{n:02}"));
        doc["name"] = json!(format!("Onboarding {n:02}"));
        put_journey(&app, &doc);
    }
    b.sign_in(&app);
    // A fresh page load each time (the token stays in the tab): from navigation start to the view
    // drawn with its data, as the page marks it.
    let loads = std::cell::Cell::new(0);
    let measure = |hash: &str, view: &str| -> f64 {
        let started = Instant::now();
        // A query of its own makes each a new document, not a same-page hash change.
        loads.set(loads.get() + 1);
        b.goto(&app.url(&format!("/?load={}{hash}", loads.get())));
        b.wait(
            &format!("{view} drawn"),
            "return document.body.dataset.ready === arguments[0]",
            json!([view]),
        );
        let mark = b.js(
            "const m = performance.getEntriesByName('ready:' + arguments[0]); return m.length ? m[0].startTime : null",
            json!([view]),
        );
        let ms = mark
            .as_f64()
            .unwrap_or_else(|| panic!("no ready mark: {mark}"));
        assert!(started.elapsed() < WAIT);
        ms
    };
    let mut list = Vec::new();
    let mut journey = Vec::new();
    for _ in 0..3 {
        list.push(measure("#/journeys", "journeys"));
        journey.push(measure("#/journeys/onboarding-25", "journey"));
    }
    let rows = b.js(
        "return document.querySelectorAll('[data-step]').length",
        json!([]),
    );
    assert_eq!(rows, 9);
    b.goto(&app.url("/#/journeys"));
    b.wait(
        "50 rows",
        "return document.querySelectorAll('[data-journey]').length === 50",
        json!([]),
    );
    b.screenshot("journeys");
    list.sort_by(f64::total_cmp);
    journey.sort_by(f64::total_cmp);
    eprintln!(
        "console interactive (ms from navigation start, best of 3): journeys page {:.0}, journey page {:.0} (all: {list:?} {journey:?})",
        list[0], journey[0]
    );
    // The budget is 300 ms on an idle machine (BENCHMARKS.md); the bound here leaves room for a
    // debug build sharing two cores with the rest of the suite.
    assert!(
        list[0] < 2000.0 && journey[0] < 2000.0,
        "{list:?} {journey:?}"
    );
}
