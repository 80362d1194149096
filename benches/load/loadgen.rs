//! The load generators: a timed closed loop ([`http_load`]), a fixed amount of work
//! ([`post_jobs`], and [`fill`] for entering users into a journey), and an open loop at a set
//! rate ([`paced`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper::header::RETRY_AFTER;

use crate::http::{
    HttpClient, auth_header, http_client, pooled_client, post_once, post_request, rejected,
};
use crate::messages::{Props, Rng, batch_jobs};
use crate::report::thousands;

/// Writes the body of request `n` of client task `task` into the buffer.
pub type MakeBody = Arc<dyn Fn(usize, u64, &mut Rng, &mut String) + Send + Sync>;

/// Builds request body number `job` into the buffer and returns how many messages it holds.
pub type MakeJob = Arc<dyn Fn(u64, &mut String) -> u64 + Send + Sync>;

/// Messages per `POST /v1/batch` when filling journeys (about 70 KB per request).
pub const FILL_BATCH: u64 = 200;
/// Concurrent batch clients when filling.
pub const FILL_CLIENTS: usize = 8;

// ---------------------------------------------------------------------------------------------
// Timed closed loop

#[derive(Default)]
pub struct Counters {
    pub ok_requests: AtomicU64,
    pub ok_messages: AtomicU64,
    pub rejected_messages: AtomicU64,
    pub busy: AtomicU64,
    pub busy_without_retry_after: AtomicU64,
    pub other_status: AtomicU64,
    pub transport_errors: AtomicU64,
    pub requests: AtomicU64,
    pub request_bytes: AtomicU64,
}

pub struct LoadResult {
    pub elapsed: Duration,
    pub latencies_us: Vec<u32>,
    pub counters: Arc<Counters>,
    pub statuses: BTreeMap<u16, u64>,
    pub sample_error: Option<String>,
}

impl LoadResult {
    /// Requests answered 200.
    pub fn ok_requests(&self) -> u64 {
        self.counters.ok_requests.load(Ordering::Relaxed)
    }

    /// Messages stored (of 200 answers, less what they rejected).
    pub fn ok_messages(&self) -> u64 {
        self.counters.ok_messages.load(Ordering::Relaxed)
    }

    /// 503/429 answers.
    pub fn busy(&self) -> u64 {
        self.counters.busy.load(Ordering::Relaxed)
    }
}

