//! journeyd in the test process, on a [`ManualClock`]: the same `serve` the binary runs, on a
//! thread with a tokio runtime of its own, over HTTP on a loopback port, with a database in a temp
//! dir of its own. The scheduler's timers, the dispatcher's backoff and ingest's `receivedAt` all
//! read the manual clock, so a test moves time with [`Appliance::advance`] instead of waiting
//! for it. (HTTP timeouts, the writer's linger and the housekeeping cron jobs stay on real time.)
//!
//! It can be stopped gracefully and started again on the same database and the same clock.
//! `/metrics` counters are a process-wide static, shared by every appliance in the process:
//! tests of metrics use the subprocess [`Server`](super::Server), and so do tests of kill -9,
//! signals and the command line.
//!
//! The server's logs go to `server.log` in its directory (from the threads of its runtime), shown
//! when a test fails, and kept on disk in that case.

use std::fs;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use clap::Parser as _;
use journeyd::clock::{Clock, ManualClock};
use journeyd::config::{Cli, Command};

use serde_json::json;

use super::{
    Client, Options, Receiver, Reply, log_tail, put_destination, server::START_TIMEOUT, temp_dir,
    webhook,
};

/// Where every appliance's clock starts: 2030-01-01T00:00:00Z, far from the wall clock, so that
/// anything that reads the wall clock instead of the server's clock shows.
pub const START_MS: i64 = 1_893_456_000_000;

/// How long a graceful stop may take (in-flight requests and sends get a few seconds).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `serve`: how to stop it, and where its outcome arrives.
struct Running {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    done: mpsc::Receiver<anyhow::Result<()>>,
    thread: Option<JoinHandle<()>>,
}

pub struct Appliance {
    client: Client,
    clock: Arc<ManualClock>,
    dir: PathBuf,
    db: PathBuf,
    opts: Options,
    running: Option<Running>,
}

impl Deref for Appliance {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Appliance {
    pub fn start() -> Appliance {
        Appliance::start_with(Options::default())
    }

    /// An appliance with a receiver on its clock and a `crm` destination (a [`webhook`] with
    /// the defaults) pointing at the receiver's `/in`. The receiver comes second, so that a test
    /// that binds both as `let (app, rx)` drops it first.
    pub fn with_crm_receiver() -> (Appliance, Receiver) {
        let app = Appliance::start();
        let rx = app.receiver(Vec::new());
        put_destination(&app, "crm", &webhook(&rx.url("/in"), json!({})));
        (app, rx)
    }

    pub fn start_with(opts: Options) -> Appliance {
        assert!(
            opts.admin_token.is_some() && !opts.write_keys.is_empty(),
            "an appliance is started with a given admin token and write key"
        );
        let dir = temp_dir("app");
        let db = opts.db.clone().unwrap_or_else(|| dir.join("j.db"));
        let mut app = Appliance {
            client: Client::new(
                "127.0.0.1:0".parse().unwrap(),
                opts.admin_token.as_deref().unwrap(),
                &opts.write_keys[0],
            ),
            clock: Arc::new(ManualClock::new(START_MS)),
            dir,
            db,
            opts,
            running: None,
        };
        app.spawn();
        app
    }

