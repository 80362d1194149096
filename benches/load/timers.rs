//! The `timers` group (6): timers fired per second from a backlog due at once after a restart,
//! with the deliveries held back and then sent at the same time; and timer lateness below
//! saturation.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use crate::Settings;
use crate::db::{TickLog, remove_db};
use crate::http::Api;
use crate::loadgen::{self, paced};
use crate::messages::{batch_jobs, product_props};
use crate::metrics::{HistDelta, describe_commits};
use crate::perf::Profile;
use crate::receiver::Receiver;
use crate::report::{
    Row, percentile, print_cpu, print_work, row, section, slowest, target_met, thousands, verdict,
};
use crate::server::{Server, start_phase, stop_checked};
use crate::sys::{CpuWindow, describe_io, proc_io};
use crate::window::Window;

// Targets from the issue.
const TIMERS_TARGET: f64 = 40_000.0;
const TIMERS_FLOOR: f64 = 10_000.0;
const LATENESS_P99_TARGET_MS: f64 = 100.0;

/// A journey whose hold times out into a send step: each firing writes its transitions and a
/// delivery row in one transaction.
fn fire_journey(id: &str, event: &str, hold: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id, "name": format!("bench: {id}"),
        "entry": {"event": event},
        "steps": [{"id": "wait", "type": "hold_until", "max_hold": hold,
                   "branches": [{"event": "Bench_Never", "next": null}],
                   "on_timeout": "send"},
                  {"id": "send", "type": "send", "destination": "bench-sink", "next": null}]
    })
}

pub fn run(
    settings: &Settings,
    runtime: &Runtime,
    receiver: &Receiver,
    rows: &mut Vec<Row>,
    problems: &mut Vec<String>,
) {
    section(rows, "-- timers: hold times out into a send step");
    // `JOURNEYD_BENCH_TIMERS_ONLY=held` (or `fast`) runs only that backlog, for comparing builds.
    let only = std::env::var("JOURNEYD_BENCH_TIMERS_ONLY").ok();
    for held in [true, false] {
        if only
            .as_deref()
            .is_some_and(|o| o != if held { "held" } else { "fast" })
        {
            continue;
        }
        timers_backlog(settings, runtime, receiver, held, rows, problems);
    }
}

