//! The delivery dispatcher: takes due rows from the outbox and sends them, each destination with
//! its own concurrency limit (and optional rate limit), so a slow or dead destination never
//! starves the others. Sends run outside the writer; only their outcomes go through it, in
//! batches written by one recorder task, so a send's permit is free again as soon as the receiver
//! has answered.
//!
//! A delivery stays `pending` in SQLite while it is in flight, so one interrupted by a shutdown or
//! a crash is sent again after restart, with the same `webhook-id`. In memory the dispatcher only
//! keeps which ids are in flight (sent, or answered and not yet recorded), so it does not send one
//! twice at the same time, and, per destination, due rows it read ahead of its free permits
//! ([`READ_AHEAD`]): a busy destination's sends then cost a read of the outbox per batch of rows
//! rather than per answer. Rows read ahead are dropped when a commit deletes pending deliveries
//! (forgetting a person) or changes the destinations, so none is sent that the outbox no longer
//! holds as pending.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::header::{self, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::{Destination, Kind, Outcome, backoff_ms, parse_retry_after, sign};
use crate::store::{Attempt, DestinationRow, DueDelivery, Store};

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How long in-flight sends may finish after shutdown begins; the rest are sent after restart.
const DRAIN: Duration = Duration::from_secs(5);
/// Longest sleep between looks at the outbox when nothing is known to be due.
const IDLE: i64 = 60_000;
/// Most outcomes the recorder writes in one writer job.
const RECORD_BATCH: usize = 1024;
/// Due rows read per destination beyond its free permits, sent as permits free up.
const READ_AHEAD: usize = 32;

/// Builds the outbound HTTP client: http and https (rustls with the webpki roots, so no system
/// certificate store is needed), with keep-alive connections per destination host.
pub(crate) fn client() -> HttpClient {
    // Only the ring provider is compiled in; installing it is idempotent across calls.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https)
}

/// A destination as the dispatcher holds it.
struct Target {
    id: String,
    dest: Destination,
    secret: Option<String>,
    write_key: Option<String>,
    permits: Arc<Semaphore>,
    /// Rate limit: the earliest time the next request may start.
    next_allowed: i64,
    /// Due rows read ahead, soonest first, not yet sent.
    ahead: VecDeque<DueDelivery>,
}

