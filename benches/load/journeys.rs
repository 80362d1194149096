//! The `journeys` group, once per waiting-instance count: filling a hold (5), the idle server,
//! database bytes per waiting instance (7), restart with pending timers (8), the scheduler tick
//! (5b) and the cost of an event (5a); then whether the costs stay flat from the first count to
//! the last.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use crate::Settings;
use crate::db::{TickLog, USER_DATA_TABLES, db_size, file_mb, remove_db};
use crate::http::Api;
use crate::loadgen::{self, FILL_BATCH, FILL_CLIENTS, MakeJob, WorkResult, post_jobs};
use crate::messages::{
    Props, Rng, batch_jobs, iso_now, product_props, write_journey_event, write_props,
};
use crate::metrics::HistDelta;
use crate::perf::Profile;
use crate::report::{
    Row, percentile, print_work, row, section, target_met, thousands, verdict_lower,
};
use crate::server::{Server, restart, start_phase, stop_checked};
use crate::window::Window;

// Targets from the issue.
const BYTES_PER_INSTANCE_TARGET: f64 = 300.0;
const BYTES_PER_INSTANCE_FLOOR: f64 = 1_000.0;
const RESTART_TARGET_S: f64 = 2.0;
/// "Roughly flat": the larger database's figure within this factor of the smaller one's.
const FLAT_FACTOR: f64 = 1.5;

/// Clients of the fixed single-track workload.
const EVENT_CLIENTS: usize = 32;
/// The hold of the tick journey.
const TICK_HOLD_MS: i64 = 2_000;

fn verdict_flat(ratio: f64) -> &'static str {
    if ratio <= FLAT_FACTOR {
        "flat"
    } else {
        "NOT FLAT"
    }
}

pub fn wait_journey() -> serde_json::Value {
    serde_json::json!({
        "id": "bench-wait", "name": "bench: waiting in a hold",
        "entry": {"event": "Bench_Wait_Enter"},
        "steps": [{"id": "wait", "type": "hold_until", "max_hold": "7d",
                   "branches": [{"name": "nudge", "event": "Bench_Wait_Nudge", "reset_timer": true},
                                {"name": "done", "event": "Bench_Wait_Done", "next": null}],
                   "on_timeout": null}]
    })
}

/// Enters `n` users (`user-0000000`, ...) into [`wait_journey`] through `POST /v1/batch`, with
/// the count printed every 10 s.
pub fn fill_waiting(runtime: &Runtime, server: &Server, n: u64) -> WorkResult {
    runtime.block_on(loadgen::fill(
        &server.addr,
        "Bench_Wait_Enter",
        "user-".into(),
        n,
        product_props(),
        Some(format!("filling to {}", thousands(n as f64))),
    ))
}

/// The active instances of [`wait_journey`] when there are `n`; otherwise prints what its stats
/// say and returns them as the error.
pub fn check_waiting(runtime: &Runtime, api: &Api, n: u64) -> Result<i64, String> {
    match runtime.block_on(api.journey_counts("bench-wait")) {
        Some((_, active)) if active as u64 == n => Ok(active),
        other => {
            println!("  journey stats: {other:?}, expected {n} active");
            Err(format!("bench-wait stats {other:?}"))
        }
    }
}

fn tick_journey() -> serde_json::Value {
    serde_json::json!({
        "id": "bench-tick", "name": "bench: timers due together",
        "entry": {"event": "Bench_Tick_Enter"},
        "steps": [{"id": "wait", "type": "hold_until", "max_hold": "2s",
                   "branches": [{"event": "Bench_Tick_Never", "next": null}],
                   "on_timeout": null}]
    })
}

/// What one waiting-instance count measured, for the flatness comparison.
struct ScaleResult {
    n: u64,
    fill_rate: f64,
    serial_p50: f64,
    serial_p99: f64,
    event_rate: f64,
    /// ms the writer spent in ticks, per this many timers fired.
    tick: Option<(f64, u64)>,
    idle_cpu: f64,
}