fn timers_backlog(
    settings: &Settings,
    runtime: &Runtime,
    receiver: &Receiver,
    held: bool,
    rows: &mut Vec<Row>,
    problems: &mut Vec<String>,
) {
    let n = settings.timers;
    let label = thousands(n as f64);
    let tag = if held { "held" } else { "fast" };
    println!(
        "== 6. Timers fired per second: {label} timers due at once (after a restart), each firing a send step; deliveries {}",
        if held {
            "held back (destination rate_limit 1/s), so that only the firing is measured"
        } else {
            "sent to the fast receiver at the same time"
        }
    );
    let (db, server, api) = start_phase(settings, &format!("timers-{tag}.db"));
    let dest = if held {
        serde_json::json!({"type": "webhook", "url": receiver.url, "rate_limit": 1, "timeout": "5m"})
    } else {
        serde_json::json!({"type": "webhook", "url": receiver.url, "timeout": "30s"})
    };
    runtime.block_on(async {
        api.put("/v1/destinations/bench-sink", dest).await;
        api.put(
            "/v1/journeys/bench-cal",
            fire_journey("bench-cal", "Bench_Cal_Enter", "7d"),
        )
        .await;
    });

    // The hold must outlast the fill, or timers would fire while it runs: time a short fill first.
    let cal_n = (n / 10).clamp(1_000, 5_000);
    let cal = runtime.block_on(loadgen::fill(
        &server.addr,
        "Bench_Cal_Enter",
        "cal-".into(),
        cal_n,
        product_props(),
        None,
    ));
    let entry_rate = cal.rate();
    let estimate = n as f64 / entry_rate;
    let hold_s = (estimate * 1.5 + 3.0).ceil().max(5.0) as u64;
    println!(
        "  calibration: {cal_n} entries at {entry_rate:.0}/s; filling {label} should take {estimate:.1} s, so the hold is {hold_s}s"
    );
    runtime.block_on(api.put(
        "/v1/journeys/bench-fire",
        fire_journey("bench-fire", "Bench_Fire_Enter", &format!("{hold_s}s")),
    ));
    let fill = runtime.block_on(loadgen::fill(
        &server.addr,
        "Bench_Fire_Enter",
        "fire-".into(),
        n,
        product_props(),
        None,
    ));
    let filled = Instant::now();
    print_work(&fill, "entries");
    let early = runtime
        .block_on(api.scrape())
        .map(|s| s.get("journeyd_timers_fired_total"))
        .unwrap_or(0.0) as u64;
    if early > 0 {
        println!(
            "  the fill outlasted the hold: {early} timers fired during it; the rate below is for the rest"
        );
    }
    stop_checked(
        server,
        &format!("timers ({tag}), before the restart"),
        problems,
    );
    let due = filled + Duration::from_secs(hold_s) + Duration::from_millis(300);
    let wait = due.saturating_duration_since(Instant::now());
    println!(
        "  stopped; waiting {:.1} s until every timer is due, then starting again",
        wait.as_secs_f64()
    );
    std::thread::sleep(wait);

    let target = n - early;
    let server = Server::start(&db, &settings.sync);
    let api = Api::new(&server.addr);
    // The window starts at the restart; the group commits are counted between the first and the
    // last scrape of the polling below.
    let cpu = CpuWindow::start(server.pid());
    let pid = server.pid().to_string();
    let io0 = proc_io(&pid);
    let profile = Profile::start(server.pid(), &format!("timers-{tag}"));
    let listening = server.listening;
    println!(
        "  restart with {} due timers: `listening on` after {:.0} ms",
        thousands(target as f64),
        (server.listening - server.spawned).as_secs_f64() * 1000.0
    );
    // (time, fired, delivered), every 20 ms until all have fired: the count moves a tick at a
    // time (up to 100 ms of firing), and a backlog takes about a second on a fast machine, so
    // polling every 100 ms put up to a tenth on the rate.
    let (samples, first, last) = runtime.block_on(async {
        let mut samples: Vec<(Instant, u64, u64)> = Vec::new();
        let (mut first, mut last) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if let Some(s) = api.scrape().await {
                let t = Instant::now();
                let fired = s.get("journeyd_timers_fired_total") as u64;
                let delivered =
                    s.get("journeyd_delivery_attempts_total{outcome=\"delivered\"}") as u64;
                samples.push((t, fired, delivered));
                if first.is_none() {
                    first = Some(s);
                } else {
                    last = Some(s);
                }
                if fired >= target {
                    break;
                }
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (samples, first, last)
    });
    profile.stop();
    let cpu_lines = cpu.report();
    let io1 = proc_io(&pid);
    let fired_all = samples.last().map(|s| s.1).unwrap_or(0);
    if fired_all < target {
        problems.push(format!(
            "timers ({tag}): only {fired_all} of {target} fired within 600 s"
        ));
    }
    // When the count crossed the target, interpolated between the two samples around it.
    let done = match samples.iter().position(|s| s.1 >= target) {
        Some(0) | None => samples.last().map(|s| s.0).unwrap_or(listening),
        Some(i) => {
            let (a, b) = (samples[i - 1], samples[i]);
            let frac = (target - a.1) as f64 / (b.1 - a.1).max(1) as f64;
            a.0 + (b.0 - a.0).mul_f64(frac)
        }
    };
    let secs = (done - listening).as_secs_f64();
    let rate = fired_all.min(target) as f64 / secs;
    let mut per_second = Vec::new();
    let mut mark = 1.0;
    let mut prev = 0u64;
    for s in &samples {
        let t = (s.0 - listening).as_secs_f64();
        if t >= mark {
            per_second.push(thousands((s.1 - prev) as f64 / (t - (mark - 1.0)).max(0.1)));
            prev = s.1;
            mark = t.floor() + 1.0;
        }
    }
    println!(
        "  {} timers fired {secs:.2} s after `listening on`: {rate:.0} timers/s; target {TIMERS_TARGET:.0}, floor {TIMERS_FLOOR:.0}: {}",
        thousands(fired_all as f64),
        verdict(rate, TIMERS_TARGET, TIMERS_FLOOR)
    );
    println!(
        "  fired per second, second by second: {}",
        per_second.join(", ")
    );
    println!(
        "  delivered meanwhile: {}",
        thousands(samples.last().map(|s| s.2).unwrap_or(0) as f64)
    );
    if let (Some(a), Some(b)) = (&first, &last) {
        println!(
            "  group commit: {}",
            describe_commits(a.writer(), b.writer(), secs, 1.0)
        );
    }
    println!(
        "  server wrote (per timer): {}",
        describe_io(io0, io1, secs, fired_all.max(1))
    );
    print_cpu("CPU", &cpu_lines);
    row(
        rows,
        format!(
            "timers fired/s, {label} due, deliveries {}",
            if held { "held back" } else { "to the receiver" }
        ),
        format!("{rate:.0} timers/s"),
        format!("target {TIMERS_TARGET:.0}, floor {TIMERS_FLOOR:.0}"),
        verdict(rate, TIMERS_TARGET, TIMERS_FLOOR),
    );

    if !held {
        let t0 = Instant::now();
        let arrived = runtime.block_on(receiver.wait(n, Duration::from_secs(600), |r| {
            r.count_journey("bench-fire")
        }));
        println!(
            "  all {label} deliveries at the receiver {:.1} s after the last timer fired{}",
            t0.elapsed().as_secs_f64(),
            if arrived { "" } else { " (TIMED OUT)" }
        );
        if !arrived {
            problems.push(format!("timers (fast): not all {n} deliveries arrived"));
        }
        // In steady use every timer was an entry first: the writer does both, so the rate it can
        // sustain is the harmonic combination of the entry and firing rates.
        let capacity = 1.0 / (1.0 / rate + 1.0 / entry_rate);
        timer_lateness(
            settings, runtime, receiver, &server, &db, capacity, rows, problems,
        );
    }
    stop_checked(server, &format!("timers ({tag})"), problems);
    remove_db(settings, &db);
    println!();
}

/// Timers due spread over time at half of `capacity` per second (the rate at which the writer can
/// both enter and fire instances): entries paced at that rate into a journey with a 5 s hold, so
/// that entries and firings overlap as in steady use.
#[allow(clippy::too_many_arguments)]
fn timer_lateness(
    settings: &Settings,
    runtime: &Runtime,
    receiver: &Receiver,
    server: &Server,
    db: &Path,
    capacity: f64,
    rows: &mut Vec<Row>,
    problems: &mut Vec<String>,
) {
    let rate = capacity / 2.0;
    let per = 10u64;
    let duration = Duration::from_secs_f64((settings.secs * 2.0).max(4.0));
    println!(
        "  -- timer lateness below saturation: entries at {rate:.0}/s for {:.0} s, in batches of {per}, into a journey with a 5s hold and a send step (half of {capacity:.0}/s, which entering and firing together would saturate: 1/(1/firing rate + 1/entry rate))",
        duration.as_secs_f64()
    );
    let api = Api::new(&server.addr);
    runtime.block_on(api.put(
        "/v1/journeys/bench-pace",
        fire_journey("bench-pace", "Bench_Pace_Enter", "5s"),
    ));
    let (_, make) = batch_jobs(
        "Bench_Pace_Enter",
        "pace-".into(),
        0,
        1 << 40,
        per,
        product_props(),
    );
    let window = Window::open(runtime, &api, server.pid());
    let profile = Profile::start(server.pid(), "timers-pace");
    let sent = runtime.block_on(paced(
        &server.addr,
        "/v1/batch",
        rate / per as f64,
        duration,
        make,
    ));
    let ok: u64 = sent
        .iter()
        .filter(|s| s.status == 200)
        .map(|s| s.messages)
        .sum();
    let mut acks: Vec<u32> = sent
        .iter()
        .filter(|s| s.status == 200)
        .map(|s| s.latency_us)
        .collect();
    acks.sort_unstable();
    let fired = runtime.block_on(api.wait_journey(
        "bench-pace",
        Duration::from_millis(100),
        Duration::from_secs(120),
        |e, a| e as u64 >= ok && a == 0,
    ));
    profile.stop();
    let measured = window.close(runtime, &api);
    if fired.is_none() {
        problems.push("timer lateness: not all paced timers fired within 120 s".into());
    }
    println!(
        "  {} entries accepted ({} requests, {} not 200); batch latency p50 {:.1} ms, p99 {:.1} ms",
        thousands(ok as f64),
        sent.len(),
        sent.iter().filter(|s| s.status != 200).count(),
        percentile(&acks, 0.5),
        percentile(&acks, 0.99)
    );
    println!("  slowest answers: {}", slowest(&sent));
    let mut p99_hist = None;
    if let (Some(b), Some(a)) = (&measured.before, &measured.after) {
        let h = HistDelta::between(b, a, "journeyd_timer_lateness_seconds");
        println!(
            "  journeyd_timer_lateness_seconds over the run ({:.0} timers): {}",
            h.count,
            h.describe_p50_p99_mean()
        );
        p99_hist = h.quantile(0.99);
    }
    let exact = TickLog::read(db, "bench-pace", 5_000);
    match &exact {
        Ok(log) => println!(
            "  lateness from the instance rows (firing transaction time - due time): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms, in {} ticks ({:.0} timers per tick on average)",
            log.lateness(0.5),
            log.lateness(0.99),
            log.lateness(1.0),
            log.ticks.len(),
            log.lateness_ms.len() as f64 / log.ticks.len().max(1) as f64
        ),
        Err(e) => println!("  lateness from the instance rows not available: {e}"),
    }
    measured.print_cpu("CPU");
    let arrived = runtime.block_on(receiver.wait(ok, Duration::from_secs(120), |r| {
        r.count_journey("bench-pace")
    }));
    if !arrived {
        problems.push("timer lateness: not all deliveries arrived".into());
    }
    let (value, p99_ms) = match (&exact, p99_hist) {
        (Ok(log), Some((v, lo, hi))) => (
            format!(
                "p99 {:.0} ms exact ({:.1} ms in histogram bucket {}-{} ms), at {rate:.0} timers/s",
                log.lateness(0.99),
                v * 1000.0,
                lo * 1000.0,
                hi * 1000.0
            ),
            log.lateness(0.99),
        ),
        (Ok(log), None) => (
            format!("p99 {:.0} ms, at {rate:.0} timers/s", log.lateness(0.99)),
            log.lateness(0.99),
        ),
        (Err(_), Some((v, _, hi))) => (
            format!(
                "p99 {:.1} ms (histogram, bucket up to {} ms), at {rate:.0}/s",
                v * 1000.0,
                hi * 1000.0
            ),
            v * 1000.0,
        ),
        (Err(_), None) => ("-".into(), f64::NAN),
    };
    row(
        rows,
        "timer lateness below saturation",
        value,
        format!("p99 target < {LATENESS_P99_TARGET_MS:.0} ms"),
        target_met(p99_ms < LATENESS_P99_TARGET_MS),
    );
}
