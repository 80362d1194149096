//! Forgetting a person (SPEC §6 `DELETE /v1/profiles/{id}`, an erasure request): their events,
//! traits, linked ids, instances with their history, deliveries and journey memory are deleted;
//! the stats counters stay (they count no one in particular). The person's active instances end
//! in the first job, so that nothing more happens for them; large histories then go in bounded
//! batches, one writer job each, so the writer is never held for long.

use rusqlite::{Connection, params};

use super::ingest::resolve;
use super::writer::WriteCtx;
use super::{Result, Store, StoreError};

/// Rows deleted per table per writer job.
const BATCH: i64 = 5_000;

/// What deletes a batch of a person's rows, one statement per kind of row (`?1` the profile key,
/// `?2` the batch size). Transitions and deliveries go through their instances (a person's
/// deliveries are those of their instances), and an instance only once its transitions and
/// deliveries are gone, so nothing is left without the instance that finds it.
const DELETES: [&str; 8] = [
    // The person's rows in `profile_log` go with their events and instances (its triggers); the
    // events' message ids are forgotten too (`delete_batch`).
    "DELETE FROM events WHERE seq IN
       (SELECT seq FROM profile_log WHERE profile_key = ?1 AND instance_id IS NULL LIMIT ?2)
     RETURNING message_id, received_at",
    "DELETE FROM transitions WHERE seq IN
       (SELECT t.seq FROM profile_log l JOIN transitions t ON t.instance_id = l.instance_id
        WHERE l.profile_key = ?1 AND l.instance_id IS NOT NULL LIMIT ?2)",
    "DELETE FROM transitions WHERE seq IN
       (SELECT seq FROM transitions INDEXED BY transitions_without_instance
        WHERE instance_id IS NULL AND profile_key = ?1 LIMIT ?2)",
    "DELETE FROM deliveries WHERE delivery_id IN
       (SELECT d.delivery_id FROM profile_log l JOIN deliveries d ON d.instance_id = l.instance_id
        WHERE l.profile_key = ?1 AND l.instance_id IS NOT NULL LIMIT ?2)",
    // Deliveries that lost their instance to an older journeyd's purge (schema.sql), then their
    // listing: the same first rows by key, so the second statement removes what the first used.
    "DELETE FROM deliveries WHERE delivery_id IN
       (SELECT delivery_id FROM deliveries_without_instance WHERE profile_key = ?1 ORDER BY delivery_id LIMIT ?2)",
    "DELETE FROM deliveries_without_instance WHERE profile_key = ?1 AND delivery_id IN
       (SELECT delivery_id FROM deliveries_without_instance WHERE profile_key = ?1 ORDER BY delivery_id LIMIT ?2)",
    "DELETE FROM instances WHERE instance_id IN
       (SELECT instance_id FROM profile_log l WHERE profile_key = ?1 AND instance_id IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM transitions t WHERE t.instance_id = l.instance_id)
        AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.instance_id = l.instance_id) LIMIT ?2)",
    "DELETE FROM merges WHERE seq IN (SELECT seq FROM merges WHERE profile_key = ?1 LIMIT ?2)",
];

/// What forgetting a profile removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Forgotten {
    pub(crate) keys: usize,
    pub(crate) rows: u64,
}

impl Store {
    /// Forgets the profile `id` belongs to, and every id linked to it.
    pub(crate) async fn forget_profile(&self, id: String) -> Result<Forgotten> {
        // First the profile and its links go, in one job: from then on the person's ids resolve
        // to nothing, and what is left is unreachable history, deleted below.
        let keys = self
            .writer()
            .submit_wait(move |ctx| {
                let conn = ctx.conn;
                let key = resolve(conn, &id)?;
                let exists: bool = conn
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM profiles WHERE profile_key = ?1)",
                    )?
                    .query_row([&key], |r| r.get(0))?;
                if !exists {
                    return Err(StoreError::NotFound(format!("profile \"{id}\"")));
                }
                let mut keys = vec![key.clone()];
                let mut stmt =
                    conn.prepare_cached("SELECT id FROM identities WHERE profile_key = ?1")?;
                for linked in stmt.query_map([&key], |r| r.get::<_, String>(0))? {
                    keys.push(linked?);
                }
                conn.prepare_cached("DELETE FROM identities WHERE profile_key = ?1")?
                    .execute([&key])?;
                conn.prepare_cached("DELETE FROM profiles WHERE profile_key = ?1")?
                    .execute([&key])?;
                end_active(conn, &key, ctx.now)?;
                Ok(keys)
            })
            .await?;
        let mut forgotten = Forgotten {
            keys: keys.len(),
            rows: 0,
        };
        for key in keys {
            loop {
                let key = key.clone();
                let deleted = self
                    .writer()
                    .submit_wait(move |ctx| delete_batch(ctx, &key))
                    .await?;
                forgotten.rows += deleted;
                if deleted == 0 {
                    break;
                }
            }
        }
        tracing::info!(
            keys = forgotten.keys,
            rows = forgotten.rows,
            "profile forgotten"
        );
        Ok(forgotten)
    }
}

/// Ends the person's active instances at once, before the batches delete them: no timer of
/// theirs fires for someone forgotten, and an event under one of their ids (a new person now)
/// never reaches them. The stats counters are left as they are (SPEC §6).
fn end_active(conn: &Connection, key: &str, now: i64) -> Result<()> {
    conn.prepare_cached(
        "UPDATE instances SET state = 'exited', due_at = NULL, updated_at = ?2
         WHERE profile_key = ?1 AND state = 'active'",
    )?
    .execute(params![key, now])?;
    Ok(())
}

/// Deletes up to [`BATCH`] rows of each table for one profile key; returns how many. The events
/// go first, alone while a batch is full: the statements that find instances read the person's
/// whole `profile_log`, which then holds no events. Their message ids are forgotten with them, so
/// a message of theirs sent again is processed as new, as if it had never been stored.
fn delete_batch(ctx: &mut WriteCtx, key: &str) -> Result<u64> {
    let conn = ctx.conn;
    let (events, others) = DELETES.split_first().expect("events are deleted first");
    let ids = conn
        .prepare_cached(events)?
        .query_map(params![key, BATCH], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    ctx.state.dedup.forget(conn, &ids)?;
    let mut deleted = ids.len() as u64;
    if deleted == BATCH as u64 {
        return Ok(deleted);
    }
    for sql in others {
        deleted += conn.prepare_cached(sql)?.execute(params![key, BATCH])? as u64;
    }
    // Their pending deliveries went: the dispatcher must not send what it read of them ahead.
    ctx.effects.removed = true;
    // One row per journey the person entered: few.
    deleted += conn
        .prepare_cached("DELETE FROM journey_memory WHERE profile_key = ?1")?
        .execute([key])? as u64;
    Ok(deleted)
}
