//! messageId deduplication (SPEC §1: a `messageId` seen in the last 24 hours is acknowledged and
//! not processed again), without an index by messageId.
//!
//! Message ids are random, so an index by them dirtied a page at a random place for every event
//! (issue 15: a fifth of the bytes written per event, and more as the database grew). Instead the
//! ids are kept as sorted runs, each written once, in order:
//!
//! - the ids of the events committed since the last flush are in memory (`recent`); nothing is
//!   written for them beyond the event row, which carries its id, so after a restart or a failed
//!   commit they are read back from `events` above the flushed sequence number;
//! - every [`RUN_IDS`] ids, one transaction writes them sorted into `dedup_ids` under a new run
//!   number (appended pages, each written once) and records the run in `dedup_runs`;
//! - each run has an xor filter in memory (about 18 bits an id, false positives about 1 in
//!   65,536), so a new id costs filter lookups and no read; an id a filter may hold is looked up
//!   in that run. The filters of a block of [`BLOCK_RUNS`] runs are combined into one once the
//!   block is complete, so the filters a message meets grow with a day's volume over about a
//!   million;
//! - a run whose newest id is older than the window (and an hour) is deleted whole when a run is
//!   written and by the retention purge.
//!
//! The filters are built again from `dedup_ids` when the store opens.

use std::collections::HashMap;
use std::hash::BuildHasher;

use rusqlite::{Connection, OptionalExtension, params};
use xorf::{BinaryFuse16, Filter};

use super::Result;
use crate::ingest::DEDUP_WINDOW_MS;

/// Ids held in memory before they are written as a run.
pub(super) const RUN_IDS: usize = 65_536;
/// Runs whose filters are combined into one, once all of them are written.
const BLOCK_RUNS: i64 = 16;
/// How long past the window a run is kept: a message may have waited in the writer's queue, and
/// the clock may step.
const EXPIRY_MARGIN_MS: i64 = 60 * 60 * 1000;

/// The writer's deduplication state.
pub(super) struct Dedup {
    hasher: std::hash::RandomState,
    /// The ids of events committed after `flushed_seq`, and of the current transaction's jobs so
    /// far, with their `received_at`.
    recent: HashMap<Box<str>, i64>,
    /// What the running job changed in `recent`, with the value each id had before: undone when
    /// the job rolls back.
    undo: Vec<(Box<str>, Option<i64>)>,
    /// Every event up to this sequence number, received within the window, is in a run.
    flushed_seq: i64,
    next_run: i64,
    /// How many ids in memory are written as a run ([`RUN_IDS`] but in tests).
    run_ids: usize,
    /// After a run failed to be written, how many ids in memory wait for the next try.
    retry_at: usize,
    /// Oldest first.
    filters: Vec<RunFilter>,
}

/// The filter of one run, or of a complete block of runs.
struct RunFilter {
    first_run: i64,
    last_run: i64,
    /// The newest `received_at` among its ids: past the window, the runs are deleted.
    newest_at: i64,
    /// `None` when the filter could not be built: every id may be there.
    filter: Option<BinaryFuse16>,
    /// A single run's id hashes, kept until its block is combined (empty for a block's filter).
    hashes: Vec<u64>,
}

impl RunFilter {
    fn new(first_run: i64, last_run: i64, newest_at: i64, mut hashes: Vec<u64>) -> RunFilter {
        hashes.sort_unstable();
        hashes.dedup();
        let filter = BinaryFuse16::try_from(&hashes).ok();
        if filter.is_none() {
            tracing::warn!(
                first_run,
                last_run,
                ids = hashes.len(),
                "messageId filter could not be built: the run is searched for every message"
            );
        }
        if first_run != last_run {
            hashes = Vec::new();
        }
        RunFilter {
            first_run,
            last_run,
            newest_at,
            filter,
            hashes,
        }
    }

    fn may_hold(&self, hash: u64) -> bool {
        self.filter.as_ref().is_none_or(|f| f.contains(&hash))
    }
}

/// Runs deleted in a transaction not yet committed.
#[derive(Debug, Default)]
pub(super) struct Expired {
    /// How many ids went.
    pub(super) ids: usize,
    /// The first runs of the filters to drop once committed.
    pub(super) filters: Vec<i64>,
}

/// A run written in a transaction not yet committed: what [`Dedup::flushed`] takes in then.
pub(super) struct Flush {
    run: i64,
    newest_at: i64,
    last_seq: i64,
    hashes: Vec<u64>,
    /// Filters of the runs deleted in the same transaction.
    pub(super) expired: Vec<i64>,
}

