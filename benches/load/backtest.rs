//! The `backtest` group (B): `POST /v1/journeys/backtest` (SPEC §6.8) over the stored events,
//! once per count of `JOURNEYD_BENCH_BACKTEST_EVENTS` (default 100,000 and 1,000,000), each on a
//! fresh database. The events are the ingest group's track messages (five event names, one in
//! five the draft journey's trigger), stored through `POST /v1/batch`; the backtest is timed by
//! the server (`took_ms`) and by the HTTP call, twice, while `/healthz` is polled to show that
//! the backtest does not hold the writer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use crate::Settings;
use crate::db::{remove_db, wait_checkpointed};
use crate::http::Api;
use crate::loadgen::{FILL_BATCH, FILL_CLIENTS, MakeJob, post_jobs};
use crate::messages::{Rng, iso_now, write_track};
use crate::report::{Row, print_work, row, section, target_met, thousands};
use crate::server::{start_phase, stop_checked};
use crate::window::Window;

/// SPEC §6.8: a backtest reads at least this many stored events per second.
const EVENTS_PER_SEC_TARGET: f64 = 100_000.0;
/// `/healthz` during a backtest: every answer 200, p99 under this.
const HEALTHZ_P99_TARGET_MS: f64 = 100.0;
/// How often `/healthz` is called during a backtest.
const HEALTHZ_EVERY: Duration = Duration::from_millis(25);
/// Backtests per count (the first is the figure; the others show the spread).
const RUNS: usize = 2;

/// The draft: a cart abandonment on the ingest messages. "Checkout Started" (one event in five)
/// enters, one instance per cart; "Order Completed" ends it, "Cart Modified" restarts the hold;
/// after an hour without either, a send.
fn draft_journey() -> serde_json::Value {
    serde_json::json!({
        "id": "bench-draft", "name": "bench: backtest draft",
        "entry": {"event": "Checkout Started", "unique_by": "cart_ID"},
        "steps": [{"id": "hold", "type": "hold_until", "max_hold": "1h",
                   "branches": [{"name": "ordered", "event": "Order Completed", "next": null},
                                {"name": "changed", "event": "Cart Modified", "reset_timer": true}],
                   "on_timeout": "remind"},
                  {"id": "remind", "type": "send", "destination": "bench-sink",
                   "traits": ["email"], "next": null}]
    })
}