impl Target {
    fn from_row(row: &DestinationRow) -> Option<Target> {
        let mut dest = match super::parse(&row.config) {
            Ok(doc) => doc.destination,
            Err(problems) => {
                tracing::error!(destination = %row.id, ?problems, "stored destination settings do not validate: not sending to it");
                return None;
            }
        };
        if let Err(path) = dest.unmask(&row.secrets) {
            tracing::error!(destination = %row.id, path, "a masked destination setting has no stored value: not sending to it");
            return None;
        }
        let secret = |k: &str| {
            row.secrets
                .get(k)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        Some(Target {
            id: row.id.clone(),
            permits: Arc::new(Semaphore::new(dest.concurrency as usize)),
            secret: secret("secret"),
            write_key: secret("write_key"),
            dest,
            next_allowed: 0,
            ahead: VecDeque::new(),
        })
    }
}

/// Deliveries whose outcome has been committed, as (destination, delivery id): the recorder
/// adds them, the dispatcher takes them out of its in-flight set at the start of a pass. Only
/// then: a pass's reads all start after that, so they see the outcome, and a row read before it
/// was committed is never taken for one that is due again.
type Settled = Arc<Mutex<Vec<(String, String)>>>;

/// Runs until `shutdown` turns true.
pub(crate) async fn run(store: Store, mut shutdown: watch::Receiver<bool>) {
    let client = client();
    let wake = store.wake().clone();
    let done = Arc::new(Notify::new());
    let settled: Settled = Arc::default();
    let (outcomes, outcomes_rx) = mpsc::unbounded_channel();
    let recorder = tokio::spawn(record(
        store.clone(),
        outcomes_rx,
        settled.clone(),
        done.clone(),
    ));
    // Ids in flight, per destination.
    let mut in_flight: HashMap<String, HashSet<String>> = HashMap::new();
    let mut targets: HashMap<String, Target> = HashMap::new();
    let mut destinations_seen = None;
    let mut removed_seen = wake.removed.load(Ordering::Acquire);
    let mut tasks = JoinSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        while tasks.try_join_next().is_some() {}
        for (target, id) in std::mem::take(&mut *settled.lock().unwrap()) {
            if let Some(ids) = in_flight.get_mut(&target) {
                ids.remove(&id);
            }
        }
        let now = store.clock().now_ms();
        let mut next_wake = now + IDLE;
        // Read before any read of the outbox below: a deletion committed after it is seen by the
        // next pass, which drops what this one reads ahead.
        let removed = wake.removed.load(Ordering::Acquire);
        // Destinations are read again only after one was written (and at start).
        let generation = wake.destinations.load(Ordering::Acquire);
        if removed != removed_seen || destinations_seen != Some(generation) {
            for target in targets.values_mut() {
                target.ahead.clear();
            }
            removed_seen = removed;
        }
        if destinations_seen != Some(generation) {
            match store.destination_rows().await {
                Ok(rows) => {
                    refresh(&mut targets, &rows);
                    destinations_seen = Some(generation);
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading destinations failed");
                    next_wake = now + 1_000;
                }
            }
        }
        for target in targets.values_mut() {
            let free = target.permits.available_permits();
            if free == 0 {
                continue; // a finishing send wakes us
            }
            let flying = in_flight.entry(target.id.clone()).or_default();
            if target.ahead.is_empty() {
                // In-flight rows are still pending, and come first: the read passes over them.
                match store
                    .pending_for(target.id.clone(), flying.clone(), free + READ_AHEAD)
                    .await
                {
                    Ok(pending) => {
                        for row in pending {
                            if row.next_attempt_at > now {
                                next_wake = next_wake.min(row.next_attempt_at);
                                break;
                            }
                            target.ahead.push_back(row);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, destination = %target.id, "reading the outbox failed");
                        next_wake = next_wake.min(now + 1_000);
                        continue;
                    }
                }
            }
            while !target.ahead.is_empty() {
                if let Some(rate) = target.dest.rate_limit {
                    if target.next_allowed > now {
                        next_wake = next_wake.min(target.next_allowed);
                        break;
                    }
                    target.next_allowed =
                        target.next_allowed.max(now) + (1000 / rate as i64).max(1);
                }
                let Ok(permit) = target.permits.clone().try_acquire_owned() else {
                    break;
                };
                let row = target.ahead.pop_front().expect("not empty");
                flying.insert(row.id.clone());
                let job = Send {
                    client: client.clone(),
                    store: store.clone(),
                    target: target.id.clone(),
                    dest: target.dest.clone(),
                    secret: target.secret.clone(),
                    write_key: target.write_key.clone(),
                };
                let outcomes = outcomes.clone();
                let done = done.clone();
                tasks.spawn(async move {
                    let attempt = job.run(row).await;
                    // The receiver has answered: the destination may take the next request while
                    // the outcome waits for the recorder.
                    drop(permit);
                    let _ = outcomes.send(attempt);
                    done.notify_one();
                });
            }
        }
        tokio::select! {
            _ = store.clock().sleep_until(next_wake.max(now + 1)) => {}
            _ = wake.deliveries.notified() => {}
            _ = done.notified() => {}
            _ = shutdown.changed() => {}
        }
    }
    // Let sends in flight finish briefly; what is cut off stays pending and goes out after restart.
    let drained =
        tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::info!(
            left = tasks.len(),
            "deliveries still in flight at shutdown will be sent after restart"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    // The recorder writes what the finished sends reported, then ends with the channel.
    drop(outcomes);
    if let Err(e) = recorder.await {
        tracing::error!(error = %e, "delivery recorder failed");
    }
}

/// Writes attempt outcomes through the writer, as many per job as have arrived meanwhile.
async fn record(
    store: Store,
    mut outcomes: mpsc::UnboundedReceiver<Attempt>,
    settled: Settled,
    done: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while outcomes.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        let ids: Vec<(String, String)> = batch
            .iter()
            .map(|a: &Attempt| (a.destination.clone(), a.id.clone()))
            .collect();
        if let Err(e) = store.record_attempts(std::mem::take(&mut batch)).await {
            // Shutting down, or the write failed: the rows stay pending and are sent again.
            tracing::warn!(error = %e, deliveries = ids.len(), "could not record delivery attempts");
        }
        settled.lock().unwrap().extend(ids);
        done.notify_one();
    }
}