impl Flush {
    /// How many ids the run holds.
    pub(super) fn ids(&self) -> usize {
        self.hashes.len()
    }
}

impl Dedup {
    /// Reads the runs and builds their filters; [`Dedup::reload_recent`] then reads the ids
    /// above the flushed sequence number.
    pub(super) fn load(conn: &Connection, run_ids: usize) -> Result<Dedup> {
        let (flushed_seq, last_run): (i64, i64) = conn.query_row(
            "SELECT coalesce(max(last_seq), 0), coalesce(max(run), 0) FROM dedup_runs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut dedup = Dedup {
            hasher: std::hash::RandomState::new(),
            recent: HashMap::new(),
            undo: Vec::new(),
            flushed_seq,
            next_run: last_run + 1,
            run_ids: run_ids.max(1),
            retry_at: 0,
            filters: Vec::new(),
        };
        // The last block is complete once a run after it has been written.
        let open_block = block_of(last_run + 1);
        let mut runs = conn.prepare("SELECT run, newest_at FROM dedup_runs ORDER BY run")?;
        let newest: HashMap<i64, i64> = runs
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut ids = conn.prepare("SELECT run, message_id FROM dedup_ids ORDER BY run")?;
        let mut rows = ids.query([])?;
        // (first run, last run, hashes) of the filter being gathered.
        let mut current: Option<(i64, i64, Vec<u64>)> = None;
        while let Some(row) = rows.next()? {
            let run: i64 = row.get(0)?;
            let hash = dedup.hasher.hash_one(row.get::<_, String>(1)?);
            let first = if block_of(run) < open_block {
                block_of(run) * BLOCK_RUNS
            } else {
                run
            };
            match &mut current {
                Some((f, last, hashes)) if *f == first => {
                    *last = run;
                    hashes.push(hash);
                }
                _ => {
                    if let Some((f, last, hashes)) = current.take() {
                        dedup.push_filter(f, last, &newest, hashes);
                    }
                    current = Some((first, run, vec![hash]));
                }
            }
        }
        if let Some((f, last, hashes)) = current.take() {
            dedup.push_filter(f, last, &newest, hashes);
        }
        Ok(dedup)
    }

    fn push_filter(&mut self, first: i64, last: i64, newest: &HashMap<i64, i64>, hashes: Vec<u64>) {
        let newest_at = (first..=last)
            .filter_map(|run| newest.get(&run))
            .copied()
            .max()
            .unwrap_or(i64::MIN);
        self.filters
            .push(RunFilter::new(first, last, newest_at, hashes));
    }

