//! What /proc says about a process and the machine: CPU per thread, bytes written, RSS.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

fn clock_ticks() -> f64 {
    // CLK_TCK is 100 on every Linux configuration this runs on; `getconf` confirms when present.
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime+stime ticks of one /proc stat line, and its comm.
fn parse_stat(stat: &str) -> Option<(String, u64, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let utime = fields.get(11)?.parse().ok()?;
    let stime = fields.get(12)?.parse().ok()?;
    Some((comm, utime, stime))
}

/// CPU ticks per thread name of process `pid` (threads of one name summed).
fn thread_cpu(pid: u32) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(stat) = std::fs::read_to_string(task.path().join("stat"))
            && let Some((comm, u, s)) = parse_stat(&stat)
        {
            let e = out.entry(comm).or_default();
            e.0 += u;
            e.1 += s;
        }
    }
    out
}

fn self_cpu() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_stat(&s))
        .map(|(_, u, s)| u + s)
        .unwrap_or(0)
}

/// Bytes process `pid` ("self" for this one) passed to write calls (`wchar`) and caused to be
/// sent to storage (`write_bytes`), from /proc/<pid>/io.
pub fn proc_io(pid: &str) -> (u64, u64) {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let field = |name: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("wchar:"), field("write_bytes:"))
}

/// Describes the bytes written between two [`proc_io`] readings, per `rows` rows.
pub fn describe_io(before: (u64, u64), after: (u64, u64), secs: f64, rows: u64) -> String {
    let wchar = after.0.saturating_sub(before.0) as f64;
    let storage = after.1.saturating_sub(before.1) as f64;
    let rows = rows.max(1) as f64;
    format!(
        "{:.0} MB/s through write calls ({:.1} KB per event), {:.0} MB/s to storage ({:.1} KB per event)",
        wchar / secs / 1048576.0,
        wchar / rows / 1024.0,
        storage / secs / 1048576.0,
        storage / rows / 1024.0
    )
}

/// RssAnon of process `pid` in MB (heap, stacks: what the process allocated), NaN where /proc
/// does not say. VmRSS also counts the pages of the binary that are mapped in, which vary by a
/// megabyte or more with the page cache (a freshly copied binary maps more of itself).
pub fn anon_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// (VmRSS, VmHWM) of process `pid` in MB; NaN where /proc does not say.
pub fn rss_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Busy and steal ticks of the whole machine, from the `cpu` line of /proc/stat.
fn machine_cpu() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    (get(0) + get(1) + get(2) + get(5) + get(6), get(7))
}

/// CPU use of the server (per thread), of this process (the load generator) and of the whole
/// machine, from `start` on.
pub struct CpuWindow {
    pid: u32,
    server: BTreeMap<String, (u64, u64)>,
    client: u64,
    machine: (u64, u64),
    started: Instant,
}

impl CpuWindow {
    pub fn start(pid: u32) -> CpuWindow {
        CpuWindow {
            pid,
            server: thread_cpu(pid),
            client: self_cpu(),
            machine: machine_cpu(),
            started: Instant::now(),
        }
    }

    /// The server's CPU use since `start`, in percent of one core.
    pub fn server_total(&self) -> f64 {
        let wall = self.started.elapsed().as_secs_f64();
        let hz = clock_ticks();
        let mut total = 0u64;
        for (name, (u, s)) in thread_cpu(self.pid) {
            let (u0, s0) = self.server.get(&name).copied().unwrap_or((0, 0));
            total += (u + s).saturating_sub(u0 + s0);
        }
        total as f64 / hz / wall * 100.0
    }

    /// Lines describing CPU use since `start`, as a share of one core.
    pub fn report(&self) -> Vec<String> {
        let wall = self.started.elapsed().as_secs_f64();
        let hz = clock_ticks();
        let now = thread_cpu(self.pid);
        let mut lines = Vec::new();
        let mut total = 0.0;
        for (name, (u, s)) in &now {
            let (u0, s0) = self.server.get(name).copied().unwrap_or((0, 0));
            let user = (u - u0) as f64 / hz / wall * 100.0;
            let sys = (s - s0) as f64 / hz / wall * 100.0;
            total += user + sys;
            if user + sys >= 1.0 {
                lines.push(format!(
                    "    server {name:<18} {:>5.0}% of a core ({user:.0}% user, {sys:.0}% sys)",
                    user + sys
                ));
            }
        }
        lines.push(format!(
            "    server total              {total:>5.0}% of a core"
        ));
        let client = (self_cpu() - self.client) as f64 / hz / wall * 100.0;
        lines.push(format!(
            "    load generator (bench)    {client:>5.0}% of a core"
        ));
        let (busy, steal) = machine_cpu();
        let busy = (busy - self.machine.0) as f64 / hz / wall * 100.0;
        let steal = (steal - self.machine.1) as f64 / hz / wall * 100.0;
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        lines.push(format!(
            "    whole machine             {busy:>5.0}% of {cores} cores; other processes {:.0}%, hypervisor steal {steal:.0}%",
            (busy - total - client).max(0.0)
        ));
        lines
    }
}
