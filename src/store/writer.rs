//! The single writer: one thread that owns the write connection and applies queued work in
//! group commits.
//!
//! Callers queue a closure with [`Writer::submit`]. The thread takes the first queued job, then
//! everything else already waiting (up to `max_batch`), and runs them all in one
//! `BEGIN IMMEDIATE` transaction, each (when there are several) inside its own savepoint so that
//! one failing job rolls back alone. Only after `COMMIT` returns are the callers answered: a reply means durable. One fsync
//! thus covers every request that arrived while the previous commit was in progress, which is what
//! lets durable ingest keep up with many concurrent clients.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::catalog::LiveCatalog;
use super::{Result, StoreError, StoreOptions, Unavailable, Wake};
use crate::clock::Clock;
use crate::engine::stats::StatKey;
use crate::metrics::METRICS;

/// What a job sees while it runs: the open transaction and the writer's own state.
pub(super) struct WriteCtx<'a> {
    pub(super) conn: &'a Connection,
    /// The time this transaction started; one value for every job in it.
    pub(super) now: i64,
    pub(super) state: &'a mut WriterState,
    /// What the job's work asks of the writer beyond its SQL.
    pub(super) effects: &'a mut Effects,
    /// Whether anyone listens to committed changes: only then are they built for publishing.
    pub(super) streaming: bool,
    waiting: Waiting<'a>,
}

/// What tells a job whether other work waits for its transaction.
#[derive(Clone, Copy)]
struct Waiting<'a> {
    /// The job is alone in the transaction, and no raw work was taken with it.
    alone: bool,
    queue: &'a mpsc::Receiver<Msg>,
}

impl WriteCtx<'_> {
    /// Whether other work waits for this transaction to commit: jobs batched with this one, or
    /// queued since it began. Long work (a backlog of timers) commits early when someone waits,
    /// and may go on while nobody does.
    pub(super) fn others_waiting(&self) -> bool {
        !self.waiting.alone || !self.waiting.queue.is_empty()
    }

    /// The next number of the commit-order sequence shared by events and journey transitions.
    pub(super) fn next_seq(&mut self) -> i64 {
        self.state.last_seq += 1;
        self.state.last_seq
    }
}

/// State that lives with the write connection for the life of the process, read back from the
/// database at start and after a failed commit.
pub(super) struct WriterState {
    pub(super) last_seq: i64,
    pub(super) last_instance_id: i64,
    /// The journeys the engine runs.
    pub(super) catalog: LiveCatalog,
    /// Most active journey instances per profile (SPEC §4).
    pub(super) max_active: usize,
    /// The frequency caps of the destinations that have one (SPEC §3.5).
    pub(super) caps: std::collections::HashMap<String, crate::delivery::Cap>,
    /// The message ids seen lately.
    pub(super) dedup: super::dedup::Dedup,
}

impl WriterState {
    fn load(conn: &Connection, options: &StoreOptions) -> Result<WriterState> {
        let mut dedup = super::dedup::Dedup::load(conn, options.dedup_run_ids)?;
        dedup.reload_recent(conn)?;
        Ok(WriterState {
            last_seq: last_seq(conn)?.max(dedup.flushed_seq()),
            last_instance_id: last_instance_id(conn)?,
            catalog: LiveCatalog::load(conn)?,
            max_active: options.max_active,
            caps: super::destinations::caps(conn)?,
            dedup,
        })
    }

    /// Reads the state back from the database, after work it had followed was rolled back. The
    /// runs of message ids change only in transactions of their own: only the ids in memory are
    /// read again. Each part is read even when another fails.
    fn reload(&mut self, conn: &Connection) -> Result<()> {
        let dedup = self.dedup.reload_recent(conn);
        let seq = last_seq(conn).map(|seq| self.last_seq = seq.max(self.dedup.flushed_seq()));
        let instance = last_instance_id(conn).map(|id| self.last_instance_id = id);
        let catalog = LiveCatalog::load(conn).map(|c| self.catalog = c);
        let caps = super::destinations::caps(conn).map(|c| self.caps = c);
        dedup.and(seq).and(instance).and(catalog).and(caps)
    }
}

