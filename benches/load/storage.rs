//! The `storage` group (S): what a forwarded event costs in storage, once per count of waiting
//! instances in another journey (`JOURNEYD_BENCH_STORAGE_WAITING`, default 10,000 and
//! 1,000,000), each on a fresh database. The forwarding workload is the `delivery` group's:
//! single `POST /v1/track` of an event that enters a journey whose one step sends it to the
//! receiver. Per count: the bytes the server sends to storage per event (from /proc/<pid>/io,
//! with the WAL frames apart), the growth of a consistent backup per event, which b-trees hold
//! the bytes (`dbstat` on the backups), and the event throughput with 32 clients; then how the
//! throughput holds up from the smallest count to the largest.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use crate::Settings;
use crate::db::{BtreeStats, WalFrames, pending_deliveries, remove_db, wait_checkpointed};
use crate::delivery::{forward_journey, forward_props, sink};
use crate::http::Api;
use crate::journeys::{check_waiting, fill_waiting, wait_journey};
use crate::loadgen::{FILL_BATCH, FILL_CLIENTS, MakeBody, http_load};
use crate::messages::{iso_now, write_journey_event};
use crate::perf::Profile;
use crate::receiver::Receiver;
use crate::report::{
    Row, percentile, print_load, print_work, row, section, target_met, thousands, verdict_lower,
};
use crate::server::{start_phase, stop_checked};
use crate::sys::proc_io;
use crate::window::Window;

// Targets from the storage-efficiency issue.
const DISK_PER_EVENT_TARGET: f64 = 2.0 * 1024.0;
const DISK_PER_EVENT_FLOOR: f64 = 12.0 * 1024.0;
const KEPT_PER_EVENT_TARGET: f64 = 800.0;
const KEPT_PER_EVENT_FLOOR: f64 = 1_500.0;
/// The event throughput at the largest count within this factor of the smallest count's.
const THROUGHPUT_FACTOR: f64 = 1.3;

/// Clients of the forwarding load (single `POST /v1/track` each).
const CLIENTS: usize = 32;

/// What one waiting-instance count measured.
struct StorageResult {
    n: u64,
    rate: f64,
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
        "-- storage: forwarding journey (entry, then send), per forwarded event",
    );
    let mut results = Vec::new();
    for &n in &settings.storage_waiting {
        if let Some(r) = storage_scale(settings, runtime, receiver, n, rows, problems) {
            results.push(r);
        }
    }
    if results.len() >= 2 {
        // The smallest count against the largest, whatever order they ran in.
        let a = results.iter().min_by_key(|r| r.n).unwrap();
        let b = results.iter().max_by_key(|r| r.n).unwrap();
        let (la, lb) = (thousands(a.n as f64), thousands(b.n as f64));
        let ratio = a.rate / b.rate;
        println!(
            "== S. Event throughput, {CLIENTS} clients: {la} waiting {:.0} req/s, {lb} waiting {:.0} req/s: {la} is {ratio:.2}x the {lb} figure (target: within {THROUGHPUT_FACTOR}x): {}",
            a.rate,
            b.rate,
            target_met(ratio <= THROUGHPUT_FACTOR)
        );
        println!();
        row(
            rows,
            format!("storage: event throughput, {la} -> {lb} waiting, {CLIENTS} clients"),
            format!("{:.0} -> {:.0} req/s ({ratio:.2}x)", a.rate, b.rate),
            format!("within {THROUGHPUT_FACTOR}x"),
            target_met(ratio <= THROUGHPUT_FACTOR),
        );
    }
}

/// A consistent backup through `GET /v1/backup` into `dest`, and its b-trees.
fn backup(runtime: &Runtime, api: &Api, dest: &Path) -> Result<(u64, BtreeStats, f64), String> {
    let t0 = Instant::now();
    let size = runtime.block_on(api.download("/v1/backup", dest))?;
    let took = t0.elapsed().as_secs_f64();
    let stats = BtreeStats::read(dest)?;
    Ok((size, stats, took))
}

