//! Housekeeping jobs on tokio-cron-scheduler, each on its own schedule and each logged: retention
//! purges (which also delete the message ids past the deduplication window), WAL checkpoints,
//! scheduled backups into a directory keeping the newest N, training the zstd dictionary stored
//! JSON is compressed with (see `store/codec.rs`), and giving freed memory back to the system
//! (see `memory.rs`).

use std::path::PathBuf;
use std::sync::Arc;

use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use crate::store::Store;

/// What housekeeping does and when (cron expressions with seconds: `sec min hour day month weekday`).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) purge_schedule: String,
    pub(crate) events_retention_ms: i64,
    pub(crate) instances_retention_ms: i64,
    pub(crate) checkpoint_schedule: String,
    pub(crate) backup_dir: Option<PathBuf>,
    pub(crate) backup_schedule: String,
    pub(crate) backup_keep: usize,
}

/// The running jobs; [`Housekeeping::stop`] ends them.
pub(crate) struct Housekeeping {
    scheduler: JobScheduler,
}

/// How often housekeeping asks whether a compression dictionary is due: every second, since
/// asking is a look at two counters, so that a new database compresses well within seconds of its
/// first thousand messages (and of the ten thousand after them, for the second dictionary).
const DICTIONARY_SCHEDULE: &str = "* * * * * *";

/// How often freed memory is given back to the system: RSS falls within seconds of a burst.
const MEMORY_SCHEDULE: &str = "*/10 * * * * *";

/// Checks a cron expression the way the scheduler will read it.
pub(crate) fn validate_schedule(expr: &str) -> Result<(), String> {
    Job::new_async(expr, |_, _| Box::pin(async {}))
        .map(|_| ())
        .map_err(|e| format!("bad schedule \"{expr}\": {e}"))
}

/// A cron job running `task` with the store and settings on `schedule`.
fn job<F, Fut>(
    schedule: &str,
    store: &Store,
    settings: &Arc<Settings>,
    task: F,
) -> Result<Job, JobSchedulerError>
where
    F: Fn(Store, Arc<Settings>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (store, settings) = (store.clone(), settings.clone());
    Job::new_async(schedule, move |_, _| {
        Box::pin(task(store.clone(), settings.clone()))
    })
}

impl Housekeeping {
    pub(crate) async fn start(
        store: Store,
        settings: Settings,
    ) -> Result<Housekeeping, JobSchedulerError> {
        let scheduler = JobScheduler::new().await?;
        let settings = Arc::new(settings);

        let jobs = [
            Some(job(
                &settings.purge_schedule,
                &store,
                &settings,
                |st, se| async move { purge(&st, &se).await },
            )?),
            Some(job(
                &settings.checkpoint_schedule,
                &store,
                &settings,
                |st, _| async move { checkpoint(&st).await },
            )?),
            Some(job(
                DICTIONARY_SCHEDULE,
                &store,
                &settings,
                |st, _| async move { dictionary(&st).await },
            )?),
            Some(job(MEMORY_SCHEDULE, &store, &settings, |_, _| async {
                release_memory().await
            })?),
            match settings.backup_dir {
                Some(_) => Some(job(
                    &settings.backup_schedule,
                    &store,
                    &settings,
                    |st, se| async move { backup(&st, &se).await },
                )?),
                None => None,
            },
        ];
        for j in jobs.into_iter().flatten() {
            scheduler.add(j).await?;
        }
        scheduler.start().await?;
        Ok(Housekeeping { scheduler })
    }

    pub(crate) async fn stop(mut self) {
        if let Err(e) = self.scheduler.shutdown().await {
            tracing::warn!(error = %e, "stopping housekeeping failed");
        }
    }
}

async fn checkpoint(store: &Store) {
    if let Err(e) = store.checkpoint().await {
        tracing::warn!(error = %e, "wal checkpoint failed");
    }
}

async fn release_memory() {
    let started = std::time::Instant::now();
    if let Ok(released) = tokio::task::spawn_blocking(crate::memory::release_free).await {
        tracing::debug!(
            released,
            took_us = started.elapsed().as_micros() as u64,
            "freed memory given back to the system"
        );
    }
}

async fn dictionary(store: &Store) {
    let started = std::time::Instant::now();
    match store.train_dictionary().await {
        Ok(Some((id, bytes))) => tracing::info!(
            dictionary = id,
            bytes,
            took_ms = started.elapsed().as_millis() as u64,
            "compression dictionary trained from recent messages"
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "training a compression dictionary failed"),
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
            message_ids = p.message_ids,
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
    let name = crate::store::backup_name(store.clock().now_ms());
    let dest = dir.join(&name);
    let partial = dir.join(crate::store::partial_name(&name));
    let keep = settings.backup_keep;
    // One scheduled backup at a time (a run can outlast a short schedule), and the oldest are
    // removed before the new copy takes its name: the directory never holds more than `keep`.
    static RUNNING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let result = tokio::task::spawn_blocking(move || {
        let _one = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::create_dir_all(&dir)?;
        crate::store::remove_partials(&dir, &src)?;
        crate::store::backup_to(
            &src,
            &partial,
            crate::store::Replace::Backups,
            &mut |_, _| {},
        )?;
        let removed = crate::store::rotate_backups(&dir, &src, keep.saturating_sub(1))?;
        std::fs::rename(&partial, &dest)?;
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