/// Keeps the dispatcher's destinations in step with the table; a changed one starts afresh.
fn refresh(targets: &mut HashMap<String, Target>, rows: &[DestinationRow]) {
    let ids: HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    targets.retain(|id, _| ids.contains(id.as_str()));
    for row in rows {
        let Some(fresh) = Target::from_row(row) else {
            continue;
        };
        let changed = match targets.get(&row.id) {
            Some(t) => {
                t.dest != fresh.dest || t.secret != fresh.secret || t.write_key != fresh.write_key
            }
            None => true,
        };
        if changed {
            targets.insert(row.id.clone(), fresh);
        }
    }
}

/// One delivery attempt.
struct Send {
    client: HttpClient,
    store: Store,
    target: String,
    dest: Destination,
    secret: Option<String>,
    write_key: Option<String>,
}

impl Send {
    /// Sends `row` once and says what to record.
    async fn run(self, row: DueDelivery) -> Attempt {
        let outcome = self.attempt(&row).await;
        let now = self.store.clock().now_ms();
        let retry_after = match &outcome {
            Outcome::Retry { retry_after_ms, .. } => *retry_after_ms,
            _ => None,
        };
        let jitter: f64 = rand::random();
        let retry_at = now + backoff_ms(row.attempts as u32 + 1, jitter, retry_after);
        tracing::debug!(delivery = %row.id, ?outcome, "delivery attempt");
        let kind = match &outcome {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::Fail { .. } => "failed",
        };
        crate::metrics::METRICS
            .delivery_attempts
            .get_or_create(&crate::metrics::label("outcome", kind))
            .inc();
        Attempt {
            id: row.id,
            destination: self.target,
            outcome,
            retry_at,
            max_attempts: self.dest.max_attempts,
            host: self
                .dest
                .url
                .parse::<hyper::Uri>()
                .ok()
                .and_then(|u| u.host().map(str::to_string))
                .unwrap_or_default(),
        }
    }

    async fn attempt(&self, row: &DueDelivery) -> Outcome {
        let request = match self.request(row) {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Fail {
                    status: None,
                    error: e,
                };
            }
        };
        let timeout = Duration::from_millis(self.dest.timeout_ms);
        let started = tokio::time::Instant::now();
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => Outcome::Retry {
                status: None,
                error: format!("timed out after {timeout:?}"),
                retry_after_ms: None,
            },
            Ok(Err(e)) => Outcome::Retry {
                status: None,
                error: format!("request failed: {e}"),
                retry_after_ms: None,
            },
            Ok(Ok(resp)) => {
                let status = resp.status().as_u16();
                let now = self.store.clock().now_ms();
                let retry_after = resp
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, now));
                // Read (and drop) the body so the connection can be reused, within the timeout.
                let left = timeout.saturating_sub(started.elapsed());
                let _ =
                    tokio::time::timeout(left, Limited::new(resp.into_body(), 64 * 1024).collect())
                        .await;
                Outcome::from_status(status, retry_after)
            }
        }
    }

    fn request(&self, row: &DueDelivery) -> Result<Request<Full<Bytes>>, String> {
        let timestamp = self.store.clock().now_ms() / 1000;
        request(
            &self.dest,
            self.secret.as_deref(),
            self.write_key.as_deref(),
            &row.id,
            timestamp,
            Bytes::from(row.payload.clone()),
        )
    }
}

