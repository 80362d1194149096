//! Journeys on the write side: the live catalog the engine runs (kept in the writer thread),
//! loading a profile's state for the engine and writing back what it did, firing due timers, and
//! publishing, pausing, resuming and archiving journeys.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};

use super::writer::WriteCtx;
use super::{Result, Store, StoreError, SubmitError, Wake};
use crate::engine::{
    Catalog, Effects, Engine, EventView, Ids, Instance, Memory, ProfileState, State, What,
};
use crate::journey::{Journey, StepKind};
use crate::metrics::{METRICS, label};

/// One journey as the writer holds it.
#[derive(Debug, Clone)]
struct LiveJourney {
    status: String,
    version: i64,
    versions: HashMap<i64, Arc<Journey>>,
}

/// The journeys the engine runs, with indexes by event name, owned by the writer thread. Archived
/// journeys are not held: their instances have all ended.
#[derive(Debug, Default)]
pub struct Live {
    journeys: BTreeMap<String, LiveJourney>,
    /// Event names that any held version uses (entry, hold branch, exit): other events skip the
    /// engine entirely.
    interesting: HashSet<String>,
    last_instance_id: i64,
    max_active: usize,
    wake: Arc<Wake>,
    /// Set when a job wrote deliveries that are due now: the writer wakes the dispatcher once the
    /// transaction has committed (the dispatcher reads on its own connection, so waking it any
    /// earlier would let it look before the rows are visible).
    pub(super) deliveries_written: bool,
    /// Stats counter changes of the running job, written by [`flush_stats`] when it ends.
    pending_stats: HashMap<StatKey, i64>,
}

/// A stats counter: journey, version, kind, step, label.
type StatKey = (String, i64, &'static str, String, String);

impl Live {
    pub fn new(max_active: usize, wake: Arc<Wake>) -> Live {
        Live {
            max_active,
            wake,
            ..Live::default()
        }
    }

    /// Reads every non-archived journey and its versions.
    pub(super) fn reload(mut self, conn: &Connection) -> Result<Live> {
        self.journeys.clear();
        let mut stmt = conn.prepare(
            "SELECT j.journey_id, j.status, j.version, v.version, v.definition
             FROM journeys j JOIN journey_versions v ON v.journey_id = j.journey_id
             WHERE j.status != 'archived'",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        for row in rows {
            let (id, status, current, version, definition) = row?;
            let journey = parse_stored(&definition)?;
            let entry = self.journeys.entry(id).or_insert_with(|| LiveJourney {
                status,
                version: current,
                versions: HashMap::new(),
            });
            entry.versions.insert(version, Arc::new(journey));
        }
        self.last_instance_id = conn.query_row(
            "SELECT coalesce(max(instance_id), 0) FROM instances",
            [],
            |r| r.get(0),
        )?;
        self.reindex();
        Ok(self)
    }

    /// Forgets what a failed job accumulated.
    pub(super) fn discard_job_state(&mut self) {
        self.pending_stats.clear();
    }

    /// After a commit: wakes the delivery dispatcher if the transaction wrote due deliveries.
    pub(super) fn after_commit(&mut self) {
        if std::mem::take(&mut self.deliveries_written) {
            self.wake.deliveries.notify_one();
        }
    }

    fn reindex(&mut self) {
        self.interesting.clear();
        for j in self.journeys.values() {
            for v in j.versions.values() {
                self.interesting.insert(v.entry.event.clone());
                self.interesting
                    .extend(v.exit.events.iter().map(|e| e.event.clone()));
                for step in &v.steps {
                    if let StepKind::HoldUntil { branches, .. } = &step.kind {
                        self.interesting
                            .extend(branches.iter().map(|b| b.event.clone()));
                    }
                }
            }
        }
    }

    fn is_waiting_step(&self, journey_id: &str, version: i64, step: &str) -> bool {
        self.version(journey_id, version)
            .and_then(|j| {
                j.step(step)
                    .map(|s| matches!(s.kind, StepKind::HoldUntil { .. } | StepKind::Delay { .. }))
            })
            .unwrap_or(false)
    }
}

fn parse_stored(definition: &str) -> Result<Journey> {
    let doc: Value = serde_json::from_str(definition)
        .map_err(|e| StoreError::Schema(format!("stored journey is not JSON: {e}")))?;
    crate::journey::parse(&doc)
        .map_err(|p| StoreError::Schema(format!("stored journey no longer validates: {p:?}")))
}

impl Catalog for Live {
    fn version(&self, journey_id: &str, version: i64) -> Option<Arc<Journey>> {
        self.journeys
            .get(journey_id)
            .and_then(|j| j.versions.get(&version).cloned())
    }

    fn entries_for(&self, event: &str) -> Vec<(i64, Arc<Journey>)> {
        self.journeys
            .values()
            .filter(|j| j.status == "active")
            .filter_map(|j| j.versions.get(&j.version).map(|v| (j.version, v.clone())))
            .filter(|(_, v)| v.entry.event == event)
            .collect()
    }
}

/// Instance ids from the writer's sequence; delivery ids are time-ordered UUIDs, stable once written.
struct LiveIds<'a> {
    last_instance_id: &'a mut i64,
}

