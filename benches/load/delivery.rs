//! The `delivery` group (9): a forwarding journey (entry, then send) to the receiver. The
//! saturating rate of single `POST /v1/track`, event-to-delivery latency at half of it (open
//! loop), and delivery throughput from a backlog.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use crate::Settings;
use crate::db::remove_db;
use crate::http::Api;
use crate::loadgen::{self, MakeBody, MakeJob, Sent, http_load, paced};
use crate::messages::{Props, Rng, iso_now, write_journey_event, write_props};
use crate::perf::Profile;
use crate::receiver::Receiver;
use crate::report::{
    Row, percentile, row, section, slowest, target_met, thousands, verdict, verdict_lower,
};
use crate::server::{Server, start_phase, stop_checked};
use crate::window::Window;

// Targets from the issue.
const DELIVERY_P50_TARGET_MS: f64 = 10.0;
const DELIVERY_P99_TARGET_MS: f64 = 50.0;
const DELIVERY_P99_FLOOR_MS: f64 = 250.0;
const DELIVERY_RATE_TARGET: f64 = 5_000.0;

pub fn forward_journey() -> serde_json::Value {
    serde_json::json!({
        "id": "bench-forward", "name": "bench: forward each event",
        "entry": {"event": "Bench_Forward"},
        "steps": [{"id": "send", "type": "send", "destination": "bench-sink", "next": null}]
    })
}