pub fn run(
    settings: &Settings,
    runtime: &Runtime,
    rows: &mut Vec<Row>,
    problems: &mut Vec<String>,
) {
    section(rows, "-- journeys: waiting instances (hold, max_hold 7d)");
    let mut results = Vec::new();
    for &n in &settings.waiting {
        results.push(waiting_scale(settings, runtime, n, rows, problems));
    }
    if results.len() >= 2 {
        let (a, b) = (&results[0], &results[results.len() - 1]);
        let (la, lb) = (thousands(a.n as f64), thousands(b.n as f64));
        println!("== 5. Flat costs: {la} against {lb} waiting instances");
        let pairs: Vec<(String, String, f64)> = {
            let mut v = vec![
                (
                    format!("event cost, {EVENT_CLIENTS} clients (req/s)"),
                    format!("{:.0} -> {:.0} req/s", a.event_rate, b.event_rate),
                    a.event_rate / b.event_rate,
                ),
                (
                    "event cost, one client (p50)".to_string(),
                    format!("{:.2} -> {:.2} ms", a.serial_p50, b.serial_p50),
                    b.serial_p50 / a.serial_p50,
                ),
                (
                    "event cost, one client (p99)".to_string(),
                    format!("{:.2} -> {:.2} ms", a.serial_p99, b.serial_p99),
                    b.serial_p99 / a.serial_p99,
                ),
            ];
            if let (Some(ta), Some(tb)) = (a.tick, b.tick) {
                v.push((
                    format!("scheduler ticks per {} timers fired", ta.1),
                    format!("{:.1} -> {:.1} ms", ta.0, tb.0),
                    tb.0 / ta.0,
                ));
            }
            v
        };
        for (name, value, ratio) in pairs {
            println!("  {name}: {value}: {ratio:.2}x ({})", verdict_flat(ratio));
            row(
                rows,
                format!("flat {la} -> {lb}: {name}"),
                format!("{value} ({ratio:.2}x)"),
                format!("within {FLAT_FACTOR}x"),
                verdict_flat(ratio),
            );
        }
        println!(
            "  entry rate while filling: {:.0} -> {:.0} entries/s; idle server CPU {:.1}% -> {:.1}% of a core",
            a.fill_rate, b.fill_rate, a.idle_cpu, b.idle_cpu
        );
        println!();
    }
}

