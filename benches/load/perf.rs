//! `perf record` of the server during measured windows (`JOURNEYD_BENCH_PERF=<dir>`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `perf record` of one process while a measured window lasts, when `JOURNEYD_BENCH_PERF` names
/// a directory: `<dir>/<name>.data`, with DWARF call graphs (the release build has no frame
/// pointers), at 499 Hz (`JOURNEYD_BENCH_PERF_HZ` sets another rate). Read it with
/// `perf report -i <file> --no-children`.
pub struct Profile(Option<(Child, PathBuf)>);

impl Profile {
    pub fn start(pid: u32, name: &str) -> Profile {
        let Some(dir) = std::env::var_os("JOURNEYD_BENCH_PERF").map(PathBuf::from) else {
            return Profile(None);
        };
        let _ = std::fs::create_dir_all(&dir);
        let out = dir.join(format!("{name}.data"));
        let hz = std::env::var("JOURNEYD_BENCH_PERF_HZ").unwrap_or_else(|_| "499".into());
        let child = Command::new("perf")
            .args(["record", "-F", &hz, "--call-graph", "dwarf,16384", "-p"])
            .arg(pid.to_string())
            .arg("-o")
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(c) => {
                // perf needs a moment to attach.
                std::thread::sleep(Duration::from_millis(300));
                Profile(Some((c, out)))
            }
            Err(e) => {
                println!("  (perf record failed to start: {e})");
                Profile(None)
            }
        }
    }

    /// No profile (for windows too long to record).
    pub fn none() -> Profile {
        Profile(None)
    }

    pub fn stop(self) {
        if let Some((mut child, out)) = self.0 {
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
            println!("  (perf profile: {})", out.display());
        }
    }
}
