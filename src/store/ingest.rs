//! Storing ingested messages: deduplication (`dedup.rs`), identity resolution and linking, profile traits, the
//! event row, and (through the engine seam) the journey transitions the message causes, all in
//! the writer's transaction.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};

use super::writer::WriteCtx;
use super::{Result, Store, object_column};
use crate::ingest::Message;
use crate::metrics::{METRICS, label};

/// What an ingest call did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct IngestOutcome {
    pub(crate) stored: usize,
    pub(crate) duplicates: usize,
    /// Messages refused by what is stored, by their index in the request, with the reason.
    pub(crate) rejected: Vec<(usize, String)>,
}

/// Most ids linked to one profile (SPEC §9).
pub(crate) const MAX_LINKED_IDS: i64 = 1_000;

impl Store {
    /// Stores `messages` in order, in one transaction with the state changes they cause, and
    /// answers once that transaction has committed.
    pub(crate) async fn ingest(&self, messages: Vec<Message>) -> Result<IngestOutcome> {
        // Bodies are compressed here, on the request's thread, not on the writer's.
        let bodies = messages
            .iter()
            .map(|m| super::codec::pack(self.dictionaries(), &m.json))
            .collect::<Result<Vec<_>>>()?;
        self.writer()
            .submit(move |ctx| apply_messages(ctx, &messages, &bodies))
            .await
    }
}

/// Applies `messages` in order; `bodies[i]` is what is stored of `messages[i]`'s JSON.
fn apply_messages(
    ctx: &mut WriteCtx,
    messages: &[Message],
    bodies: &[rusqlite::types::Value],
) -> Result<IngestOutcome> {
    let mut outcome = IngestOutcome::default();
    for (m, body) in messages.iter().zip(bodies) {
        if ctx
            .state
            .dedup
            .seen(ctx.conn, &m.message_id, m.received_at)?
        {
            outcome.duplicates += 1;
            METRICS.events_duplicate.inc();
            continue;
        }
        if let Err(why) = apply_message(ctx, m, body)? {
            outcome.rejected.push((m.index, why));
            continue;
        }
        METRICS
            .events_received
            .get_or_create(&label("type", m.call.as_str()))
            .inc();
        outcome.stored += 1;
    }
    Ok(outcome)
}

/// Stores one message and applies it; `Ok(Err(why))` when what is stored refuses it (nothing is
/// written then).
fn apply_message(
    ctx: &mut WriteCtx,
    m: &Message,
    body: &rusqlite::types::Value,
) -> Result<std::result::Result<(), String>> {
    let conn = ctx.conn;
    let identity = m.identity();
    let profile_key = resolve(conn, identity.id)?;
    if let Some(other) = identity.link {
        let linked = linked_after(conn, other, &profile_key)?;
        if linked > MAX_LINKED_IDS {
            return Ok(Err(format!(
                "linking \"{other}\" would give profile \"{profile_key}\" {linked} linked ids, more than the limit of {MAX_LINKED_IDS}"
            )));
        }
    }
    ensure_profile(conn, &profile_key, !identity.known, m.received_at)?;
    if let Some(other) = identity.link {
        link(ctx, other, &profile_key, m.received_at)?;
    }
    if let Some(traits) = &m.traits {
        merge_traits(ctx.conn, &profile_key, traits, m.received_at, true)?;
    }

    let seq = ctx.next_seq();
    ctx.conn
        .prepare_cached(
            "INSERT INTO events (seq, profile_key, message_id, type, event, received_at, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            seq,
            profile_key,
            m.message_id,
            m.call.as_str(),
            m.event,
            m.received_at,
            body
        ])?;
    super::profiles::log(ctx.conn, &profile_key, seq, None)?;
    ctx.state.dedup.add(&m.message_id, m.received_at);
    // The engine seam: the journeys move in this same transaction, so a 2xx means they moved.
    if let Some(name) = &m.event {
        super::profiles::on_event(ctx, &profile_key, name, &m.json, m.received_at)?;
    }
    Ok(Ok(()))
}

/// How many ids `target` would have linked to it once `id` is linked there (`id` brings the
/// ids already linked to it when it is a profile of its own).
fn linked_after(conn: &Connection, id: &str, target: &str) -> Result<i64> {
    let count = |key: &str| -> Result<i64> {
        Ok(conn
            .prepare_cached("SELECT count(*) FROM identities WHERE profile_key = ?1")?
            .query_row([key], |r| r.get(0))?)
    };
    let current = resolve(conn, id)?;
    let brought = if current == target {
        0
    } else if current == id {
        1 + count(id)?
    } else {
        1
    };
    Ok(count(target)? + brought)
}