fn storage_scale(
    settings: &Settings,
    runtime: &Runtime,
    receiver: &Receiver,
    n: u64,
    rows: &mut Vec<Row>,
    problems: &mut Vec<String>,
) -> Option<StorageResult> {
    let label = thousands(n as f64);
    println!(
        "== S. Storage per forwarded event, with {label} instances waiting in another journey (hold, max_hold 7d)"
    );
    let (db, server, api) = start_phase(settings, &format!("storage-{n}.db"));
    runtime.block_on(async {
        api.put("/v1/destinations/bench-sink", sink(receiver, None))
            .await;
        api.put("/v1/journeys/bench-forward", forward_journey())
            .await;
        api.put("/v1/journeys/bench-wait", wait_journey()).await;
    });

    // Fill ------------------------------------------------------------------------------------
    println!(
        "  -- filling: POST /v1/batch, {FILL_CLIENTS} clients x {FILL_BATCH} entry events of the waiting journey (distinct userIds)"
    );
    let fill = fill_waiting(runtime, &server, n);
    print_work(&fill, "entries");
    if let Err(e) = check_waiting(runtime, &api, n) {
        problems.push(format!("storage: after filling {n}: {e}"));
    }

    // The starting point: the WAL checkpointed, a backup --------------------------------------
    let settle = Duration::from_secs(120);
    match wait_checkpointed(&db, settle) {
        Some(t) => println!("  WAL checkpointed {:.1} s after the fill", t.as_secs_f64()),
        None => println!("  (the WAL was not fully checkpointed within 120 s of the fill)"),
    }
    let before_path = settings.dir.join(format!("storage-{n}-before.db"));
    let before = match backup(runtime, &api, &before_path) {
        Ok(b) => b,
        Err(e) => {
            problems.push(format!("storage at {label}: backup before the window: {e}"));
            stop_checked(server, &format!("storage {label}"), problems);
            remove_db(settings, &db);
            return None;
        }
    };
    println!(
        "  backup before the window (GET /v1/backup, taken in {:.1} s): {:.1} MB, {:.1} MB in use",
        before.2,
        before.0 as f64 / 1e6,
        before.1.used_bytes() as f64 / 1e6
    );
    // Whatever the backup left (the health write, a checkpoint) settles before the window.
    wait_checkpointed(&db, settle);
    std::thread::sleep(Duration::from_millis(1500));
    wait_checkpointed(&db, settle);

    // The window -------------------------------------------------------------------------------
    let secs = settings.storage_secs;
    let tag = format!("st{n}");
    println!(
        "  -- window: {CLIENTS} clients of single POST /v1/track (one forwarded event each, {} users) for {secs:.0} s; then until the receiver has every delivery, no delivery is pending in the database (outcomes recorded) and the WAL is checkpointed",
        settings.users
    );
    let users = settings.users;
    let make: MakeBody = {
        let tag = tag.clone();
        Arc::new(move |_, _, rng, out| {
            let mut p = String::with_capacity(200);
            forward_props(&mut p, &tag, None, rng);
            let user = format!("fwd-{:06}", rng.below(users));
            write_journey_event(out, "Bench_Forward", &user, &iso_now(), &p);
        })
    };
    let delivered_before = receiver.count_tag(&tag);
    let window = Window::open(runtime, &api, server.pid());
    let io_at_start = proc_io(&server.pid().to_string());
    let wal = WalFrames::start(&db);
    let profile = Profile::start(server.pid(), &format!("storage-{n}"));
    let load = runtime.block_on(http_load(
        &server.addr,
        "/v1/track",
        CLIENTS,
        Duration::from_secs_f64(secs),
        1,
        make,
    ));
    profile.stop();
    let io_at_load_end = proc_io(&server.pid().to_string());
    let acked = load.ok_messages();
    let delivered_at_load_end = receiver.count_tag(&tag) - delivered_before;
    let t0 = Instant::now();
    let all_delivered = runtime.block_on(receiver.wait(
        delivered_before + acked,
        Duration::from_secs(300),
        |r| r.count_tag(&tag),
    ));
    let delivered_after = t0.elapsed();
    let mut recorded = None;
    while t0.elapsed() < Duration::from_secs(300) {
        if pending_deliveries(&db) == Ok(0) {
            recorded = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let checkpointed = wait_checkpointed(&db, Duration::from_secs(120)).map(|_| t0.elapsed());
    let wal_count = wal.stop();
    let measured = window.close(runtime, &api);
    let delivered = receiver.count_tag(&tag) - delivered_before;

    let rate = load.ok_requests() as f64 / load.elapsed.as_secs_f64();
    print_load(&load, "events");
    println!(
        "  => {rate:.0} forwarded events/s acknowledged with {CLIENTS} clients; {} of their deliveries at the receiver when the load ended",
        thousands(delivered_at_load_end as f64)
    );
    let since = |d: Option<Duration>| {
        d.map(|d| format!("{:.2} s", d.as_secs_f64()))
            .unwrap_or_else(|| "NOT WITHIN THE TIMEOUT".into())
    };
    println!(
        "  after the load: every delivery at the receiver {}, none pending in the database {}, WAL checkpointed {} (window closed then)",
        since(all_delivered.then_some(delivered_after)),
        since(recorded),
        since(checkpointed)
    );
    if !all_delivered || recorded.is_none() {
        problems.push(format!(
            "storage at {label}: {delivered} of {acked} deliveries arrived; pending recorded: {recorded:?}"
        ));
    }
    measured.print_commits(load.elapsed.as_secs_f64(), 1.0);
    measured.print_cpu("CPU (the whole window, the drain included)");

    // Disk bytes written per event ---------------------------------------------------------------
    let (wchar, storage) = measured.written();
    let during_load = io_at_load_end.1.saturating_sub(io_at_start.1);
    let per_event = storage as f64 / acked.max(1) as f64;
    let wal_bytes = wal_count.bytes();
    let frames_per_event = wal_count.frames as f64 / acked.max(1) as f64;
    let commits = measured.commits();
    println!(
        "  -- disk bytes written (/proc/<pid>/io write_bytes, the window from the first request to the checkpoint after the drain): {} B for {} acknowledged events = {} B per forwarded event ({:.1} KB); {:.0}% of it while the load ran",
        thousands(storage as f64),
        thousands(acked as f64),
        thousands(per_event),
        per_event / 1024.0,
        during_load as f64 / storage.max(1) as f64 * 100.0
    );
    println!(
        "     through write calls (wchar, sockets included): {:.1} KB per event",
        wchar as f64 / acked.max(1) as f64 / 1024.0
    );
    println!(
        "     WAL: {} frames appended ({frames_per_event:.2} frames = {:.1} KB per event; {:.1} frames per commit over {commits:.0} commits), WAL started over {} times; the rest, {:.1} KB per event, is mostly checkpoints copying pages into the database file",
        thousands(wal_count.frames as f64),
        wal_bytes as f64 / acked.max(1) as f64 / 1024.0,
        wal_count.frames as f64 / commits.max(1.0),
        wal_count.restarts,
        (storage as f64 - wal_bytes as f64) / acked.max(1) as f64 / 1024.0
    );
    if storage == 0 {
        println!("     (write_bytes did not move: this kernel may not account I/O per task)");
    }
    let wal_note = format!("{frames_per_event:.1} WAL frames/event");
    row(
        rows,
        format!("storage, {label} waiting: disk bytes written per forwarded event"),
        format!(
            "{} B ({:.1} KB; {wal_note})",
            thousands(per_event),
            per_event / 1024.0
        ),
        "target 2 KB, floor 12 KB",
        verdict_lower(per_event, DISK_PER_EVENT_TARGET, DISK_PER_EVENT_FLOOR),
    );

    // Database bytes kept per event ---------------------------------------------------------------
    let after_path = settings.dir.join(format!("storage-{n}-after.db"));
    match backup(runtime, &api, &after_path) {
        Ok(after) => {
            let growth = after.0 as i64 - before.0 as i64;
            let used = after.1.used_bytes() as i64 - before.1.used_bytes() as i64;
            let kept = growth as f64 / acked.max(1) as f64;
            println!(
                "  -- database bytes kept: backup {:.1} MB -> {:.1} MB (+{} B; in use +{} B) for {} acknowledged events = {} B per forwarded event (in use: {} B)",
                before.0 as f64 / 1e6,
                after.0 as f64 / 1e6,
                thousands(growth as f64),
                thousands(used as f64),
                thousands(acked as f64),
                thousands(kept),
                thousands(used as f64 / acked.max(1) as f64)
            );
            stored_bodies(&after_path);
            print_btrees(&before.1, &after.1, acked, n);
            row(
                rows,
                format!("storage, {label} waiting: database bytes kept per forwarded event"),
                format!(
                    "{} B (backup growth; in use {} B)",
                    thousands(kept),
                    thousands(used as f64 / acked.max(1) as f64)
                ),
                "target 800 B, floor 1,500 B",
                verdict_lower(kept, KEPT_PER_EVENT_TARGET, KEPT_PER_EVENT_FLOOR),
            );
        }
        Err(e) => problems.push(format!("storage at {label}: backup after the window: {e}")),
    }
    row(
        rows,
        format!("storage, {label} waiting: forwarding, {CLIENTS} clients of single track"),
        format!(
            "{rate:.0} req/s, p50 {:.1} ms, p99 {:.1} ms",
            percentile(&load.latencies_us, 0.5),
            percentile(&load.latencies_us, 0.99)
        ),
        "see the ratio row",
        "reference",
    );
    if !settings.keep {
        let _ = std::fs::remove_file(&before_path);
        let _ = std::fs::remove_file(&after_path);
    }
    stop_checked(server, &format!("storage {label}"), problems);
    remove_db(settings, &db);
    println!();
    Some(StorageResult { n, rate })
}

/// The stored bodies of the forwarded events: how many, their average size as stored, and how
/// many are stored as blobs (compressed) rather than text.
fn stored_bodies(db: &Path) {
    let got = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| {
            c.query_row(
                "SELECT count(*), avg(length(CAST(body AS BLOB))), sum(typeof(body) = 'blob')
                 FROM events WHERE event = 'Bench_Forward'",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<f64>>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                    ))
                },
            )
        });
    if let Ok((count, Some(avg), blobs)) = got {
        let blobs = blobs.unwrap_or(0);
        println!(
            "     the {} forwarded events' bodies take {avg:.0} bytes each on average as stored ({})",
            thousands(count as f64),
            if blobs == 0 {
                "JSON text, the server's fields added".to_string()
            } else {
                format!("{} of them as blobs: compressed", thousands(blobs as f64))
            }
        );
    }
}

