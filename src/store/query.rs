//! Read-side queries for the admin API: profiles and their timelines.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
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
    Transition(TransitionRow),
}

impl TimelineItem {
    fn seq(&self) -> i64 {
        match self {
            TimelineItem::Event { seq, .. } => *seq,
            TimelineItem::Transition(t) => t.seq,
        }
    }
}

/// A page of a list, with the cursor of the next page when there is one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl Store {
    /// Timers waiting to fire and deliveries waiting to be sent, both counted through their
    /// partial indexes.
    pub async fn pending_counts(&self) -> Result<(i64, i64)> {
        self.read(|conn| {
            let timers = conn.query_row(
                "SELECT count(*) FROM instances WHERE due_at IS NOT NULL",
                [],
                |r| r.get(0),
            )?;
            let deliveries = conn.query_row(
                "SELECT count(*) FROM deliveries WHERE status = 'pending'",
                [],
                |r| r.get(0),
            )?;
            Ok((timers, deliveries))
        })
        .await
    }

    /// Journeys not archived, and timers pending: for the start-up line.
    pub async fn startup_counts(&self) -> Result<(i64, i64)> {
        self.read(|conn| {
            let journeys = conn.query_row(
                "SELECT count(*) FROM journeys WHERE status != 'archived'",
                [],
                |r| r.get(0),
            )?;
            let timers = conn.query_row(
                "SELECT count(*) FROM instances WHERE due_at IS NOT NULL",
                [],
                |r| r.get(0),
            )?;
            Ok((journeys, timers))
        })
        .await
    }

    /// The profile `id` belongs to (an id linked to a profile resolves to it).
    pub async fn profile(&self, id: String) -> Result<ProfileView> {
        self.read(move |conn| profile(conn, &id)).await
    }

    /// The events of the profile `id` belongs to (and of the ids linked to it), oldest first,
    /// after the position `cursor`.
    pub async fn timeline(
        &self,
        id: String,
        cursor: Option<i64>,
        limit: usize,
    ) -> Result<Page<TimelineItem>> {
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
        .prepare_cached(
            "SELECT traits, created_at, updated_at FROM profiles WHERE profile_key = ?1",
        )?
        .query_row([&key], |r| {
            Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((traits, created_at, updated_at)) = row else {
        return Err(StoreError::NotFound(format!("profile \"{id}\"")));
    };
    let mut ids = vec![key.clone()];
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM identities WHERE profile_key = ?1 ORDER BY linked_at, id",
    )?;
    for linked in stmt.query_map([&key], |r| r.get::<_, String>(0))? {
        ids.push(linked?);
    }
    let traits = serde_json::from_str(&traits).unwrap_or(Value::Object(Default::default()));
    Ok(ProfileView {
        key,
        traits,
        ids,
        created_at,
        updated_at,
    })
}

fn timeline(
    conn: &Connection,
    keys: &[String],
    after: i64,
    limit: usize,
) -> Result<Page<TimelineItem>> {
    // Events and transitions written under any id of this profile (an anonymous id keeps what it
    // had before it was linked), merged by their shared commit-order sequence. The id list is
    // short: a profile and the ids linked to it.
    let marks = vec!["?"; keys.len()].join(",");
    let mut args: Vec<rusqlite::types::Value> = keys.iter().map(|k| k.clone().into()).collect();
    args.push(after.into());
    args.push((limit as i64 + 1).into());
    let mut items = Vec::new();
    let mut stmt = conn.prepare(&format!(
        "SELECT seq, body FROM events WHERE profile_key IN ({marks}) AND seq > ? ORDER BY seq LIMIT ?"
    ))?;
    let mut rows = stmt.query(params_from_iter(args.iter()))?;
    while let Some(row) = rows.next()? {
        let body: String = row.get(1)?;
        items.push(TimelineItem::Event {
            seq: row.get(0)?,
            message: serde_json::from_str(&body).unwrap_or(Value::Null),
        });
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT {TRANSITION_COLUMNS} FROM transitions WHERE profile_key IN ({marks}) AND seq > ? ORDER BY seq LIMIT ?"
    ))?;
    for row in stmt.query_map(params_from_iter(args.iter()), transition_row)? {
        items.push(TimelineItem::Transition(row?));
    }
    items.sort_by_key(TimelineItem::seq);
    let more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = if more {
        items.last().map(|i| i.seq().to_string())
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// The per-journey totals counted in stats, each shown even at zero.
pub const TOTALS: [&str; 6] = [
    "entered",
    "active",
    "completed",
    "exited",
    "skipped",
    "archived",
];

/// A journey as listed.
#[derive(Debug, Clone)]
pub struct JourneySummary {
    pub id: String,
    pub name: String,
    pub status: String,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// Totals over all versions: entered, active, completed, exited, skipped, archived.
    pub counts: BTreeMap<String, i64>,
}

/// One journey with its newest definition and its versions.
#[derive(Debug, Clone)]
pub struct JourneyDetail {
    pub summary: JourneySummary,
    pub definition: Value,
    /// (version, created_at), oldest first.
    pub versions: Vec<(i64, i64)>,
}

/// The counters of a journey's stats: (kind, step, label) to count.
pub type StatRows = Vec<(String, String, String, i64)>;

/// An instance with its history.
#[derive(Debug, Clone)]
pub struct InstanceView {
    pub id: i64,
    pub profile_key: String,
    pub journey_id: String,
    pub version: i64,
    pub state: String,
    pub step: Option<String>,
    pub unique_value: Option<Value>,
    pub context: Value,
    pub resets: i64,
    pub due_at: Option<i64>,
    pub entered_at: i64,
    pub updated_at: i64,
    pub history: Vec<TransitionRow>,
}

/// A stored transition.
#[derive(Debug, Clone)]
pub struct TransitionRow {
    pub seq: i64,
    pub instance_id: Option<i64>,
    pub journey_id: String,
    pub version: i64,
    pub at: i64,
    pub what: String,
    pub step: Option<String>,
    pub detail: Option<String>,
}

impl Store {
    pub async fn journeys(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page<JourneySummary>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT journey_id FROM journeys WHERE journey_id > ?1 ORDER BY journey_id LIMIT ?2",
            )?;
            let ids: Vec<String> = stmt
                .query_map(params![after.unwrap_or_default(), limit as i64 + 1], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let more = ids.len() > limit;
            let mut items = Vec::new();
            for id in ids.iter().take(limit) {
                items.push(journey_detail(conn, id)?.summary);
            }
            let next_cursor = if more { items.last().map(|j: &JourneySummary| j.id.clone()) } else { None };
            Ok(Page { items, next_cursor })
        })
        .await
    }

    pub async fn journey(&self, id: String) -> Result<JourneyDetail> {
        self.read(move |conn| journey_detail(conn, &id)).await
    }

    /// Stats counters of a journey, of one version or summed over all.
    pub async fn journey_stats(
        &self,
        id: String,
        version: Option<i64>,
    ) -> Result<(JourneyDetail, StatRows)> {
        self.read(move |conn| {
            let detail = journey_detail(conn, &id)?;
            let mut stmt = conn.prepare_cached(
                "SELECT kind, step_id, label, sum(count) FROM journey_stats
                 WHERE journey_id = ?1 AND (?2 IS NULL OR version = ?2) GROUP BY kind, step_id, label",
            )?;
            let rows = stmt
                .query_map(params![id, version], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok((detail, rows))
        })
        .await
    }

    /// The definition of one version of a journey.
    pub async fn journey_version(&self, id: String, version: i64) -> Result<Value> {
        self.read(move |conn| {
            let def: Option<String> = conn
                .prepare_cached("SELECT definition FROM journey_versions WHERE journey_id = ?1 AND version = ?2")?
                .query_row(params![id, version], |r| r.get(0))
                .optional()?;
            let def = def.ok_or_else(|| StoreError::NotFound(format!("version {version} of journey \"{id}\"")))?;
            Ok(serde_json::from_str(&def).unwrap_or(Value::Null))
        })
        .await
    }

    pub async fn instance(&self, id: i64) -> Result<InstanceView> {
        self.read(move |conn| {
            let mut view = conn
                .prepare_cached(
                    "SELECT instance_id, profile_key, journey_id, version, state, step_id, unique_value, context, resets,
                            due_at, entered_at, updated_at FROM instances WHERE instance_id = ?1",
                )?
                .query_row([id], instance_row)
                .optional()?
                .ok_or_else(|| StoreError::NotFound(format!("instance {id}")))?;
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {TRANSITION_COLUMNS} FROM transitions WHERE profile_key = ?1 AND instance_id = ?2 ORDER BY seq"
            ))?;
            view.history =
                stmt.query_map(params![view.profile_key, id], transition_row)?.collect::<rusqlite::Result<_>>()?;
            Ok(view)
        })
        .await
    }

    /// The newest instances of a profile (and of the ids linked to it), history left out.
    pub async fn profile_instances(
        &self,
        keys: Vec<String>,
        limit: usize,
    ) -> Result<Vec<InstanceView>> {
        self.read(move |conn| {
            let marks = vec!["?"; keys.len()].join(",");
            let mut stmt = conn.prepare(&format!(
                "SELECT instance_id, profile_key, journey_id, version, state, step_id, unique_value, context, resets,
                        due_at, entered_at, updated_at FROM instances WHERE profile_key IN ({marks})
                 ORDER BY instance_id DESC LIMIT {limit}"
            ))?;
            Ok(stmt.query_map(params_from_iter(keys), instance_row)?.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }
}

const TRANSITION_COLUMNS: &str = "seq, instance_id, journey_id, version, at, what, step_id, detail";

fn transition_row(r: &rusqlite::Row) -> rusqlite::Result<TransitionRow> {
    Ok(TransitionRow {
        seq: r.get(0)?,
        instance_id: r.get(1)?,
        journey_id: r.get(2)?,
        version: r.get(3)?,
        at: r.get(4)?,
        what: r.get(5)?,
        step: r.get(6)?,
        detail: r.get(7)?,
    })
}

fn instance_row(r: &rusqlite::Row) -> rusqlite::Result<InstanceView> {
    Ok(InstanceView {
        id: r.get(0)?,
        profile_key: r.get(1)?,
        journey_id: r.get(2)?,
        version: r.get(3)?,
        state: r.get(4)?,
        step: r.get(5)?,
        unique_value: r
            .get::<_, Option<String>>(6)?
            .and_then(|v| serde_json::from_str(&v).ok()),
        context: serde_json::from_str(&r.get::<_, String>(7)?).unwrap_or(Value::Null),
        resets: r.get(8)?,
        due_at: r.get(9)?,
        entered_at: r.get(10)?,
        updated_at: r.get(11)?,
        history: Vec::new(),
    })
}

fn journey_detail(conn: &Connection, id: &str) -> Result<JourneyDetail> {
    let row: Option<(String, i64, i64, i64)> = conn
        .prepare_cached(
            "SELECT status, version, created_at, updated_at FROM journeys WHERE journey_id = ?1",
        )?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    let Some((status, version, created_at, updated_at)) = row else {
        return Err(StoreError::NotFound(format!("journey \"{id}\"")));
    };
    let mut versions = Vec::new();
    let mut definition = Value::Null;
    let mut stmt = conn.prepare_cached(
        "SELECT version, created_at, definition FROM journey_versions WHERE journey_id = ?1 ORDER BY version",
    )?;
    let mut rows = stmt.query([id])?;
    while let Some(r) = rows.next()? {
        let v: i64 = r.get(0)?;
        versions.push((v, r.get(1)?));
        if v == version {
            definition = serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or(Value::Null);
        }
    }
    let mut counts: BTreeMap<String, i64> = TOTALS.iter().map(|k| (k.to_string(), 0)).collect();
    let mut stmt = conn.prepare_cached(
        "SELECT label, sum(count) FROM journey_stats WHERE journey_id = ?1 AND kind = 'total' GROUP BY label",
    )?;
    for row in stmt.query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (label, n) = row?;
        counts.insert(label, n);
    }
    let name = definition
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(id)
        .to_string();
    Ok(JourneyDetail {
        summary: JourneySummary {
            id: id.to_string(),
            name,
            status,
            version,
            created_at,
            updated_at,
            counts,
        },
        definition,
        versions,
    })
}