    fn spawn(&mut self) {
        assert!(self.running.is_none(), "start while running");
        let mut argv = vec!["journeyd".to_string()];
        argv.extend(self.opts.serve_args(&self.db));
        let cli = Cli::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("journeyd {argv:?} does not parse: {e}"));
        let Command::Serve(args) = cli.command else {
            unreachable!("serve arguments parse to Command::Serve")
        };
        let (addr_tx, addr_rx) = mpsc::channel::<SocketAddr>();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = mpsc::channel();
        let clock: Arc<dyn Clock> = self.clock.clone();
        let log = self.log_dispatch();
        let thread = std::thread::Builder::new()
            .name("appliance".into())
            .spawn(move || {
                let _log = tracing::dispatcher::set_default(&log);
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .on_thread_start(move || {
                        // Each runtime thread logs to this appliance's file for as long as it lives.
                        std::mem::forget(tracing::dispatcher::set_default(&log));
                    })
                    .build()
                    .expect("a tokio runtime");
                let result = runtime.block_on(journeyd::server::serve(
                    args,
                    clock,
                    move |addr| {
                        let _ = addr_tx.send(addr);
                    },
                    async move {
                        // Dropping the sender (a test that panicked) stops it too.
                        let _ = stop.await;
                    },
                ));
                runtime.shutdown_timeout(Duration::from_secs(5));
                let _ = done_tx.send(result);
            })
            .expect("spawning the appliance thread");
        let mut running = Running {
            shutdown: Some(shutdown),
            done,
            thread: Some(thread),
        };
        let addr = match addr_rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                // Either serve failed (its error is on `done`) or it is stuck.
                let outcome = match running.done.recv_timeout(Duration::from_secs(1)) {
                    Ok(Err(e)) => format!("serve failed: {e:#}"),
                    Ok(Ok(())) => "serve returned before listening".to_string(),
                    Err(_) => format!("not listening within {START_TIMEOUT:?}"),
                };
                if let Some(t) = running.thread.take().filter(|t| t.is_finished()) {
                    let _ = t.join();
                }
                panic!("appliance {argv:?}: {outcome}\n{}", self.log_tail());
            }
        };
        self.client = Client::new(addr, self.client.admin_token(), self.client.write_key());
        self.running = Some(running);
    }

    /// A tracing dispatcher writing this appliance's logs to `server.log` (appending across
    /// restarts), at the binary's default level.
    fn log_dispatch(&self) -> tracing::Dispatch {
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,tokio_cron_scheduler=warn",
            ))
            .with_writer(Arc::new(file))
            .with_ansi(false)
            .finish();
        tracing::Dispatch::new(subscriber)
    }

    /// The database file.
    pub fn db_path(&self) -> &std::path::Path {
        &self.db
    }

    /// The server's time, unix ms.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Moves the server's clock forward; timers and retries that fall due wake up.
    pub fn advance(&self, ms: i64) {
        assert!(ms >= 0, "the clock does not go back");
        self.clock.advance(ms);
    }

    /// Sets the server's clock to `ms` (not earlier than now).
    pub fn set_time(&self, ms: i64) {
        assert!(
            ms >= self.now_ms(),
            "the clock does not go back: {ms} < {}",
            self.now_ms()
        );
        self.clock.set(ms);
    }

    /// A webhook receiver that stamps arrivals with this appliance's clock.
    pub fn receiver(&self, script: Vec<Reply>) -> Receiver {
        Receiver::start_on(self.clock.clone(), true, script)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail("appliance log", &self.log_path())
    }

    /// Stops the server gracefully, as SIGTERM does: in-flight requests finish, the delivery
    /// dispatcher finishes the sends it started (or leaves them pending), the writer commits what is
    /// queued. After this returns, nothing more arrives at any receiver.
    pub fn stop(&mut self) {
        let running = self.running.take().expect("the appliance is not running");
        if let Err(e) = Self::finish(running) {
            panic!("appliance stop: {e}\n{}", self.log_tail());
        }
    }

    /// Starts the server again on the same database, flags and clock.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// [`Appliance::stop`], then [`Appliance::start_again`].
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    fn finish(mut running: Running) -> Result<(), String> {
        drop(running.shutdown.take());
        let result = match running.done.recv_timeout(STOP_TIMEOUT) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("serve failed: {e:#}")),
            // Leave the thread be: joining a stuck server would hang the test.
            Err(_) => return Err(format!("did not stop within {STOP_TIMEOUT:?}")),
        };
        if let Some(t) = running.thread.take() {
            let _ = t.join();
        }
        result
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        let stopped = self.running.take().map(Self::finish);
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
            eprintln!("appliance dir kept: {}", self.dir.display());
        } else if let Some(Err(e)) = stopped {
            panic!("appliance stop: {e}\n{}", self.log_tail());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
