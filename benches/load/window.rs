//! A measured window: what the server did while a phase's load ran. Its writer's group commits
//! (from `GET /metrics`), the bytes it wrote (from /proc/<pid>/io) and where the CPU went; the
//! lines every phase prints after its own figures.

use tokio::runtime::Runtime;

use crate::http::Api;
use crate::metrics::{Scrape, describe_commits};
use crate::report::print_cpu;
use crate::sys::{CpuWindow, describe_io, proc_io};

pub struct Window {
    pid: u32,
    before: Option<Scrape>,
    io: (u64, u64),
    cpu: CpuWindow,
}

impl Window {
    /// Scrapes the metrics, reads the server's writes so far, and starts counting CPU (in that
    /// order, so the CPU count starts last).
    pub fn open(runtime: &Runtime, api: &Api, pid: u32) -> Window {
        let before = runtime.block_on(api.scrape());
        let io = proc_io(&pid.to_string());
        let cpu = CpuWindow::start(pid);
        Window {
            pid,
            before,
            io,
            cpu,
        }
    }

    /// The server's CPU use so far, in percent of one core.
    pub fn server_cpu(&self) -> f64 {
        self.cpu.server_total()
    }

    /// The scrape taken when the window opened.
    pub fn before(&self) -> Option<&Scrape> {
        self.before.as_ref()
    }

    /// Stops counting CPU, reads the server's writes and scrapes the metrics again (in that
    /// order, so the CPU count ends first).
    pub fn close(self, runtime: &Runtime, api: &Api) -> Measured {
        let cpu = self.cpu.report();
        let io_after = proc_io(&self.pid.to_string());
        let after = runtime.block_on(api.scrape());
        Measured {
            before: self.before,
            after,
            io: (self.io, io_after),
            cpu,
        }
    }
}

/// What a [`Window`] saw.
pub struct Measured {
    pub before: Option<Scrape>,
    pub after: Option<Scrape>,
    io: ((u64, u64), (u64, u64)),
    cpu: Vec<String>,
}

impl Measured {
    /// `  group commit: ...` over `secs`, for requests of `events_per_job` events each.
    pub fn print_commits(&self, secs: f64, events_per_job: f64) {
        println!(
            "  group commit: {}",
            describe_commits(
                self.before.as_ref().and_then(Scrape::writer),
                self.after.as_ref().and_then(Scrape::writer),
                secs,
                events_per_job
            )
        );
    }

    /// The writer's commits in the window (NaN without both scrapes).
    pub fn commits(&self) -> f64 {
        match (&self.before, &self.after) {
            (Some(b), Some(a)) => {
                a.get("journeyd_writer_commits_total") - b.get("journeyd_writer_commits_total")
            }
            _ => f64::NAN,
        }
    }

    /// What the server wrote in the window, from /proc/<pid>/io: (bytes passed to write calls,
    /// bytes it caused to be sent to storage).
    pub fn written(&self) -> (u64, u64) {
        (
            self.io.1.0.saturating_sub(self.io.0.0),
            self.io.1.1.saturating_sub(self.io.0.1),
        )
    }

    /// `  <label>: ...`: the bytes the server wrote over `secs`, per `rows` rows.
    pub fn print_io(&self, label: &str, secs: f64, rows: u64) {
        println!(
            "  {label}: {}",
            describe_io(self.io.0, self.io.1, secs, rows)
        );
    }

    /// The CPU lines under `heading`.
    pub fn print_cpu(&self, heading: &str) {
        print_cpu(heading, &self.cpu);
    }

    /// Group commits, the server's writes and CPU, as most phases print them.
    pub fn print(&self, secs: f64, events_per_job: f64, rows: u64) {
        self.print_commits(secs, events_per_job);
        self.print_io("server wrote", secs, rows);
        self.print_cpu("CPU");
    }
}
