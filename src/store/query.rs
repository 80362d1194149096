//! Read-side queries for the admin API: profiles and their timelines.

use rusqlite::{Connection, OptionalExtension, params_from_iter};
use serde_json::Value;

use super::{Result, Store, StoreError, ingest::resolve};

/// A profile as the admin API shows it.
#[derive(Debug, Clone)]
pub struct ProfileView {
    pub key: String,
    pub traits: Value,
    /// Every id that reaches this profile, the key first.
    pub ids: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One entry of a profile's timeline.
#[derive(Debug, Clone)]
pub enum TimelineItem {
    Event { seq: i64, message: Value },
}

/// A page of a list, with the cursor of the next page when there is one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl Store {
    /// The profile `id` belongs to (an id linked to a profile resolves to it).
    pub async fn profile(&self, id: String) -> Result<ProfileView> {
        self.read(move |conn| profile(conn, &id)).await
    }

    /// The events of the profile `id` belongs to (and of the ids linked to it), oldest first,
    /// after the position `cursor`.
    pub async fn timeline(&self, id: String, cursor: Option<i64>, limit: usize) -> Result<Page<TimelineItem>> {
        self.read(move |conn| {
            let profile = profile(conn, &id)?;
            timeline(conn, &profile.ids, cursor.unwrap_or(0), limit)
        })
        .await
    }
}

fn profile(conn: &Connection, id: &str) -> Result<ProfileView> {
    let key = resolve(conn, id)?;
    let row = conn
        .prepare_cached("SELECT traits, created_at, updated_at FROM profiles WHERE profile_key = ?1")?
        .query_row([&key], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((traits, created_at, updated_at)) = row else {
        return Err(StoreError::NotFound(format!("profile \"{id}\"")));
    };
    let mut ids = vec![key.clone()];
    let mut stmt = conn.prepare_cached("SELECT id FROM identities WHERE profile_key = ?1 ORDER BY linked_at, id")?;
    for linked in stmt.query_map([&key], |r| r.get::<_, String>(0))? {
        ids.push(linked?);
    }
    let traits = serde_json::from_str(&traits).unwrap_or(Value::Object(Default::default()));
    Ok(ProfileView { key, traits, ids, created_at, updated_at })
}

fn timeline(conn: &Connection, keys: &[String], after: i64, limit: usize) -> Result<Page<TimelineItem>> {
    // Events written under any id of this profile (an anonymous id keeps the events it had
    // before it was linked). The id list is short: a profile and the ids linked to it.
    let marks = vec!["?"; keys.len()].join(",");
    let sql = format!(
        "SELECT seq, body FROM events WHERE profile_key IN ({marks}) AND seq > ? ORDER BY seq LIMIT ?"
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut args: Vec<rusqlite::types::Value> = keys.iter().map(|k| k.clone().into()).collect();
    args.push(after.into());
    args.push((limit as i64 + 1).into());
    let mut items = Vec::with_capacity(limit.min(1000));
    let mut rows = stmt.query(params_from_iter(args))?;
    let mut more = false;
    while let Some(row) = rows.next()? {
        if items.len() == limit {
            more = true;
            break;
        }
        let seq: i64 = row.get(0)?;
        let body: String = row.get(1)?;
        let message = serde_json::from_str(&body).unwrap_or(Value::Null);
        items.push(TimelineItem::Event { seq, message });
    }
    let next_cursor = match (more, items.last()) {
        (true, Some(TimelineItem::Event { seq, .. })) => Some(seq.to_string()),
        _ => None,
    };
    Ok(Page { items, next_cursor })
}
