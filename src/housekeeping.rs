//! Housekeeping jobs on tokio-cron-scheduler, each on its own schedule and each logged: retention
//! purges (which also bound the messageId dedup window's storage, since deduplication looks at the
//! stored events), WAL checkpoints, and scheduled backups into a directory keeping the newest N.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use crate::store::Store;

/// What housekeeping does and when (cron expressions with seconds: `sec min hour day month weekday`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub purge_schedule: String,
    pub events_retention_ms: i64,
    pub instances_retention_ms: i64,
    pub checkpoint_schedule: String,
    pub backup_dir: Option<PathBuf>,
    pub backup_schedule: String,
    pub backup_keep: usize,
}

/// The running jobs; [`Housekeeping::stop`] ends them.
pub struct Housekeeping {
    scheduler: JobScheduler,
}

/// Checks a cron expression the way the scheduler will read it.
pub fn validate_schedule(expr: &str) -> Result<(), String> {
    Job::new_async(expr, |_, _| Box::pin(async {}))
        .map(|_| ())
        .map_err(|e| format!("bad schedule \"{expr}\": {e}"))
}

impl Housekeeping {
    pub async fn start(
        store: Store,
        settings: Settings,
    ) -> Result<Housekeeping, JobSchedulerError> {
        let scheduler = JobScheduler::new().await?;
        let settings = Arc::new(settings);

        let (s, st) = (store.clone(), settings.clone());
        scheduler
            .add(Job::new_async(
                settings.purge_schedule.as_str(),
                move |_, _| {
                    let (store, settings) = (s.clone(), st.clone());
                    Box::pin(async move { purge(&store, &settings).await })
                },
            )?)
            .await?;

        let s = store.clone();
        scheduler
            .add(Job::new_async(
                settings.checkpoint_schedule.as_str(),
                move |_, _| {
                    let store = s.clone();
                    Box::pin(async move { checkpoint(&store).await })
                },
            )?)
            .await?;

        if settings.backup_dir.is_some() {
            let (s, st) = (store.clone(), settings.clone());
            scheduler
                .add(Job::new_async(
                    settings.backup_schedule.as_str(),
                    move |_, _| {
                        let (store, settings) = (s.clone(), st.clone());
                        Box::pin(async move { backup(&store, &settings).await })
                    },
                )?)
                .await?;
        }
        scheduler.start().await?;
        Ok(Housekeeping { scheduler })
    }

    pub async fn stop(mut self) {
        if let Err(e) = self.scheduler.shutdown().await {
            tracing::warn!(error = %e, "stopping housekeeping failed");
        }
    }
}

/// A WAL file still above this size after a checkpoint that could not finish (a reader held an
/// old snapshot, so the WAL could not start over) is truncated through the writer.
const WAL_TRUNCATE_BYTES: u64 = 2 * crate::store::WAL_SIZE_LIMIT;

/// A checkpoint pass alongside the writer this short leaves little for the writer to copy.
const SHORT_PASS: std::time::Duration = std::time::Duration::from_millis(15);
/// Most passes alongside the writer per checkpoint.
const MAX_PASSES: u32 = 5;

/// Backfills the WAL into the database file in two steps: the bulk alongside the writer, then
/// the few frames written meanwhile on the writer itself, between two transactions. A complete
/// checkpoint lets the next transaction write the WAL from its start again, so under constant
/// load the WAL stays about one schedule interval of writes long and the writer never waits for
/// a long checkpoint. Truncating (which waits for readers) is the fallback for a WAL that still
/// grew past [`WAL_TRUNCATE_BYTES`].
async fn checkpoint(store: &Store) {
    let started = std::time::Instant::now();
    // Passes alongside the writer until one is short: what is left for the writer is then what
    // was written during that short pass.
    let mut passes = 0;
    let bulk = loop {
        let pass = std::time::Instant::now();
        let c = match store.checkpoint_passive().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "wal checkpoint failed");
                return;
            }
        };
        passes += 1;
        if pass.elapsed() < SHORT_PASS || passes == MAX_PASSES {
            break c;
        }
    };
    let finish_started = std::time::Instant::now();
    let finish = match store.checkpoint_finish().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "wal checkpoint failed");
            return;
        }
    };
    tracing::debug!(
        passes,
        frames = bulk.frames,
        backfilled = bulk.backfilled,
        complete = finish.complete(),
        wal_bytes = finish.wal_bytes,
        took_ms = started.elapsed().as_millis() as u64,
        writer_ms = finish_started.elapsed().as_millis() as u64,
        "wal checkpoint"
    );
    if !finish.complete() && finish.wal_bytes > WAL_TRUNCATE_BYTES {
        match store.checkpoint_truncate().await {
            Ok(frames) => tracing::info!(wal_bytes = finish.wal_bytes, frames, "wal truncated"),
            Err(e) => tracing::warn!(error = %e, "wal truncate failed"),
        }
    }
}

async fn purge(store: &Store, settings: &Settings) {
    let now = store.clock().now_ms();
    let started = std::time::Instant::now();
    match store
        .purge(
            now - settings.events_retention_ms,
            now - settings.instances_retention_ms,
        )
        .await
    {
        Ok(p) => tracing::info!(
            events = p.events,
            instances = p.instances,
            transitions = p.transitions,
            deliveries = p.deliveries,
            took_ms = started.elapsed().as_millis() as u64,
            "retention purge"
        ),
        Err(e) => tracing::warn!(error = %e, "retention purge failed"),
    }
}

async fn backup(store: &Store, settings: &Settings) {
    let Some(dir) = settings.backup_dir.clone() else {
        return;
    };
    let src = store.path().to_path_buf();
    let dest = dir.join(crate::store::backup_name(store.clock().now_ms()));
    let keep = settings.backup_keep;
    let result = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        crate::store::backup_to(&src, &dest, &mut |_, _| {})?;
        let removed = crate::store::rotate_backups(&dir, keep)?;
        Ok::<_, crate::store::StoreError>((dest, removed))
    })
    .await;
    match result {
        Ok(Ok((dest, removed))) => {
            tracing::info!(path = %dest.display(), removed = removed.len(), "scheduled backup written")
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "scheduled backup failed"),
        Err(e) => tracing::warn!(error = %e, "scheduled backup task failed"),
    }
}
