//! Read-side queries for the admin API and the start-up line: counts, profiles and their
//! timelines, journeys, instances. Each runs on a pooled read connection and never waits for the
//! writer. A stored value that does not read back is reported as [`StoreError::Corrupt`].

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::{Result, Store, StoreError, ingest::resolve, json_column, stats};
use crate::engine::stats::Total;
use crate::engine::{State, Transition, What};
use crate::journey::Status;

/// A page of a list, with the cursor of the next page when there is one.
#[derive(Debug, Clone)]
pub(crate) struct Page<T> {
    pub(crate) items: Vec<T>,
    pub(crate) next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// The first `limit` of `items` (read with one more than `limit`, to know whether another
    /// page follows), the cursor taken from the last item kept.
    pub(super) fn of(mut items: Vec<T>, limit: usize, cursor: impl Fn(&T) -> String) -> Page<T> {
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = if more { items.last().map(cursor) } else { None };
        Page { items, next_cursor }
    }
}

/// Which of a journey's instances to list.
#[derive(Debug, Clone, Default)]
pub(crate) struct InstanceFilter {
    pub(crate) state: Option<State>,
    pub(crate) step: Option<String>,
    pub(crate) version: Option<i64>,
}

/// What the database holds, counted through indexes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counts {
    /// Journeys not archived.
    pub(crate) journeys: i64,
    /// Timers waiting to fire.
    pub(crate) timers: i64,
    /// Deliveries waiting to be sent or retried.
    pub(crate) deliveries: i64,
}

/// A profile as the admin API shows it.
#[derive(Debug, Clone)]
pub(crate) struct ProfileView {
    pub(crate) key: String,
    pub(crate) traits: Value,
    /// Every id that reaches this profile, the key first.
    pub(crate) ids: Vec<String>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

/// One entry of a profile's timeline.
#[derive(Debug, Clone)]
pub(crate) enum TimelineItem {
    Event {
        seq: i64,
        message: Value,
    },
    Transition(TransitionRow),
    /// Profile `absorbed` merged into `survivor` (SPEC §2 Identity).
    Merged {
        seq: i64,
        at: i64,
        absorbed: String,
        survivor: String,
    },
}

impl TimelineItem {
    fn seq(&self) -> i64 {
        match self {
            TimelineItem::Event { seq, .. } | TimelineItem::Merged { seq, .. } => *seq,
            TimelineItem::Transition(t) => t.seq,
        }
    }
}

/// A journey as listed.
#[derive(Debug, Clone)]
pub(crate) struct JourneySummary {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) status: Status,
    pub(crate) version: i64,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    /// Totals over all versions.
    pub(crate) counts: BTreeMap<Total, i64>,
}

/// One journey with its newest definition and its versions.
#[derive(Debug, Clone)]
pub(crate) struct JourneyDetail {
    pub(crate) summary: JourneySummary,
    pub(crate) definition: Value,
    /// (version, created_at), oldest first.
    pub(crate) versions: Vec<(i64, i64)>,
}

/// An instance with its history.
#[derive(Debug, Clone)]
pub(crate) struct InstanceView {
    pub(crate) id: i64,
    pub(crate) profile_key: String,
    pub(crate) journey_id: String,
    pub(crate) version: i64,
    pub(crate) state: State,
    pub(crate) step: Option<String>,
    pub(crate) unique_value: Option<Value>,
    pub(crate) context: Value,
    pub(crate) resets: i64,
    pub(crate) due_at: Option<i64>,
    pub(crate) entered_at: i64,
    pub(crate) updated_at: i64,
    pub(crate) history: Vec<TransitionRow>,
}

/// A stored transition, with its place in the commit order.
#[derive(Debug, Clone)]
pub(crate) struct TransitionRow {
    pub(crate) seq: i64,
    pub(crate) transition: Transition,
}

