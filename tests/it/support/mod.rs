//! Everything the black-box tests share, by job:
//!
//! - [`http`]: the [`Client`] every test talks through (ingest and admin helpers), [`Resp`],
//!   auth headers and encodings.
//! - [`appliance`]: journeyd in the test process on a manual clock ([`Appliance`]), for
//!   everything about time: timers, holds, delays, retry backoff, restarts that need no kill -9.
//! - [`server`]: the real binary as a child process ([`Server`], [`run_cli`]), for kill -9,
//!   signals, the command line, metrics and the wall-clock housekeeping jobs.
//! - [`receiver`]: a scripted webhook receiver, and the webhook signature checks.
//! - [`journeys`]: admin helpers for destinations, journeys, instances and deliveries, and the
//!   journey documents several files use.
//! - [`load`]: a bounded write load for the crash, backup and signal tests.
//! - [`poll`]: [`eventually`], the one way to wait for something.
//! - [`time`]: timestamps in the stored form (chrono).
//!
//! Plus, here: unique names, temp dirs, directory listings, log tails, and [`check_all`] for case tables.

pub mod appliance;
pub mod http;
pub mod journeys;
pub mod load;
pub mod poll;
pub mod receiver;
pub mod server;
pub mod time;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use appliance::Appliance;
pub use http::*;
pub use journeys::*;
pub use poll::{WAIT, eventually};
pub use receiver::{Received, Receiver, Reply, check_webhook};
pub use server::{Options, Server, describe, run_cli};
pub use time::*;

/// The admin token and write key that tests start servers with, unless a test wants generated ones.
pub const ADMIN_TOKEN: &str = "it-admin-token";
pub const WRITE_KEY: &str = "it-write-key";

/// A unique name, also across test threads and concurrent test processes: pid, counter and clock.
pub fn uid(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{n}-{nanos:x}", std::process::id())
}

/// A fresh directory under the system temp dir; removed by its owner.
pub fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(uid(&format!("journeyd-it-{prefix}")));
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The names of the entries of a directory, in no particular order.
pub fn file_names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The last 40 lines of a log file, headed with what and where it is, for failure messages.
pub fn log_tail(what: &str, path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(40)..];
    format!(
        "--- {what} {} (last {} lines) ---\n{}",
        path.display(),
        tail.len(),
        tail.join("\n")
    )
}

/// Runs every case through `check`, going on past a failing case so that one run shows every failure; each
/// failure's own message is printed as it happens, and the test then fails naming the failed cases.
pub fn check_all<T>(
    cases: impl IntoIterator<Item = T>,
    name: impl Fn(&T) -> String,
    mut check: impl FnMut(&T),
) {
    let mut failed = Vec::new();
    for case in cases {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&case))).is_err() {
            failed.push(name(&case));
        }
    }
    assert!(
        failed.is_empty(),
        "{} case(s) failed, see the panics above: {failed:#?}",
        failed.len()
    );
}