/// Properties of a forwarded event: the tag and sequence number the receiver matches on, and
/// product-like fields.
pub fn forward_props(out: &mut String, tag: &str, seq: Option<u64>, rng: &mut Rng) {
    let _ = write!(out, r#""bench_tag":"{tag}","#);
    if let Some(seq) = seq {
        let _ = write!(out, r#""bench_seq":{seq},"#);
    }
    write_props(out, rng);
}

/// The receiver as a webhook destination, with `concurrency` when given.
pub fn sink(receiver: &Receiver, concurrency: Option<u32>) -> serde_json::Value {
    let mut dest = serde_json::json!({"type": "webhook", "url": receiver.url, "timeout": "5m"});
    if let Some(c) = concurrency {
        dest["concurrency"] = c.into();
    }
    dest
}

pub fn run(
    settings: &Settings,
    runtime: &Runtime,
    receiver: &Receiver,
    rows: &mut Vec<Row>,
    problems: &mut Vec<String>,
) {
    section(
        rows,
        "-- delivery: forwarding journey (entry, then send) to the receiver",
    );
    println!(
        "== 9. Delivery: a forwarding journey (entry event -> send step -> webhook to the receiver in this process)"
    );
    let (db, server, api) = start_phase(settings, "delivery.db");
    runtime.block_on(async {
        api.put(
            "/v1/destinations/bench-sink",
            sink(receiver, settings.delivery_concurrency),
        )
        .await;
        api.put("/v1/journeys/bench-forward", forward_journey())
            .await;
    });
    let users = settings.users;

    // 9a: the saturating rate -------------------------------------------------------------
    let sat_secs = (settings.secs * 0.6).max(2.0);
    let make: MakeBody = Arc::new(move |_, _, rng, out| {
        let mut p = String::with_capacity(200);
        forward_props(&mut p, "sat", None, rng);
        let user = format!("fwd-{:06}", rng.below(users));
        write_journey_event(out, "Bench_Forward", &user, &iso_now(), &p);
    });
    let sat = runtime.block_on(http_load(
        &server.addr,
        "/v1/track",
        settings.track_clients,
        Duration::from_secs_f64(sat_secs),
        1,
        make,
    ));
    let sat_ok = sat.ok_requests();
    let sat_rate = sat_ok as f64 / sat.elapsed.as_secs_f64();
    println!(
        "  -- 9a. saturating rate: {} clients of single POST /v1/track for {sat_secs:.1} s: {sat_rate:.0} req/s, latency p50 {:.1} ms, p99 {:.1} ms",
        settings.track_clients,
        percentile(&sat.latencies_us, 0.5),
        percentile(&sat.latencies_us, 0.99)
    );
    let t0 = Instant::now();
    let all =
        runtime.block_on(receiver.wait(sat_ok, Duration::from_secs(300), |r| r.count_tag("sat")));
    println!(
        "  its {} deliveries were all at the receiver {:.2} s after the load ended{}",
        thousands(sat_ok as f64),
        t0.elapsed().as_secs_f64(),
        if all { "" } else { " (TIMED OUT)" }
    );
    if !all {
        problems.push("delivery: the saturation run's deliveries did not all arrive".into());
    }
    row(
        rows,
        format!(
            "single track, {} clients, with forwarding",
            settings.track_clients
        ),
        format!("{sat_rate:.0} req/s (saturating rate)"),
        "-",
        "reference",
    );

    // 9a: latency at half of it -------------------------------------------------------------
    let rate = settings.delivery_rate.unwrap_or(sat_rate / 2.0);
    let duration = settings.phase();
    println!(
        "  -- 9a. event -> first delivery attempt: single POST /v1/track at {rate:.0}/s ({}), open loop, for {:.0} s",
        if settings.delivery_rate.is_some() {
            "JOURNEYD_BENCH_DELIVERY_RATE"
        } else {
            "half the saturating rate"
        },
        duration.as_secs_f64()
    );
    let make: MakeJob = Arc::new(move |n, out| {
        let mut rng = Rng(0xf0f0 ^ n);
        let mut p = String::with_capacity(200);
        forward_props(&mut p, "lat", Some(n), &mut rng);
        let user = format!("fwd-{:06}", rng.below(users));
        write_journey_event(out, "Bench_Forward", &user, &iso_now(), &p);
        1
    });
    let window = Window::open(runtime, &api, server.pid());
    // The outbox and the writer queue, every 250 ms while the run lasts.
    let backlog: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let sampler = {
        let (api, backlog) = (api.clone(), backlog.clone());
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Some(s) = api.scrape().await {
                    backlog.lock().unwrap().push((
                        s.get("journeyd_deliveries_pending") as u64,
                        s.get("journeyd_writer_queue_depth") as u64,
                    ));
                }
            }
        })
    };
    let profile = Profile::start(server.pid(), "delivery-latency");
    let sent = runtime.block_on(paced(&server.addr, "/v1/track", rate, duration, make));
    profile.stop();
    sampler.abort();
    {
        let b = backlog.lock().unwrap();
        let pending: Vec<String> = b.iter().map(|x| x.0.to_string()).collect();
        let queue = b.iter().map(|x| x.1).max().unwrap_or(0);
        println!(
            "  deliveries pending every 250 ms during the run: {}; writer queue depth at most {queue}",
            pending.join(" ")
        );
    }
    let ok: Vec<&Sent> = sent.iter().filter(|s| s.status == 200).collect();
    let all = runtime.block_on(
        receiver.wait(ok.len() as u64, Duration::from_secs(120), |r| {
            r.count_tag("lat")
        }),
    );
    let measured = window.close(runtime, &api);
    let arrivals = receiver.arrivals("lat");
    let mut e2e: Vec<u32> = Vec::with_capacity(ok.len());
    let mut missing = 0;
    for s in &ok {
        match arrivals.get(&s.n) {
            Some(at) => e2e.push(at.saturating_duration_since(s.at).as_micros() as u32),
            None => missing += 1,
        }
    }
    // Per second of the run (by send time): p50 and max of event -> delivery.
    if let Some(first) = ok.iter().map(|s| s.at).min() {
        let mut windows: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        for s in &ok {
            if let Some(at) = arrivals.get(&s.n) {
                windows
                    .entry((s.at - first).as_secs())
                    .or_default()
                    .push(at.saturating_duration_since(s.at).as_micros() as u32);
            }
        }
        let parts: Vec<String> = windows
            .values_mut()
            .map(|v| {
                v.sort_unstable();
                format!("{:.0}/{:.0}", percentile(v, 0.5), percentile(v, 1.0))
            })
            .collect();
        println!(
            "  event -> delivery p50/max in ms, second by second: {}",
            parts.join(", ")
        );
    }
    e2e.sort_unstable();
    let mut acks: Vec<u32> = ok.iter().map(|s| s.latency_us).collect();
    acks.sort_unstable();
    let (p50, p90, p99, max) = (
        percentile(&e2e, 0.5),
        percentile(&e2e, 0.9),
        percentile(&e2e, 0.99),
        percentile(&e2e, 1.0),
    );
    println!(
        "  {} sent, {} answered 200, {} deliveries matched{}",
        sent.len(),
        ok.len(),
        e2e.len(),
        if all {
            String::new()
        } else {
            format!(" ({missing} MISSING)")
        }
    );
    println!(
        "  event -> delivery: p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms, max {max:.2} ms"
    );
    println!(
        "  (the 200 answer to the track call alone: p50 {:.2} ms, p99 {:.2} ms)",
        percentile(&acks, 0.5),
        percentile(&acks, 0.99)
    );
    println!("  slowest answers: {}", slowest(&sent));
    measured.print_commits(duration.as_secs_f64(), 1.0);
    measured.print_cpu("CPU");
    if missing > 0 {
        problems.push(format!(
            "delivery latency: {missing} deliveries never arrived"
        ));
    }
    row(
        rows,
        format!("event -> delivery at {rate:.0}/s: p50"),
        format!("{p50:.2} ms (ack alone {:.2} ms)", percentile(&acks, 0.5)),
        format!("target {DELIVERY_P50_TARGET_MS:.0} ms"),
        target_met(p50 <= DELIVERY_P50_TARGET_MS),
    );
    row(
        rows,
        format!("event -> delivery at {rate:.0}/s: p99"),
        format!("{p99:.2} ms (ack alone {:.2} ms)", percentile(&acks, 0.99)),
        format!("target {DELIVERY_P99_TARGET_MS:.0} ms, floor {DELIVERY_P99_FLOOR_MS:.0} ms"),
        verdict_lower(p99, DELIVERY_P99_TARGET_MS, DELIVERY_P99_FLOOR_MS),
    );

    // 9b: throughput ---------------------------------------------------------------------------
    delivery_throughput(
        settings, runtime, receiver, &server, "thr", None, rows, problems,
    );
    if settings.extra {
        delivery_throughput(
            settings,
            runtime,
            receiver,
            &server,
            "thr64",
            Some(64),
            rows,
            problems,
        );
    }
    let dups = receiver.duplicates();
    println!("  duplicate deliveries seen by the receiver (same webhook-id twice): {dups}");
    stop_checked(server, "delivery", problems);
    remove_db(settings, &db);
    println!();
}