impl Store {
    /// Journeys not archived, timers waiting to fire and deliveries waiting to be sent, each
    /// counted through its (partial) index.
    pub(crate) async fn counts(&self) -> Result<Counts> {
        self.read(|conn| {
            let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0));
            Ok(Counts {
                journeys: count("SELECT count(*) FROM journeys WHERE status != 'archived'")?,
                timers: count("SELECT count(*) FROM instances WHERE due_at IS NOT NULL")?,
                deliveries: count("SELECT count(*) FROM deliveries WHERE status = 'pending'")?,
            })
        })
        .await
    }

    /// The profile `id` belongs to (an id linked to a profile resolves to it).
    pub(crate) async fn profile(&self, id: String) -> Result<ProfileView> {
        self.read(move |conn| profile(conn, &id)).await
    }

    /// The events and transitions of the profile `id` belongs to (and of the ids linked to it),
    /// oldest first, after the position `cursor`.
    pub(crate) async fn timeline(
        &self,
        id: String,
        cursor: Option<i64>,
        limit: usize,
    ) -> Result<Page<TimelineItem>> {
        self.read(move |conn| {
            let profile = profile(conn, &id)?;
            timeline(conn, &profile.key, cursor.unwrap_or(0), limit)
        })
        .await
    }

    pub(crate) async fn journeys(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page<JourneySummary>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT journey_id FROM journeys WHERE journey_id > ?1 ORDER BY journey_id LIMIT ?2",
            )?;
            let ids: Vec<String> = stmt
                .query_map(params![after.unwrap_or_default(), limit as i64 + 1], |r| {
                    r.get(0)
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut items = Vec::with_capacity(ids.len());
            for id in &ids {
                items.push(journey_detail(conn, id)?.summary);
            }
            Ok(Page::of(items, limit, |j| j.id.clone()))
        })
        .await
    }

    pub(crate) async fn journey(&self, id: String) -> Result<JourneyDetail> {
        self.read(move |conn| journey_detail(conn, &id)).await
    }

    /// The definition of one version of a journey.
    pub(crate) async fn journey_version(&self, id: String, version: i64) -> Result<Value> {
        self.read(move |conn| {
            let def: Option<String> = conn
                .prepare_cached(
                    "SELECT definition FROM journey_versions WHERE journey_id = ?1 AND version = ?2",
                )?
                .query_row(params![id, version], |r| r.get(0))
                .optional()?;
            let def = def.ok_or_else(|| {
                StoreError::NotFound(format!("version {version} of journey \"{id}\""))
            })?;
            json_column(&def, || format!("version {version} of journey \"{id}\""))
        })
        .await
    }

    pub(crate) async fn instance(&self, id: i64) -> Result<InstanceView> {
        self.read(move |conn| {
            let mut view = conn
                .prepare_cached(&format!(
                    "SELECT {INSTANCE_COLUMNS} FROM instances WHERE instance_id = ?1"
                ))?
                .query_row([id], raw_instance)
                .optional()?
                .ok_or_else(|| StoreError::NotFound(format!("instance {id}")))?
                .read()?;
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {TRANSITION_COLUMNS} FROM transitions WHERE instance_id = ?1 ORDER BY seq"
            ))?;
            view.history = stmt
                .query_map(params![id], raw_transition)?
                .map(|row| row?.read())
                .collect::<Result<_>>()?;
            Ok(view)
        })
        .await
    }

    /// A journey's instances, newest first, optionally of one state, step and version; history
    /// left out. The cursor is the last instance id of the previous page.
    pub(crate) async fn journey_instances(
        &self,
        journey: String,
        filter: InstanceFilter,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Page<InstanceView>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {INSTANCE_COLUMNS} FROM instances
                 WHERE journey_id = ?1 AND instance_id < ?2
                   AND (?3 IS NULL OR state = ?3) AND (?4 IS NULL OR step_id = ?4) AND (?5 IS NULL OR version = ?5)
                 ORDER BY instance_id DESC LIMIT ?6"
            ))?;
            let items = stmt
                .query_map(
                    params![
                        journey,
                        before.unwrap_or(i64::MAX),
                        filter.state.map(State::as_str),
                        filter.step,
                        filter.version,
                        limit as i64 + 1
                    ],
                    raw_instance,
                )?
                .map(|row| row?.read())
                .collect::<Result<Vec<_>>>()?;
            Ok(Page::of(items, limit, |i| i.id.to_string()))
        })
        .await
    }

    /// Profiles whose key starts with `prefix`, in key order, after `after`.
    pub(crate) async fn profiles(
        &self,
        prefix: String,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page<ProfileView>> {
        self.read(move |conn| {
            // Every key that starts with the prefix sorts before the prefix followed by the
            // largest character: one index range, from the prefix (or past the cursor) up.
            let upper = format!("{prefix}\u{10FFFF}");
            let mut stmt = conn.prepare_cached(
                "SELECT profile_key FROM profiles
                 WHERE profile_key >= ?1 AND profile_key > ?2 AND profile_key < ?3
                 ORDER BY profile_key LIMIT ?4",
            )?;
            let keys: Vec<String> = stmt
                .query_map(
                    params![prefix, after.unwrap_or_default(), upper, limit as i64 + 1],
                    |r| r.get(0),
                )?
                .collect::<rusqlite::Result<_>>()?;
            let items = keys
                .iter()
                .map(|k| profile(conn, k))
                .collect::<Result<Vec<_>>>()?;
            Ok(Page::of(items, limit, |p| p.key.clone()))
        })
        .await
    }

    /// The newest instances of a profile (and of the ids linked to it), history left out.
    pub(crate) async fn profile_instances(
        &self,
        key: String,
        limit: usize,
    ) -> Result<Vec<InstanceView>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {INSTANCE_COLUMNS} FROM instances WHERE instance_id IN ({})
                 ORDER BY instance_id DESC LIMIT ?2",
                profile_instances()
            ))?;
            stmt.query_map(params![key, limit as i64], raw_instance)?
                .map(|row| row?.read())
                .collect()
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
    let traits = json_column(&traits, || format!("traits of profile \"{key}\""))?;
    Ok(ProfileView {
        key,
        traits,
        ids,
        created_at,
        updated_at,
    })
}