/// Sorted milliseconds, `q` quantile.
fn quantile_ms(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// `/healthz` latencies (ms, sorted) and how many answers were not 200.
struct Health {
    ms: Vec<f64>,
    failed: usize,
}

impl Health {
    fn describe(&self) -> String {
        format!(
            "{} calls, {} not 200; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.ms.len() + self.failed,
            self.failed,
            quantile_ms(&self.ms, 0.5),
            quantile_ms(&self.ms, 0.99),
            quantile_ms(&self.ms, 1.0)
        )
    }
}

/// Calls `/healthz` every [`HEALTHZ_EVERY`] until `stop` is set.
async fn poll_health(api: Api, stop: Arc<AtomicBool>, out: Arc<Mutex<Health>>) {
    while !stop.load(Ordering::Relaxed) {
        let (ok, took) = api.healthz_timed().await;
        {
            let mut h = out.lock().unwrap();
            if ok {
                h.ms.push(took.as_secs_f64() * 1000.0);
            } else {
                h.failed += 1;
            }
        }
        tokio::time::sleep(HEALTHZ_EVERY).await;
    }
}

pub fn run(
    settings: &Settings,
    runtime: &Runtime,
    rows: &mut Vec<Row>,
    problems: &mut Vec<String>,
) {
    section(
        rows,
        "-- backtest: POST /v1/journeys/backtest over stored events",
    );
    for &n in &settings.backtest_events {
        backtest_scale(settings, runtime, n, rows, problems);
    }
}

fn backtest_scale(
    settings: &Settings,
    runtime: &Runtime,
    n: u64,
    rows: &mut Vec<Row>,
    problems: &mut Vec<String>,
) {
    let label = thousands(n as f64);
    println!("== B. Backtest over {label} stored events (SPEC §6.8)");
    let (db, server, api) = start_phase(settings, &format!("backtest-{n}.db"));
    // The draft's destination: the backtest sends nothing, so nothing listens there.
    runtime.block_on(api.put(
        "/v1/destinations/bench-sink",
        serde_json::json!({"type": "webhook", "url": "http://127.0.0.1:9/never", "timeout": "5s"}),
    ));

    // Store the events ----------------------------------------------------------------------------
    println!(
        "  -- storing: POST /v1/batch, {FILL_CLIENTS} clients x {FILL_BATCH} track messages (five event names at random, {} users, random UUID messageIds; no journey is published)",
        settings.users
    );
    let users = settings.users;
    let make: MakeJob = Arc::new(move |job, out| {
        let ts = iso_now();
        let mut rng = Rng(0xb4c7_0000 ^ job);
        let from = job * FILL_BATCH;
        let to = (from + FILL_BATCH).min(n);
        out.push_str(r#"{"batch":["#);
        for i in from..to {
            if i > from {
                out.push(',');
            }
            write_track(
                out,
                &mut rng,
                users,
                &uuid::Uuid::new_v4().to_string(),
                &ts,
                "",
            );
        }
        let _ = std::fmt::Write::write_fmt(out, format_args!(r#"],"sentAt":"{ts}"}}"#));
        to - from
    });
    let stored = runtime.block_on(post_jobs(
        &server.addr,
        "/v1/batch",
        FILL_CLIENTS,
        n.div_ceil(FILL_BATCH),
        make,
        Some(format!("storing {label} events")),
    ));
    print_work(&stored, "events");
    if stored.ok_messages != n {
        problems.push(format!(
            "backtest at {label}: {} of {n} events stored",
            stored.ok_messages
        ));
    }
    if wait_checkpointed(&db, Duration::from_secs(120)).is_none() {
        println!("  (the WAL was not fully checkpointed within 120 s of storing)");
    }
    let db_mb = std::fs::metadata(&db)
        .map(|m| m.len() as f64 / 1e6)
        .unwrap_or(f64::NAN);
    println!("  database {db_mb:.0} MB");

    // /healthz without a backtest, for comparison ---------------------------------------------------
    let idle = Arc::new(Mutex::new(Health {
        ms: Vec::new(),
        failed: 0,
    }));
    {
        let stop = Arc::new(AtomicBool::new(false));
        let task = runtime.spawn(poll_health(api.clone(), stop.clone(), idle.clone()));
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        let _ = runtime.block_on(task);
    }
    let idle = {
        let mut h = idle.lock().unwrap();
        h.ms.sort_by(f64::total_cmp);
        Health {
            ms: std::mem::take(&mut h.ms),
            failed: h.failed,
        }
    };
    println!(
        "  /healthz every {} ms for 2 s with no backtest: {}",
        HEALTHZ_EVERY.as_millis(),
        idle.describe()
    );

    // The backtests -------------------------------------------------------------------------------
    let request = serde_json::json!({"journey": draft_journey(), "since": "7d"});
    println!(
        "  -- POST /v1/journeys/backtest {{\"journey\": <cart abandonment: entry \"Checkout Started\" unique_by cart_ID, hold 1h for \"Order Completed\" / \"Cart Modified\" (reset), timeout -> send>, \"since\": \"7d\"}}, {RUNS} times, /healthz every {} ms meanwhile",
        HEALTHZ_EVERY.as_millis()
    );
    let (rss_before, hwm_before) = server.rss();
    println!(
        "  server RSS before the backtests {rss_before:.0} MB (peak so far {hwm_before:.0} MB)"
    );
    let mut first: Option<(f64, f64, f64, f64, Health)> = None;
    for run in 1..=RUNS {
        let health = Arc::new(Mutex::new(Health {
            ms: Vec::new(),
            failed: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let window = Window::open(runtime, &api, server.pid());
        let poller = runtime.spawn(poll_health(api.clone(), stop.clone(), health.clone()));
        let t0 = Instant::now();
        let answer = runtime.block_on(api.post_json(
            "/v1/journeys/backtest",
            &request,
            Duration::from_secs(1800),
        ));
        let wall = t0.elapsed().as_secs_f64();
        // The server's CPU in the call, to read the rate apart from what other processes took.
        let cpu_s = window.server_cpu() / 100.0 * wall;
        stop.store(true, Ordering::Relaxed);
        let _ = runtime.block_on(poller);
        let measured = window.close(runtime, &api);
        let mut health = {
            let mut h = health.lock().unwrap();
            Health {
                ms: std::mem::take(&mut h.ms),
                failed: h.failed,
            }
        };
        health.ms.sort_by(f64::total_cmp);
        let v: serde_json::Value = match answer {
            Ok((status, body)) if status.is_success() => {
                serde_json::from_slice(&body).unwrap_or_default()
            }
            Ok((status, body)) => {
                let text = String::from_utf8_lossy(&body[..body.len().min(500)]).to_string();
                println!("  run {run}: HTTP {status}: {text}");
                problems.push(format!("backtest at {label}: HTTP {status}: {text}"));
                break;
            }
            Err(e) => {
                println!("  run {run}: {e}");
                problems.push(format!("backtest at {label}: {e}"));
                break;
            }
        };
        let events = v["events"].as_u64().unwrap_or(0);
        let took_ms = v["took_ms"].as_f64().unwrap_or(f64::NAN);
        let server_rate = events as f64 / (took_ms / 1000.0);
        let wall_rate = events as f64 / wall;
        println!(
            "  run {run}: {} events replayed; server took_ms {took_ms:.0} ms = {server_rate:.0} events/s; the HTTP call {:.0} ms = {wall_rate:.0} events/s; target {}: {}",
            thousands(events as f64),
            wall * 1000.0,
            thousands(EVENTS_PER_SEC_TARGET),
            target_met(wall_rate >= EVENTS_PER_SEC_TARGET)
        );
        let cpu_rate = events as f64 / cpu_s;
        println!(
            "    the server used {cpu_s:.2} s of CPU in the call ({:.0}% of a core): {cpu_rate:.0} events per CPU-second",
            cpu_s / wall * 100.0
        );
        println!(
            "    answer: entered {}, completed {}, active {}, deliveries {}, {} sample payloads, {} active instances listed",
            v["entered"],
            v["completed"],
            v["active"],
            v["deliveries"],
            v["samples"].as_array().map_or(0, Vec::len),
            v["active_instances"].as_array().map_or(0, Vec::len)
        );
        println!("    /healthz meanwhile: {}", health.describe());
        measured.print_cpu("CPU during the call");
        if events < n {
            problems.push(format!(
                "backtest at {label}: replayed {events} events, {n} stored"
            ));
        }
        if first.is_none() {
            first = Some((server_rate, wall_rate, wall, cpu_rate, health));
        }
    }
    let (rss, peak) = server.rss();
    println!(
        "  server RSS after the backtests {rss:.0} MB, peak (VmHWM) {peak:.0} MB (before them: {hwm_before:.0} MB)"
    );
    if let Some((server_rate, wall_rate, wall, cpu_rate, health)) = first {
        row(
            rows,
            format!("backtest over {label} stored events (first run)"),
            format!(
                "{} events/s by the HTTP call ({:.2} s); {} by took_ms; {} per server CPU-second",
                thousands(wall_rate),
                wall,
                thousands(server_rate),
                thousands(cpu_rate)
            ),
            format!("target {} events/s", thousands(EVENTS_PER_SEC_TARGET)),
            target_met(wall_rate >= EVENTS_PER_SEC_TARGET),
        );
        let p99 = quantile_ms(&health.ms, 0.99);
        row(
            rows,
            format!("/healthz during the backtest over {label}"),
            format!(
                "p50 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms ({} calls, {} not 200)",
                quantile_ms(&health.ms, 0.5),
                quantile_ms(&health.ms, 1.0),
                health.ms.len() + health.failed,
                health.failed
            ),
            format!("all 200, p99 under {HEALTHZ_P99_TARGET_MS:.0} ms"),
            target_met(health.failed == 0 && p99 <= HEALTHZ_P99_TARGET_MS),
        );
    }
    stop_checked(server, &format!("backtest {label}"), problems);
    remove_db(settings, &db);
    println!();
}
