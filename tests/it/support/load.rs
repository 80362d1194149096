//! A bounded write load for the crash and backup tests: a few client threads post batches of tracks with
//! unique messageIds over a handful of profiles, and record which messageIds were acknowledged (a 2xx with
//! nothing rejected). The load stops at its deadline, when told to, or at the first transport error (the
//! server is gone).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Client, agent, basic, eventually, try_request, uid};

pub const BATCH: usize = 10;

#[derive(Default)]
pub struct Shared {
    /// messageIds acknowledged, in the order their answers arrived.
    pub acked: Mutex<Vec<String>>,
    /// Every messageId sent, acknowledged or not.
    pub sent: Mutex<Vec<String>>,
    pub stop: AtomicBool,
    pub transport_errors: AtomicUsize,
    /// Answers that were neither a clean 200 nor a transport error (429/503 backpressure, or a bug).
    pub other_answers: Mutex<Vec<String>>,
}

pub struct Load {
    pub users: Vec<String>,
    pub shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `threads` clients against `srv`, for at most `max` time.
    pub fn start(srv: &Client, threads: usize, profiles: usize, max: Duration) -> Load {
        let run = uid("load");
        let users: Vec<String> = (0..profiles).map(|i| format!("{run}-u{i}")).collect();
        let shared = Arc::new(Shared::default());
        let deadline = Instant::now() + max;
        let url = srv.url("/v1/batch");
        let auth = basic(srv.write_key());
        let threads = (0..threads)
            .map(|t| {
                let (shared, users, url, auth, run) =
                    (shared.clone(), users.clone(), url.clone(), auth.clone(), run.clone());
                std::thread::spawn(move || {
                    let agent = agent();
                    let mut n = 0usize;
                    while !shared.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let msgs: Vec<Value> = (0..BATCH)
                            .map(|_| {
                                n += 1;
                                let u = (n * 7 + t) % users.len();
                                json!({"type": "track", "event": "Load", "userId": users[u],
                                       "messageId": format!("{run}-t{t}-{n}-u{u}"), "properties": {"n": n}})
                            })
                            .collect();
                        let ids: Vec<String> =
                            msgs.iter().map(|m| m["messageId"].as_str().unwrap().to_string()).collect();
                        shared.sent.lock().unwrap().extend(ids.iter().cloned());
                        let body = json!({"batch": msgs}).to_string();
                        let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
                        match try_request(&agent, "POST", &url, &headers, Some(body.as_bytes())) {
                            Ok(resp)
                                if resp.status == 200
                                    && serde_json::from_slice::<Value>(&resp.body).ok()
                                        == Some(json!({"success": true})) =>
                            {
                                shared.acked.lock().unwrap().extend(ids);
                            }
                            Ok(resp) => {
                                shared.other_answers.lock().unwrap().push(resp.to_string());
                                if resp.status != 429 && resp.status != 503 {
                                    break;
                                }
                            }
                            Err(_) => {
                                shared.transport_errors.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            users,
            shared,
            threads,
        }
    }

    /// The user a messageId of this load was sent for (its `-u{index}` suffix).
    pub fn user_of(&self, id: &str) -> &str {
        let index: usize = id
            .rsplit_once("-u")
            .and_then(|(_, i)| i.parse().ok())
            .expect("a load messageId");
        &self.users[index]
    }

    pub fn acked_count(&self) -> usize {
        self.shared.acked.lock().unwrap().len()
    }

    pub fn acked_snapshot(&self) -> Vec<String> {
        self.shared.acked.lock().unwrap().clone()
    }

    /// Waits until at least `n` messages are acknowledged; fails the test if that takes longer than `max`.
    pub fn wait_for_acks(&self, n: usize, max: Duration) {
        eventually(&format!("{n} acknowledged messages"), max, || {
            let acked = self.acked_count();
            if acked >= n {
                Ok(())
            } else {
                Err(format!(
                    "{acked} acknowledged; other answers: {:?}; transport errors: {}",
                    self.shared.other_answers.lock().unwrap(),
                    self.shared.transport_errors.load(Ordering::Relaxed)
                ))
            }
        });
    }

    /// Stops the clients and waits for them.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().expect("a load thread panicked");
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        // Not `stop`: a panic here while a failed test unwinds would abort the test binary.
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// How many times each messageId appears in the timelines of `users`.
pub fn stored_counts(srv: &Client, users: &[String]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for user in users {
        for m in srv.events(user) {
            let id = m["messageId"]
                .as_str()
                .unwrap_or_else(|| panic!("event without messageId: {m:#}"))
                .to_string();
            *counts.entry(id).or_insert(0) += 1;
        }
    }
    counts
}

/// Checks that each of `must` is stored exactly once, and that nothing is stored twice or unsent.
pub fn check_stored(what: &str, counts: &HashMap<String, usize>, must: &[String], sent: &[String]) {
    let missing: Vec<&String> = must.iter().filter(|id| !counts.contains_key(*id)).collect();
    let twice: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    let sent: std::collections::HashSet<&String> = sent.iter().collect();
    let unsent: Vec<&String> = counts.keys().filter(|id| !sent.contains(id)).collect();
    assert!(
        missing.is_empty() && twice.is_empty() && unsent.is_empty(),
        "{what}: of {} acknowledged messageIds, {} missing (first: {:?}); {} stored more than once (first: {:?}); \
         {} stored but never sent (first: {:?}); {} stored in all",
        must.len(),
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        twice.len(),
        twice.iter().take(5).collect::<Vec<_>>(),
        unsent.len(),
        unsent.iter().take(5).collect::<Vec<_>>(),
        counts.len()
    );
}
