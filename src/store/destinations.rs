//! Destinations: their settings (public) and secrets (write-only), kept apart.

use rusqlite::{OptionalExtension, params};
use serde_json::{Map, Value};

use super::{Page, Result, Store, StoreError, SubmitError};

/// A destination as the API shows it: settings plus which secret fields are set, never their values.
#[derive(Debug, Clone)]
pub struct DestinationView {
    pub id: String,
    pub config: Value,
    pub secrets_set: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Why a destination could not be deleted.
#[derive(Debug)]
pub enum DeleteRefused {
    /// Journeys (not archived) whose newest version sends to it.
    InUse(Vec<String>),
}

impl Store {
    /// Creates or replaces a destination. Secret fields given replace the stored ones (`null`
    /// clears one); those left out keep their stored value. Returns whether it was created.
    pub async fn put_destination(
        &self,
        id: String,
        config: Map<String, Value>,
        secrets: Map<String, Value>,
    ) -> std::result::Result<bool, SubmitError> {
        self.writer()
            .submit_wait(move |ctx| {
                let conn = ctx.conn();
                let stored: Option<Option<String>> = conn
                    .prepare_cached("SELECT secret FROM destinations WHERE destination_id = ?1")?
                    .query_row([&id], |r| r.get(0))
                    .optional()?;
                let created = stored.is_none();
                let mut merged: Map<String, Value> =
                    stored.flatten().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
                for (k, v) in secrets {
                    if v.is_null() {
                        merged.remove(&k);
                    } else {
                        merged.insert(k, v);
                    }
                }
                let secret = (!merged.is_empty()).then(|| Value::Object(merged).to_string());
                conn.prepare_cached(
                    "INSERT INTO destinations (destination_id, config, secret, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
                     ON CONFLICT (destination_id) DO UPDATE SET config = excluded.config, secret = excluded.secret,
                         updated_at = excluded.updated_at",
                )?
                .execute(params![id, Value::Object(config).to_string(), secret, ctx.now])?;
                Ok(created)
            })
            .await
            .inspect(|_| self.destinations_changed())
    }

    /// Tells the dispatcher that the destinations table changed (called after the commit).
    fn destinations_changed(&self) {
        self.wake()
            .destinations
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        self.wake().deliveries.notify_one();
    }

    pub async fn destination(&self, id: String) -> Result<DestinationView> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT destination_id, config, secret, created_at, updated_at FROM destinations WHERE destination_id = ?1",
            )?
            .query_row([&id], view)
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("destination \"{id}\"")))
        })
        .await
    }

    pub async fn destinations(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page<DestinationView>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT destination_id, config, secret, created_at, updated_at FROM destinations
                 WHERE destination_id > ?1 ORDER BY destination_id LIMIT ?2",
            )?;
            let mut items: Vec<DestinationView> = stmt
                .query_map(params![after.unwrap_or_default(), limit as i64 + 1], view)?
                .collect::<rusqlite::Result<_>>()?;
            let more = items.len() > limit;
            items.truncate(limit);
            let next_cursor = if more {
                items.last().map(|d| d.id.clone())
            } else {
                None
            };
            Ok(Page { items, next_cursor })
        })
        .await
    }

    /// Deletes a destination unless a journey that is not archived sends to it.
    pub async fn delete_destination(
        &self,
        id: String,
    ) -> std::result::Result<std::result::Result<(), DeleteRefused>, SubmitError> {
        self.writer()
            .submit_wait(move |ctx| {
                let conn = ctx.conn();
                let exists: bool = conn
                    .prepare_cached("SELECT EXISTS (SELECT 1 FROM destinations WHERE destination_id = ?1)")?
                    .query_row([&id], |r| r.get(0))?;
                if !exists {
                    return Err(StoreError::NotFound(format!("destination \"{id}\"")));
                }
                // The definitions are small and few: read the live ones and look at their send steps.
                let mut stmt = conn.prepare_cached(
                    "SELECT j.journey_id, v.definition FROM journeys j JOIN journey_versions v
                     ON v.journey_id = j.journey_id AND v.version = j.version WHERE j.status != 'archived'",
                )?;
                let mut users = Vec::new();
                for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
                    let (journey, definition) = row?;
                    if let Ok(doc) = serde_json::from_str::<Value>(&definition)
                        && let Ok(j) = crate::journey::parse(&doc)
                        && j.destinations().contains(&id.as_str())
                    {
                        users.push(journey);
                    }
                }
                if !users.is_empty() {
                    return Ok(Err(DeleteRefused::InUse(users)));
                }
                conn.prepare_cached("DELETE FROM destinations WHERE destination_id = ?1")?.execute([&id])?;
                // Deliveries still waiting for it (from archived journeys) can no longer be sent.
                conn.prepare_cached(
                    "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, last_error = 'destination deleted',
                         updated_at = ?2 WHERE status = 'pending' AND destination_id = ?1",
                )?
                .execute(params![id, ctx.now])?;
                Ok(Ok(()))
            })
            .await
            .inspect(|_| self.destinations_changed())
    }
}

fn view(r: &rusqlite::Row) -> rusqlite::Result<DestinationView> {
    let secrets: Option<String> = r.get(2)?;
    let secrets_set = secrets
        .and_then(|s| serde_json::from_str::<Map<String, Value>>(&s).ok())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    Ok(DestinationView {
        id: r.get(0)?,
        config: serde_json::from_str(&r.get::<_, String>(1)?).unwrap_or(Value::Null),
        secrets_set,
        created_at: r.get(3)?,
        updated_at: r.get(4)?,
    })
}
