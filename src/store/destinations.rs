//! Destinations: their settings (public) and secrets (write-only), kept apart.

use rusqlite::{OptionalExtension, params};
use serde_json::{Map, Value};

use super::{Page, Refusal, Result, Store, StoreError, json_column, object_column};

/// A destination as the API shows it: settings plus which secret fields are set, never their values.
#[derive(Debug, Clone)]
pub(crate) struct DestinationView {
    pub(crate) id: String,
    pub(crate) config: Value,
    pub(crate) secrets_set: Vec<String>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

impl Store {
    /// Creates or replaces a destination. Secret fields given replace the stored ones (`null`
    /// clears one); those left out keep their stored value. Returns whether it was created.
    pub(crate) async fn put_destination(
        &self,
        id: String,
        config: Value,
        secrets: Map<String, Value>,
    ) -> Result<bool> {
        self.writer()
            .submit_wait(move |ctx| {
                let conn = ctx.conn;
                let stored: Option<Option<String>> = conn
                    .prepare_cached("SELECT secret FROM destinations WHERE destination_id = ?1")?
                    .query_row([&id], |r| r.get(0))
                    .optional()?;
                let created = stored.is_none();
                let mut merged = match stored.flatten() {
                    None => Map::new(),
                    Some(s) => object_column(&s, || format!("secrets of destination \"{id}\""))?,
                };
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
                .execute(params![id, config.to_string(), secret, ctx.now])?;
                ctx.effects.destinations = true;
                let before = ctx.state.caps.get(&id).copied();
                ctx.state.caps = caps(ctx.conn)?;
                if let Some(cap) = ctx.state.caps.get(&id).filter(|cap| Some(**cap) != before) {
                    // Sends made while the destination had no cap count against a new one too.
                    conn.prepare_cached(
                        "UPDATE deliveries SET cap_counted = 1
                         WHERE created_at > ?2 AND destination_id = ?1 AND status != 'capped' AND cap_counted IS NOT 1",
                    )?
                    .execute(params![id, ctx.now.saturating_sub(cap.per_ms as i64)])?;
                }
                Ok(created)
            })
            .await
    }

    /// The frequency caps of the destinations that have one, for simulations to count as the
    /// live engine does.
    pub(crate) async fn destination_caps(
        &self,
    ) -> Result<std::collections::HashMap<String, crate::delivery::Cap>> {
        self.read(caps).await
    }

    /// A destination's stored secrets (empty when it does not exist), to unmask a `PUT`.
    pub(crate) async fn destination_secrets(&self, id: String) -> Result<Map<String, Value>> {
        self.read(move |conn| {
            let stored: Option<Option<String>> = conn
                .prepare_cached("SELECT secret FROM destinations WHERE destination_id = ?1")?
                .query_row([&id], |r| r.get(0))
                .optional()?;
            match stored.flatten() {
                None => Ok(Map::new()),
                Some(s) => object_column(&s, || format!("secrets of destination \"{id}\"")),
            }
        })
        .await
    }

    pub(crate) async fn destination(&self, id: String) -> Result<DestinationView> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT destination_id, config, secret, created_at, updated_at FROM destinations WHERE destination_id = ?1",
            )?
            .query_row([&id], raw_view)
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("destination \"{id}\"")))?
            .read()
        })
        .await
    }

    pub(crate) async fn destinations(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page<DestinationView>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT destination_id, config, secret, created_at, updated_at FROM destinations
                 WHERE destination_id > ?1 ORDER BY destination_id LIMIT ?2",
            )?;
            let items: Vec<DestinationView> = stmt
                .query_map(
                    params![after.unwrap_or_default(), limit as i64 + 1],
                    raw_view,
                )?
                .map(|row| row?.read())
                .collect::<Result<_>>()?;
            Ok(Page::of(items, limit, |d| d.id.clone()))
        })
        .await
    }

    /// Deletes a destination unless a journey that is not archived sends to it
    /// ([`Refusal::InUse`]).
    pub(crate) async fn delete_destination(&self, id: String) -> Result<()> {
        self.writer()
            .submit_wait(move |ctx| {
                let conn = ctx.conn;
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
                    let doc: Value = json_column(&definition, || format!("definition of journey \"{journey}\""))?;
                    // A stored definition validated when it was published.
                    if crate::journey::parse(&doc).is_ok_and(|j| j.destinations().contains(&id.as_str())) {
                        users.push(journey);
                    }
                }
                if !users.is_empty() {
                    return Err(StoreError::Refused(Refusal::InUse(users)));
                }
                conn.prepare_cached("DELETE FROM destinations WHERE destination_id = ?1")?.execute([&id])?;
                // Deliveries still waiting for it (from archived journeys) can no longer be sent.
                conn.prepare_cached(
                    "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, last_error = 'destination deleted',
                         updated_at = ?2 WHERE status = 'pending' AND destination_id = ?1",
                )?
                .execute(params![id, ctx.now])?;
                ctx.effects.destinations = true;
                ctx.state.caps.remove(&id);
                Ok(())
            })
            .await
    }
}

/// The frequency caps of the destinations that have one.
pub(super) fn caps(
    conn: &rusqlite::Connection,
) -> Result<std::collections::HashMap<String, crate::delivery::Cap>> {
    let mut out = std::collections::HashMap::new();
    let mut stmt = conn.prepare_cached("SELECT destination_id, config FROM destinations")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        let config: Value = json_column(&r.get::<_, String>(1)?, || {
            format!("settings of destination \"{id}\"")
        })?;
        // Settings stored by this journeyd validated when they were stored.
        if let Some(cap) = crate::delivery::parse(&config)
            .ok()
            .and_then(|d| d.destination.frequency_cap)
        {
            out.insert(id, cap);
        }
    }
    Ok(out)
}

/// A destination row as read, its JSON columns not yet parsed.
struct RawView(DestinationView, String, Option<String>);

impl RawView {
    fn read(self) -> Result<DestinationView> {
        let RawView(mut view, config, secrets) = self;
        let what = |field: &str| format!("{field} of destination \"{}\"", view.id);
        view.config = json_column(&config, || what("settings"))?;
        if let Some(s) = secrets {
            view.secrets_set = object_column(&s, || what("secrets"))?
                .keys()
                .cloned()
                .collect();
        }
        Ok(view)
    }
}

fn raw_view(r: &rusqlite::Row) -> rusqlite::Result<RawView> {
    Ok(RawView(
        DestinationView {
            id: r.get(0)?,
            config: Value::Null,
            secrets_set: Vec::new(),
            created_at: r.get(3)?,
            updated_at: r.get(4)?,
        },
        r.get(1)?,
        r.get(2)?,
    ))
}