impl Ids for LiveIds<'_> {
    fn instance_id(&mut self) -> i64 {
        *self.last_instance_id += 1;
        *self.last_instance_id
    }

    fn delivery_id(&mut self) -> String {
        // Time-ordered (UUIDv7): new outbox rows append to the primary key's b-tree instead of
        // dirtying a random page of it each.
        uuid::Uuid::now_v7().to_string()
    }
}

/// The engine seam of ingest: applies a stored track event to its profile's journeys.
pub(super) fn on_event(
    ctx: &mut WriteCtx,
    profile_key: &str,
    name: &str,
    body: &Map<String, Value>,
    now: i64,
) -> Result<()> {
    if !ctx.state.live.interesting.contains(name) {
        return Ok(());
    }
    let message = Value::Object(body.clone());
    let mut profile = load_profile(ctx.conn, profile_key, None)?;
    let event = EventView {
        name,
        message: &message,
    };
    let (effects, first_new) = run_engine(&mut ctx.state.live, &mut profile, |engine, profile| {
        engine.on_event(profile, &event, now)
    });
    persist(ctx, &mut profile, effects, first_new, now)
}

/// Runs the engine on one profile with the writer's catalog and instance ids. Returns its effects
/// and the first instance id it could give out: instances from there on are new rows.
fn run_engine(
    live: &mut Live,
    profile: &mut ProfileState,
    f: impl FnOnce(&mut Engine, &mut ProfileState),
) -> (Effects, i64) {
    let mut last_id = live.last_instance_id;
    let first_new = last_id + 1;
    let effects = {
        let mut ids = LiveIds {
            last_instance_id: &mut last_id,
        };
        let mut engine = Engine::new(&*live, &mut ids, live.max_active);
        f(&mut engine, profile);
        engine.effects
    };
    live.last_instance_id = last_id;
    (effects, first_new)
}

/// Loads what the engine needs of one profile: traits, journey memory, and its active instances:
/// all of them (`only` is `None`: an event can reach any), or only those listed (firing timers
/// touches nothing but the instances that fire, so the cost of a firing does not grow with the
/// profile's other instances).
fn load_profile(conn: &Connection, key: &str, only: Option<&[i64]>) -> Result<ProfileState> {
    let (anonymous, traits): (bool, String) = conn
        .prepare_cached("SELECT anonymous, traits FROM profiles WHERE profile_key = ?1")?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((false, "{}".into()));
    let traits = match serde_json::from_str(&traits) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let mut instances = Vec::new();
    match only {
        None => {
            let mut stmt = conn.prepare_cached(
                "SELECT instance_id, journey_id, version, step_id, unique_value, context, resets, due_at, ordinal, entered_at
                 FROM instances WHERE profile_key = ?1 AND state = 'active' ORDER BY instance_id",
            )?;
            for row in stmt.query_map([key], instance_row)? {
                instances.push(row?);
            }
        }
        Some(ids) => {
            let mut stmt = conn.prepare_cached(
                "SELECT instance_id, journey_id, version, step_id, unique_value, context, resets, due_at, ordinal, entered_at
                 FROM instances WHERE instance_id = ?1 AND profile_key = ?2 AND state = 'active'",
            )?;
            for id in ids {
                if let Some(inst) = stmt.query_row(params![id, key], instance_row).optional()? {
                    instances.push(inst);
                }
            }
        }
    }
    let mut memory = BTreeMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT journey_id, entries, sticky FROM journey_memory WHERE profile_key = ?1",
    )?;
    let rows = stmt.query_map([key], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, Option<String>>(2)?,
        ))
    })?;
    for row in rows {
        let (journey, entries, sticky) = row?;
        let sticky = sticky
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        memory.insert(
            journey,
            Memory {
                entries,
                sticky,
                dirty: false,
            },
        );
    }
    Ok(ProfileState {
        key: key.to_string(),
        anonymous,
        traits,
        instances,
        memory,
    })
}