fn last_seq(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT max((SELECT coalesce(max(seq), 0) FROM events), (SELECT coalesce(max(seq), 0) FROM transitions),
                    (SELECT coalesce(max(seq), 0) FROM merges),
                    (SELECT coalesce(max(log_seq), 0) FROM (SELECT log_seq FROM instances ORDER BY instance_id DESC LIMIT 1)))",
        [],
        |r| r.get(0),
    )?)
}

fn last_instance_id(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT coalesce(max(instance_id), 0) FROM instances",
        [],
        |r| r.get(0),
    )?)
}

/// What a job's work asks of the writer beyond its SQL: stats counters to add at the job's end
/// (once per counter, however many transitions moved it), and whom to wake once the transaction
/// has committed. A job that fails leaves none of it behind.
#[derive(Debug, Default)]
pub(super) struct Effects {
    pub(super) stats: HashMap<StatKey, i64>,
    /// Deliveries were written or made due again: wake the dispatcher.
    pub(super) deliveries: bool,
    /// The destinations table changed: the dispatcher reads it again.
    pub(super) destinations: bool,
    /// Pending deliveries were deleted (a person forgotten): the dispatcher forgets the rows it
    /// read ahead.
    pub(super) removed: bool,
    /// The earliest timer written: wake the scheduler if it sleeps past it.
    pub(super) earliest_due: Option<i64>,
    /// A scheduler tick read the next due timer: what the scheduler will sleep until.
    pub(super) next_due: Option<Option<i64>>,
    /// Changes to publish to listeners once committed.
    pub(super) published: Vec<super::StreamEvent>,
}

impl Effects {
    pub(super) fn timer(&mut self, due: i64) {
        self.earliest_due = Some(self.earliest_due.map_or(due, |d| d.min(due)));
    }

    /// Takes over the wake-ups of a job that succeeded (its stats are already written).
    fn absorb(&mut self, job: &mut Effects) {
        self.deliveries |= job.deliveries;
        self.destinations |= job.destinations;
        self.removed |= job.removed;
        if let Some(due) = job.earliest_due {
            self.timer(due);
        }
        if job.next_due.is_some() {
            self.next_due = job.next_due;
        }
        self.published.append(&mut job.published);
        *job = Effects::default();
    }

    /// After a commit: wakes whoever the transaction's work concerns.
    fn wake(self, wake: &Wake) {
        if let Some(next) = self.next_due {
            wake.target
                .store(next.unwrap_or(i64::MAX), Ordering::Release);
        }
        if let Some(due) = self.earliest_due
            && due < wake.target.load(Ordering::Acquire)
        {
            wake.target.store(due, Ordering::Release);
            wake.timers.notify_one();
        }
        if self.destinations {
            wake.destinations.fetch_add(1, Ordering::Release);
        }
        if self.removed {
            wake.removed.fetch_add(1, Ordering::Release);
        }
        if self.deliveries || self.destinations {
            wake.deliveries.notify_one();
        }
        for event in self.published {
            wake.events.send(event);
        }
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
    reply: oneshot::Sender<Result<T>>,
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
            (Ok(()), Some(out)) => out,
            (Err(e), _) => Err(e.for_each_job()),
            (Ok(()), None) => Err(StoreError::Unavailable(Unavailable::Stopped)),
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

/// The handle to the writer thread.
pub(crate) struct Writer {
    queue: mpsc::Sender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    health: Arc<Health>,
}

/// How the writer's commits have been going, for `/healthz`.
#[derive(Debug)]
struct Health {
    started: std::time::Instant,
    /// When the latest commit succeeded, in milliseconds since `started`; -1 before the first.
    last_ok_ms: std::sync::atomic::AtomicI64,
    /// Whether the latest commit failed.
    failing: std::sync::atomic::AtomicBool,
}

impl Health {
    fn record(&self, ok: bool) {
        if ok {
            let ms = self.started.elapsed().as_millis() as i64;
            self.last_ok_ms.store(ms, Ordering::Release);
        }
        self.failing.store(!ok, Ordering::Release);
    }
}

/// A writer whose thread is reading its state (the catalog, the message ids of the last day):
/// the caller may do other reads meanwhile, then [`Starting::ready`] waits for it.
pub(super) struct Starting {
    writer: Writer,
    loaded: std::sync::mpsc::Receiver<Result<()>>,
}

impl Starting {
    /// The writer, once its thread has read its state; or why it could not (the thread has
    /// ended then).
    pub(super) fn ready(self) -> Result<Writer> {
        self.loaded
            .recv()
            .expect("the writer thread panicked while reading its state")?;
        Ok(self.writer)
    }
}

impl Writer {
    /// Starts the writer's thread, which first reads its state from `conn`.
    pub(super) fn start(
        conn: Connection,
        clock: Arc<dyn Clock>,
        options: &StoreOptions,
        wake: Arc<Wake>,
    ) -> Result<Starting> {
        let (loaded, loaded_rx) = std::sync::mpsc::sync_channel(1);
        let load_options = options.clone();
        let (queue, rx) = mpsc::channel(options.queue_capacity);
        let max_batch = options.max_batch;
        let health = Arc::new(Health {
            started: std::time::Instant::now(),
            last_ok_ms: std::sync::atomic::AtomicI64::new(-1),
            failing: std::sync::atomic::AtomicBool::new(false),
        });
        let thread_health = health.clone();
        let thread = std::thread::Builder::new()
            .name("journeyd-writer".into())
            .spawn(move || {
                let state = match WriterState::load(&conn, &load_options) {
                    Ok(state) => state,
                    Err(e) => {
                        let _ = loaded.send(Err(e));
                        return;
                    }
                };
                let _ = loaded.send(Ok(()));
                run(conn, state, rx, clock, max_batch, &wake, &thread_health)
            })?;
        Ok(Starting {
            writer: Writer {
                queue,
                thread: Mutex::new(Some(thread)),
                health,
            },
            loaded: loaded_rx,
        })
    }

    /// Queues `f` and waits until the transaction it ran in has committed. Fails at once with
    /// [`Unavailable::QueueFull`] when the queue is full, so that callers can shed load instead
    /// of piling up.
    pub(super) async fn submit<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx) -> Result<T> + Send + 'static,
    {
        self.queue_job(f, false).await
    }

    /// Like [`Writer::submit`], but waits for room in the queue instead of failing: for internal
    /// work (timers, deliveries, admin calls) that must not be dropped.
    pub(super) async fn submit_wait<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx) -> Result<T> + Send + 'static,
    {
        self.queue_job(f, true).await
    }

