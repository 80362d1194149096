//! Journeys on the write side: publishing versions, pausing, resuming and archiving; each keeps
//! the writer's live catalog in step after its SQL.

use rusqlite::{OptionalExtension, params};

use super::writer::WriteCtx;
use super::{Refusal, Result, Store, StoreError, stats};
use crate::journey::{Journey, Status, StepKind};

/// The outcome of publishing a journey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Published {
    pub(crate) version: i64,
    /// The journey did not exist before.
    pub(crate) created: bool,
}

impl Store {
    /// Publishes `journey` (already validated) with its canonical JSON `definition`. Refused
    /// with [`Refusal::UnknownDestinations`] when a send step names a destination that does not
    /// exist.
    pub(crate) async fn publish_journey(
        &self,
        journey: Journey,
        definition: String,
    ) -> Result<Published> {
        self.writer()
            .submit_wait(move |ctx| publish(ctx, journey, &definition))
            .await
    }

    /// Pauses or resumes a journey; archiving goes through [`Store::archive_journey`].
    pub(crate) async fn set_journey_status(&self, id: String, status: Status) -> Result<()> {
        debug_assert!(status != Status::Archived);
        self.writer()
            .submit_wait(move |ctx| {
                let changed = ctx
                    .conn
                    .prepare_cached("UPDATE journeys SET status = ?2, updated_at = ?3 WHERE journey_id = ?1 AND status != 'archived'")?
                    .execute(params![id, status.as_str(), ctx.now])?;
                if changed == 0 {
                    return Err(StoreError::NotFound(format!("journey \"{id}\"")));
                }
                ctx.state.catalog.set_status(&id, status);
                Ok(())
            })
            .await
    }

    /// Archives a journey: no new entries, and its active instances end as archived with no
    /// further sends. Returns how many instances it ended.
    pub(crate) async fn archive_journey(&self, id: String) -> Result<usize> {
        self.writer()
            .submit_wait(move |ctx| archive(ctx, &id))
            .await
    }
}

fn publish(ctx: &mut WriteCtx, journey: Journey, definition: &str) -> Result<Published> {
    let conn = ctx.conn;
    let mut unknown = Vec::new();
    for (n, step) in journey.steps.iter().enumerate() {
        if let StepKind::Send { destination, .. } = &step.kind {
            let exists: bool = conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM destinations WHERE destination_id = ?1)",
                )?
                .query_row([destination], |r| r.get(0))?;
            if !exists {
                unknown.push((format!("/steps/{n}/destination"), destination.clone()));
            }
        }
    }
    if !unknown.is_empty() {
        return Err(StoreError::Refused(Refusal::UnknownDestinations(unknown)));
    }
    let digest = super::hash_secret(definition);
    let current: Option<(String, i64)> = conn
        .prepare_cached("SELECT status, version FROM journeys WHERE journey_id = ?1")?
        .query_row([&journey.id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let now = ctx.now;
    let (version, created, new_version, status) = match current {
        None => (1, true, true, Status::Active),
        Some((status, version)) => {
            let status = Status::parse(&status).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "journey \"{}\" has status \"{status}\"",
                    journey.id
                ))
            })?;
            let same: Option<String> = conn
                .prepare_cached(
                    "SELECT digest FROM journey_versions WHERE journey_id = ?1 AND version = ?2",
                )?
                .query_row(params![journey.id, version], |r| r.get(0))
                .optional()?;
            // Publishing an archived journey brings it back; a paused one stays paused.
            let status = match status {
                Status::Archived => Status::Active,
                other => other,
            };
            if same.as_deref() == Some(digest.as_str()) {
                (version, false, false, status)
            } else {
                (version + 1, false, true, status)
            }
        }
    };
    if new_version {
        conn.prepare_cached(
            "INSERT INTO journey_versions (journey_id, version, definition, digest, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![journey.id, version, definition, digest, now])?;
    }
    conn.prepare_cached(
        "INSERT INTO journeys (journey_id, status, version, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
         ON CONFLICT (journey_id) DO UPDATE SET status = excluded.status, version = excluded.version,
             updated_at = CASE WHEN journeys.version != excluded.version OR journeys.status != excluded.status
                               THEN excluded.updated_at ELSE journeys.updated_at END",
    )?
    .execute(params![journey.id, status.as_str(), version, now])?;

    // Everything is written: now the live catalog follows. A revived archived journey gets its
    // older versions back when the catalog is next read; instances could not be on them
    // (archiving ended them all).
    ctx.state.catalog.published(journey, version, status);
    Ok(Published { version, created })
}

fn archive(ctx: &mut WriteCtx, id: &str) -> Result<usize> {
    let conn = ctx.conn;
    let changed = conn
        .prepare_cached(
            "UPDATE journeys SET status = 'archived', updated_at = ?2 WHERE journey_id = ?1",
        )?
        .execute(params![id, ctx.now])?;
    if changed == 0 {
        return Err(StoreError::NotFound(format!("journey \"{id}\"")));
    }
    // One transition per ended instance, numbered after everything written so far.
    let first_seq = ctx.state.last_seq;
    conn.execute(
        "INSERT INTO transitions (seq, profile_key, instance_id, journey_id, version, at, what, step_id, detail)
         SELECT ?2 + row_number() OVER (ORDER BY instance_id), profile_key, instance_id, journey_id, version, ?3, 'archived', step_id, NULL
         FROM instances WHERE journey_id = ?1 AND state = 'active'",
        params![id, first_seq, ctx.now],
    )?;
    let ended = conn.execute(
        "UPDATE instances SET state = 'archived', due_at = NULL, updated_at = ?2 WHERE journey_id = ?1 AND state = 'active'",
        params![id, ctx.now],
    )?;
    ctx.state.last_seq = first_seq + ended as i64;
    stats::archived(conn, id)?;
    ctx.state.catalog.set_status(id, Status::Archived);
    Ok(ended)
}