    /// Reads the ids above the flushed sequence number from `events` again: after a failed
    /// commit, whose jobs' ids are in memory but not in the database. On failure, what was in
    /// memory stays (it holds every stored id, and maybe some that were rolled back).
    pub(super) fn reload_recent(&mut self, conn: &Connection) -> Result<()> {
        let mut recent = HashMap::new();
        let mut stmt = conn.prepare("SELECT message_id, received_at FROM events WHERE seq > ?1")?;
        let mut rows = stmt.query([self.flushed_seq])?;
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let at: i64 = row.get(1)?;
            let entry = recent.entry(id.into_boxed_str()).or_insert(at);
            *entry = (*entry).max(at);
        }
        self.recent = recent;
        self.undo.clear();
        Ok(())
    }

    /// The flushed sequence number: the writer's sequence must not hand out numbers at or below
    /// it again, or the ids of those events would not be read back.
    pub(super) fn flushed_seq(&self) -> i64 {
        self.flushed_seq
    }

    /// Whether `message_id` was stored by a message received less than the window before `now`.
    pub(super) fn seen(&self, conn: &Connection, message_id: &str, now: i64) -> Result<bool> {
        let since = now - DEDUP_WINDOW_MS;
        if self.recent.get(message_id).is_some_and(|&at| at > since) {
            return Ok(true);
        }
        let mut probe = conn.prepare_cached(
            "SELECT received_at FROM dedup_ids WHERE run = ?1 AND message_id = ?2",
        )?;
        for run in self.runs_that_may_hold(message_id, since) {
            let at: Option<i64> = probe
                .query_row(params![run, message_id], |r| r.get(0))
                .optional()?;
            if at.is_some_and(|at| at > since) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The runs, newest first, whose filter may hold `message_id`, among those with an id
    /// received after `since`.
    fn runs_that_may_hold(&self, message_id: &str, since: i64) -> impl Iterator<Item = i64> + '_ {
        let hash = self.hasher.hash_one(message_id);
        self.filters
            .iter()
            .rev()
            .filter(move |f| f.newest_at > since && f.may_hold(hash))
            .flat_map(|f| (f.first_run..=f.last_run).rev())
    }

    /// Records that the running job stored a message with this id.
    pub(super) fn add(&mut self, message_id: &str, received_at: i64) {
        let before = self.recent.insert(message_id.into(), received_at);
        self.undo.push((message_id.into(), before));
    }

    /// Forgets message ids whose events were deleted (a person forgotten), in memory (undone if
    /// the job rolls back) and in the runs (in the caller's transaction).
    /// Each id comes with the `received_at` of the deleted event: an id stored again by someone
    /// else more than a day later is theirs, and stays.
    pub(super) fn forget(&mut self, conn: &Connection, events: &[(String, i64)]) -> Result<()> {
        let mut delete = conn.prepare_cached(
            "DELETE FROM dedup_ids WHERE run = ?1 AND message_id = ?2 AND received_at = ?3",
        )?;
        for (id, received_at) in events {
            if self.recent.get(id.as_str()) == Some(received_at)
                && let Some((id, at)) = self.recent.remove_entry(id.as_str())
            {
                self.undo.push((id, Some(at)));
            }
            for run in self.runs_that_may_hold(id, i64::MIN) {
                delete.execute(params![run, id, received_at])?;
            }
        }
        Ok(())
    }

    /// Ends the running job: its ids stay when it succeeded, and leave when it rolled back.
    pub(super) fn end_job(&mut self, succeeded: bool) {
        if succeeded {
            self.undo.clear();
            return;
        }
        for (id, before) in self.undo.drain(..).rev() {
            match before {
                Some(at) => self.recent.insert(id, at),
                None => self.recent.remove(&id),
            };
        }
    }

    /// Whether enough ids are in memory to be written as a run.
    pub(super) fn wants_flush(&self) -> bool {
        self.recent.len() >= self.run_ids.max(self.retry_at)
    }

    /// A run could not be written: the next try waits for as many ids again, so that a writer
    /// short of disk does not try it after every batch.
    pub(super) fn flush_failed(&mut self) {
        self.retry_at = self.recent.len() + self.run_ids;
    }

    /// Writes the ids in memory as a new run, in the caller's transaction. Every event up to
    /// `last_seq` must be committed. Memory changes only when the transaction has committed
    /// ([`Dedup::flushed`]).
    pub(super) fn flush(&self, conn: &Connection, last_seq: i64) -> Result<Flush> {
        let run = self.next_run;
        let mut ids: Vec<(&str, i64)> = self.recent.iter().map(|(k, &v)| (&**k, v)).collect();
        ids.sort_unstable();
        let mut insert = conn.prepare_cached(
            "INSERT INTO dedup_ids (run, message_id, received_at) VALUES (?1, ?2, ?3)",
        )?;
        for (id, at) in &ids {
            insert.execute(params![run, id, at])?;
        }
        let newest_at = ids.iter().map(|&(_, at)| at).max().unwrap_or(i64::MIN);
        conn.prepare_cached(
            "INSERT INTO dedup_runs (run, newest_at, last_seq) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![run, newest_at, last_seq])?;
        let hashes = ids.iter().map(|(id, _)| self.hasher.hash_one(id)).collect();
        Ok(Flush {
            run,
            newest_at,
            last_seq,
            hashes,
            expired: Vec::new(),
        })
    }

    /// Deletes the runs whose ids are all past the window (and a margin), in the caller's
    /// transaction; returns how many ids went, and the first runs of the filters to drop with
    /// [`Dedup::expired`] once the transaction has committed. A filter of a complete block goes
    /// with the block's newest run. The newest run's row stays: it holds the flushed sequence
    /// number. Rows of runs left empty (their ids all forgotten) go too.
    pub(super) fn expire(&self, conn: &Connection, now: i64) -> Result<Expired> {
        let before = now - DEDUP_WINDOW_MS - EXPIRY_MARGIN_MS;
        let mut expired = Expired::default();
        for f in self.filters.iter().filter(|f| f.newest_at <= before) {
            expired.ids += conn
                .prepare_cached("DELETE FROM dedup_ids WHERE run BETWEEN ?1 AND ?2")?
                .execute([f.first_run, f.last_run])?;
            expired.filters.push(f.first_run);
        }
        conn.prepare_cached(
            "DELETE FROM dedup_runs WHERE run < (SELECT max(run) FROM dedup_runs)
             AND NOT EXISTS (SELECT 1 FROM dedup_ids i WHERE i.run = dedup_runs.run)",
        )?
        .execute([])?;
        Ok(expired)
    }

    /// Drops the filters of runs whose deletion committed.
    pub(super) fn expired(&mut self, first_runs: &[i64]) {
        self.filters.retain(|f| !first_runs.contains(&f.first_run));
    }

    /// Takes in a run whose transaction committed: its ids leave memory for its filter, and a
    /// block whose runs are all written gets one filter.
    pub(super) fn flushed(&mut self, flush: Flush) {
        self.recent.clear();
        self.undo.clear();
        self.retry_at = 0;
        self.flushed_seq = flush.last_seq;
        self.next_run = flush.run + 1;
        self.expired(&flush.expired);
        self.filters.push(RunFilter::new(
            flush.run,
            flush.run,
            flush.newest_at,
            flush.hashes,
        ));
        if (flush.run + 1) % BLOCK_RUNS == 0 {
            let block = block_of(flush.run);
            let start = self
                .filters
                .iter()
                .position(|f| block_of(f.first_run) == block)
                .unwrap_or(self.filters.len());
            let runs: Vec<RunFilter> = self.filters.drain(start..).collect();
            let newest_at = runs.iter().map(|f| f.newest_at).max().unwrap_or(i64::MIN);
            let hashes = runs.into_iter().flat_map(|f| f.hashes).collect();
            self.filters.push(RunFilter::new(
                block * BLOCK_RUNS,
                flush.run,
                newest_at,
                hashes,
            ));
        }
    }

    /// How many filters a new message id is checked against.
    #[cfg(test)]
    pub(super) fn filters(&self) -> usize {
        self.filters.len()
    }
}

fn block_of(run: i64) -> i64 {
    run.div_euclid(BLOCK_RUNS)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::clock::ManualClock;
    use crate::ingest::{Endpoint, Parsed};
    use crate::store::{Store, StoreError, StoreOptions};

    const T0: i64 = 1_795_000_000_000;

    fn temp_db(name: &str) -> std::path::PathBuf {
        crate::store::temp_db(&format!("dedup-{name}"))
    }

    fn open(path: &std::path::Path, clock: &Arc<ManualClock>, run_ids: usize) -> Store {
        let options = StoreOptions {
            dedup_run_ids: run_ids,
            ..StoreOptions::default()
        };
        Store::open(path, clock.clone(), options).unwrap()
    }

    async fn close(store: Store) {
        store.writer().shutdown().await;
    }

    /// Ingests one track message per id, received at `at`, one request each; returns how many
    /// were stored and how many were duplicates.
    async fn send(store: &Store, at: i64, ids: &[String]) -> (usize, usize) {
        send_as(store, at, "u", ids).await
    }

    async fn send_as(store: &Store, at: i64, user: &str, ids: &[String]) -> (usize, usize) {
        let (mut stored, mut duplicates) = (0, 0);
        for id in ids {
            let body = serde_json::to_vec(&json!({"batch": [
                {"type": "track", "userId": user, "event": "e", "messageId": id}]}))
            .unwrap();
            let (messages, _) = Parsed::new(Endpoint::Batch, &body)
                .unwrap()
                .messages(at, &mut || unreachable!("the message has an id"))
                .unwrap();
            let outcome = store.ingest(messages).await.unwrap();
            stored += outcome.stored;
            duplicates += outcome.duplicates;
        }
        (stored, duplicates)
    }

    fn ids(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}-{i}")).collect()
    }

    /// Counts through the writer, so that a run written after the last request (between two
    /// batches, once that request was answered) is counted.
    async fn count(store: &Store, sql: &'static str) -> i64 {
        store
            .writer()
            .submit(move |ctx| Ok(ctx.conn.query_row(sql, [], |r| r.get(0))?))
            .await
            .unwrap()
    }

    async fn filters(store: &Store) -> usize {
        store
            .writer()
            .submit(|ctx| Ok(ctx.state.dedup.filters()))
            .await
            .unwrap()
    }

    /// Ids are recognised in memory, once written as runs, and after the store opens again;
    /// past the window they are not, and their runs are deleted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ids_are_seen_in_memory_in_runs_and_after_opening_again() {
        let path = temp_db("runs");
        let clock = Arc::new(ManualClock::new(T0));
        let store = open(&path, &clock, 4);
        let first = ids("m", 10);
        assert_eq!(send(&store, T0, &first).await, (10, 0));
        assert_eq!(count(&store, "SELECT count(*) FROM dedup_runs").await, 2);
        assert_eq!(count(&store, "SELECT count(*) FROM dedup_ids").await, 8);
        assert_eq!(send(&store, T0 + 1, &first).await, (0, 10));
        close(store).await;

        let store = open(&path, &clock, 4);
        assert_eq!(filters(&store).await, 2);
        assert_eq!(
            send(&store, T0 + 2, &first).await,
            (0, 10),
            "in runs and read back from events"
        );
        assert_eq!(send(&store, T0 + 3, &ids("n", 1)).await, (1, 0));

        // A day later the ids are new again; runs are kept an hour longer.
        let later = T0 + DEDUP_WINDOW_MS + 10;
        clock.set(later);
        assert_eq!(send(&store, later, &first[..2]).await, (2, 0));
        assert_eq!(send(&store, later, &ids("p", 4)).await, (4, 0));
        let old_runs = "SELECT count(*) FROM dedup_ids WHERE run <= 2";
        assert_eq!(count(&store, old_runs).await, 8);
        // Past the margin the purge deletes runs 1 and 2 (ids of T0 only); the ids of T0 in
        // run 3 wait for its newest, and count only within the window.
        let past = later + EXPIRY_MARGIN_MS;
        clock.set(past);
        let purged = store.purge(0, 0).await.unwrap();
        assert_eq!(purged.message_ids, 8, "{purged:?}");
        assert_eq!(count(&store, old_runs).await, 0);
        assert_eq!(
            count(&store, "SELECT count(*) FROM dedup_runs WHERE run <= 2").await,
            0
        );
        assert_eq!(send(&store, past, &first[8..]).await, (2, 0));
        close(store).await;
    }

    /// The writer's sequence is not handed out again below the newest run, even when the events
    /// that had the numbers are gone: their successors' ids would not be read back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sequence_numbers_stay_above_the_newest_run() {
        let path = temp_db("sequence");
        let clock = Arc::new(ManualClock::new(T0));
        let store = open(&path, &clock, 2);
        send_as(&store, T0, "kept", &ids("k", 1)).await;
        send_as(&store, T0, "gone", &ids("g", 1)).await;
        assert_eq!(count(&store, "SELECT count(*) FROM dedup_runs").await, 1);
        // The newest event goes; its number stays used.
        store.forget_profile("gone".into()).await.unwrap();
        close(store).await;

        let store = open(&path, &clock, 2);
        assert_eq!(send_as(&store, T0, "kept", &ids("n", 1)).await, (1, 0));
        close(store).await;
        let store = open(&path, &clock, 2);
        assert_eq!(
            send_as(&store, T0, "kept", &ids("n", 1)).await,
            (0, 1),
            "read back from events after a restart"
        );
        close(store).await;
    }

    /// The filters of a complete block of runs become one, and read the same after opening again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_complete_block_of_runs_has_one_filter() {
        let path = temp_db("blocks");
        let clock = Arc::new(ManualClock::new(T0));
        let store = open(&path, &clock, 1);
        let all = ids("m", 40);
        assert_eq!(send(&store, T0, &all).await, (40, 0));
        // Runs 1-40: 1-15 in block 0, 16-31 in block 1 (complete), 32-40 in block 2.
        assert_eq!(filters(&store).await, 1 + 1 + 9);
        assert_eq!(send(&store, T0, &all).await, (0, 40));
        close(store).await;
        let store = open(&path, &clock, 1);
        assert_eq!(filters(&store).await, 1 + 1 + 9);
        assert_eq!(send(&store, T0, &all).await, (0, 40));
        close(store).await;
    }

    /// A job that rolls back takes its ids out of memory, and gives back the times it replaced.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rolled_back_job_leaves_its_ids_behind() {
        let path = temp_db("rollback");
        let clock = Arc::new(ManualClock::new(T0));
        let store = open(&path, &clock, 1000);
        assert_eq!(send(&store, T0, &ids("kept", 1)).await, (1, 0));
        let failed = store
            .writer()
            .submit(|ctx| -> crate::store::Result<()> {
                ctx.state.dedup.add("gone", T0);
                ctx.state.dedup.add("kept-0", T0 + 5);
                Err(StoreError::Schema("the job fails".into()))
            })
            .await;
        assert!(failed.is_err());
        let (gone, kept) = store
            .writer()
            .submit(|ctx| {
                let seen = |id: &str, now: i64| ctx.state.dedup.seen(ctx.conn, id, now);
                Ok((seen("gone", T0)?, seen("kept-0", T0 + DEDUP_WINDOW_MS + 1)?))
            })
            .await
            .unwrap();
        assert!(!gone, "the failed job's id left");
        assert!(
            !kept,
            "the id kept its first time (T0), so a day after T0 it is past the window"
        );
        close(store).await;
    }

    /// In a batch of several jobs, each in its savepoint, the ids of a job that rolls back leave
    /// and those of the jobs that commit stay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_a_batch_only_the_rolled_back_jobs_ids_leave() {
        let path = temp_db("batch");
        let clock = Arc::new(ManualClock::new(T0));
        let store = open(&path, &clock, 1000);
        // The first job holds the writer while the next two queue up behind it, so that they
        // share the next transaction.
        let (running, started) = tokio::sync::oneshot::channel::<()>();
        let (held, release) = std::sync::mpsc::channel::<()>();
        let first = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .writer()
                    .submit(move |_| {
                        let _ = running.send(());
                        let _ = release.recv();
                        Ok(())
                    })
                    .await
            }
        });
        started.await.unwrap();
        let job = |id: &'static str, fail: bool| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .writer()
                    .submit(move |ctx| {
                        ctx.state.dedup.add(id, T0);
                        if fail {
                            return Err(StoreError::Schema("the job fails".into()));
                        }
                        Ok(())
                    })
                    .await
            })
        };
        let kept = job("kept", false);
        let gone = job("gone", true);
        while store.writer().depth() < 2 {
            tokio::task::yield_now().await;
        }
        held.send(()).unwrap();
        first.await.unwrap().unwrap();
        assert!(kept.await.unwrap().is_ok());
        assert!(gone.await.unwrap().is_err());
        let seen = store
            .writer()
            .submit(|ctx| {
                let seen = |id: &str| ctx.state.dedup.seen(ctx.conn, id, T0 + 1);
                Ok((seen("kept")?, seen("gone")?))
            })
            .await
            .unwrap();
        assert_eq!(seen, (true, false));
        close(store).await;
    }

    /// Forgetting a person forgets their message ids, in memory and in runs: a message of theirs
    /// sent again is processed as new. Another person's ids stay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forgetting_a_person_forgets_their_message_ids() {
        let path = temp_db("forget");
        let clock = Arc::new(ManualClock::new(T0));
        let store = open(&path, &clock, 3);
        let theirs = ids("g", 4);
        send_as(&store, T0, "gone", &theirs).await;
        send_as(&store, T0, "kept", &ids("k", 1)).await;
        assert_eq!(count(&store, "SELECT count(*) FROM dedup_ids").await, 3);
        store.forget_profile("gone".into()).await.unwrap();
        assert_eq!(count(&store, "SELECT count(*) FROM dedup_ids").await, 0);
        assert_eq!(send_as(&store, T0, "gone", &theirs).await, (4, 0));
        assert_eq!(send_as(&store, T0, "kept", &ids("k", 1)).await, (0, 1));
        close(store).await;
    }

    /// An id stored again by someone else more than a day later is theirs: forgetting the first
    /// person leaves it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forgetting_leaves_an_id_another_person_stored_later() {
        let path = temp_db("forget-reused");
        let clock = Arc::new(ManualClock::new(T0));
        let store = open(&path, &clock, 2);
        let reused = ids("x", 1);
        send_as(&store, T0, "first", &reused).await;
        send_as(&store, T0, "first", &ids("y", 1)).await;
        assert_eq!(count(&store, "SELECT count(*) FROM dedup_ids").await, 2);
        let later = T0 + DEDUP_WINDOW_MS + 1;
        clock.set(later);
        assert_eq!(send_as(&store, later, "second", &reused).await, (1, 0));
        store.forget_profile("first".into()).await.unwrap();
        assert_eq!(count(&store, "SELECT count(*) FROM dedup_ids").await, 0);
        assert_eq!(
            send_as(&store, later + 1, "second", &reused).await,
            (0, 1),
            "the second person's copy is still a duplicate"
        );
        close(store).await;
    }
}