/// The profile keys of a profile and of the ids linked to it (an anonymous id keeps what it had
/// before it was linked), for `profile_key IN (...)`: one statement of fixed size, however many
/// ids are linked.
pub(super) const PROFILE_KEYS: &str =
    "SELECT ?1 UNION ALL SELECT id FROM identities WHERE profile_key = ?1";

/// The instances of a profile and of the ids linked to it, from `profile_log` (an instance that
/// moved with a merge is logged under its new key), for `instance_id IN (...)`.
fn profile_instances() -> String {
    format!(
        "SELECT instance_id FROM profile_log WHERE profile_key IN ({PROFILE_KEYS}) AND instance_id IS NOT NULL"
    )
}

fn timeline(conn: &Connection, key: &str, after: i64, limit: usize) -> Result<Page<TimelineItem>> {
    // Events and transitions of the profile, merged by their shared commit-order sequence.
    let mut items = Vec::new();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT e.seq, jd_text(e.body) FROM profile_log l JOIN events e ON e.seq = l.seq
         WHERE l.profile_key IN ({PROFILE_KEYS}) AND l.seq > ?2 AND l.instance_id IS NULL ORDER BY l.seq LIMIT ?3"
    ))?;
    let mut rows = stmt.query(params![key, after, limit as i64 + 1])?;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let message = json_column(&row.get::<_, String>(1)?, || format!("stored event {seq}"))?;
        items.push(TimelineItem::Event { seq, message });
    }
    // A profile's transitions: those of its instances (an instance that moved with a merge
    // brings its history), and the entries skipped without an instance, by key.
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {TRANSITION_COLUMNS} FROM transitions
         WHERE instance_id IN ({}) AND seq > ?2
         UNION ALL
         SELECT {TRANSITION_COLUMNS} FROM transitions INDEXED BY transitions_without_instance
         WHERE instance_id IS NULL AND profile_key IN ({PROFILE_KEYS}) AND seq > ?2
         ORDER BY seq LIMIT ?3",
        profile_instances()
    ))?;
    for row in stmt.query_map(params![key, after, limit as i64 + 1], raw_transition)? {
        items.push(TimelineItem::Transition(row?.read()?));
    }
    // Each merge is recorded under both profiles' keys; a profile's view (which includes the
    // keys merged into it) shows it once, from the surviving side.
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT seq, at, absorbed, survivor FROM merges
         WHERE profile_key IN ({PROFILE_KEYS}) AND profile_key = survivor AND seq > ?2 ORDER BY seq LIMIT ?3"
    ))?;
    let mut rows = stmt.query(params![key, after, limit as i64 + 1])?;
    while let Some(r) = rows.next()? {
        items.push(TimelineItem::Merged {
            seq: r.get(0)?,
            at: r.get(1)?,
            absorbed: r.get(2)?,
            survivor: r.get(3)?,
        });
    }
    items.sort_by_key(TimelineItem::seq);
    Ok(Page::of(items, limit, |i| i.seq().to_string()))
}