fn instance_row(r: &rusqlite::Row) -> rusqlite::Result<Instance> {
    Ok(Instance {
        id: r.get(0)?,
        journey_id: r.get(1)?,
        version: r.get(2)?,
        state: State::Active,
        step: r.get(3)?,
        unique_value: r
            .get::<_, Option<String>>(4)?
            .and_then(|v| serde_json::from_str(&v).ok()),
        context: match serde_json::from_str(&r.get::<_, String>(5)?) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        },
        resets: r.get(6)?,
        due_at: r.get(7)?,
        ordinal: r.get(8)?,
        entered_at: r.get(9)?,
        dirty: false,
    })
}

/// Writes back what the engine did: changed instances (those from id `first_new` on are new rows,
/// the others are updated in place) and memory, transitions (with their stats), and deliveries,
/// all in the caller's transaction.
fn persist(
    ctx: &mut WriteCtx,
    profile: &mut ProfileState,
    effects: Effects,
    first_new: i64,
    now: i64,
) -> Result<()> {
    let conn = ctx.conn;
    let mut earliest_due = i64::MAX;
    for inst in profile.instances.iter().filter(|i| i.dirty) {
        let context = serde_json::to_string(&inst.context).expect("a JSON map serialises");
        if inst.id >= first_new {
            conn.prepare_cached(
                "INSERT INTO instances (instance_id, profile_key, journey_id, version, state, step_id, unique_value, context,
                                        resets, due_at, ordinal, entered_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(params![
                inst.id,
                profile.key,
                inst.journey_id,
                inst.version,
                inst.state.as_str(),
                inst.step,
                inst.unique_value.as_ref().map(Value::to_string),
                context,
                inst.resets,
                inst.due_at,
                inst.ordinal,
                inst.entered_at,
                now,
            ])?;
        } else {
            conn.prepare_cached(
                "UPDATE instances SET state = ?2, step_id = ?3, context = ?4, resets = ?5, due_at = ?6, updated_at = ?7
                 WHERE instance_id = ?1",
            )?
            .execute(params![
                inst.id,
                inst.state.as_str(),
                inst.step,
                context,
                inst.resets,
                inst.due_at,
                now,
            ])?;
        }
        if let Some(due) = inst.due_at {
            earliest_due = earliest_due.min(due);
        }
    }
    for (journey, memory) in profile.memory.iter().filter(|(_, m)| m.dirty) {
        let sticky = (!memory.sticky.is_empty())
            .then(|| serde_json::to_string(&memory.sticky).expect("serialises"));
        conn.prepare_cached(
            "INSERT INTO journey_memory (profile_key, journey_id, entries, sticky) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (profile_key, journey_id) DO UPDATE SET entries = excluded.entries, sticky = excluded.sticky",
        )?
        .execute(params![profile.key, journey, memory.entries, sticky])?;
    }
    let mut stats: HashMap<StatKey, i64> = HashMap::new();
    for t in &effects.transitions {
        // One row per statement: a multi-row INSERT needs a statement journal, which costs more
        // than the statements it saves.
        let seq = ctx.state.last_seq + 1;
        ctx.state.last_seq = seq;
        conn.prepare_cached(
            "INSERT INTO transitions (seq, profile_key, instance_id, journey_id, version, at, what, step_id, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![seq, profile.key, t.instance, t.journey_id, t.version, t.at, t.what.as_str(), t.step, t.detail])?;
        let step = t.step.clone().unwrap_or_default();
        let mut bump = |kind: &'static str, step: &str, label: &str, by: i64| {
            *stats
                .entry((
                    t.journey_id.clone(),
                    t.version,
                    kind,
                    step.to_string(),
                    label.to_string(),
                ))
                .or_default() += by;
        };
        let waiting = |s: &str| ctx.state.live.is_waiting_step(&t.journey_id, t.version, s);
        match t.what {
            What::Entered => {
                METRICS
                    .entries
                    .get_or_create(&label("journey", t.journey_id.clone()))
                    .inc();
                bump("total", "", "entered", 1);
                bump("total", "", "active", 1);
            }
            What::Skipped => {
                METRICS
                    .skipped
                    .get_or_create(&label("journey", t.journey_id.clone()))
                    .inc();
                bump("total", "", "skipped", 1);
            }
            What::Step => {
                bump("reached", &step, "", 1);
                if waiting(&step) {
                    bump("waiting", &step, "", 1);
                }
            }
            What::Branch | What::Reset => {
                bump("branch", &step, t.detail.as_deref().unwrap_or(""), 1);
                if t.what == What::Branch && waiting(&step) {
                    bump("waiting", &step, "", -1);
                }
            }
            What::Timeout => {
                bump("branch", &step, "timeout", 1);
                bump("waiting", &step, "", -1);
            }
            What::Timer => bump("waiting", &step, "", -1),
            What::Send => {}
            What::Completed | What::Exited | What::Archived => {
                bump("total", "", t.what.as_str(), 1);
                bump("total", "", "active", -1);
                if t.what != What::Completed && waiting(&step) {
                    bump("waiting", &step, "", -1);
                }
            }
        }
    }
    for (key, by) in stats {
        *ctx.state.live.pending_stats.entry(key).or_default() += by;
    }
    for d in &effects.deliveries {
        conn.prepare_cached(
            "INSERT INTO deliveries (delivery_id, profile_key, instance_id, journey_id, step_id, destination_id, payload,
                                     status, attempts, next_attempt_at, expires_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, ?9, ?8, ?8)",
        )?
        .execute(params![
            d.id,
            profile.key,
            d.instance_id,
            d.journey_id,
            d.step_id,
            d.destination,
            d.payload.to_string(),
            now,
            now + crate::delivery::RETRY_WINDOW_MS,
        ])?;
    }
    if !effects.deliveries.is_empty() {
        // The dispatcher sleeps until the next due attempt; new rows are due now.
        ctx.state.live.deliveries_written = true;
    }
    // Instances that ended are no longer part of the profile's active state.
    profile.instances.retain(|i| i.state == State::Active);
    let wake = &ctx.state.live.wake;
    if earliest_due < wake.target.load(Ordering::Acquire) {
        // The scheduler sleeps past this timer: wake it. Its next read goes through this same
        // writer, so it sees the timer once this transaction has committed.
        wake.target.store(earliest_due, Ordering::Release);
        wake.notify.notify_one();
    }
    Ok(())
}

