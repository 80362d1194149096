//! The webhook receiver inside this process: the destination of every send step the phases
//! measure.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;

/// The webhook receiver inside the bench: answers 200 at once (or when its gate opens) and keeps
/// the arrival time of every delivery, matched by the `bench_tag`/`bench_seq` properties that the
/// payload carries back in its journey context.
pub struct Receiver {
    pub url: String,
    state: Arc<ReceiverState>,
}

struct ReceiverState {
    log: Mutex<ReceiverLog>,
    /// While false, requests wait before being answered (to build a backlog).
    gate: tokio::sync::watch::Sender<bool>,
}

#[derive(Default)]
struct ReceiverLog {
    /// (tag, seq, answered at) of each first arrival that carried a sequence number.
    arrivals: Vec<(String, u64, Instant)>,
    ids: HashSet<String>,
    duplicates: u64,
    by_journey: BTreeMap<String, u64>,
    by_tag: BTreeMap<String, u64>,
    last_by_tag: BTreeMap<String, Instant>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        use hyper::server::conn::http1;
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the receiver");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ReceiverState {
            log: Default::default(),
            gate: tokio::sync::watch::Sender::new(true),
        });
        let accept_state = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = accept_state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(state.handle(req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            state,
        }
    }

    pub fn set_gate(&self, open: bool) {
        self.state.gate.send_replace(open);
    }

    pub fn count_tag(&self, tag: &str) -> u64 {
        self.state
            .log
            .lock()
            .unwrap()
            .by_tag
            .get(tag)
            .copied()
            .unwrap_or(0)
    }

    pub fn count_journey(&self, journey: &str) -> u64 {
        self.state
            .log
            .lock()
            .unwrap()
            .by_journey
            .get(journey)
            .copied()
            .unwrap_or(0)
    }

    pub fn duplicates(&self) -> u64 {
        self.state.log.lock().unwrap().duplicates
    }

    pub fn last_arrival(&self, tag: &str) -> Option<Instant> {
        self.state.log.lock().unwrap().last_by_tag.get(tag).copied()
    }

    /// Arrival time by sequence number of one tag.
    pub fn arrivals(&self, tag: &str) -> HashMap<u64, Instant> {
        self.state
            .log
            .lock()
            .unwrap()
            .arrivals
            .iter()
            .filter(|(t, _, _)| t == tag)
            .map(|(_, s, at)| (*s, *at))
            .collect()
    }

    /// Waits until `count()` reaches `n`; whether it did within `timeout`.
    pub async fn wait(&self, n: u64, timeout: Duration, count: impl Fn(&Receiver) -> u64) -> bool {
        let deadline = Instant::now() + timeout;
        while count(self) < n {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

impl ReceiverState {
    async fn handle(&self, req: Request<hyper::body::Incoming>) -> hyper::Response<Full<Bytes>> {
        let id = req
            .headers()
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut gate = self.gate.subscribe();
        loop {
            let open = *gate.borrow_and_update();
            if open || gate.changed().await.is_err() {
                break;
            }
        }
        let at = Instant::now();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let props = &v["properties"];
        let journey = props["journey_metadata"]["journey_id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let (mut tag, mut seq) = (None, None);
        if let Some(ctx) = props["journey_context"].as_object() {
            for p in ctx.values() {
                if let Some(t) = p["bench_tag"].as_str() {
                    tag = Some(t.to_string());
                    seq = p["bench_seq"].as_u64();
                    break;
                }
            }
        }
        {
            let mut log = self.log.lock().unwrap();
            let fresh = match id {
                Some(id) => log.ids.insert(id),
                None => true,
            };
            if fresh {
                *log.by_journey.entry(journey).or_default() += 1;
                if let Some(tag) = tag {
                    *log.by_tag.entry(tag.clone()).or_default() += 1;
                    log.last_by_tag.insert(tag.clone(), at);
                    if let Some(seq) = seq {
                        log.arrivals.push((tag, seq, at));
                    }
                }
            } else {
                log.duplicates += 1;
            }
        }
        hyper::Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")))
    }
}
