//! The server under test: the release `journeyd` binary as a child process on a loopback port.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http::Api;
use crate::{Settings, bench_clock};

pub const ADMIN_TOKEN: &str = "bench-admin-token";
pub const WRITE_KEY: &str = "bench-write-key";

pub struct Server {
    child: Child,
    pub addr: String,
    pub stderr_tail: Arc<Mutex<Vec<String>>>,
    /// Just before the process was spawned.
    pub spawned: Instant,
    /// When its `listening on` line was read.
    pub listening: Instant,
}

impl Server {
    pub fn start(db: &Path, sync: &str) -> Server {
        let spawned = Instant::now();
        let mut child = Command::new(binary())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-token",
                ADMIN_TOKEN,
                "--write-key",
                WRITE_KEY,
                "--sync",
                sync,
            ])
            .arg("--db")
            .arg(db)
            // JOURNEYD_BENCH_SERVER_ARGS: extra `serve` flags (whitespace-separated) for analysis
            // runs. Values with spaces (cron schedules) go through the server's own environment
            // variables instead (JOURNEYD_CHECKPOINT_SCHEDULE=...), which the child inherits.
            .args(
                std::env::var("JOURNEYD_BENCH_SERVER_ARGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .env(
                "RUST_LOG",
                std::env::var("JOURNEYD_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting journeyd");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let tail = stderr_tail.clone();
        let pid = child.id();
        std::thread::spawn(move || {
            // JOURNEYD_BENCH_STDERR=<file>: every line of the server's log, stamped with the
            // seconds since the bench started (to line log events up with the bench's output).
            let mut copy = std::env::var_os("JOURNEYD_BENCH_STDERR").and_then(|p| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .ok()
            });
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = copy.as_mut() {
                    use std::io::Write as _;
                    let _ = writeln!(f, "{:10.3} [{pid}] {line}", bench_clock().as_secs_f64());
                }
                let mut tail = tail.lock().unwrap();
                if tail.len() >= 200 {
                    tail.remove(0);
                }
                tail.push(line);
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send((addr.trim().to_string(), Instant::now()));
                }
            }
        });
        let (addr, listening) = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(got) => got,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "journeyd did not print its `listening on` line; stderr:\n{}",
                    stderr_tail.lock().unwrap().join("\n")
                );
            }
        };
        Server {
            child,
            addr,
            stderr_tail,
            spawned,
            listening,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// RssAnon in MB (see [`crate::sys::anon_mb`]).
    pub fn anon(&self) -> f64 {
        crate::sys::anon_mb(self.pid())
    }

    /// (VmRSS, VmHWM) in MB.
    pub fn rss(&self) -> (f64, f64) {
        crate::sys::rss_mb(self.pid())
    }

    /// SIGTERM, then waits up to 30 s; returns the exit code and how long the exit took.
    pub fn stop(mut self) -> (Option<i32>, Duration) {
        let t0 = Instant::now();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), t0.elapsed());
            }
            if t0.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return (None, t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A phase's server: started on a fresh database `file` in the bench directory, with the bench's
/// `--sync`; (the database's path, the server, an admin client for it).
pub fn start_phase(settings: &Settings, file: &str) -> (PathBuf, Server, Api) {
    let db = settings.dir.join(file);
    let server = Server::start(&db, &settings.sync);
    let api = Api::new(&server.addr);
    (db, server, api)
}

/// Starts the server again on `db` and times it: (server, spawn to `listening on`, spawn to the
/// first 200 from `/healthz`).
pub fn restart(
    runtime: &tokio::runtime::Runtime,
    db: &Path,
    sync: &str,
) -> (Server, Duration, Duration) {
    let server = Server::start(db, sync);
    let listen = server.listening - server.spawned;
    let api = Api::new(&server.addr);
    let healthy = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if api.healthz().await {
                return Instant::now();
            }
            if Instant::now() > deadline {
                panic!("no 200 from /healthz within 120 s of the restart");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let health = healthy - server.spawned;
    (server, listen, health)
}

/// Stops a server with SIGTERM and records a problem unless it exits 0.
pub fn stop_checked(server: Server, what: &str, problems: &mut Vec<String>) -> Duration {
    let tail = server.stderr_tail.clone();
    let (code, took) = server.stop();
    if code != Some(0) {
        println!(
            "  SIGTERM: exit code {code:?}; server stderr (last lines):\n{}",
            tail.lock().unwrap().join("\n")
        );
        problems.push(format!("{what}: server exited with {code:?} on SIGTERM"));
    }
    took
}

/// The server binary: this build's, or another build's given in `JOURNEYD_BENCH_BIN` (to compare
/// two builds with the same load generator, on the same machine at the same time).
pub fn binary() -> PathBuf {
    std::env::var_os("JOURNEYD_BENCH_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_journeyd").into())
}
