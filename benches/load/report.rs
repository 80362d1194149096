//! The report: summary rows and their verdicts, and the formatting the phases share.

use crate::bench_start;
use crate::loadgen::{LoadResult, Sent, WorkResult};

/// One line of the summary table (a section heading when it has no value and no goal).
pub struct Row {
    pub name: String,
    pub value: String,
    pub goal: String,
    pub verdict: String,
}

/// A section heading in the summary table.
pub fn section(rows: &mut Vec<Row>, name: &str) {
    rows.push(Row {
        name: name.into(),
        value: String::new(),
        goal: String::new(),
        verdict: String::new(),
    });
}

/// A figure in the summary table.
pub fn row(
    rows: &mut Vec<Row>,
    name: impl Into<String>,
    value: impl Into<String>,
    goal: impl Into<String>,
    verdict: impl Into<String>,
) {
    rows.push(Row {
        name: name.into(),
        value: value.into(),
        goal: goal.into(),
        verdict: verdict.into(),
    });
}

/// A verdict for figures where higher is better.
pub fn verdict(value: f64, target: f64, floor: f64) -> &'static str {
    if value >= target {
        "meets target"
    } else if value >= floor {
        "above floor, below target"
    } else {
        "BELOW FLOOR"
    }
}

/// A verdict for figures where lower is better.
pub fn verdict_lower(value: f64, target: f64, floor: f64) -> &'static str {
    if value <= target {
        "meets target"
    } else if value <= floor {
        "above floor, below target"
    } else {
        "BELOW FLOOR"
    }
}

/// A verdict for a target without a floor.
pub fn target_met(met: bool) -> &'static str {
    if met { "meets target" } else { "MISSES TARGET" }
}

/// `n` rounded, with thousands separators: 1,234,567.
pub fn thousands(n: f64) -> String {
    let n = n.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// The `p` quantile of sorted microseconds, in milliseconds (NaN when empty).
pub fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// What a timed closed loop ([`crate::loadgen::http_load`]) came to.
pub fn print_load(result: &LoadResult, unit: &str) {
    use std::sync::atomic::Ordering;
    let c = &result.counters;
    let secs = result.elapsed.as_secs_f64();
    println!(
        "  {} OK requests ({:.0} req/s), {} {unit} stored, in {:.2} s",
        result.ok_requests(),
        result.ok_requests() as f64 / secs,
        result.ok_messages(),
        secs
    );
    println!(
        "  latency of 200s: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&result.latencies_us, 0.50),
        percentile(&result.latencies_us, 0.90),
        percentile(&result.latencies_us, 0.99),
        percentile(&result.latencies_us, 1.0),
    );
    println!(
        "  request body {:.0} bytes on average",
        c.request_bytes.load(Ordering::Relaxed) as f64
            / c.requests.load(Ordering::Relaxed).max(1) as f64
    );
    let statuses: Vec<String> = result
        .statuses
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    println!("  statuses: {}", statuses.join(", "));
    let busy = result.busy();
    if busy > 0 {
        println!(
            "  503/429 (write queue full): {busy}, of which without Retry-After: {}",
            c.busy_without_retry_after.load(Ordering::Relaxed)
        );
    }
    let other = c.other_status.load(Ordering::Relaxed);
    let transport = c.transport_errors.load(Ordering::Relaxed);
    let rejected = c.rejected_messages.load(Ordering::Relaxed);
    if other + transport + rejected > 0 {
        println!(
            "  PROBLEMS: other statuses {other}, transport errors {transport}, rejected messages {rejected}"
        );
    }
    if let Some(e) = &result.sample_error {
        println!("  first problem seen: {e}");
    }
}

/// What a fixed amount of work ([`crate::loadgen::post_jobs`]) came to.
pub fn print_work(w: &WorkResult, unit: &str) {
    println!(
        "  {} {unit} in {} requests in {:.2} s: {:.0} {unit}/s; request latency p50 {:.1} ms, p99 {:.1} ms",
        thousands(w.ok_messages as f64),
        thousands(w.ok_requests as f64),
        w.elapsed.as_secs_f64(),
        w.rate(),
        percentile(&w.latencies_us, 0.5),
        percentile(&w.latencies_us, 0.99)
    );
    if w.busy + w.failed > 0 {
        println!(
            "  503/429 answers (retried): {}; messages lost to other errors: {}",
            w.busy, w.failed
        );
    }
    if let Some(e) = &w.first_error {
        println!("  first problem seen: {e}");
    }
}

/// The lines of [`crate::sys::CpuWindow::report`] under a heading.
pub fn print_cpu(heading: &str, lines: &[String]) {
    println!("  {heading}:");
    for l in lines {
        println!("{l}");
    }
}

/// The accepted requests of an open-loop run that took over 100 ms, grouped into bursts (a gap
/// of over 250 ms between their send times starts a new one): when each burst began (seconds
/// since the run's first request) and its slowest answer. Shows whether slow answers come from
/// the server stalling now and then.
pub fn slowest(sent: &[Sent]) -> String {
    let Some(first) = sent.iter().map(|s| s.at).min() else {
        return "-".into();
    };
    let mut slow: Vec<(f64, f64)> = sent
        .iter()
        .filter(|s| s.status == 200 && s.latency_us > 100_000)
        .map(|s| ((s.at - first).as_secs_f64(), s.latency_us as f64 / 1000.0))
        .collect();
    if slow.is_empty() {
        return "none over 100 ms".into();
    }
    slow.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut bursts: Vec<(f64, f64, f64, usize)> = Vec::new(); // start, last, max ms, count
    for (t, ms) in &slow {
        match bursts.last_mut() {
            Some(b) if t - b.1 <= 0.25 => {
                b.1 = *t;
                b.2 = b.2.max(*ms);
                b.3 += 1;
            }
            _ => bursts.push((*t, *t, *ms, 1)),
        }
    }
    format!(
        "{} over 100 ms, in {} bursts: {} (run started at bench clock {:.1} s)",
        slow.len(),
        bursts.len(),
        bursts
            .iter()
            .map(|b| format!("+{:.1} s (up to {:.0} ms)", b.0, b.2))
            .collect::<Vec<_>>()
            .join(", "),
        (first - bench_start()).as_secs_f64()
    )
}