/// Writes the stats counters a job's transitions accumulated. The writer calls it once per job
/// (inside the job's savepoint), so a batch of events updates each counter row once, not once
/// per event.
pub(super) fn flush_stats(conn: &Connection, live: &mut Live) -> Result<()> {
    for ((journey, version, kind, step, label), by) in live.pending_stats.drain() {
        if by == 0 {
            continue;
        }
        conn.prepare_cached(
            "INSERT INTO journey_stats (journey_id, version, kind, step_id, label, count) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (journey_id, version, kind, step_id, label) DO UPDATE SET count = count + excluded.count",
        )?
        .execute(params![journey, version, kind, step, label, by])?;
    }
    Ok(())
}

/// What one scheduler tick did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fired {
    pub fired: usize,
    /// The tick stopped at its limit or its time budget with timers still due: tick again now.
    pub more: bool,
    /// The earliest timer still pending after the tick.
    pub next_due: Option<i64>,
    /// How late the latest fired timer was, in milliseconds.
    pub lateness_max_ms: i64,
}

impl Store {
    /// Fires up to `limit` timers due by now, each with its transitions and deliveries, in one
    /// transaction. The tick stops early, once `budget` has passed, so that it holds the writer
    /// (and the events queued behind it) only that long; [`Fired::more`] says it should go on.
    pub async fn fire_due(
        &self,
        limit: usize,
        budget: std::time::Duration,
    ) -> std::result::Result<Fired, SubmitError> {
        self.writer()
            .submit_wait(move |ctx| fire_due(ctx, limit, budget))
            .await
    }
}

