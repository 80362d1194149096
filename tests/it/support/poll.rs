//! The one way a test waits for something: [`eventually`].

use std::fmt::Display;
use std::time::{Duration, Instant};

/// The usual bound on a wait. A bound only: it decides when a test gives up, never whether it
/// passes, so it is generous (a debug build on a loaded two-core machine can be slow).
pub const WAIT: Duration = Duration::from_secs(15);

/// Calls `probe` until it gives `Ok`, and returns that. Between calls it backs off from 1 ms to
/// 10 ms (probes are cheap: loopback HTTP, a lock). Once `timeout` has passed it fails the test with `what` and the last `Err` the probe
/// gave, which should say what it saw.
pub fn eventually<T, E: Display>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, E>,
) -> T {
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) => {
                if started.elapsed() >= timeout {
                    panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
                }
            }
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}
