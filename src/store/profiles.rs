//! The engine seam on the write side: loads what the engine needs of one profile, runs it with
//! the writer's catalog and ids, and writes back what it did (instances, journey memory,
//! transitions, deliveries), all in the caller's transaction. Stats deltas and wake-ups go to
//! the job's [`Effects`](super::writer::Effects); the writer applies them.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};

use super::writer::WriteCtx;
use super::{Result, object_column};
use crate::engine::stats::{self, StatKey};
use crate::engine::{
    Catalog, Effects, Engine, EventView, Instance, Ledger, Memory, ProfileState, State, What,
};
use crate::metrics::{METRICS, label};

/// Applies a stored track event to its profile's journeys.
pub(super) fn on_event(
    ctx: &mut WriteCtx,
    profile_key: &str,
    name: &str,
    json: &str,
    now: i64,
) -> Result<()> {
    if !ctx.state.catalog.interested_in(name) {
        return Ok(());
    }
    let message: Value = serde_json::from_str(json).expect("ingest serialised the message");
    let mut profile = load(ctx.conn, profile_key, None)?;
    let event = EventView {
        name,
        message: &message,
    };
    run(ctx, &mut profile, now, |engine, profile| {
        engine.on_event(profile, &event, now)
    })
}

/// Fires every timer of a profile due by `now` (before its profile merges with another).
pub(super) fn catch_up(ctx: &mut WriteCtx, profile_key: &str, now: i64) -> Result<()> {
    let mut profile = load(ctx.conn, profile_key, None)?;
    if profile
        .instances
        .iter()
        .any(|i| i.due_at.is_some_and(|d| d <= now))
    {
        run(ctx, &mut profile, now, |engine, profile| {
            engine.fire_due(profile, now)
        })?;
    }
    Ok(())
}

/// Moves the journey memory of profile `absorbed` to `survivor`, combined as
/// [`Memory::absorb`] says.
pub(super) fn merge_memory(conn: &Connection, absorbed: &str, survivor: &str) -> Result<()> {
    let from = load_memory(conn, absorbed)?;
    if from.is_empty() {
        return Ok(());
    }
    let mut into = load_memory(conn, survivor)?;
    for (journey, memory) in &from {
        into.entry(journey.clone()).or_default().absorb(memory);
    }
    save_memory(conn, survivor, &into)?;
    conn.prepare_cached("DELETE FROM journey_memory WHERE profile_key = ?1")?
        .execute([absorbed])?;
    Ok(())
}

/// Fires the given due timers of one profile (a scheduler tick); returns how many transitions
/// they made.
pub(super) fn fire(ctx: &mut WriteCtx, profile_key: &str, ids: &[i64], now: i64) -> Result<usize> {
    let mut profile = load(ctx.conn, profile_key, Some(ids))?;
    let mut transitions = 0;
    run(ctx, &mut profile, now, |engine, profile| {
        engine.fire_due(profile, now);
        transitions = engine.effects.transitions.len();
    })?;
    Ok(transitions)
}

/// Runs the engine on one profile with the writer's catalog and instance ids, then writes back
/// what it did, with `now` as the time of the rows it writes.
fn run(
    ctx: &mut WriteCtx,
    profile: &mut ProfileState,
    now: i64,
    f: impl FnOnce(&mut Engine, &mut ProfileState),
) -> Result<()> {
    let state = &mut *ctx.state;
    // Instances from `first_new` on are new rows; the others are updated in place.
    let first_new = state.last_instance_id + 1;
    let effects = {
        let mut ids = LiveIds {
            last_instance_id: &mut state.last_instance_id,
            now,
            conn: ctx.conn,
            caps: &state.caps,
            counted: HashMap::new(),
            failed: None,
        };
        let mut engine = Engine::new(&state.catalog, &mut ids, state.max_active);
        f(&mut engine, profile);
        let effects = engine.effects;
        if let Some(e) = ids.failed {
            return Err(e);
        }
        effects
    };
    persist(ctx, profile, effects, first_new, now)
}