fn waiting_scale(
    settings: &Settings,
    runtime: &Runtime,
    n: u64,
    rows: &mut Vec<Row>,
    problems: &mut Vec<String>,
) -> ScaleResult {
    let label = thousands(n as f64);
    println!(
        "== 5. {label} waiting instances: a hold_until with max_hold 7d, one instance per userId"
    );
    let (db, server, api) = start_phase(settings, &format!("waiting-{n}.db"));
    runtime.block_on(async {
        api.put("/v1/journeys/bench-wait", wait_journey()).await;
        api.put("/v1/journeys/bench-tick", tick_journey()).await;
    });

    // Fill --------------------------------------------------------------------------------
    println!(
        "  -- filling: POST /v1/batch, {FILL_CLIENTS} clients x {FILL_BATCH} entry events (distinct userIds, about 120 bytes of properties each)"
    );
    let window = Window::open(runtime, &api, server.pid());
    // (Not for the 1M fill: minutes of DWARF call graphs come to gigabytes.)
    let profile = if n <= 200_000 {
        Profile::start(server.pid(), &format!("fill-{n}"))
    } else {
        Profile::none()
    };
    let fill = fill_waiting(runtime, &server, n);
    profile.stop();
    let measured = window.close(runtime, &api);
    print_work(&fill, "entries");
    let tail = fill.tail_rate(10.0);
    if let Some(r) = tail {
        println!("  entries/s over the last 10 s of the fill: {r:.0}");
    }
    measured.print(
        fill.elapsed.as_secs_f64(),
        FILL_BATCH as f64,
        fill.ok_messages,
    );
    match check_waiting(runtime, &api, n) {
        Ok(active) => println!(
            "  journey stats: {} active instances",
            thousands(active as f64)
        ),
        Err(e) => problems.push(format!("after filling {n}: {e}")),
    }
    row(
        rows,
        format!("entries while filling to {label} ({FILL_CLIENTS}x{FILL_BATCH} batches)"),
        format!(
            "{:.0} entries/s{}",
            fill.rate(),
            tail.map(|r| format!(" (last 10 s: {r:.0})"))
                .unwrap_or_default()
        ),
        "-",
        "reference",
    );

    // Idle ---------------------------------------------------------------------------------
    let window = Window::open(runtime, &api, server.pid());
    std::thread::sleep(Duration::from_secs(2));
    let idle_cpu = window.server_cpu();
    let idle_commits = window.close(runtime, &api).commits();
    println!(
        "  -- idle for 2 s with {label} waiting: server {idle_cpu:.1}% of a core, {idle_commits:.0} writer commits"
    );

    // Stop, size, restart ------------------------------------------------------------------
    let took = stop_checked(server, &format!("{label} waiting"), problems);
    let wal_mb = file_mb(&settings.dir.join(format!("waiting-{n}.db-wal"))).unwrap_or(0.0);
    println!(
        "  -- SIGTERM with {label} waiting: exited after {:.2} s (WAL left: {wal_mb:.1} MB)",
        took.as_secs_f64()
    );
    bytes_per_instance(&db, n, rows);
    let (server, listen, health) = restart(runtime, &db, &settings.sync);
    println!(
        "  -- 8. Restart with {label} pending timers: `listening on` after {:.0} ms, first 200 from /healthz after {:.0} ms (from spawn)",
        listen.as_secs_f64() * 1000.0,
        health.as_secs_f64() * 1000.0
    );
    let health_s = health.as_secs_f64();
    row(
        rows,
        format!("restart with {label} pending timers: listening / healthz"),
        format!(
            "{:.0} ms / {:.0} ms",
            listen.as_secs_f64() * 1000.0,
            health_s * 1000.0
        ),
        format!("target {RESTART_TARGET_S:.0} s"),
        target_met(health_s <= RESTART_TARGET_S),
    );
    let api = Api::new(&server.addr);

    let tick = scheduler_tick(settings, runtime, &server, &api, &db, n, rows, problems);
    let (serial_p50, serial_p99, event_rate) =
        event_cost(settings, runtime, &server, &api, n, rows, problems);

    stop_checked(server, &format!("{label} waiting, after restart"), problems);
    remove_db(settings, &db);
    println!();
    ScaleResult {
        n,
        fill_rate: fill.rate(),
        serial_p50,
        serial_p99,
        event_rate,
        tick,
        idle_cpu,
    }
}

/// 7: the database's b-trees after the clean shutdown, journey state apart from user data.
fn bytes_per_instance(db: &Path, n: u64, rows: &mut Vec<Row>) {
    let label = thousands(n as f64);
    println!(
        "  -- 7. Database bytes per waiting instance (SQLite dbstat after the clean shutdown)"
    );
    let t0 = Instant::now();
    match db_size(db) {
        Ok(size) => {
            let (mut journey, mut user) = (0u64, 0u64);
            for (name, table, bytes) in &size.btrees {
                let per = *bytes as f64 / n as f64;
                let kind = if USER_DATA_TABLES.contains(&table.as_str()) {
                    user += bytes;
                    "user data (excluded)"
                } else if name == "sqlite_schema" {
                    "schema"
                } else {
                    journey += bytes;
                    "journey state"
                };
                if per >= 1.0 {
                    println!(
                        "    {name:<28} {:>10.1} MB  {per:>7.1} bytes/instance  {kind}",
                        *bytes as f64 / 1048576.0
                    );
                }
            }
            let per = journey as f64 / n as f64;
            println!(
                "  journey state: {per:.0} bytes per waiting instance; user data (events, profiles): {:.0} bytes per user; file {:.1} MB, {:.1} MB free pages (dbstat took {:.1} s)",
                user as f64 / n as f64,
                size.file_bytes as f64 / 1048576.0,
                size.free_bytes as f64 / 1048576.0,
                t0.elapsed().as_secs_f64()
            );
            row(
                rows,
                format!("bytes per waiting instance ({label}), events excluded"),
                format!(
                    "{per:.0} B (events+profiles {:.0} B/user)",
                    user as f64 / n as f64
                ),
                format!(
                    "target {BYTES_PER_INSTANCE_TARGET:.0}, floor {BYTES_PER_INSTANCE_FLOOR:.0}"
                ),
                verdict_lower(per, BYTES_PER_INSTANCE_TARGET, BYTES_PER_INSTANCE_FLOOR),
            );
        }
        Err(e) => println!("  dbstat not available: {e}"),
    }
}