/// Runs `clients` tasks that each POST what `make_body` builds to `path` until `duration` has passed.
pub async fn http_load(
    addr: &str,
    path: &str,
    clients: usize,
    duration: Duration,
    messages_per_request: u64,
    make_body: MakeBody,
) -> LoadResult {
    let uri: hyper::Uri = format!("http://{addr}{path}").parse().unwrap();
    let auth = auth_header();
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + duration;
    let mut tasks = Vec::new();
    for task in 0..clients {
        let (uri, auth, counters, make_body) = (
            uri.clone(),
            auth.clone(),
            counters.clone(),
            make_body.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let client = http_client();
            let mut rng = Rng(0xc0ffee ^ (task as u64) << 32);
            let mut latencies = Vec::with_capacity(1 << 16);
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            let mut sample_error = None;
            let mut body = String::with_capacity(64 * 1024);
            let mut n = 0u64;
            while tokio::time::Instant::now() < deadline {
                body.clear();
                make_body(task, n, &mut rng, &mut body);
                n += 1;
                counters.requests.fetch_add(1, Ordering::Relaxed);
                counters
                    .request_bytes
                    .fetch_add(body.len() as u64, Ordering::Relaxed);
                let req = post_request(&uri, &auth, Bytes::copy_from_slice(body.as_bytes()));
                let t0 = Instant::now();
                let resp = match tokio::time::timeout(Duration::from_secs(30), client.request(req))
                    .await
                {
                    Ok(Ok(resp)) => resp,
                    Ok(Err(e)) => {
                        counters.transport_errors.fetch_add(1, Ordering::Relaxed);
                        sample_error.get_or_insert_with(|| format!("transport: {e:?}"));
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    Err(_) => {
                        counters.transport_errors.fetch_add(1, Ordering::Relaxed);
                        sample_error.get_or_insert_with(|| "request timed out after 30 s".into());
                        continue;
                    }
                };
                let status = resp.status();
                let retry_after = resp.headers().contains_key(RETRY_AFTER);
                let bytes = match resp.into_body().collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => {
                        counters.transport_errors.fetch_add(1, Ordering::Relaxed);
                        sample_error.get_or_insert_with(|| format!("reading body: {e}"));
                        continue;
                    }
                };
                let us = t0.elapsed().as_micros() as u32;
                *statuses.entry(status.as_u16()).or_default() += 1;
                if status == StatusCode::OK {
                    latencies.push(us);
                    let mut stored = messages_per_request;
                    if let Some(rejected) = rejected(&bytes) {
                        // Count what the server says it rejected; the rest was stored.
                        counters
                            .rejected_messages
                            .fetch_add(rejected, Ordering::Relaxed);
                        stored = stored.saturating_sub(rejected);
                        sample_error.get_or_insert_with(|| {
                            format!("200 with rejections: {}", String::from_utf8_lossy(&bytes))
                        });
                    }
                    counters.ok_requests.fetch_add(1, Ordering::Relaxed);
                    counters.ok_messages.fetch_add(stored, Ordering::Relaxed);
                } else if status == StatusCode::SERVICE_UNAVAILABLE
                    || status == StatusCode::TOO_MANY_REQUESTS
                {
                    counters.busy.fetch_add(1, Ordering::Relaxed);
                    if !retry_after {
                        counters
                            .busy_without_retry_after
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                } else {
                    counters.other_status.fetch_add(1, Ordering::Relaxed);
                    sample_error.get_or_insert_with(|| {
                        format!(
                            "HTTP {status}: {}",
                            String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
                        )
                    });
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            (latencies, statuses, sample_error)
        }));
    }
    let mut latencies_us = Vec::new();
    let mut statuses = BTreeMap::new();
    let mut sample_error = None;
    for t in tasks {
        let (l, s, e) = t.await.expect("client task panicked");
        latencies_us.extend(l);
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
        sample_error = sample_error.or(e);
    }
    let elapsed = started.elapsed();
    latencies_us.sort_unstable();
    LoadResult {
        elapsed,
        latencies_us,
        counters,
        statuses,
        sample_error,
    }
}

// ---------------------------------------------------------------------------------------------
// A fixed amount of work

/// What a fixed amount of work came to.
pub struct WorkResult {
    pub elapsed: Duration,
    /// Latency of each accepted request, sorted.
    pub latencies_us: Vec<u32>,
    pub ok_requests: u64,
    pub ok_messages: u64,
    pub busy: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    /// (seconds since start, messages accepted so far), about once a second.
    progress: Vec<(f64, u64)>,
}

impl WorkResult {
    pub fn rate(&self) -> f64 {
        self.ok_messages as f64 / self.elapsed.as_secs_f64()
    }

    /// Messages per second over the last `secs` seconds of the run (from the progress samples).
    pub fn tail_rate(&self, secs: f64) -> Option<f64> {
        let end = (self.elapsed.as_secs_f64(), self.ok_messages);
        let start = self
            .progress
            .iter()
            .rev()
            .find(|(t, _)| end.0 - t >= secs)?;
        Some((end.1 - start.1) as f64 / (end.0 - start.0))
    }
}

/// POSTs `jobs` request bodies to `path` with `clients` keep-alive clients, each taking the next
/// job; a 503/429 or a transport error is retried (after 10 ms), another status counts as failed.
/// With `progress`, prints the count every 10 s.
pub async fn post_jobs(
    addr: &str,
    path: &str,
    clients: usize,
    jobs: u64,
    make: MakeJob,
    progress: Option<String>,
) -> WorkResult {
    let uri: hyper::Uri = format!("http://{addr}{path}").parse().unwrap();
    let auth = auth_header();
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let samples: Arc<Mutex<Vec<(f64, u64)>>> = Arc::new(Mutex::new(vec![(0.0, 0)]));
    let sampler = {
        let (done, samples) = (done.clone(), samples.clone());
        tokio::spawn(async move {
            let mut last_print = (0.0, 0u64);
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let t = started.elapsed().as_secs_f64();
                let n = done.load(Ordering::Relaxed);
                samples.lock().unwrap().push((t, n));
                if let Some(label) = &progress
                    && t - last_print.0 >= 10.0
                {
                    println!(
                        "    {label}: {} after {t:.0} s, {:.0}/s over the last {:.0} s",
                        thousands(n as f64),
                        (n - last_print.1) as f64 / (t - last_print.0),
                        t - last_print.0
                    );
                    last_print = (t, n);
                }
            }
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (uri, auth, next, done, make) = (
            uri.clone(),
            auth.clone(),
            next.clone(),
            done.clone(),
            make.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let client = http_client();
            let mut lat = Vec::new();
            let (mut ok_req, mut ok_msg, mut busy, mut failed) = (0u64, 0u64, 0u64, 0u64);
            let mut first_error = None;
            let mut body = String::with_capacity(128 * 1024);
            loop {
                let job = next.fetch_add(1, Ordering::Relaxed);
                if job >= jobs {
                    break;
                }
                body.clear();
                let messages = make(job, &mut body);
                let bytes = Bytes::copy_from_slice(body.as_bytes());
                let mut transport_errors = 0;
                loop {
                    let t0 = Instant::now();
                    match post_once(&client, &uri, &auth, bytes.clone()).await {
                        Ok((StatusCode::OK, resp)) => {
                            lat.push(t0.elapsed().as_micros() as u32);
                            let mut stored = messages;
                            if let Some(rejected) = rejected(&resp) {
                                stored = stored.saturating_sub(rejected);
                                failed += rejected;
                                first_error.get_or_insert_with(|| {
                                    format!(
                                        "200 with rejections: {}",
                                        String::from_utf8_lossy(&resp)
                                    )
                                });
                            }
                            ok_req += 1;
                            ok_msg += stored;
                            done.fetch_add(stored, Ordering::Relaxed);
                            break;
                        }
                        Ok((
                            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS,
                            _,
                        )) => {
                            busy += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        Ok((status, resp)) => {
                            failed += messages;
                            first_error.get_or_insert_with(|| {
                                format!(
                                    "HTTP {status}: {}",
                                    String::from_utf8_lossy(&resp[..resp.len().min(300)])
                                )
                            });
                            break;
                        }
                        Err(e) => {
                            transport_errors += 1;
                            first_error.get_or_insert(e);
                            if transport_errors >= 5 {
                                failed += messages;
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
            (lat, ok_req, ok_msg, busy, failed, first_error)
        }));
    }
    let mut r = WorkResult {
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
        ok_requests: 0,
        ok_messages: 0,
        busy: 0,
        failed: 0,
        first_error: None,
        progress: Vec::new(),
    };
    for t in tasks {
        let (lat, ok_req, ok_msg, busy, failed, e) = t.await.expect("client task panicked");
        r.latencies_us.extend(lat);
        r.ok_requests += ok_req;
        r.ok_messages += ok_msg;
        r.busy += busy;
        r.failed += failed;
        r.first_error = r.first_error.or(e);
    }
    r.elapsed = started.elapsed();
    sampler.abort();
    r.progress = samples.lock().unwrap().clone();
    r.latencies_us.sort_unstable();
    r
}

/// Enters users `<prefix>0000000..` (`count` of them) with `event` through `POST /v1/batch`:
/// [`FILL_CLIENTS`] clients x [`FILL_BATCH`] messages, `props` writing each one's properties.
/// With `progress`, prints the count every 10 s.
pub async fn fill(
    addr: &str,
    event: &'static str,
    prefix: String,
    count: u64,
    props: Props,
    progress: Option<String>,
) -> WorkResult {
    let (jobs, make) = batch_jobs(event, prefix, 0, count, FILL_BATCH, props);
    post_jobs(addr, "/v1/batch", FILL_CLIENTS, jobs, make, progress).await
}

// ---------------------------------------------------------------------------------------------
// Open loop

/// One request of an open-loop run.
pub struct Sent {
    pub n: u64,
    /// Just before the request was handed to the client.
    pub at: Instant,
    pub status: u16,
    pub messages: u64,
    pub latency_us: u32,
}

/// Sends request `n` at `start + n / rate` for `duration`, each on its own task (open loop: a
/// slow answer does not delay the next request), over a shared pool of keep-alive connections.
pub async fn paced(
    addr: &str,
    path: &str,
    rate: f64,
    duration: Duration,
    make: MakeJob,
) -> Vec<Sent> {
    let uri: hyper::Uri = format!("http://{addr}{path}").parse().unwrap();
    let auth: Arc<str> = auth_header().into();
    let client: HttpClient = pooled_client(1024);
    let start = tokio::time::Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let mut out = Vec::new();
    let mut n = 0u64;
    loop {
        let offset = Duration::from_secs_f64(n as f64 / rate);
        if offset >= duration {
            break;
        }
        tokio::time::sleep_until(start + offset).await;
        let mut body = String::with_capacity(1024);
        let messages = make(n, &mut body);
        let (client, uri, auth) = (client.clone(), uri.clone(), auth.clone());
        set.spawn(async move {
            let at = Instant::now();
            let status = match post_once(&client, &uri, &auth, Bytes::from(body)).await {
                Ok((s, _)) => s.as_u16(),
                Err(_) => 0,
            };
            Sent {
                n,
                at,
                status,
                messages,
                latency_us: at.elapsed().as_micros() as u32,
            }
        });
        n += 1;
        while let Some(Ok(s)) = set.try_join_next() {
            out.push(s);
        }
    }
    while let Some(r) = set.join_next().await {
        if let Ok(s) = r {
            out.push(s);
        }
    }
    out.sort_by_key(|s| s.n);
    out
}