/// Ids that no restore from a backup can make repeat (SPEC invariant 9).
///
/// An instance id is at least the time it was made, in milliseconds, times [`IDS_PER_MS`]:
/// instances made after a database was restored from an older backup get ids above any the
/// newer, lost database handed out (unless the clock went back), so their deliveries never
/// repeat a `webhook-id` a receiver has seen. (Below 2^53 until the year 2248, so JavaScript
/// reads them exactly.)
///
/// A delivery id is a function of (instance, step, exit or not): a step run again after a crash
/// or a restore writes the same id. It is a UUID (version 8) whose first 48 bits are the
/// instance's creation time, so new outbox rows still land at the end of the primary key's
/// b-tree rather than on a random page of it, and whose other bits come from a SHA-256 of the
/// three.
struct LiveIds<'a> {
    last_instance_id: &'a mut i64,
    now: i64,
    conn: &'a Connection,
    caps: &'a HashMap<String, crate::delivery::Cap>,
    /// Sends of this engine call not yet written, by (profile, destination): they count too.
    counted: HashMap<(String, String), Vec<i64>>,
    /// A read for a cap failed: the job fails with it.
    failed: Option<super::StoreError>,
}

/// Instance ids per millisecond of the clock.
const IDS_PER_MS: i64 = 1024;

impl Ledger for LiveIds<'_> {
    fn instance_id(&mut self) -> i64 {
        let id = (*self.last_instance_id + 1).max(self.now.saturating_mul(IDS_PER_MS));
        *self.last_instance_id = id;
        id
    }

    fn delivery_id(&mut self, instance: i64, step: &str, exit: bool) -> String {
        delivery_id(instance, step, exit)
    }

    /// Counts the profile's sends to the destination in the cap's period: those written
    /// (this transaction's included, since it reads through the same connection; under the
    /// profile's key and the keys of the profiles merged into it) and this call's. One writer
    /// owns the count, so two sends of one profile never race past a cap.
    fn allow_send(&mut self, profile: &str, destination: &str, at: i64) -> bool {
        let Some(cap) = self.caps.get(destination) else {
            return true;
        };
        let since = at.saturating_sub(cap.per_ms as i64);
        let written: Result<Vec<i64>, _> = self
            .conn
            .prepare_cached(&format!(
                "SELECT created_at FROM deliveries
                 WHERE profile_key IN ({}) AND destination_id = ?2 AND created_at > ?3 AND cap_counted = 1",
                super::query::PROFILE_KEYS
            ))
            .and_then(|mut stmt| {
                stmt.query_map(params![profile, destination, since], |r| r.get(0))?
                    .collect()
            });
        let mut sent = match written {
            Ok(sent) => sent,
            Err(e) => {
                self.failed.get_or_insert(e.into());
                return false;
            }
        };
        let key = (profile.to_string(), destination.to_string());
        sent.extend(self.counted.get(&key).into_iter().flatten());
        let allowed = cap.allows(&sent, at);
        if allowed {
            self.counted.entry(key).or_default().push(at);
        }
        allowed
    }
}

/// The delivery id of a send step of an instance; see [`LiveIds`].
fn delivery_id(instance: i64, step: &str, exit: bool) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(instance.to_be_bytes());
    hash.update([u8::from(exit)]);
    hash.update(step.as_bytes());
    let digest = hash.finalize();
    let created_ms = (instance / IDS_PER_MS).max(0) as u64;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&created_ms.to_be_bytes()[2..]);
    bytes[6..].copy_from_slice(&digest[..10]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// `context` is stored through `jd_pack`, like event bodies (see `codec.rs`).
const INSTANCE_COLUMNS: &str = "instance_id, journey_id, version, step_id, unique_value, jd_text(context), resets, due_at, ordinal, entered_at";

/// Loads what the engine needs of one profile: traits, journey memory, and its active instances:
/// all of them (`only` is `None`: an event can reach any), or only those listed (firing timers
/// touches nothing but the instances that fire, so the cost of a firing does not grow with the
/// profile's other instances).
fn load(conn: &Connection, key: &str, only: Option<&[i64]>) -> Result<ProfileState> {
    let row: Option<(bool, String)> = conn
        .prepare_cached("SELECT anonymous, traits FROM profiles WHERE profile_key = ?1")?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (anonymous, traits) = match row {
        Some((anonymous, traits)) => (
            anonymous,
            object_column(&traits, || format!("traits of profile \"{key}\""))?,
        ),
        None => (false, Map::new()),
    };
    let mut instances = Vec::new();
    match only {
        None => {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {INSTANCE_COLUMNS} FROM instances WHERE profile_key = ?1 AND state = 'active' ORDER BY instance_id"
            ))?;
            let mut rows = stmt.query([key])?;
            while let Some(r) = rows.next()? {
                instances.push(instance(r)?);
            }
        }
        Some(ids) => {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {INSTANCE_COLUMNS} FROM instances WHERE instance_id = ?1 AND profile_key = ?2 AND state = 'active'"
            ))?;
            for id in ids {
                let mut rows = stmt.query(params![id, key])?;
                if let Some(r) = rows.next()? {
                    instances.push(instance(r)?);
                }
            }
        }
    }
    let memory = load_memory(conn, key)?;
    Ok(ProfileState {
        key: key.to_string(),
        anonymous,
        traits,
        instances,
        memory,
    })
}