/// Builds a backlog of deliveries while the receiver holds its answers, then opens it and times
/// how fast the dispatcher empties the outbox.
#[allow(clippy::too_many_arguments)]
fn delivery_throughput(
    settings: &Settings,
    runtime: &Runtime,
    receiver: &Receiver,
    server: &Server,
    tag: &'static str,
    concurrency: Option<u32>,
    rows: &mut Vec<Row>,
    problems: &mut Vec<String>,
) {
    let m = settings.deliveries;
    let api = Api::new(&server.addr);
    runtime.block_on(api.put("/v1/destinations/bench-sink", sink(receiver, concurrency)));
    let conc = concurrency
        .map(|c| c.to_string())
        .unwrap_or_else(|| "8 (default)".into());
    println!(
        "  -- 9b. delivery throughput, destination concurrency {conc}: {} forwarding events through POST /v1/batch while the receiver holds its answers, then the receiver opens",
        thousands(m as f64)
    );
    receiver.set_gate(false);
    let props: Props = Arc::new(move |u, rng, out| forward_props(out, tag, Some(u), rng));
    let fill = runtime.block_on(loadgen::fill(
        &server.addr,
        "Bench_Forward",
        format!("{tag}-"),
        m,
        props,
        None,
    ));
    println!(
        "  ingested: {} events (each an entry, a send step and a delivery row) at {:.0}/s",
        thousands(fill.ok_messages as f64),
        fill.rate()
    );
    std::thread::sleep(Duration::from_millis(300));
    let window = Window::open(runtime, &api, server.pid());
    let pending = window
        .before()
        .map(|s| s.get("journeyd_deliveries_pending"))
        .unwrap_or(f64::NAN);
    let profile = Profile::start(server.pid(), &format!("delivery-drain-{tag}"));
    let opened = Instant::now();
    receiver.set_gate(true);
    let all = runtime.block_on(
        receiver.wait(fill.ok_messages, Duration::from_secs(900), |r| {
            r.count_tag(tag)
        }),
    );
    profile.stop();
    let last = receiver.last_arrival(tag).unwrap_or_else(Instant::now);
    let secs = (last - opened).as_secs_f64();
    let measured = window.close(runtime, &api);
    let got = receiver.count_tag(tag);
    let rate = got as f64 / secs;
    println!(
        "  {} pending when the receiver opened; {} delivered in {secs:.2} s: {rate:.0} deliveries/s; target {DELIVERY_RATE_TARGET:.0}: {}",
        thousands(pending),
        thousands(got as f64),
        verdict(rate, DELIVERY_RATE_TARGET, DELIVERY_RATE_TARGET)
    );
    measured.print(secs, 1.0, got);
    if !all {
        problems.push(format!(
            "delivery throughput ({tag}): {got} of {} delivered",
            fill.ok_messages
        ));
    }
    row(
        rows,
        format!(
            "delivery throughput, backlog {}, concurrency {conc}",
            thousands(m as f64)
        ),
        format!("{rate:.0} deliveries/s"),
        format!("target {DELIVERY_RATE_TARGET:.0}"),
        verdict(rate, DELIVERY_RATE_TARGET, DELIVERY_RATE_TARGET),
    );
}
