//! The operator commands' HTTP client (SPEC §8): blocking calls (ureq) to a running server's
//! admin API with an admin token, or to its ingest API with a write key. Answers come back as
//! JSON; the admin API's errors (`{"error": {"code", "message", "details", "truncated"?}}`)
//! become [`ApiError`]s that list every problem with its JSON path, and transport failures
//! say which server could not be reached and why.

use std::io::BufRead;
use std::time::Duration;

use serde_json::Value;

use crate::config::{ConfigError, RemoteArgs, ServerArg};

/// How long one admin call may take, all told (erasing a large profile takes a while).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// A stream that says nothing for this long (the server sends a keep-alive every 15 s) is dead.
const STREAM_SILENCE: Duration = Duration::from_secs(45);
/// Most bytes of one answer read.
const MAX_ANSWER: u64 = 256 * 1024 * 1024;

/// How requests are authorised.
#[derive(Debug, Clone)]
enum Auth {
    /// `Authorization: Bearer <admin token>`.
    Admin(String),
    /// The write key as HTTP Basic user name (the ingest API).
    WriteKey(String),
}

/// A server, and the credentials to talk to it.
pub(super) struct Api {
    base: String,
    auth: Auth,
    agent: ureq::Agent,
}

/// A whole answer: its status and its JSON body (`Null` when empty).
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) body: Value,
}

/// An error answer of the admin API, shown with its status, message and every problem.
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) status: u16,
    pub(super) code: String,
    pub(super) message: String,
    /// `(JSON path, message)` of each validation problem.
    pub(super) details: Vec<(String, String)>,
    /// How many more problems the server did not list.
    pub(super) truncated: Option<u64>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.details.is_empty() {
            write!(f, "{} ({} {})", self.message, self.status, self.code)?;
        } else {
            write!(f, "refused by the server ({} {}):", self.status, self.code)?;
            for (path, message) in &self.details {
                let path = if path.is_empty() { "/" } else { path };
                write!(f, "\n  {path}: {message}")?;
            }
            if let Some(n) = self.truncated {
                write!(f, "\n  ... and {n} more")?;
            }
        }
        if self.status == 401 {
            write!(f, ": pass --token or set JOURNEYD_ADMIN_TOKEN")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// Reads the admin API's error shape; anything else is shown as it came.
    fn from_answer(answer: &Answer) -> ApiError {
        let error = &answer.body["error"];
        let details = error["details"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| {
                Some((
                    d.get("path")?.as_str()?.to_string(),
                    d.get("message")?.as_str()?.to_string(),
                ))
            })
            .collect();
        let message = match error["message"].as_str() {
            Some(m) => m.to_string(),
            None if answer.body.is_null() => "no details given".to_string(),
            None => answer.body.to_string(),
        };
        ApiError {
            status: answer.status,
            code: error["code"].as_str().unwrap_or("error").to_string(),
            message,
            details,
            truncated: error["truncated"].as_u64(),
        }
    }
}

/// The base URL, checked: `http://` or `https://` and a host; no trailing slash.
fn base_url(server: &ServerArg) -> Result<String, ConfigError> {
    let url = server.url.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(url.to_string()),
        _ => Err(ConfigError(format!(
            "--url / JOURNEYD_URL: \"{}\" is not a URL such as http://127.0.0.1:8787",
            server.url
        ))),
    }
}