const TRANSITION_COLUMNS: &str = "seq, instance_id, journey_id, version, at, what, step_id, detail";

/// A transition row as read, its kind not yet parsed.
struct RawTransition(TransitionRow, String);

impl RawTransition {
    fn read(self) -> Result<TransitionRow> {
        let RawTransition(mut row, what) = self;
        row.transition.what = What::parse(&what).ok_or_else(|| {
            StoreError::Corrupt(format!("transition {} has kind \"{what}\"", row.seq))
        })?;
        Ok(row)
    }
}

fn raw_transition(r: &rusqlite::Row) -> rusqlite::Result<RawTransition> {
    Ok(RawTransition(
        TransitionRow {
            seq: r.get(0)?,
            transition: Transition {
                instance: r.get(1)?,
                journey_id: r.get(2)?,
                version: r.get(3)?,
                at: r.get(4)?,
                what: What::Step,
                step: r.get(6)?,
                detail: r.get(7)?,
            },
        },
        r.get(5)?,
    ))
}

const INSTANCE_COLUMNS: &str =
    "instance_id, profile_key, journey_id, version, state, step_id, unique_value, jd_text(context), resets,
     due_at, entered_at, updated_at";

/// An instance row as read, its text columns not yet parsed.
struct RawInstance(InstanceView, String, Option<String>, String);

impl RawInstance {
    fn read(self) -> Result<InstanceView> {
        let RawInstance(mut view, state, unique_value, context) = self;
        let what = |field: &str| format!("{field} of instance {}", view.id);
        view.state = State::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("{} \"{state}\"", what("state"))))?;
        view.unique_value = match unique_value {
            None => None,
            Some(v) => Some(json_column(&v, || what("unique value"))?),
        };
        view.context = json_column(&context, || what("context"))?;
        Ok(view)
    }
}

fn raw_instance(r: &rusqlite::Row) -> rusqlite::Result<RawInstance> {
    Ok(RawInstance(
        InstanceView {
            id: r.get(0)?,
            profile_key: r.get(1)?,
            journey_id: r.get(2)?,
            version: r.get(3)?,
            state: State::Active,
            step: r.get(5)?,
            unique_value: None,
            context: Value::Null,
            resets: r.get(8)?,
            due_at: r.get(9)?,
            entered_at: r.get(10)?,
            updated_at: r.get(11)?,
            history: Vec::new(),
        },
        r.get(4)?,
        r.get(6)?,
        r.get(7)?,
    ))
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
    let status = Status::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("journey \"{id}\" has status \"{status}\"")))?;
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
            definition = json_column(&r.get::<_, String>(2)?, || {
                format!("version {v} of journey \"{id}\"")
            })?;
        }
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
            counts: stats::totals(conn, id)?,
        },
        definition,
        versions,
    })
}