fn fire_due(ctx: &mut WriteCtx, limit: usize, budget: std::time::Duration) -> Result<Fired> {
    let started = std::time::Instant::now();
    let now = ctx.now;
    // The due timers, grouped by profile in the order each profile's first one fell due.
    let mut profiles: Vec<(String, Vec<(i64, i64)>)> = Vec::new();
    let mut selected = 0;
    {
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut stmt = ctx.conn.prepare_cached(
            "SELECT instance_id, profile_key, due_at FROM instances WHERE due_at IS NOT NULL AND due_at <= ?1 ORDER BY due_at LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![now, limit as i64])?;
        while let Some(r) = rows.next()? {
            let (id, key, due_at): (i64, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            selected += 1;
            let n = *index.entry(key.clone()).or_insert_with(|| {
                profiles.push((key, Vec::new()));
                profiles.len() - 1
            });
            profiles[n].1.push((id, due_at));
        }
    }
    let mut out = Fired {
        more: selected >= limit,
        ..Fired::default()
    };
    for (key, timers) in &profiles {
        // Past the budget, the rest waits for the next tick.
        if started.elapsed() >= budget {
            out.more = true;
            break;
        }
        let ids: Vec<i64> = timers.iter().map(|t| t.0).collect();
        for (_, due_at) in timers {
            out.fired += 1;
            let late = now - due_at;
            out.lateness_max_ms = out.lateness_max_ms.max(late);
            METRICS.timer_lateness.observe(late as f64 / 1000.0);
        }
        let mut profile = load_profile(ctx.conn, key, Some(&ids))?;
        let (effects, first_new) =
            run_engine(&mut ctx.state.live, &mut profile, |engine, profile| {
                engine.fire_due(profile, now)
            });
        // A timer whose journey version is gone (cannot happen unless the database was edited)
        // would fire forever: clear it.
        if effects.transitions.is_empty() {
            ctx.conn
                .prepare_cached(
                    "UPDATE instances SET due_at = NULL WHERE profile_key = ?1 AND due_at <= ?2",
                )?
                .execute(params![key, now])?;
        }
        persist(ctx, &mut profile, effects, first_new, now)?;
    }
    out.next_due = ctx
        .conn
        .prepare_cached("SELECT min(due_at) FROM instances WHERE due_at IS NOT NULL")?
        .query_row([], |r| r.get(0))?;
    ctx.state
        .live
        .wake
        .target
        .store(out.next_due.unwrap_or(i64::MAX), Ordering::Release);
    METRICS.timers_fired.inc_by(out.fired as u64);
    Ok(out)
}

/// The outcome of publishing a journey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub version: i64,
    /// The journey did not exist before.
    pub created: bool,
    /// This call made a new version (false: the same body as the newest version).
    pub new_version: bool,
}

impl Store {
    /// Publishes `journey` (already validated) with its canonical JSON `definition`.
    pub async fn publish_journey(
        &self,
        journey: Journey,
        definition: String,
    ) -> std::result::Result<std::result::Result<Published, Vec<(String, String)>>, SubmitError>
    {
        self.writer()
            .submit_wait(move |ctx| publish(ctx, journey, &definition))
            .await
    }

    /// Sets a journey's status to `active` or `paused`; archiving goes through
    /// [`Store::archive_journey`].
    pub async fn set_journey_status(
        &self,
        id: String,
        status: &'static str,
    ) -> std::result::Result<(), SubmitError> {
        self.writer()
            .submit_wait(move |ctx| {
                let changed = ctx
                    .conn
                    .prepare_cached("UPDATE journeys SET status = ?2, updated_at = ?3 WHERE journey_id = ?1 AND status != 'archived'")?
                    .execute(params![id, status, ctx.now])?;
                if changed == 0 {
                    return Err(StoreError::NotFound(format!("journey \"{id}\"")));
                }
                if let Some(j) = ctx.state.live.journeys.get_mut(&id) {
                    j.status = status.to_string();
                }
                Ok(())
            })
            .await
    }

    /// Archives a journey: no new entries, and its active instances end as archived with no
    /// further sends. Returns how many instances it ended.
    pub async fn archive_journey(&self, id: String) -> std::result::Result<usize, SubmitError> {
        self.writer()
            .submit_wait(move |ctx| archive(ctx, &id))
            .await
    }
}

/// Publishes a version; `Ok(Err(_))` lists send steps naming destinations that do not exist,
/// as (JSON path, destination id).
fn publish(
    ctx: &mut WriteCtx,
    journey: Journey,
    definition: &str,
) -> Result<std::result::Result<Published, Vec<(String, String)>>> {
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
        return Ok(Err(unknown));
    }
    let digest = super::hash_secret(definition);
    let current: Option<(String, i64)> = conn
        .prepare_cached("SELECT status, version FROM journeys WHERE journey_id = ?1")?
        .query_row([&journey.id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let now = ctx.now;
    let (version, created, new_version, status) = match &current {
        None => (1, true, true, "active".to_string()),
        Some((status, version)) => {
            let same: Option<String> = conn
                .prepare_cached(
                    "SELECT digest FROM journey_versions WHERE journey_id = ?1 AND version = ?2",
                )?
                .query_row(params![journey.id, version], |r| r.get(0))
                .optional()?;
            // Publishing an archived journey brings it back; a paused one stays paused.
            let status = if status == "archived" {
                "active".to_string()
            } else {
                status.clone()
            };
            if same.as_deref() == Some(digest.as_str()) {
                (*version, false, false, status)
            } else {
                (version + 1, false, true, status)
            }
        }
    };
    if new_version {
        conn.prepare_cached(
            "INSERT INTO journey_versions (journey_id, version, definition, digest, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![journey.id, version, definition, digest, now])
        ?;
    }
    conn.prepare_cached(
        "INSERT INTO journeys (journey_id, status, version, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
         ON CONFLICT (journey_id) DO UPDATE SET status = excluded.status, version = excluded.version,
             updated_at = CASE WHEN journeys.version != excluded.version OR journeys.status != excluded.status
                               THEN excluded.updated_at ELSE journeys.updated_at END",
    )?
    .execute(params![journey.id, status, version, now])
    ?;

    // Everything is written: now the live catalog follows. A revived archived journey gets its
    // older versions back too, since instances could not be on them (archiving ended them all).
    let live = &mut ctx.state.live;
    let entry = live
        .journeys
        .entry(journey.id.clone())
        .or_insert_with(|| LiveJourney {
            status: status.clone(),
            version,
            versions: HashMap::new(),
        });
    entry.status = status;
    entry.version = version;
    entry.versions.insert(version, Arc::new(journey));
    live.reindex();
    Ok(Ok(Published {
        version,
        created,
        new_version,
    }))
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
    // Stats: the active count moves to archived, and no step has anyone waiting any more.
    conn.execute(
        "INSERT INTO journey_stats (journey_id, version, kind, step_id, label, count)
         SELECT journey_id, version, 'total', '', 'archived', count FROM journey_stats
         WHERE journey_id = ?1 AND kind = 'total' AND label = 'active' AND count != 0
         ON CONFLICT (journey_id, version, kind, step_id, label) DO UPDATE SET count = count + excluded.count",
        [id],
    )?;
    conn.execute(
        "UPDATE journey_stats SET count = 0 WHERE journey_id = ?1 AND ((kind = 'total' AND label = 'active') OR kind = 'waiting')",
        [id],
    )?;
    ctx.state.live.journeys.remove(id);
    ctx.state.live.reindex();
    Ok(ended)
}