/// The profile key an id belongs to: its link if it has one, else the id itself.
pub(super) fn resolve(conn: &Connection, id: &str) -> Result<String> {
    let linked: Option<String> = conn
        .prepare_cached("SELECT profile_key FROM identities WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(linked.unwrap_or_else(|| id.to_string()))
}

fn ensure_profile(conn: &Connection, key: &str, anonymous: bool, now: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO profiles (profile_key, anonymous, traits, created_at, updated_at) VALUES (?1, ?2, '{}', ?3, ?3)
         ON CONFLICT (profile_key) DO NOTHING",
    )?
    .execute(params![key, anonymous, now])?;
    Ok(())
}

/// Links `id` to the profile `survivor` (SPEC §2 Identity). An id that is a profile of its own
/// merges into the survivor, with the ids linked to it; an id linked to another profile moves
/// (the latest link wins); a new id is linked.
fn link(ctx: &mut WriteCtx, id: &str, survivor: &str, now: i64) -> Result<()> {
    let conn = ctx.conn;
    let current = resolve(conn, id)?;
    if current == survivor {
        return Ok(());
    }
    if current == id {
        let own_profile: bool = conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM profiles WHERE profile_key = ?1)")?
            .query_row([id], |r| r.get(0))?;
        if own_profile {
            merge(ctx, id, survivor, now)?;
        }
        ctx.conn
            .prepare_cached(
                "UPDATE identities SET profile_key = ?2, linked_at = ?3 WHERE profile_key = ?1",
            )?
            .execute(params![id, survivor, now])?;
    }
    ctx.conn
        .prepare_cached(
            "INSERT INTO identities (id, profile_key, linked_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET profile_key = excluded.profile_key, linked_at = excluded.linked_at",
        )?
        .execute(params![id, survivor, now])?;
    Ok(())
}

/// Merges the profile `absorbed` into `survivor`, in the caller's transaction, as
/// [`crate::engine::merge`] does in memory: first the timers of both that fell due by `now` fire
/// (as they would have on a punctual scheduler), then traits fill the survivor's gaps, active
/// instances and their timers and journey memory move, the absorbed profile row goes, and the
/// merge is recorded in the timeline of both. Its cost is that of the two profiles' instances.
/// Their history (events, transitions, finished instances, deliveries) keeps its key and shows
/// in the survivor's views through the identity link.
fn merge(ctx: &mut WriteCtx, absorbed: &str, survivor: &str, now: i64) -> Result<()> {
    super::profiles::catch_up(ctx, absorbed, now)?;
    super::profiles::catch_up(ctx, survivor, now)?;
    let conn = ctx.conn;
    let traits: String = conn
        .prepare_cached("SELECT traits FROM profiles WHERE profile_key = ?1")?
        .query_row([absorbed], |r| r.get(0))?;
    let traits = object_column(&traits, || format!("traits of profile \"{absorbed}\""))?;
    merge_traits(conn, survivor, &traits, now, false)?;
    let moved = conn
        .prepare_cached(
            "UPDATE instances SET profile_key = ?2, updated_at = ?3 WHERE profile_key = ?1 AND state = 'active'",
        )?
        .execute(params![absorbed, survivor, now])?;
    super::profiles::merge_memory(conn, absorbed, survivor)?;
    conn.prepare_cached("DELETE FROM profiles WHERE profile_key = ?1")?
        .execute([absorbed])?;
    for key in [survivor, absorbed] {
        let seq = ctx.next_seq();
        ctx.conn
            .prepare_cached(
                "INSERT INTO merges (seq, profile_key, absorbed, survivor, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![seq, key, absorbed, survivor, now])?;
    }
    tracing::debug!(absorbed, survivor, instances = moved, "profiles merged");
    Ok(())
}

/// Merges `traits` into the profile's top-level traits. With `overwrite` false, only keys the
/// profile lacks are set (used when folding an anonymous profile into a known one).
fn merge_traits(
    conn: &Connection,
    key: &str,
    traits: &Map<String, Value>,
    now: i64,
    overwrite: bool,
) -> Result<()> {
    if traits.is_empty() {
        return Ok(());
    }
    let stored: String = conn
        .prepare_cached("SELECT traits FROM profiles WHERE profile_key = ?1")?
        .query_row([key], |r| r.get(0))?;
    let mut merged = object_column(&stored, || format!("traits of profile \"{key}\""))?;
    for (k, v) in traits {
        if overwrite || !merged.contains_key(k) {
            merged.insert(k.clone(), v.clone());
        }
    }
    conn.prepare_cached("UPDATE profiles SET traits = ?2, updated_at = ?3 WHERE profile_key = ?1")?
        .execute(params![key, Value::Object(merged).to_string(), now])?;
    Ok(())
}
