//! The outbox: due deliveries for the dispatcher, attempt outcomes, listing and manual retry.

use std::collections::HashSet;

use rusqlite::{OptionalExtension, params};
use serde_json::{Map, Value};

use super::writer::WriteCtx;
use super::{Page, Refusal, Result, Store, StoreError, json_column, object_column};
use crate::delivery::{Outcome, RETRY_WINDOW_MS, Status};

/// A pending delivery as the dispatcher needs it.
#[derive(Debug, Clone)]
pub(crate) struct DueDelivery {
    pub(crate) id: String,
    pub(crate) payload: String,
    pub(crate) attempts: i64,
    pub(crate) next_attempt_at: i64,
}

/// One attempt's outcome, to record.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    pub(crate) id: String,
    pub(crate) destination: String,
    pub(crate) outcome: Outcome,
    /// When to try again, if the outcome is worth another try.
    pub(crate) retry_at: i64,
    pub(crate) max_attempts: u32,
    /// The host the attempt went to, for the log.
    pub(crate) host: String,
}

/// Records an attempt's outcome; logs a failed attempt and a dead letter at `info` (SPEC §9);
/// publishes the outcome to listeners.
fn record_attempt(ctx: &mut WriteCtx, attempt: Attempt) -> Result<()> {
    let row: Option<(i64, i64, String, i64)> = ctx
        .conn
        .prepare_cached(
            "SELECT attempts, expires_at, journey_id, instance_id FROM deliveries WHERE delivery_id = ?1 AND status = 'pending'",
        )?
        .query_row([&attempt.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    // Retried by hand, or already settled: nothing to record.
    let Some((attempts, expires_at, journey, instance)) = row else {
        return Ok(());
    };
    let attempts = attempts + 1;
    let (status, next, code, error) = match &attempt.outcome {
        Outcome::Delivered { status } => (Status::Succeeded, None, Some(*status), None),
        Outcome::Fail { status, error } => (Status::Failed, None, *status, Some(error.clone())),
        Outcome::Retry { status, error, .. } => {
            if attempts >= attempt.max_attempts as i64 || attempt.retry_at > expires_at {
                (
                    Status::Failed,
                    None,
                    *status,
                    Some(format!("{error} (gave up after {attempts} attempts)")),
                )
            } else {
                (
                    Status::Pending,
                    Some(attempt.retry_at),
                    *status,
                    Some(error.clone()),
                )
            }
        }
    };
    ctx.conn
        .prepare_cached(
            "UPDATE deliveries SET status = ?2, attempts = ?3, next_attempt_at = ?4, last_status = ?5,
                 last_error = ?6, updated_at = ?7 WHERE delivery_id = ?1",
        )?
        .execute(params![
            attempt.id,
            status.as_str(),
            attempts,
            next,
            code,
            error,
            ctx.now
        ])?;
    if let Some(error) = &error {
        let what = if status == Status::Failed {
            "delivery failed for good (dead letter)"
        } else {
            "delivery attempt failed: retrying"
        };
        tracing::info!(
            delivery = %attempt.id,
            destination = %attempt.destination,
            host = %attempt.host,
            status = code,
            error = %error,
            attempt = attempts,
            "{what}"
        );
    }
    if ctx.streaming {
        ctx.effects
            .published
            .push(super::StreamEvent::Delivery(super::DeliveryOutcome {
                id: attempt.id,
                destination: attempt.destination,
                journey,
                instance,
                status,
                attempts,
                http_status: code,
                error,
                at: ctx.now,
            }));
    }
    Ok(())
}

/// Makes a delivery pending again now, with a fresh set of attempts and a new 24-hour window.
const RETRY: &str =
    "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?2, expires_at = ?3,
     last_status = NULL, last_error = NULL, updated_at = ?2 WHERE delivery_id = ?1";

/// Deliveries made pending again per writer job by a bulk retry.
const RETRY_BATCH: i64 = 5_000;

fn destination_exists(conn: &rusqlite::Connection, id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM destinations WHERE destination_id = ?1)")?
        .query_row([id], |r| r.get(0))?)
}

/// A destination's settings and secrets, for sending.
#[derive(Debug, Clone)]
pub(crate) struct DestinationRow {
    pub(crate) id: String,
    pub(crate) config: Value,
    pub(crate) secrets: Map<String, Value>,
}

