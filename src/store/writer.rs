//! The single writer: one thread that owns the write connection and applies queued work in
//! group commits.
//!
//! Callers queue a closure with [`Writer::submit`]. The thread takes the first queued job, then
//! everything else already waiting (up to `max_batch`), and runs them all in one
//! `BEGIN IMMEDIATE` transaction, each (when there are several) inside its own savepoint so that
//! one failing job rolls back alone. Only after `COMMIT` returns are the callers answered: a reply means durable. One fsync
//! thus covers every request that arrived while the previous commit was in progress, which is what
//! lets durable ingest keep up with many concurrent clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::journeys::Live;
use super::{Result, StoreError, StoreOptions};
use crate::clock::Clock;
use crate::metrics::METRICS;

/// Why a submitted job did not run.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full: the caller should tell its client to retry later.
    #[error("write queue is full")]
    QueueFull,
    /// The writer has stopped (shutdown in progress).
    #[error("writer has stopped")]
    Closed,
    /// The job ran and failed, or its transaction did not commit.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a job sees while it runs: the open transaction and the writer's own state.
pub struct WriteCtx<'a> {
    pub(super) conn: &'a Connection,
    pub(super) state: &'a mut WriterState,
    /// The time this transaction started; one value for every job in it.
    pub now: i64,
}

impl WriteCtx<'_> {
    pub fn conn(&self) -> &Connection {
        self.conn
    }

    /// The next number of the commit-order sequence shared by events and journey transitions.
    pub fn next_seq(&mut self) -> i64 {
        self.state.last_seq += 1;
        self.state.last_seq
    }
}

/// State that lives with the write connection for the life of the process.
pub struct WriterState {
    pub(super) last_seq: i64,
    /// The journeys the engine runs, and the instance id sequence.
    pub(super) live: Live,
}

impl WriterState {
    /// Reads the state back from the database: at start, and after a failed commit.
    pub(super) fn load(conn: &Connection, live: Live) -> Result<WriterState> {
        let last_seq = conn.query_row(
            "SELECT max((SELECT coalesce(max(seq), 0) FROM events), (SELECT coalesce(max(seq), 0) FROM transitions))",
            [],
            |r| r.get(0),
        )?;
        let live = live.reload(conn)?;
        Ok(WriterState { last_seq, live })
    }
}

trait Job: Send {
    /// Runs the job inside the batch transaction; returns whether it succeeded.
    fn run(&mut self, ctx: &mut WriteCtx) -> bool;
    /// Records that the job's work was rolled back after it ran (its stats could not be written).
    fn fail(&mut self, error: StoreError);
    /// Answers the caller once the batch's fate is known.
    fn finish(self: Box<Self>, commit: std::result::Result<(), &StoreError>);
}

struct Call<F, T> {
    f: Option<F>,
    out: Option<Result<T>>,
    reply: oneshot::Sender<std::result::Result<T, SubmitError>>,
}

impl<F, T> Job for Call<F, T>
where
    F: FnOnce(&mut WriteCtx) -> Result<T> + Send,
    T: Send,
{
    fn run(&mut self, ctx: &mut WriteCtx) -> bool {
        let f = self.f.take().expect("job runs once");
        let out = f(ctx);
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn fail(&mut self, error: StoreError) {
        self.out = Some(Err(error));
    }

    fn finish(self: Box<Self>, commit: std::result::Result<(), &StoreError>) {
        let answer = match (commit, self.out) {
            (Ok(()), Some(out)) => out.map_err(SubmitError::from),
            (Err(e), _) => Err(SubmitError::Store(StoreError::Schema(format!(
                "commit failed: {e}"
            )))),
            (Ok(()), None) => Err(SubmitError::Closed),
        };
        // The caller may have gone away (client disconnected); the work is committed regardless.
        let _ = self.reply.send(answer);
    }
}

/// Work that must run outside any transaction (a WAL checkpoint), between two batches.
type RawWork = Box<dyn FnOnce(&mut Connection) + Send>;

enum Msg {
    Job(Box<dyn Job>),
    Raw(RawWork),
    Stop,
}

/// Counters the writer keeps for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub commits: AtomicU64,
    pub jobs: AtomicU64,
}

