//! The HTTP client side: keep-alive clients, one write-key POST, and the admin/health/metrics
//! calls of [`Api`].

use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::metrics::Scrape;
use crate::server::{ADMIN_TOKEN, WRITE_KEY};

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A keep-alive client (TCP_NODELAY) that keeps up to `idle` idle connections to the server.
pub fn pooled_client(idle: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(idle)
        .build(connector)
}

/// The client of one load-generating task.
pub fn http_client() -> HttpClient {
    pooled_client(4)
}

/// Basic auth with the write key.
pub fn auth_header() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:"))
    )
}

/// A JSON POST with the write key.
pub fn post_request(uri: &hyper::Uri, auth: &str, body: Bytes) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::POST)
        .uri(uri.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, auth)
        .body(Full::new(body))
        .unwrap()
}

/// Sends one POST with the write key; the status and body, or a transport error.
pub async fn post_once(
    client: &HttpClient,
    uri: &hyper::Uri,
    auth: &str,
    body: Bytes,
) -> Result<(StatusCode, Bytes), String> {
    let req = post_request(uri, auth, body);
    let resp = match tokio::time::timeout(Duration::from_secs(60), client.request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(format!("transport: {e:?}")),
        Err(_) => return Err("request timed out after 60 s".into()),
    };
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading body: {e}"))?
        .to_bytes();
    Ok((status, bytes))
}

/// How many messages a 200 answer's body says were rejected; `None` when it names no rejections.
pub fn rejected(body: &[u8]) -> Option<u64> {
    if !body.windows(10).any(|w| w == b"\"rejected\"") {
        return None;
    }
    Some(
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["rejected"].as_array().map(|a| a.len() as u64))
            .unwrap_or(0),
    )
}

/// Admin, health and metrics calls to one running server.
#[derive(Clone)]
pub struct Api {
    client: HttpClient,
    base: String,
}

impl Api {
    pub fn new(addr: &str) -> Api {
        Api {
            client: http_client(),
            base: format!("http://{addr}"),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(StatusCode, Bytes), String> {
        self.call_within(method, path, body, Duration::from_secs(60))
            .await
    }

    /// An admin call that may take up to `timeout`.
    pub async fn call_within(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), String> {
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let resp = tokio::time::timeout(timeout, self.client.request(req))
            .await
            .map_err(|_| format!("{path}: timed out"))?
            .map_err(|e| format!("{path}: {e}"))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, bytes))
    }

    /// PUT of an admin document; panics unless it is accepted (the bench cannot go on without it).
    pub async fn put(&self, path: &str, doc: serde_json::Value) {
        match self.call(Method::PUT, path, Some(doc.to_string())).await {
            Ok((s, _)) if s.is_success() => {}
            Ok((s, b)) => panic!("PUT {path}: {s} {}", String::from_utf8_lossy(&b)),
            Err(e) => panic!("PUT {path}: {e}"),
        }
    }

    /// `POST` of a JSON document with the admin token; the status and the answer's body.
    pub async fn post_json(
        &self,
        path: &str,
        doc: &serde_json::Value,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), String> {
        self.call_within(Method::POST, path, Some(doc.to_string()), timeout)
            .await
    }

    /// `GET` of `path` with the admin token, its body streamed into the file `dest`; the bytes
    /// written. An answer other than 200 is an error.
    pub async fn download(&self, path: &str, dest: &std::path::Path) -> Result<u64, String> {
        use std::io::Write as _;
        let req = Request::builder()
            .method(Method::GET)
            .uri(format!("{}{path}", self.base))
            .header(AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        // The server makes the whole copy before it answers.
        let resp = tokio::time::timeout(Duration::from_secs(600), self.client.request(req))
            .await
            .map_err(|_| format!("{path}: timed out"))?
            .map_err(|e| format!("{path}: {e}"))?;
        let status = resp.status();
        let mut body = resp.into_body();
        if status != StatusCode::OK {
            let b = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            return Err(format!("{path}: {status} {}", String::from_utf8_lossy(&b)));
        }
        let mut file = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(dest).map_err(|e| format!("{}: {e}", dest.display()))?,
        );
        let mut written = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("{path}: {e}"))?;
            if let Ok(data) = frame.into_data() {
                file.write_all(&data).map_err(|e| e.to_string())?;
                written += data.len() as u64;
            }
        }
        file.flush().map_err(|e| e.to_string())?;
        Ok(written)
    }

    /// `GET /healthz`: whether it answered 200, and how long the answer took.
    pub async fn healthz_timed(&self) -> (bool, Duration) {
        let t0 = Instant::now();
        let ok = self.healthz().await;
        (ok, t0.elapsed())
    }

    pub async fn healthz(&self) -> bool {
        matches!(
            self.call(Method::GET, "/healthz", None).await,
            Ok((StatusCode::OK, _))
        )
    }

    /// `GET /metrics`; `None` when the server has no metrics endpoint or it does not answer.
    pub async fn scrape(&self) -> Option<Scrape> {
        match self.call(Method::GET, "/metrics", None).await {
            Ok((StatusCode::OK, b)) => Some(Scrape::parse(&String::from_utf8_lossy(&b))),
            _ => None,
        }
    }

    /// (entered, active) of a journey, from its stats.
    pub async fn journey_counts(&self, id: &str) -> Option<(i64, i64)> {
        let (status, body) = self
            .call(Method::GET, &format!("/v1/journeys/{id}/stats"), None)
            .await
            .ok()?;
        if status != StatusCode::OK {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        Some((v["entered"].as_i64()?, v["active"].as_i64()?))
    }

    /// Polls a journey's stats every `every` until `done(entered, active)`; the time it became
    /// true, or `None` after `timeout`.
    pub async fn wait_journey(
        &self,
        id: &str,
        every: Duration,
        timeout: Duration,
        done: impl Fn(i64, i64) -> bool,
    ) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((entered, active)) = self.journey_counts(id).await
                && done(entered, active)
            {
                return Some(Instant::now());
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(every).await;
        }
    }
}
