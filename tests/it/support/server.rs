//! The real `journeyd` binary as a child process: [`Server`] for `journeyd serve` on a loopback
//! port in a temp dir of its own, and [`run_cli`] for the other commands. Used where the process
//! itself is under test: kill -9, SIGTERM, the command line, metrics (a process-wide static),
//! housekeeping on the wall clock.
//!
//! The server announces its port with a `listening on 127.0.0.1:PORT` line on stdout; a thread reads stdout
//! until that line, hands every line to the test through a channel, and keeps draining afterwards so that
//! the pipe never fills. Stderr (the logs) goes to `server.log` in the server's directory, which is printed
//! when a test fails while the server is alive, and kept on disk in that case.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{ADMIN_TOKEN, Client, WRITE_KEY, eventually, log_tail, temp_dir};

/// How long a server may take to print its `listening on` line, and a CLI command to finish.
/// Generous because a debug build on a loaded two-core machine can be slow to open a fresh database.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_journeyd")
}

/// How to start a server. `Default` is the usual: fixed admin token and write key, a fresh db.
#[derive(Clone)]
pub struct Options {
    /// `None` starts without `--admin-token`, so the server generates one on first start.
    pub admin_token: Option<String>,
    /// Empty starts without `--write-key`, so the server generates one on first start.
    pub write_keys: Vec<String>,
    /// `None`: `j.db` in the server's own temp dir.
    pub db: Option<PathBuf>,
    /// More arguments for `journeyd serve` (`--max-active-per-profile 2`, say).
    pub extra_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            admin_token: Some(ADMIN_TOKEN.to_string()),
            write_keys: vec![WRITE_KEY.to_string()],
            db: None,
            extra_args: Vec::new(),
        }
    }
}

impl Options {
    /// The default options plus these arguments for `journeyd serve`.
    pub fn with_args(args: &[&str]) -> Options {
        Options {
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            ..Options::default()
        }
    }

    /// The default options plus a backup into `dir` every second (`--backup-schedule "* * * * * *"`),
    /// keeping the newest `keep`.
    pub fn scheduled_backups(dir: &Path, keep: usize) -> Options {
        Options::with_args(&[
            "--backup-dir",
            &dir.display().to_string(),
            "--backup-schedule",
            "* * * * * *",
            "--backup-keep",
            &keep.to_string(),
        ])
    }

    /// The arguments of `journeyd serve` for these options, on an ephemeral loopback port.
    pub fn serve_args(&self, db: &Path) -> Vec<String> {
        let mut args = vec![
            "serve".to_string(),
            "--listen".to_string(),
            "127.0.0.1:0".to_string(),
            "--db".to_string(),
            db.display().to_string(),
        ];
        if let Some(t) = &self.admin_token {
            args.extend(["--admin-token".to_string(), t.clone()]);
        }
        for k in &self.write_keys {
            args.extend(["--write-key".to_string(), k.clone()]);
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

pub struct Server {
    child: Option<Child>,
    client: Client,
    dir: PathBuf,
    db: PathBuf,
    opts: Options,
    /// The stdout lines printed before `listening on`, of the latest start.
    startup_lines: Vec<String>,
}

impl Deref for Server {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(Options::default())
    }

    /// Serves an existing database file (a backup, say) with the default admin token and write key.
    pub fn serve_db(db: &Path) -> Server {
        Server::start_with(Options {
            db: Some(db.to_path_buf()),
            ..Options::default()
        })
    }

    pub fn start_with(opts: Options) -> Server {
        let dir = temp_dir("srv");
        let db = opts.db.clone().unwrap_or_else(|| dir.join("j.db"));
        let mut srv = Server {
            child: None,
            client: Client::new(
                "127.0.0.1:0".parse().unwrap(),
                opts.admin_token.as_deref().unwrap_or_default(),
                opts.write_keys
                    .first()
                    .map(String::as_str)
                    .unwrap_or_default(),
            ),
            dir,
            db,
            opts,
            startup_lines: Vec::new(),
        };
        srv.spawn();
        srv
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "spawn while a child is running");
        let args = self.opts.serve_args(&self.db);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut child = Command::new(bin())
            .args(&args)
            .current_dir(&self.dir)
            // The server's own environment must not leak settings into the test.
            .env_remove("JOURNEYD_LISTEN")
            .env_remove("JOURNEYD_DB")
            .env_remove("JOURNEYD_ADMIN_TOKEN")
            .env_remove("JOURNEYD_WRITE_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin()));

        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            // Keeps reading until the child closes stdout, so the pipe never fills; the receiver may be
            // gone by then, which is fine.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        let mut lines = Vec::new();
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix("listening on ") {
                        let addr: SocketAddr = rest.trim().parse().unwrap_or_else(|e| {
                            panic!("bad `listening on` line {line:?}: {e}\n{}", self.log_tail())
                        });
                        break addr;
                    }
                    lines.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                        panic!(
                            "journeyd {args:?} exited with {status} before listening; stdout: {lines:?}\n{}",
                            self.log_tail()
                        );
                    }
                    if Instant::now() >= deadline {
                        panic!(
                            "journeyd {args:?} did not print `listening on` within {START_TIMEOUT:?}; stdout: {lines:?}\n{}",
                            self.log_tail()
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.as_mut().unwrap().wait().unwrap();
                    panic!(
                        "journeyd {args:?} closed stdout ({status}) before listening; stdout: {lines:?}\n{}",
                        self.log_tail()
                    );
                }
            }
        };
        let mut admin_token = self.client.admin_token().to_string();
        let mut write_key = self.client.write_key().to_string();
        for line in &lines {
            if let Some(t) = line.trim().strip_prefix("admin token: ") {
                admin_token = t.trim().to_string();
            }
            if let Some(k) = line.trim().strip_prefix("write key: ") {
                write_key = k.trim().to_string();
            }
        }
        // A fresh client: pooled connections to the previous process are dead.
        self.client = Client::new(addr, &admin_token, &write_key);
        self.startup_lines = lines;
    }

