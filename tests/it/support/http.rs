//! HTTP as the tests speak it: one [`Client`] (base URL, admin token, write key, a ureq agent) with
//! every request helper, used alike by the subprocess [`Server`](super::Server) and the in-process
//! [`Appliance`](super::Appliance); whole answers as [`Resp`]; and the header and body encodings.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

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
        other => panic!("the test client does not send {other}"),
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

/// A journeyd as the tests talk to it: where it listens, the credentials it takes, and a
/// connection pool. Both kinds of server hand one out (and deref to it), so every helper that
/// takes a `&Client` takes either.
#[derive(Clone)]
pub struct Client {
    addr: SocketAddr,
    admin_token: String,
    write_key: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client with a fresh connection pool (pooled connections to an earlier process are dead).
    pub fn new(addr: SocketAddr, admin_token: &str, write_key: &str) -> Client {
        Client {
            addr,
            admin_token: admin_token.to_string(),
            write_key: write_key.to_string(),
            agent: agent(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    pub fn write_key(&self) -> &str {
        &self.write_key
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        request(&self.agent, "POST", &self.url(path), headers, Some(body))
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        request(&self.agent, "GET", &self.url(path), headers, None)
    }

    /// Any method, with these headers and raw body: for requests the other helpers do not make.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        request(&self.agent, method, &self.url(path), headers, body)
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

    /// [`Client::ingest`], expecting the plain success answer.
    pub fn ingest_ok(&self, path: &str, body: &Value) {
        let resp = self.ingest(path, body);
        assert_eq!(
            resp.expect(200),
            serde_json::json!({"success": true}),
            "POST {path} {body}:\n{resp}"
        );
    }

    /// An admin call with a JSON body (or none), as the admin token.
    pub fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        let auth = bearer(&self.admin_token);
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        self.send(
            method,
            path,
            &[("Authorization", auth.as_str())],
            bytes.as_deref(),
        )
    }

    pub fn admin_get(&self, path: &str) -> Resp {
        self.admin("GET", path, None)
    }

    /// GETs an admin path and expects `200`.
    pub fn admin_json(&self, path: &str) -> Value {
        self.admin_get(path).expect(200)
    }

    pub fn admin_put(&self, path: &str, body: &Value) -> Resp {
        self.admin("PUT", path, Some(body))
    }

    pub fn admin_post(&self, path: &str, body: &Value) -> Resp {
        self.admin("POST", path, Some(body))
    }

    pub fn admin_delete(&self, path: &str) -> Resp {
        self.admin("DELETE", path, None)
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
}