/// What a profile remembers of each journey.
fn load_memory(conn: &Connection, key: &str) -> Result<BTreeMap<String, Memory>> {
    let mut memory = BTreeMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT journey_id, entries, sticky FROM journey_memory WHERE profile_key = ?1",
    )?;
    let mut rows = stmt.query([key])?;
    while let Some(r) = rows.next()? {
        let journey: String = r.get(0)?;
        let sticky = match r.get::<_, Option<String>>(2)? {
            None => BTreeMap::new(),
            Some(s) => super::json_column(&s, || {
                format!("sticky branches of profile \"{key}\" in journey \"{journey}\"")
            })?,
        };
        memory.insert(
            journey,
            Memory {
                entries: r.get(1)?,
                sticky,
                dirty: false,
            },
        );
    }
    Ok(memory)
}

/// Writes the journey memory that changed.
fn save_memory(conn: &Connection, key: &str, memory: &BTreeMap<String, Memory>) -> Result<()> {
    for (journey, memory) in memory.iter().filter(|(_, m)| m.dirty) {
        let sticky = (!memory.sticky.is_empty())
            .then(|| serde_json::to_string(&memory.sticky).expect("serialises"));
        conn.prepare_cached(
            "INSERT INTO journey_memory (profile_key, journey_id, entries, sticky) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (profile_key, journey_id) DO UPDATE SET entries = excluded.entries, sticky = excluded.sticky",
        )?
        .execute(params![key, journey, memory.entries, sticky])?;
    }
    Ok(())
}

fn instance(r: &rusqlite::Row) -> Result<Instance> {
    let id: i64 = r.get(0)?;
    let what = |field: &str| format!("{field} of instance {id}");
    let context: String = r.get(5)?;
    Ok(Instance {
        id,
        journey_id: r.get(1)?,
        version: r.get(2)?,
        state: State::Active,
        step: r.get(3)?,
        unique_value: match r.get::<_, Option<String>>(4)? {
            None => None,
            Some(v) => Some(super::json_column(&v, || what("unique value"))?),
        },
        context: object_column(&context, || what("context"))?,
        resets: r.get(6)?,
        due_at: r.get(7)?,
        ordinal: r.get(8)?,
        entered_at: r.get(9)?,
        dirty: false,
        context_changed: false,
        context_text: Some(context),
    })
}

/// Writes the row of a new event (no instance) or instance in its profile's log. The statements
/// that insert events and instances call it: a trigger would give each insert a statement
/// journal (schema.sql).
pub(super) fn log(conn: &Connection, key: &str, seq: i64, instance: Option<i64>) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO profile_log (profile_key, seq, instance_id) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![key, seq, instance])?;
    Ok(())
}