/// A delivery as the admin API shows it.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryView {
    pub(crate) id: String,
    pub(crate) status: Status,
    pub(crate) destination: String,
    pub(crate) profile_key: String,
    pub(crate) journey_id: String,
    pub(crate) instance_id: i64,
    pub(crate) step_id: String,
    pub(crate) attempts: i64,
    pub(crate) next_attempt_at: Option<i64>,
    pub(crate) last_status: Option<i64>,
    pub(crate) last_error: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    pub(crate) payload: Value,
}

impl Store {
    /// One destination with its secrets.
    pub(crate) async fn destination_row(&self, id: String) -> Result<DestinationRow> {
        self.destination_rows()
            .await?
            .into_iter()
            .find(|d| d.id == id)
            .ok_or_else(|| StoreError::NotFound(format!("destination \"{id}\"")))
    }

    /// Every destination with its secrets.
    pub(crate) async fn destination_rows(&self) -> Result<Vec<DestinationRow>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT destination_id, config, secret FROM destinations ORDER BY destination_id",
            )?;
            let mut rows = stmt.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let id: String = r.get(0)?;
                let config = json_column(&r.get::<_, String>(1)?, || {
                    format!("settings of destination \"{id}\"")
                })?;
                let secrets = match r.get::<_, Option<String>>(2)? {
                    None => Map::new(),
                    Some(s) => object_column(&s, || format!("secrets of destination \"{id}\""))?,
                };
                out.push(DestinationRow {
                    id,
                    config,
                    secrets,
                });
            }
            Ok(out)
        })
        .await
    }

    /// The first `want` pending deliveries of a destination, soonest first (due or not), passing
    /// over those in `skip` (in flight). The head of the queue is read from the index alone;
    /// only the rows returned are read in full.
    pub(crate) async fn pending_for(
        &self,
        destination: String,
        skip: HashSet<String>,
        want: usize,
    ) -> Result<Vec<DueDelivery>> {
        self.read(move |conn| {
            let mut head = conn.prepare_cached(
                "SELECT delivery_id, next_attempt_at FROM deliveries
                 WHERE status = 'pending' AND destination_id = ?1 ORDER BY next_attempt_at LIMIT ?2",
            )?;
            let mut rows = head.query(params![destination, (skip.len() + want) as i64])?;
            let mut chosen: Vec<(String, i64)> = Vec::with_capacity(want);
            while let Some(r) = rows.next()? {
                let id: String = r.get(0)?;
                if !skip.contains(&id) {
                    chosen.push((id, r.get(1)?));
                    if chosen.len() == want {
                        break;
                    }
                }
            }
            drop(rows);
            let mut full = conn.prepare_cached(
                "SELECT jd_text(payload), attempts FROM deliveries WHERE delivery_id = ?1 AND status = 'pending'",
            )?;
            let mut out = Vec::with_capacity(chosen.len());
            for (id, next_attempt_at) in chosen {
                if let Some((payload, attempts)) = full
                    .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?
                {
                    out.push(DueDelivery { id, payload, attempts, next_attempt_at });
                }
            }
            Ok(out)
        })
        .await
    }

    /// Records attempts, in one writer job. A retryable outcome schedules the next attempt at its
    /// `retry_at`, unless that was the last attempt or the retry window has closed: then the
    /// delivery fails.
    pub(crate) async fn record_attempts(&self, attempts: Vec<Attempt>) -> Result<()> {
        self.writer()
            .submit_wait(move |ctx| {
                for attempt in attempts {
                    record_attempt(ctx, attempt)?;
                }
                Ok(())
            })
            .await
    }

    /// Makes a delivery pending again now, with a fresh set of attempts and a new 24-hour window.
    /// Refused ([`Refusal::DestinationDeleted`]) when the delivery's destination was deleted.
    pub(crate) async fn retry_delivery(&self, id: String) -> Result<()> {
        self.writer()
            .submit_wait(move |ctx| {
                let destination: Option<String> = ctx
                    .conn
                    .prepare_cached("SELECT destination_id FROM deliveries WHERE delivery_id = ?1")?
                    .query_row([&id], |r| r.get(0))
                    .optional()?;
                let Some(destination) = destination else {
                    return Err(StoreError::NotFound(format!("delivery \"{id}\"")));
                };
                if !destination_exists(ctx.conn, &destination)? {
                    return Err(StoreError::Refused(Refusal::DestinationDeleted));
                }
                ctx.conn.prepare_cached(RETRY)?.execute(params![
                    id,
                    ctx.now,
                    ctx.now + RETRY_WINDOW_MS
                ])?;
                ctx.effects.deliveries = true;
                Ok(())
            })
            .await
    }

    /// Makes every failed delivery (of one destination, if given) pending again, as
    /// [`Store::retry_delivery`] does one, in batches; those whose destination was deleted stay
    /// failed. Returns how many.
    pub(crate) async fn retry_failed(&self, destination: Option<String>) -> Result<u64> {
        let mut retried = 0;
        loop {
            let destination = destination.clone();
            let n = self
                .writer()
                .submit_wait(move |ctx| {
                    let ids: Vec<String> = ctx
                        .conn
                        .prepare_cached(
                            "SELECT d.delivery_id FROM deliveries d
                             WHERE d.status = 'failed' AND (?1 IS NULL OR d.destination_id = ?1)
                               AND EXISTS (SELECT 1 FROM destinations t WHERE t.destination_id = d.destination_id)
                             LIMIT ?2",
                        )?
                        .query_map(params![destination, RETRY_BATCH], |r| r.get(0))?
                        .collect::<rusqlite::Result<_>>()?;
                    let mut stmt = ctx.conn.prepare_cached(RETRY)?;
                    for id in &ids {
                        stmt.execute(params![id, ctx.now, ctx.now + RETRY_WINDOW_MS])?;
                    }
                    if !ids.is_empty() {
                        ctx.effects.deliveries = true;
                    }
                    Ok(ids.len() as u64)
                })
                .await?;
            retried += n;
            if n < RETRY_BATCH as u64 {
                return Ok(retried);
            }
        }
    }

    pub(crate) async fn delivery(&self, id: String) -> Result<DeliveryView> {
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE delivery_id = ?1"
            ))?
            .query_row([&id], delivery_row)
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("delivery \"{id}\"")))?
            .read()
        })
        .await
    }

    /// Deliveries, newest first, optionally of one status and one destination. The cursor is the
    /// `created_at` and id of the last row of the previous page.
    pub(crate) async fn deliveries(
        &self,
        status: Option<Status>,
        destination: Option<String>,
        cursor: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Page<DeliveryView>> {
        self.read(move |conn| {
            let (before_at, before_id) = cursor.unwrap_or((i64::MAX, String::new()));
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries
                 WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR destination_id = ?2)
                   AND (created_at < ?3 OR (created_at = ?3 AND (?4 = '' OR delivery_id < ?4)))
                 ORDER BY created_at DESC, delivery_id DESC LIMIT ?5"
            ))?;
            let items: Vec<DeliveryView> = stmt
                .query_map(
                    params![
                        status.map(Status::as_str),
                        destination,
                        before_at,
                        before_id,
                        limit as i64 + 1
                    ],
                    delivery_row,
                )?
                .map(|row| row?.read())
                .collect::<Result<_>>()?;
            Ok(Page::of(items, limit, |d| {
                format!("{}:{}", d.created_at, d.id)
            }))
        })
        .await
    }
}