/// The request of one delivery attempt: the destination's method, URL and headers, the
/// Standard Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature` with a
/// secret), and the write key of a segment destination.
fn request(
    dest: &Destination,
    secret: Option<&str>,
    write_key: Option<&str>,
    id: &str,
    timestamp: i64,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let url = match dest.kind {
        Kind::Webhook => dest.url.clone(),
        Kind::Segment => segment_track_url(&dest.url),
    };
    // Credentials in the URL go as Basic authorization, as browsers and curl send them.
    let (uri, userinfo) = split_userinfo(&url);
    let mut builder = Request::builder().method(dest.method.as_str()).uri(uri);
    let sets_authorization = dest
        .headers
        .keys()
        .any(|k| k.eq_ignore_ascii_case("authorization"));
    if let Some(userinfo) = userinfo
        && !sets_authorization
        && dest.kind == Kind::Webhook
    {
        let decoded = percent_encoding::percent_decode_str(userinfo).decode_utf8_lossy();
        let basic = base64::engine::general_purpose::STANDARD.encode(decoded.as_bytes());
        builder = builder.header(header::AUTHORIZATION, format!("Basic {basic}"));
    }
    for (k, v) in &dest.headers {
        builder = builder.header(k, v);
    }
    builder = builder
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("journeyd/", env!("CARGO_PKG_VERSION")),
        )
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string());
    if let Some(secret) = secret {
        builder = builder.header(
            "webhook-signature",
            sign::signature(secret, id, timestamp, &body),
        );
    }
    if let (Kind::Segment, Some(key)) = (dest.kind, write_key) {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
        builder = builder.header(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {basic}")).map_err(|e| e.to_string())?,
        );
    }
    builder
        .body(Full::new(body))
        .map_err(|e| format!("bad request: {e}"))
}

/// What a test send (SPEC §5 `POST /v1/destinations/{id}/test`) got back.
#[derive(Debug, Clone)]
pub(crate) struct TestSent {
    /// The receiver's status, or why there was none (connection refused, timeout).
    pub(crate) status: Result<u16, String>,
    /// The first 4 KB of the receiver's body (lossy UTF-8).
    pub(crate) body: String,
    pub(crate) took_ms: u64,
}

/// Sends one sample payload to a destination, signed like any delivery; nothing is stored.
pub(crate) async fn test_send(
    row: &DestinationRow,
    payload: &serde_json::Value,
    now_ms: i64,
) -> Result<TestSent, String> {
    let target = Target::from_row(row).ok_or("the stored destination does not validate")?;
    let id = format!("test-{}", uuid::Uuid::new_v4());
    let body = Bytes::from(payload.to_string());
    let req = request(
        &target.dest,
        target.secret.as_deref(),
        target.write_key.as_deref(),
        &id,
        now_ms / 1000,
        body,
    )?;
    let timeout = Duration::from_millis(target.dest.timeout_ms);
    let started = std::time::Instant::now();
    let sent = async {
        let resp = client()
            .request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        let mut incoming = resp.into_body();
        while body.len() < TEST_BODY_BYTES {
            match incoming.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        body.extend_from_slice(data);
                    }
                }
                _ => break,
            }
        }
        body.truncate(TEST_BODY_BYTES);
        Ok::<_, String>((status, body))
    };
    let (status, body) = match tokio::time::timeout(timeout, sent).await {
        Err(_) => (Err(format!("timed out after {timeout:?}")), Vec::new()),
        Ok(Err(e)) => (Err(e), Vec::new()),
        Ok(Ok((status, body))) => (Ok(status), body),
    };
    Ok(TestSent {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        took_ms: started.elapsed().as_millis() as u64,
    })
}

/// How much of a receiver's answer a test send shows.
const TEST_BODY_BYTES: usize = 4096;

/// A URL without its `user:password@`, and that userinfo.
fn split_userinfo(url: &str) -> (String, Option<&str>) {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return (url.to_string(), None);
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => (
            format!("{}{}", &url[..scheme_end], &url[scheme_end + at + 1..]),
            Some(&url[scheme_end..scheme_end + at]),
        ),
        None => (url.to_string(), None),
    }
}

/// A Segment-compatible endpoint's track URL: a bare host gets `/v1/track`; a URL with a path is
/// used as given.
fn segment_track_url(url: &str) -> String {
    match url.parse::<hyper::Uri>() {
        Ok(u) if matches!(u.path(), "" | "/") => format!("{}/v1/track", url.trim_end_matches('/')),
        _ => url.to_string(),
    }
}