    pub fn db_path(&self) -> &Path {
        &self.db
    }

    pub fn startup_lines(&self) -> &[String] {
        &self.startup_lines
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The last lines of the server's stderr, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail("server log", &self.log_path())
    }

    /// SIGKILL, and reap the child.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the binary again on the same database with the same flags (killing it first if alive).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Changes the flags of the next `restart`.
    pub fn set_options(&mut self, opts: Options) {
        if let Some(t) = &opts.admin_token {
            self.client = Client::new(self.client.addr(), t, self.client.write_key());
        }
        self.opts = Options {
            db: Some(self.db.clone()),
            ..opts
        };
    }

    /// SIGTERM through `kill -TERM`, then waits (bounded) for the exit and returns its status.
    /// A graceful stop also finishes the sends in flight, so after it nothing more arrives.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.as_ref().expect("server is not running").id();
        let ok = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("cannot run kill");
        assert!(ok.success(), "kill -TERM {pid} failed");
        // On a timeout the child is still ours, so `Drop` kills it and shows the log.
        let status = eventually(
            "journeyd to exit after SIGTERM",
            EXIT_TIMEOUT,
            || match self.child.as_mut().unwrap().try_wait().unwrap() {
                Some(status) => Ok(status),
                None => Err("still running"),
            },
        );
        self.child = None;
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            // Keep the directory for a post-mortem and show where it is.
            eprintln!("{}", self.log_tail());
            eprintln!("server dir kept: {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A child process that is killed if the test gives up on it.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs the binary with these arguments to completion (bounded), capturing its output. The working
/// directory is a fresh temp dir, so that a default `./journeyd.db` never lands in the source tree.
pub fn run_cli(args: &[&str]) -> Output {
    let cwd = temp_dir("cli");
    let out = run_cli_in(&cwd, args);
    let _ = fs::remove_dir_all(&cwd);
    out
}

pub fn run_cli_in(cwd: &Path, args: &[&str]) -> Output {
    run_cli_env(cwd, args, &[])
}

/// [`run_cli_in`] with these environment variables set (`JOURNEYD_URL`, `JOURNEYD_ADMIN_TOKEN`
/// for the operator commands); the other `JOURNEYD_*` settings of the test's own environment
/// are removed all the same.
pub fn run_cli_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = Reaped(
        Command::new(bin())
            .args(args)
            .current_dir(cwd)
            .env_remove("JOURNEYD_LISTEN")
            .env_remove("JOURNEYD_DB")
            .env_remove("JOURNEYD_ADMIN_TOKEN")
            .env_remove("JOURNEYD_WRITE_KEY")
            .env_remove("JOURNEYD_URL")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin())),
    );
    // Drain both pipes on threads so that a chatty child cannot block on a full pipe.
    let mut out = child.0.stdout.take().unwrap();
    let mut err = child.0.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = eventually(&format!("journeyd {args:?} to exit"), EXIT_TIMEOUT, || {
        child.0.try_wait().unwrap().ok_or("still running")
    });
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

pub fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
