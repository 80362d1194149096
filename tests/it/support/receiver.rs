//! A webhook receiver on 127.0.0.1 for delivery tests: records every request it gets and answers
//! from a script (a queue of replies; plain `200` once the script runs out). Each request is
//! stamped with the wall clock and with the clock of the server under test (the appliance's
//! manual clock, or the system clock for a subprocess server), so a test can say *when* in the
//! server's time a delivery arrived.
//!
//! It runs a small hyper server on a runtime of its own, so tests stay synchronous. Also here:
//! the Standard Webhooks signature as SPEC §5 defines it, to check what arrived.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hmac::{KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use journeyd::clock::{Clock, SystemClock};
use serde_json::Value;

use super::eventually;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When it arrived, on the wall clock.
    pub at: Instant,
    /// When it arrived, on the server's clock (unix ms).
    pub clock_ms: i64,
    /// Whether that clock is a manual one: it stands still unless the test moves it.
    pub manual_clock: bool,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn webhook_id(&self) -> String {
        self.header("webhook-id")
            .unwrap_or_else(|| panic!("no webhook-id header: {:?}", self.headers))
            .to_string()
    }

    /// Does the `webhook-signature` header (space-separated `v1,<sig>` entries) hold the
    /// signature made with these key bytes?
    pub fn signature_matches(&self, key: &[u8]) -> bool {
        let (Some(sig), Some(ts)) = (
            self.header("webhook-signature"),
            self.header("webhook-timestamp"),
        ) else {
            return false;
        };
        let want = expected_signature(key, &self.webhook_id(), ts, &self.body);
        sig.split(' ').any(|s| s == want)
    }
}

/// The HMAC-SHA256 signature of SPEC §5, computed here from the key bytes.
pub fn expected_signature(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Checks one webhook request (SPEC §5: POST to `path`, Standard Webhooks headers, a signature
/// made with the `whsec_` secret's key bytes, `messageId` = `webhook-id`, and `webhook-timestamp`
/// the server's time of sending) and returns its JSON body.
pub fn check_webhook(r: &Received, path: &str, whsec: &str) -> Value {
    assert_eq!(r.method, "POST", "{r:?}");
    assert_eq!(r.path, path, "{r:?}");
    let body = r.json();
    let id = r.header("webhook-id").expect("webhook-id header");
    assert_eq!(body["messageId"], id, "messageId is the webhook-id: {body}");
    let ts = r.header("webhook-timestamp").expect("webhook-timestamp");
    let ts_secs: i64 = ts.parse().expect("webhook-timestamp is unix seconds");
    // On a manual clock nothing moves while a request is on its way: the header is the second
    // of arrival. On the wall clock, within a couple of minutes.
    let slack = if r.manual_clock { 0 } else { 120 };
    assert!(
        (r.clock_ms / 1000 - ts_secs).abs() <= slack,
        "webhook-timestamp {ts} is not the time of sending ({} ms)",
        r.clock_ms
    );
    let key = STANDARD
        .decode(whsec.strip_prefix("whsec_").expect("a whsec_ secret"))
        .unwrap();
    assert!(
        r.signature_matches(&key),
        "webhook-signature {:?} does not verify with the key of {whsec}",
        r.header("webhook-signature")
    );
    body
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A status with extra headers.
    Status(u16, Vec<(&'static str, String)>),
    /// Never answer (the connection stays open until the receiver is dropped).
    Hang,
}

impl Reply {
    pub fn status(code: u16) -> Reply {
        Reply::Status(code, Vec::new())
    }
}

struct Shared {
    received: Vec<Received>,
    script: VecDeque<Reply>,
    clock: Arc<dyn Clock>,
    manual_clock: bool,
}

pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Receiver {
    /// Starts a receiver answering `script` in order, then 200, stamping arrivals with the
    /// system clock (for a subprocess server).
    pub fn start(script: Vec<Reply>) -> Receiver {
        Receiver::start_on(Arc::new(SystemClock), false, script)
    }

    /// The same, stamping arrivals with `clock` (see [`Appliance::receiver`](super::Appliance::receiver)).
    pub fn start_on(clock: Arc<dyn Clock>, manual_clock: bool, script: Vec<Reply>) -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let shared = Arc::new(Mutex::new(Shared {
            received: Vec::new(),
            script: script.into(),
            clock,
            manual_clock,
        }));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let state = shared.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            shared,
            runtime: Some(runtime),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().unwrap().received.clone()
    }

    /// Waits until at least `n` requests have arrived, then returns them all; fails the test,
    /// listing what did arrive, once `timeout` passes.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        eventually(
            &format!("{n} webhook request(s) at {}", self.url("")),
            timeout,
            || {
                let got = self.received();
                if got.len() >= n {
                    Ok(got)
                } else {
                    Err(format!(
                        "{} request(s): {:#?}",
                        got.len(),
                        got.iter()
                            .map(|r| (
                                r.path.clone(),
                                String::from_utf8_lossy(&r.body).into_owned()
                            ))
                            .collect::<Vec<_>>()
                    ))
                }
            },
        )
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_millis(100));
        }
    }
}

async fn handle(
    shared: Arc<Mutex<Shared>>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let reply = {
        let mut s = shared.lock().unwrap();
        let clock_ms = s.clock.now_ms();
        let manual_clock = s.manual_clock;
        s.received.push(Received {
            method,
            path,
            headers,
            body,
            at: Instant::now(),
            clock_ms,
            manual_clock,
        });
        s.script.pop_front().unwrap_or(Reply::status(200))
    };
    match reply {
        Reply::Status(code, extra) => {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"{}")));
            *resp.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
            for (k, v) in extra {
                resp.headers_mut().insert(k, v.parse().unwrap());
            }
            Ok(resp)
        }
        Reply::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}