/// The b-trees of the backup after the window: entries, pages and bytes, and what each gained
/// per forwarded event since the backup before it.
fn print_btrees(before: &BtreeStats, after: &BtreeStats, events: u64, n: u64) {
    println!(
        "     b-trees of the backup after the window (dbstat; page size {} B; {} free pages), largest first, and their growth per forwarded event:",
        after.page_size,
        thousands(after.freelist as f64)
    );
    println!(
        "       {:<28} {:<16} {:>11} {:>9} {:>10} {:>9} | {:>9} {:>8} {:>9}",
        "table or index",
        "of table",
        "entries",
        "pages",
        "MB",
        "payload%",
        "+entries",
        "+pages",
        "+B/event"
    );
    let ev = events.max(1) as f64;
    let mut shown_growth = 0i64;
    for b in &after.btrees {
        let old = before.get(&b.name).cloned().unwrap_or_default();
        let d_bytes = b.bytes as i64 - old.bytes as i64;
        shown_growth += d_bytes;
        if b.bytes < 64 * 1024 && d_bytes == 0 {
            continue;
        }
        println!(
            "       {:<28} {:<16} {:>11} {:>9} {:>10.1} {:>8.0}% | {:>9} {:>8} {:>9.0}",
            b.name,
            if b.table == b.name { "" } else { &b.table },
            thousands(b.rows as f64),
            thousands(b.pages as f64),
            b.bytes as f64 / 1e6,
            b.payload as f64 / b.bytes.max(1) as f64 * 100.0,
            thousands(b.rows as f64 - old.rows as f64),
            thousands(b.pages as f64 - old.pages as f64),
            d_bytes as f64 / ev
        );
    }
    println!(
        "       (b-trees together +{:.0} B per event; the file {:.1} MB with {} waiting instances and {} forwarded events)",
        shown_growth as f64 / ev,
        (after.page_count * after.page_size) as f64 / 1e6,
        thousands(n as f64),
        thousands(ev)
    );
}
