//! The `ingest` group, phases 1-4: the SQLite ceiling, durable ingest through `POST /v1/batch`
//! and single `POST /v1/track`, the server's memory, and the consistency check after SIGTERM.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::runtime::Runtime;

use crate::Settings;
use crate::ceiling::{ceiling, fsync_probe};
use crate::db::{file_mb, remove_db_files};
use crate::http::Api;
use crate::loadgen::{LoadResult, MakeBody, http_load};
use crate::messages::{iso_now, write_track};
use crate::report::{Row, percentile, print_load, row, verdict};
use crate::server::{Server, start_phase};
use crate::window::{Measured, Window};

// Targets from the issue.
const BATCH_TARGET: f64 = 50_000.0;
const BATCH_FLOOR: f64 = 15_000.0;
const TRACK_TARGET: f64 = 20_000.0;
const TRACK_FLOOR: f64 = 5_000.0;
const IDLE_RSS_TARGET_MB: f64 = 20.0;

/// Phases 1-4: the SQLite ceiling, batch and single ingest, memory, and the consistency check.
pub fn run(
    settings: &Settings,
    runtime: &Runtime,
    rows: &mut Vec<Row>,
    problems: &mut Vec<String>,
) {
    let ceiling_rate = sqlite_ceiling(settings, rows);

    // Server start and idle RSS ------------------------------------------------------------
    let (db, server, api) = start_phase(settings, "bench.db");
    std::thread::sleep(Duration::from_secs(1));
    let (idle_rss, _) = server.rss();
    let idle_anon = server.anon();
    println!(
        "== journeyd started on {} (pid {}); idle RSS after 1 s: {idle_rss:.1} MB",
        server.addr,
        server.pid()
    );
    println!();

    // Phase 2 ------------------------------------------------------------------------------
    println!(
        "== 2. Durable ingest: POST /v1/batch, {} keep-alive clients x {} track messages per request",
        settings.clients, settings.batch
    );
    let nonce = format!(
        "{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let batch_size = settings.batch;
    let users = settings.users;
    let batch_nonce = nonce.clone();
    let sequential_ids = settings.sequential_ids;
    let make_batch: MakeBody = Arc::new(move |task, n, rng, out| {
        let ts = iso_now();
        out.push_str(r#"{"batch":["#);
        let mut id = String::with_capacity(64);
        for i in 0..batch_size {
            if i > 0 {
                out.push(',');
            }
            id.clear();
            use std::fmt::Write as _;
            if sequential_ids {
                let _ = write!(id, "b-{batch_nonce}-{task:02}-{n:09}-{i:04}");
            } else {
                let _ = write!(id, "{}", uuid::Uuid::new_v4());
            }
            write_track(out, rng, users, &id, &ts, "");
        }
        let _ = std::fmt::Write::write_fmt(out, format_args!(r#"],"sentAt":"{ts}"}}"#));
    });
    let (batch, batch_window) = timed_load(
        settings,
        runtime,
        &server,
        &api,
        "/v1/batch",
        settings.clients,
        settings.batch as u64,
        make_batch,
    );
    let batch_rate = batch.ok_messages() as f64 / batch.elapsed.as_secs_f64();
    println!(
        "  => {batch_rate:.0} events/s = {:.1}% of the SQLite ceiling ({ceiling_rate:.0} rows/s); target {BATCH_TARGET:.0}, floor {BATCH_FLOOR:.0}: {}",
        batch_rate / ceiling_rate * 100.0,
        verdict(batch_rate, BATCH_TARGET, BATCH_FLOOR)
    );
    print_window(&batch_window, &batch, settings.batch as f64);
    load_rows(
        rows,
        format!(
            "POST /v1/batch, {} clients x {}",
            settings.clients, settings.batch
        ),
        format!(
            "{batch_rate:.0} events/s ({:.0}% of ceiling)",
            batch_rate / ceiling_rate * 100.0
        ),
        &batch,
        "batch",
        (batch_rate, BATCH_TARGET, BATCH_FLOOR),
    );
    println!();

    // Phase 3 ------------------------------------------------------------------------------
    println!(
        "== 3. Single POST /v1/track, {} concurrent keep-alive clients",
        settings.track_clients
    );
    let track_nonce = nonce.clone();
    let make_track: MakeBody = Arc::new(move |task, n, rng, out| {
        let ts = iso_now();
        let id = if sequential_ids {
            format!("t-{track_nonce}-{task:02}-{n:09}")
        } else {
            uuid::Uuid::new_v4().to_string()
        };
        write_track(out, rng, users, &id, &ts, "");
    });
    let (track, track_window) = timed_load(
        settings,
        runtime,
        &server,
        &api,
        "/v1/track",
        settings.track_clients,
        1,
        make_track,
    );
    let track_rate = track.ok_requests() as f64 / track.elapsed.as_secs_f64();
    println!(
        "  => {track_rate:.0} req/s; target {TRACK_TARGET:.0}, floor {TRACK_FLOOR:.0}: {}",
        verdict(track_rate, TRACK_TARGET, TRACK_FLOOR)
    );
    print_window(&track_window, &track, 1.0);
    load_rows(
        rows,
        format!("POST /v1/track, {} clients", settings.track_clients),
        format!("{track_rate:.0} req/s"),
        &track,
        "track",
        (track_rate, TRACK_TARGET, TRACK_FLOOR),
    );
    println!();

    // Phase 4 ------------------------------------------------------------------------------
    std::thread::sleep(Duration::from_secs(1));
    let (loaded_rss, peak_rss) = server.rss();
    let loaded_anon = server.anon();
    // Housekeeping gives freed memory back every 10 s (`memory.rs`): what stays after that is
    // what the server holds.
    std::thread::sleep(Duration::from_secs(10));
    let (settled_rss, _) = server.rss();
    let settled_anon = server.anon();
    let mb = |p: &Path| file_mb(p).unwrap_or(0.0);
    println!(
        "== Files after the load: database {:.1} MB, WAL {:.1} MB",
        mb(&db),
        mb(&settings.dir.join("bench.db-wal"))
    );
    println!();
    println!("== 4. Memory");
    println!("  idle RSS after start: {idle_rss:.1} MB (target under {IDLE_RSS_TARGET_MB:.0} MB)");
    println!(
        "  RSS after the load phases (1 s idle): {loaded_rss:.1} MB, peak (VmHWM) {peak_rss:.1} MB; 11 s idle: {settled_rss:.1} MB"
    );
    println!(
        "  of which anonymous (RssAnon: heap and stacks; the rest is mostly the binary's mapped pages, which vary with the page cache): idle {idle_anon:.1} MB, after the load {loaded_anon:.1} MB, 11 s later {settled_anon:.1} MB"
    );
    row(
        rows,
        "idle RSS after start",
        format!("{idle_rss:.1} MB"),
        format!("under {IDLE_RSS_TARGET_MB:.0} MB"),
        if idle_rss < IDLE_RSS_TARGET_MB {
            "meets target"
        } else {
            "ABOVE TARGET"
        },
    );
    row(
        rows,
        "RSS after load (peak), 11 s later",
        format!("{loaded_rss:.1} MB ({peak_rss:.1} MB), {settled_rss:.1} MB"),
        "-",
        "-",
    );
    row(
        rows,
        "RssAnon idle, after load, 11 s later",
        format!("{idle_anon:.1} MB, {loaded_anon:.1} MB, {settled_anon:.1} MB"),
        "-",
        "-",
    );
    println!();

    // Shutdown and consistency -------------------------------------------------------------
    let tail = server.stderr_tail.clone();
    let (code, took) = server.stop();
    println!(
        "== Shutdown: SIGTERM -> exit code {code:?} after {:.2} s",
        took.as_secs_f64()
    );
    let exit_ok = code == Some(0);
    if !exit_ok {
        println!(
            "  server stderr (last lines):\n{}",
            tail.lock().unwrap().join("\n")
        );
    }
    let acknowledged = batch.ok_messages() + track.ok_messages();
    let stored: i64 =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("SELECT count(*) FROM events", [], |r| r.get(0)))
            .unwrap_or(-1);
    let db_mb = file_mb(&db).unwrap_or(f64::NAN);
    println!(
        "  events in the database: {stored}; acknowledged with 200: {acknowledged} ({}); database {db_mb:.1} MB",
        if stored >= acknowledged as i64 {
            "none lost"
        } else {
            "ACKNOWLEDGED EVENTS MISSING"
        }
    );
    row(
        rows,
        "SIGTERM exit code",
        format!("{code:?}"),
        "Some(0)",
        if exit_ok { "ok" } else { "FAILED" },
    );
    if !exit_ok {
        problems.push(format!("ingest server exited with {code:?} on SIGTERM"));
    }
    if stored < acknowledged as i64 {
        problems.push(format!(
            "{stored} events stored, {acknowledged} acknowledged: acknowledged events missing"
        ));
    }
    println!();
}

/// Phase 1: the fsync probe, the ceiling at 100 rows per transaction and (unless
/// `JOURNEYD_BENCH_EXTRA=0`) the two analysis runs. Returns the ceiling in rows per second.
fn sqlite_ceiling(settings: &Settings, rows: &mut Vec<Row>) -> f64 {
    println!(
        "== 1. Machine ceiling: plain batched INSERTs, WAL + synchronous={}, 100 rows/transaction",
        settings.sync.to_ascii_uppercase()
    );
    let probe_db = settings.dir.join("probe.db");
    let probe = fsync_probe(
        &probe_db,
        Duration::from_secs_f64((settings.secs / 5.0).max(0.5)),
    );
    println!(
        "  one-row commit (fsync cost of this disk): p50 {:.2} ms, p99 {:.2} ms ({} commits)",
        percentile(&probe, 0.5),
        percentile(&probe, 0.99),
        probe.len()
    );
    let ceiling_db = settings.dir.join("ceiling.db");
    let c100 = ceiling(&ceiling_db, settings, settings.phase(), 100, false);
    let ceiling_rate = c100.rows_per_sec();
    println!(
        "  {} rows in {} commits in {:.2} s: {:.0} rows/s; commit of 100 rows p50 {:.2} ms, p99 {:.2} ms; body {:.0} bytes on average",
        c100.rows,
        c100.commits,
        c100.elapsed.as_secs_f64(),
        ceiling_rate,
        percentile(&c100.commit_times, 0.5),
        percentile(&c100.commit_times, 0.99),
        c100.body_bytes as f64 / c100.rows.max(1) as f64
    );
    println!("  written: {}", c100.io);
    row(
        rows,
        "SQLite ceiling, 100 rows/tx",
        format!("{ceiling_rate:.0} rows/s"),
        "-",
        "reference",
    );
    if settings.extra {
        let short = Duration::from_secs_f64((settings.secs / 2.0).max(1.0));
        let shaped = ceiling(&ceiling_db, settings, short, 100, true);
        println!(
            "  (analysis) same rows plus the product's per-message statements (identity select, \
             profile upsert, savepoint): {:.0} rows/s, commit p50 {:.2} ms",
            shaped.rows_per_sec(),
            percentile(&shaped.commit_times, 0.5)
        );
        let big = ceiling(&ceiling_db, settings, short, 800, false);
        println!(
            "  (analysis) plain inserts at 800 rows/transaction: {:.0} rows/s, commit p50 {:.2} ms",
            big.rows_per_sec(),
            percentile(&big.commit_times, 0.5)
        );
        println!("  (analysis) written at 800 rows/transaction: {}", big.io);
        row(
            rows,
            "SQLite, 100 rows/tx, product statements",
            format!("{:.0} rows/s", shaped.rows_per_sec()),
            "-",
            "analysis",
        );
        row(
            rows,
            "SQLite ceiling, 800 rows/tx",
            format!("{:.0} rows/s", big.rows_per_sec()),
            "-",
            "analysis",
        );
    }
    remove_db_files(&ceiling_db);
    remove_db_files(&probe_db);
    println!();
    ceiling_rate
}

/// `clients` clients POST to `path` for one phase length, in a measured window; prints the load
/// figures.
#[allow(clippy::too_many_arguments)]
fn timed_load(
    settings: &Settings,
    runtime: &Runtime,
    server: &Server,
    api: &Api,
    path: &str,
    clients: usize,
    messages_per_request: u64,
    make: MakeBody,
) -> (LoadResult, Measured) {
    let window = Window::open(runtime, api, server.pid());
    let load = runtime.block_on(http_load(
        &server.addr,
        path,
        clients,
        settings.phase(),
        messages_per_request,
        make,
    ));
    let measured = window.close(runtime, api);
    print_load(&load, "events");
    (load, measured)
}

/// The summary rows of phase 2 or 3 (`phase`): `value` with the load's latency, against the
/// target and floor of `(rate, target, floor)`; then the load's 503s.
fn load_rows(
    rows: &mut Vec<Row>,
    name: String,
    value: String,
    load: &LoadResult,
    phase: &str,
    (rate, target, floor): (f64, f64, f64),
) {
    row(
        rows,
        name,
        format!(
            "{value}, p50 {:.1} ms, p99 {:.1} ms",
            percentile(&load.latencies_us, 0.5),
            percentile(&load.latencies_us, 0.99)
        ),
        format!("target {target:.0}, floor {floor:.0}"),
        verdict(rate, target, floor),
    );
    row(
        rows,
        format!("  503 busy during {phase} phase"),
        load.busy().to_string(),
        "-",
        "-",
    );
}

/// The window's lines for phases 2 and 3.
fn print_window(m: &Measured, load: &LoadResult, events_per_job: f64) {
    let secs = load.elapsed.as_secs_f64();
    m.print_commits(secs, events_per_job);
    m.print_io("server wrote", secs, load.ok_messages());
    m.print_cpu("CPU during the phase");
}