    async fn queue_job<T, F>(&self, f: F, wait_for_room: bool) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteCtx) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Msg::Job(Box::new(Call {
            f: Some(f),
            out: None,
            reply,
        }));
        if wait_for_room {
            self.queue.send(job).await.map_err(|_| stopped())?;
        } else {
            self.queue.try_send(job).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    StoreError::Unavailable(Unavailable::QueueFull)
                }
                mpsc::error::TrySendError::Closed(_) => stopped(),
            })?;
        }
        answer.await.map_err(|_| stopped())?
    }

    /// Runs `f` on the write connection between two transactions, and returns its result.
    pub(super) async fn with_connection<T, F>(&self, f: F) -> Result<T>
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
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())
    }

    /// Whether the latest commit succeeded, less than `within` ago.
    pub(super) fn committed_within(&self, within: std::time::Duration) -> bool {
        let last = self.health.last_ok_ms.load(Ordering::Acquire);
        let now = self.health.started.elapsed().as_millis() as i64;
        !self.health.failing.load(Ordering::Acquire)
            && last >= 0
            && now - last < within.as_millis() as i64
    }

    /// Jobs waiting in the queue right now.
    pub(crate) fn depth(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Lets the writer commit everything queued before this call, then stops it and waits.
    pub(crate) async fn shutdown(&self) {
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
    wake: &Wake,
    health: &Health,
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
        let streaming = wake.events.listened();
        // Raw work taken while gathering waits for this batch too.
        let waiting = Waiting {
            alone: batch.len() == 1 && raw.is_none(),
            queue: &rx,
        };
        let now = clock.now_ms();
        let outcome = commit_batch(&mut conn, &mut state, now, streaming, waiting, &mut batch);
        if outcome.is_err() {
            // The jobs' changes to the in-memory state were rolled back in the database but not
            // in memory: read it back.
            reload(&conn, &mut state);
        }
        last_commit = std::time::Instant::now();
        last_batch = batch.len();
        let outcome_ok = outcome.is_ok();
        health.record(outcome_ok);
        let committed = match outcome {
            Ok(effects) => {
                effects.wake(wake);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = batch.len(), "write transaction failed");
                Err(e)
            }
        };
        METRICS.commits.inc();
        METRICS.commit_batch.observe(batch.len() as f64);
        for job in batch.drain(..) {
            job.finish(committed.as_ref().map(|_| ()));
        }
        if outcome_ok && state.dedup.wants_flush() {
            flush_dedup(&mut conn, &mut state, clock.now_ms());
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

fn stopped() -> StoreError {
    StoreError::Unavailable(Unavailable::Stopped)
}

/// Runs one job, then writes the stats counters its transitions moved (once per job, at its
/// end). Returns whether both succeeded; when not, the caller rolls the job back and the job
/// answers with the error.
fn run_job(job: &mut dyn Job, ctx: &mut WriteCtx) -> bool {
    let ok = job.run(ctx) && {
        match super::stats::add(ctx.conn, std::mem::take(&mut ctx.effects.stats)) {
            Ok(()) => true,
            Err(e) => {
                job.fail(e);
                false
            }
        }
    };
    if !ok {
        *ctx.effects = Effects::default();
    }
    ctx.state.dedup.end_job(ok);
    ok
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

/// Runs a batch of jobs in one transaction; returns the wake-ups of the jobs that succeeded,
/// once the transaction has committed.
fn commit_batch(
    conn: &mut Connection,
    state: &mut WriterState,
    now: i64,
    streaming: bool,
    waiting: Waiting,
    batch: &mut [Box<dyn Job>],
) -> Result<Effects> {
    let mut done = Effects::default();
    let mut job_effects = Effects::default();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let [job] = batch {
        // A lone job needs no savepoint: the transaction is its unit of rollback. (A savepoint
        // is not free: SQLite copies each page the job first changes into a sub-journal.)
        let mut ctx = WriteCtx {
            conn: &tx,
            now,
            state,
            effects: &mut job_effects,
            streaming,
            waiting,
        };
        if !run_job(job.as_mut(), &mut ctx) {
            // Dropping the transaction rolls it back: the failed job leaves no trace. (Jobs that
            // change the catalog do so after all their SQL, and write no stats, so a failed job
            // has not changed it.)
            return Ok(done);
        }
        done.absorb(&mut job_effects);
    } else {
        let mut tx = tx;
        for job in batch.iter_mut() {
            let sp = tx.savepoint()?;
            let mut ctx = WriteCtx {
                conn: &sp,
                now,
                state,
                effects: &mut job_effects,
                streaming,
                waiting,
            };
            if run_job(job.as_mut(), &mut ctx) {
                sp.commit()?;
                done.absorb(&mut job_effects);
            } else {
                // Dropping an uncommitted savepoint rolls it back: the failed job leaves no trace.
                drop(sp);
            }
        }
        tx.commit()?;
        return Ok(done);
    }
    tx.commit()?;
    Ok(done)
}

/// Writes the message ids in memory as a run, in a transaction of its own between two batches,
/// and deletes the runs past the window. On failure they stay in memory, and a later batch tries
/// again.
fn flush_dedup(conn: &mut Connection, state: &mut WriterState, now: i64) {
    let started = std::time::Instant::now();
    let flushed = (|| -> Result<super::dedup::Flush> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut flush = state.dedup.flush(&tx, state.last_seq)?;
        flush.expired = state.dedup.expire(&tx, now)?.filters;
        tx.commit()?;
        Ok(flush)
    })();
    match flushed {
        Ok(flush) => {
            tracing::debug!(
                ids = flush.ids(),
                took_ms = started.elapsed().as_millis() as u64,
                "message ids written as a run"
            );
            state.dedup.flushed(flush);
        }
        Err(e) => {
            state.dedup.flush_failed();
            tracing::warn!(error = %e, "writing message ids failed; they stay in memory");
        }
    }
}

/// Reads the writer's state back from the database, after work it had followed was rolled back.
fn reload(conn: &Connection, state: &mut WriterState) {
    if let Err(e) = state.reload(conn) {
        tracing::error!(error = %e, "reloading writer state failed");
    }
}

impl StoreError {
    /// The answer each job of a batch gets when its transaction failed to commit.
    fn for_each_job(&self) -> StoreError {
        match self {
            StoreError::Unavailable(u) => StoreError::Unavailable(u.clone()),
            other => StoreError::CommitFailed(other.to_string()),
        }
    }
}