/// The handle to the writer thread.
pub struct Writer {
    queue: mpsc::Sender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<WriterStats>,
}

impl Writer {
    pub(super) fn start(
        conn: Connection,
        clock: Arc<dyn Clock>,
        options: &StoreOptions,
        live: Live,
    ) -> Result<Writer> {
        let state = WriterState::load(&conn, live)?;
        let (queue, rx) = mpsc::channel(options.queue_capacity);
        let stats = Arc::new(WriterStats::default());
        let max_batch = options.max_batch;
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("journeyd-writer".into())
            .spawn(move || run(conn, state, rx, clock, max_batch, &thread_stats))?;
        Ok(Writer {
            queue,
            thread: Mutex::new(Some(thread)),
            stats,
        })
    }

    /// Queues `f` and waits until the transaction it ran in has committed. Fails at once with
    /// [`SubmitError::QueueFull`] when the queue is full, so that callers can shed load instead of
    /// piling up.
    pub async fn submit<T, F>(&self, f: F) -> std::result::Result<T, SubmitError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Call {
            f: Some(f),
            out: None,
            reply,
        });
        self.queue.try_send(Msg::Job(job)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SubmitError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => SubmitError::Closed,
        })?;
        answer.await.map_err(|_| SubmitError::Closed)?
    }

    /// Like [`Writer::submit`], but waits for room in the queue instead of failing: for internal
    /// work (timers, deliveries, admin calls) that must not be dropped.
    pub async fn submit_wait<T, F>(&self, f: F) -> std::result::Result<T, SubmitError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Call {
            f: Some(f),
            out: None,
            reply,
        });
        self.queue
            .send(Msg::Job(job))
            .await
            .map_err(|_| SubmitError::Closed)?;
        answer.await.map_err(|_| SubmitError::Closed)?
    }

    /// Runs `f` on the write connection between two transactions, and returns its result.
    pub async fn with_connection<T, F>(&self, f: F) -> std::result::Result<T, SubmitError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> T + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let raw = Box::new(move |conn: &mut Connection| {
            let _ = reply.send(f(conn));
        });
        self.queue
            .send(Msg::Raw(raw))
            .await
            .map_err(|_| SubmitError::Closed)?;
        answer.await.map_err(|_| SubmitError::Closed)
    }

    /// Jobs waiting in the queue right now.
    pub fn depth(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Lets the writer commit everything queued before this call, then stops it and waits.
    pub async fn shutdown(&self) {
        let _ = self.queue.send(Msg::Stop).await;
        let thread = self.thread.lock().await.take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// How long the writer waits for more jobs before committing, when it is busy.
const LINGER: std::time::Duration = std::time::Duration::from_micros(500);

fn run(
    mut conn: Connection,
    mut state: WriterState,
    mut rx: mpsc::Receiver<Msg>,
    clock: Arc<dyn Clock>,
    max_batch: usize,
    stats: &WriterStats,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(max_batch);
    let mut stopping = false;
    // Raw work taken from the queue while a batch was being gathered runs after that batch.
    let mut raw: Option<RawWork> = None;
    let mut last_commit = std::time::Instant::now();
    let mut last_batch = 0;
    while !stopping {
        match rx.blocking_recv() {
            Some(Msg::Job(job)) => batch.push(job),
            Some(Msg::Raw(f)) => raw = Some(f),
            Some(Msg::Stop) | None => break,
        }
        // Busy with several clients (the previous commit held more than one job and ended moments
        // ago): more jobs are on their way, and waiting a little for them lets one commit write
        // the pages every commit rewrites (table tails, stats rows) once for all of them. A lone
        // client sending one request after another never waits.
        let linger = last_batch > 1 && last_commit.elapsed() < LINGER;
        stopping = take_queued(&mut rx, &mut batch, &mut raw, max_batch);
        if linger && !stopping && raw.is_none() && batch.len() < max_batch {
            std::thread::sleep(LINGER);
            stopping = take_queued(&mut rx, &mut batch, &mut raw, max_batch);
        }
        if batch.is_empty() {
            if let Some(f) = raw.take() {
                f(&mut conn);
            }
            continue;
        }
        let outcome = commit_batch(&mut conn, &mut state, clock.now_ms(), &mut batch);
        last_commit = std::time::Instant::now();
        last_batch = batch.len();
        if let Err(e) = &outcome {
            tracing::error!(error = %e, jobs = batch.len(), "write transaction failed");
        }
        stats.commits.fetch_add(1, Ordering::Relaxed);
        stats.jobs.fetch_add(batch.len() as u64, Ordering::Relaxed);
        METRICS.commits.inc();
        METRICS.commit_batch.observe(batch.len() as f64);
        for job in batch.drain(..) {
            job.finish(outcome.as_ref().map(|_| ()));
        }
        if let Some(f) = raw.take() {
            f(&mut conn);
        }
    }
    // Refuse what is still queued rather than leave callers waiting forever.
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        if let Msg::Job(job) = msg {
            drop(job);
        }
    }
}

/// Runs one job, then writes the stats counters its transitions accumulated (once per job, at
/// its end). Returns whether both succeeded; when not, the caller rolls the job back and the job
/// answers with the error.
fn run_job(job: &mut dyn Job, ctx: &mut WriteCtx, conn: &Connection) -> bool {
    if !job.run(ctx) {
        ctx.state.live.discard_job_state();
        return false;
    }
    if let Err(e) = super::journeys::flush_stats(conn, &mut ctx.state.live) {
        ctx.state.live.discard_job_state();
        job.fail(e);
        return false;
    }
    true
}

/// Moves what is already queued into `batch`, up to `max_batch` jobs, stopping at raw work (it
/// runs after the batch). Returns whether a stop request was taken.
fn take_queued(
    rx: &mut mpsc::Receiver<Msg>,
    batch: &mut Vec<Box<dyn Job>>,
    raw: &mut Option<RawWork>,
    max_batch: usize,
) -> bool {
    while batch.len() < max_batch && raw.is_none() {
        match rx.try_recv() {
            Ok(Msg::Job(job)) => batch.push(job),
            Ok(Msg::Raw(f)) => *raw = Some(f),
            Ok(Msg::Stop) => return true,
            Err(_) => break,
        }
    }
    false
}

fn commit_batch(
    conn: &mut Connection,
    state: &mut WriterState,
    now: i64,
    batch: &mut [Box<dyn Job>],
) -> Result<()> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let [job] = batch {
        // A lone job needs no savepoint: the transaction is its unit of rollback. (A savepoint
        // is not free: SQLite copies each page the job first changes into a sub-journal.)
        let mut ctx = WriteCtx {
            conn: &tx,
            state,
            now,
        };
        if !run_job(job.as_mut(), &mut ctx, &tx) {
            // Dropping the transaction rolls it back: the failed job leaves no trace.
            return Ok(());
        }
    } else {
        for job in batch.iter_mut() {
            let sp = tx.savepoint()?;
            let mut ctx = WriteCtx {
                conn: &sp,
                state,
                now,
            };
            if run_job(job.as_mut(), &mut ctx, &sp) {
                sp.commit()?;
            } else {
                // Dropping an uncommitted savepoint rolls it back: the failed job leaves no trace.
                drop(sp);
            }
        }
    }
    let committed = tx.commit();
    if committed.is_ok() {
        state.live.after_commit();
    }
    if committed.is_err() {
        // The jobs' changes to the in-memory state were rolled back in the database but not in
        // memory: read it back.
        let live = std::mem::take(&mut state.live);
        match WriterState::load(conn, live) {
            Ok(fresh) => *state = fresh,
            Err(e) => tracing::error!(error = %e, "reloading writer state failed"),
        }
    }
    Ok(committed?)
}