fn agent(timeout: Option<Duration>, per_read: Option<Duration>) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(timeout)
        .timeout_per_read(per_read)
        .timeout_connect(Some(Duration::from_secs(10)))
        .max_redirects(0)
        .user_agent(concat!("journeyd/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

impl Api {
    /// A client of the admin API. No admin token is a configuration error (exit 2).
    pub(super) fn admin(remote: &RemoteArgs) -> Result<Api, ConfigError> {
        let base = base_url(&remote.server)?;
        let token = remote
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ConfigError("no admin token: pass --token or set JOURNEYD_ADMIN_TOKEN".into())
            })?;
        Ok(Api {
            base,
            auth: Auth::Admin(token.to_string()),
            agent: agent(Some(CALL_TIMEOUT), None),
        })
    }

    /// A client of the ingest API with a write key.
    pub(super) fn ingest(server: &ServerArg, write_key: &str) -> Result<Api, ConfigError> {
        Ok(Api {
            base: base_url(server)?,
            auth: Auth::WriteKey(write_key.to_string()),
            agent: agent(Some(CALL_TIMEOUT), None),
        })
    }

    pub(super) fn base(&self) -> &str {
        &self.base
    }

    fn authorization(&self) -> String {
        use base64::Engine as _;
        match &self.auth {
            Auth::Admin(token) => format!("Bearer {token}"),
            Auth::WriteKey(key) => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
            ),
        }
    }

    /// "cannot reach journeyd at URL: why".
    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        let why = match e {
            ureq::Error::Io(io) => match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                std::io::ErrorKind::ConnectionReset => "connection reset".to_string(),
                std::io::ErrorKind::TimedOut => "timed out".to_string(),
                _ => io.to_string(),
            },
            ureq::Error::HostNotFound => "host not found".to_string(),
            ureq::Error::Timeout(t) => format!("timed out ({t})"),
            ureq::Error::ConnectionFailed => "connection failed".to_string(),
            other => other.to_string(),
        };
        anyhow::anyhow!("cannot reach journeyd at {}: {why}", self.base)
    }

    /// Sends one request and reads the whole answer, whatever its status. `Err` only when the
    /// server could not be reached or did not answer JSON.
    pub(super) fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.base);
        let auth = self.authorization();
        let bytes = body.map(|b| serde_json::to_vec(b).expect("JSON serialises"));
        let sent = match method {
            "GET" => self.agent.get(&url).header("authorization", &auth).call(),
            "DELETE" => self
                .agent
                .delete(&url)
                .header("authorization", &auth)
                .call(),
            "POST" | "PUT" => {
                let b = if method == "POST" {
                    self.agent.post(&url)
                } else {
                    self.agent.put(&url)
                };
                let b = b.header("authorization", &auth);
                match bytes {
                    Some(bytes) => b.header("content-type", "application/json").send(&bytes),
                    None => b.send_empty(),
                }
            }
            other => unreachable!("the client does not send {other}"),
        };
        let mut res = sent.map_err(|e| self.unreachable(e))?;
        let status = res.status().as_u16();
        let text = res
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
            .map_err(|e| self.unreachable(e))?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&text).map_err(|_| {
                let shown: String = String::from_utf8_lossy(&text).chars().take(200).collect();
                anyhow::anyhow!(
                    "{method} {url}: HTTP {status} with an answer that is not JSON (is this journeyd?): {shown}"
                )
            })?
        };
        Ok(Answer { status, body })
    }

    /// Sends one request; a 2xx answer's body, or the server's error.
    pub(super) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let answer = self.request(method, path, body)?;
        if (200..300).contains(&answer.status) {
            Ok(answer)
        } else {
            Err(ApiError::from_answer(&answer).into())
        }
    }

    /// `GET`: the body of a 2xx answer, or the server's error.
    pub(super) fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.call("GET", path, None)?.body)
    }

    /// `GET`: the body, `None` for a `404`, or the server's error.
    pub(super) fn get_opt(&self, path: &str) -> anyhow::Result<Option<Value>> {
        let answer = self.request("GET", path, None)?;
        match answer.status {
            200..300 => Ok(Some(answer.body)),
            404 => Ok(None),
            _ => Err(ApiError::from_answer(&answer).into()),
        }
    }

    /// Every item of a paginated list (`{"items", "next_cursor"}`), following the cursors.
    pub(super) fn get_all(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let mut page_path = format!("{path}{sep}limit=1000");
            if let Some(c) = &cursor {
                page_path.push_str(&format!("&cursor={}", seg(c)));
            }
            let page = self.get(&page_path)?;
            items.extend(page["items"].as_array().into_iter().flatten().cloned());
            match page["next_cursor"].as_str() {
                Some(next) if cursor.as_deref() != Some(next) => cursor = Some(next.to_string()),
                _ => return Ok(items),
            }
        }
    }

    /// Opens a Server-Sent Events stream: its lines as they come, or the server's error.
    pub(super) fn stream(&self, path: &str) -> anyhow::Result<Box<dyn BufRead + Send>> {
        let url = format!("{}{path}", self.base);
        let agent = agent(None, Some(STREAM_SILENCE));
        let res = agent
            .get(&url)
            .header("authorization", self.authorization())
            .header("accept", "text/event-stream")
            .call()
            .map_err(|e| self.unreachable(e))?;
        let status = res.status().as_u16();
        if !(200..300).contains(&status) {
            let mut res = res;
            let text = res
                .body_mut()
                .with_config()
                .limit(MAX_ANSWER)
                .read_to_vec()
                .unwrap_or_default();
            let body = serde_json::from_slice(&text).unwrap_or(Value::Null);
            return Err(ApiError::from_answer(&Answer { status, body }).into());
        }
        Ok(Box::new(std::io::BufReader::new(
            res.into_body().into_reader(),
        )))
    }
}

/// Percent-encodes one path segment or query value (everything but RFC 3986 unreserved).
pub(super) fn seg(s: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const SET: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(s, SET).to_string()
}

/// A query string of the pairs whose value is given: `?a=1&b=x` (empty when none is).
pub(super) fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    let q = q.finish();
    if q.is_empty() { q } else { format!("?{q}") }
}