const DELIVERY_COLUMNS: &str =
    "delivery_id, status, destination_id, profile_key, journey_id, instance_id, step_id, attempts,
    next_attempt_at, last_status, last_error, created_at, updated_at, jd_text(payload)";

/// A delivery row as read, its text columns not yet parsed.
struct RawDelivery(DeliveryView, String, String);

impl RawDelivery {
    fn read(self) -> Result<DeliveryView> {
        let RawDelivery(mut view, status, payload) = self;
        let what = |field: &str| format!("{field} of delivery \"{}\"", view.id);
        view.status = Status::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("{}: \"{status}\"", what("status"))))?;
        view.payload = json_column(&payload, || what("payload"))?;
        Ok(view)
    }
}

fn delivery_row(r: &rusqlite::Row) -> rusqlite::Result<RawDelivery> {
    Ok(RawDelivery(
        DeliveryView {
            id: r.get(0)?,
            status: Status::Pending,
            destination: r.get(2)?,
            profile_key: r.get(3)?,
            journey_id: r.get(4)?,
            instance_id: r.get(5)?,
            step_id: r.get(6)?,
            attempts: r.get(7)?,
            next_attempt_at: r.get(8)?,
            last_status: r.get(9)?,
            last_error: r.get(10)?,
            created_at: r.get(11)?,
            updated_at: r.get(12)?,
            payload: Value::Null,
        },
        r.get(1)?,
        r.get(13)?,
    ))
}