/// 5b: `JOURNEYD_BENCH_TICK` timers due together in another journey, among `n` far-future ones.
/// (ms the writer spent in ticks, per this many timers fired): from the server's
/// `journeyd_timer_firing_seconds_total`, or for builds without it, per full tick when there were
/// two ticks or more.
#[allow(clippy::too_many_arguments)]
fn scheduler_tick(
    settings: &Settings,
    runtime: &Runtime,
    server: &Server,
    api: &Api,
    db: &Path,
    n: u64,
    rows: &mut Vec<Row>,
    problems: &mut Vec<String>,
) -> Option<(f64, u64)> {
    let label = thousands(n as f64);
    let k = settings.tick;
    println!(
        "  -- 5b. Scheduler tick: {} timers due together (another journey, hold 2s), among {label} far-future timers",
        thousands(k as f64)
    );
    let before = runtime.block_on(api.scrape());
    let per = 2_000u64.min(k.max(1));
    let props: Props = Arc::new(|u, _, out| {
        let _ = write!(out, r#""n":{u}"#);
    });
    let (jobs, make) = batch_jobs("Bench_Tick_Enter", "tick-".into(), 0, k, per, props);
    let entered = runtime.block_on(post_jobs(
        &server.addr,
        "/v1/batch",
        jobs as usize,
        jobs,
        make,
        None,
    ));
    if entered.ok_messages != k {
        problems.push(format!(
            "tick phase at {label}: {} of {k} entries accepted",
            entered.ok_messages
        ));
    }
    let fired = runtime.block_on(api.wait_journey(
        "bench-tick",
        Duration::from_millis(20),
        Duration::from_secs(60),
        |e, a| e as u64 >= k && a == 0,
    ));
    if fired.is_none() {
        problems.push(format!(
            "tick phase at {label}: timers not all fired within 60 s"
        ));
    }
    let after = runtime.block_on(api.scrape());
    let hist = match (&before, &after) {
        (Some(b), Some(a)) => Some(HistDelta::between(b, a, "journeyd_timer_lateness_seconds")),
        _ => None,
    };
    // The writer's time in ticks per timer fired, from the server's metrics: ticks are cut by
    // time, not count, so one tick may fire all of them. Builds without that metric: from the
    // tick log below (ticks of 1,000 timers).
    let firing = match (&before, &after) {
        (Some(b), Some(a)) => {
            let secs = a.get("journeyd_timer_firing_seconds_total")
                - b.get("journeyd_timer_firing_seconds_total");
            let fired = a.get("journeyd_timers_fired_total") - b.get("journeyd_timers_fired_total");
            (secs > 0.0 && fired > 0.0).then(|| secs / fired * 1e6)
        }
        _ => None,
    };
    let mut tick = firing.map(|ms| (ms, 1000));
    match TickLog::read(db, "bench-tick", TICK_HOLD_MS) {
        Ok(log) => {
            let ticks: Vec<String> = log.ticks.iter().map(|(_, c)| c.to_string()).collect();
            print!(
                "  fired in {} ticks ({})",
                log.ticks.len(),
                ticks.join(", ")
            );
            if let Some(ms) = firing {
                println!(
                    "; the writer spent {ms:.1} ms in ticks per 1,000 timers fired ({:.0} timers/s)",
                    1e6 / ms
                );
            } else if let Some((rate, ms, full)) = log.full_tick_rate() {
                println!("; a full tick of {full} timers took {ms:.1} ms: {rate:.0} timers/s");
                tick = Some((ms, full));
            } else {
                println!("; fewer than two ticks, no tick duration");
            }
            println!(
                "  lateness (firing transaction time - due time, from the instance rows): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                log.lateness(0.5),
                log.lateness(0.99),
                log.lateness(1.0)
            );
        }
        Err(e) => {
            println!("  tick log not readable from the database ({e}); lateness histogram only")
        }
    }
    if let Some(h) = &hist {
        println!(
            "  journeyd_timer_lateness_seconds for these {:.0} timers: {}",
            h.count,
            h.describe_p50_p99_mean()
        );
    }
    row(
        rows,
        format!(
            "tick with {label} waiting: {} timers due now",
            thousands(k as f64)
        ),
        match tick {
            Some((ms, full)) => format!(
                "{ms:.1} ms of ticks per {full} fired ({:.0} timers/s)",
                full as f64 / ms * 1000.0
            ),
            None => "-".into(),
        },
        "flat",
        "see flat rows",
    );
    tick
}

/// 5a: single `POST /v1/track` of a hold-branch event for random waiting users, one client and
/// then [`EVENT_CLIENTS`]. (one client's p50 and p99 in ms, the concurrent rate in req/s)
fn event_cost(
    settings: &Settings,
    runtime: &Runtime,
    server: &Server,
    api: &Api,
    n: u64,
    rows: &mut Vec<Row>,
    problems: &mut Vec<String>,
) -> (f64, f64, f64) {
    let label = thousands(n as f64);
    println!(
        "  -- 5a. Event cost: single POST /v1/track of a hold-branch event (reset_timer) for a random waiting user"
    );
    let nudge = |seed: u64| -> MakeJob {
        Arc::new(move |job, out| {
            let mut rng = Rng(seed ^ job.wrapping_mul(0x2545_F491_4F6C_DD1D));
            let u = rng.below(n);
            let mut p = String::with_capacity(160);
            write_props(&mut p, &mut rng);
            write_journey_event(
                out,
                "Bench_Wait_Nudge",
                &format!("user-{u:07}"),
                &iso_now(),
                &p,
            );
            1
        })
    };
    let serial_n = (settings.event_calls / 5).max(200);
    let serial = runtime.block_on(post_jobs(
        &server.addr,
        "/v1/track",
        1,
        serial_n,
        nudge(0xa5a5),
        None,
    ));
    let (sp50, sp99) = (
        percentile(&serial.latencies_us, 0.5),
        percentile(&serial.latencies_us, 0.99),
    );
    println!(
        "  one client, {serial_n} calls: {:.0} req/s, latency p50 {sp50:.2} ms, p99 {sp99:.2} ms",
        serial.rate()
    );
    let window = Window::open(runtime, api, server.pid());
    let profile = Profile::start(server.pid(), &format!("events-{n}"));
    let conc = runtime.block_on(post_jobs(
        &server.addr,
        "/v1/track",
        EVENT_CLIENTS,
        settings.event_calls,
        nudge(0x5a5a),
        None,
    ));
    profile.stop();
    let measured = window.close(runtime, api);
    let (cp50, cp99) = (
        percentile(&conc.latencies_us, 0.5),
        percentile(&conc.latencies_us, 0.99),
    );
    println!(
        "  {EVENT_CLIENTS} clients, {} calls: {:.0} req/s, latency p50 {cp50:.2} ms, p99 {cp99:.2} ms",
        settings.event_calls,
        conc.rate()
    );
    measured.print(conc.elapsed.as_secs_f64(), 1.0, conc.ok_messages);
    for w in [&serial, &conc] {
        if w.failed > 0 {
            problems.push(format!(
                "event cost at {label}: {} calls failed ({:?})",
                w.failed, w.first_error
            ));
        }
    }
    row(
        rows,
        format!("event cost with {label} waiting: {EVENT_CLIENTS} clients"),
        format!(
            "{:.0} req/s, p50 {cp50:.1} ms, p99 {cp99:.1} ms",
            conc.rate()
        ),
        "flat",
        "see flat rows",
    );
    row(
        rows,
        format!("event cost with {label} waiting: one client"),
        format!("p50 {sp50:.2} ms, p99 {sp99:.2} ms"),
        "flat",
        "see flat rows",
    );
    (sp50, sp99, conc.rate())
}