/// Writes back what the engine did: changed instances and memory, transitions, and deliveries;
/// stats deltas, metrics and wake-ups go to the job's effects.
fn persist(
    ctx: &mut WriteCtx,
    profile: &mut ProfileState,
    effects: Effects,
    first_new: i64,
    now: i64,
) -> Result<()> {
    let conn = ctx.conn;
    for inst in profile.instances.iter().filter(|i| i.dirty) {
        // Only a changed context is compressed again (a timer firing or a step moving on leaves
        // it as it was), serialised unless a send already did.
        let context = inst.context_changed.then(|| match &inst.context_text {
            Some(text) => Cow::Borrowed(text.as_str()),
            None => {
                Cow::Owned(serde_json::to_string(&inst.context).expect("a JSON map serialises"))
            }
        });
        if inst.id >= first_new {
            // Its row in `profile_log` follows the row of the event that made it.
            let log_seq = ctx.next_seq();
            conn.prepare_cached(
                "INSERT INTO instances (instance_id, profile_key, journey_id, version, state, step_id, unique_value, context,
                                        resets, due_at, ordinal, entered_at, updated_at, log_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, jd_pack(?8), ?9, ?10, ?11, ?12, ?13, ?14)",
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
                log_seq,
            ])?;
            log(conn, &profile.key, log_seq, Some(inst.id))?;
        } else {
            conn.prepare_cached(
                "UPDATE instances SET state = ?2, step_id = ?3, context = coalesce(jd_pack(?4), context), resets = ?5, due_at = ?6, updated_at = ?7
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
            ctx.effects.timer(due);
        }
    }
    save_memory(conn, &profile.key, &profile.memory)?;
    for t in effects.transitions.iter().filter(|t| !t.what.is_note()) {
        // One row per statement: a multi-row INSERT needs a statement journal, which costs more
        // than the statements it saves.
        let seq = ctx.next_seq();
        conn.prepare_cached(
            "INSERT INTO transitions (seq, profile_key, instance_id, journey_id, version, at, what, step_id, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![seq, profile.key, t.instance, t.journey_id, t.version, t.at, t.what.as_str(), t.step, t.detail])?;
        if ctx.streaming {
            ctx.effects.published.push(super::StreamEvent::Transition {
                profile: profile.key.clone(),
                transition: t.clone(),
            });
        }
        let journey = ctx.state.catalog.version(&t.journey_id, t.version);
        for (stat, by) in stats::deltas(t, journey.as_deref()) {
            let key = StatKey {
                journey_id: t.journey_id.clone(),
                version: t.version,
                stat,
            };
            *ctx.effects.stats.entry(key).or_default() += by;
        }
        let counter = match t.what {
            What::Entered => &METRICS.entries,
            What::Skipped => &METRICS.skipped,
            _ => continue,
        };
        counter
            .get_or_create(&label("journey", t.journey_id.clone()))
            .inc();
    }
    for d in &effects.deliveries {
        let status = if d.capped {
            crate::delivery::Status::Capped
        } else {
            crate::delivery::Status::Pending
        };
        // Only a send to a destination with a frequency cap is counted against it (and indexed).
        let cap_counted = (!d.capped && ctx.state.caps.contains_key(&d.destination)).then_some(1);
        conn.prepare_cached(
            "INSERT INTO deliveries (delivery_id, profile_key, instance_id, journey_id, step_id, destination_id, payload,
                                     status, attempts, next_attempt_at, expires_at, created_at, updated_at, cap_counted)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, jd_pack(?7), ?10, 0, ?8, ?9, ?8, ?8, ?11)",
        )?
        .execute(params![
            d.id,
            profile.key,
            d.instance_id,
            d.journey_id,
            d.step_id,
            d.destination,
            d.payload,
            now,
            now + crate::delivery::RETRY_WINDOW_MS,
            status.as_str(),
            cap_counted,
        ])?;
        if d.capped {
            METRICS
                .deliveries_capped
                .get_or_create(&label("destination", d.destination.clone()))
                .inc();
        } else {
            // The dispatcher sleeps until the next due attempt; new rows are due now.
            ctx.effects.deliveries = true;
        }
    }
    // Instances that ended are no longer part of the profile's active state.
    profile.instances.retain(|i| i.state == State::Active);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_are_a_function_of_instance_step_and_exit() {
        let t = 1_795_000_000_000 * IDS_PER_MS;
        let a = delivery_id(t + 1, "remind", false);
        assert_eq!(a, delivery_id(t + 1, "remind", false));
        for other in [
            delivery_id(t + 2, "remind", false),
            delivery_id(t + 1, "remind2", false),
            delivery_id(t + 1, "remind", true),
        ] {
            assert_ne!(a, other);
        }
        let u = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(u.get_version_num(), 8);
        // Time-ordered by the instance's creation.
        assert!(delivery_id(t + IDS_PER_MS * 5, "a", false) > delivery_id(t, "z", true));
    }

    #[test]
    fn instance_ids_never_fall_behind_the_clock() {
        let mut last = 7;
        let conn = Connection::open_in_memory().unwrap();
        let caps = HashMap::new();
        let mut ids = LiveIds {
            last_instance_id: &mut last,
            now: 1_795_000_000_000,
            conn: &conn,
            caps: &caps,
            counted: HashMap::new(),
            failed: None,
        };
        let first = ids.instance_id();
        assert_eq!(first, 1_795_000_000_000 * IDS_PER_MS);
        assert_eq!(ids.instance_id(), first + 1);
        assert!(first < 1 << 53);
    }
}
