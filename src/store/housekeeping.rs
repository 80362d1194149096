//! Retention purges. Each purge deletes in bounded batches, one writer job each, so it never holds the
//! writer for long; the caller loops until a batch comes back short.

use rusqlite::params;

use super::{Result, Store};

/// Rows deleted per writer job.
const PURGE_BATCH: i64 = 5_000;

/// What a purge removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Purged {
    pub(crate) events: u64,
    pub(crate) instances: u64,
    pub(crate) transitions: u64,
    pub(crate) deliveries: u64,
    /// Message ids past the deduplication window (`dedup.rs`).
    pub(crate) message_ids: u64,
}

impl Store {
    /// Deletes stored events received before `events_before`, and finished instances (with their
    /// transitions and their succeeded and capped deliveries) last changed before
    /// `instances_before`. Active instances, their history, pending and failed deliveries (and
    /// the finished instances they belong to) are kept whatever their age. Message ids past the
    /// deduplication window go too (also deleted whenever a run of them is written; at a low
    /// rate that may be weeks apart).
    pub(crate) async fn purge(&self, events_before: i64, instances_before: i64) -> Result<Purged> {
        let expired = self
            .writer()
            .submit_wait(|ctx| ctx.state.dedup.expire(ctx.conn, ctx.now))
            .await?;
        // Committed: the filters of the deleted runs can go.
        let message_ids = expired.ids as u64;
        self.writer()
            .submit_wait(move |ctx| {
                ctx.state.dedup.expired(&expired.filters);
                Ok(())
            })
            .await?;
        let mut total = Purged {
            message_ids,
            ..Purged::default()
        };
        // Events and transitions are deleted by windows of their commit-order `seq`, oldest
        // first: `seq` grows with time, so the first window with nothing old ends the walk.
        for table in ["events", "transitions", "merges"] {
            let mut from = 0i64;
            loop {
                let (deleted, next) = self
                    .writer()
                    .submit_wait(move |ctx| {
                        purge_window(ctx.conn, table, from, events_before, instances_before)
                    })
                    .await?;
                match table {
                    "events" | "merges" => total.events += deleted,
                    _ => total.transitions += deleted,
                };
                match next {
                    Some(n) => from = n,
                    None => break,
                }
            }
        }
        loop {
            let (instances, deliveries) = self
                .writer()
                .submit_wait(move |ctx| {
                    let conn = ctx.conn;
                    let deliveries = conn
                        .prepare_cached(
                            "DELETE FROM deliveries WHERE delivery_id IN
                               (SELECT delivery_id FROM deliveries WHERE created_at < ?1 AND (status = 'succeeded' OR status = 'capped') LIMIT ?2)",
                        )?
                        .execute(params![instances_before, PURGE_BATCH])?;
                    // An instance stays while it has deliveries: forgetting a person finds their
                    // deliveries through their instances.
                    let instances = conn
                        .prepare_cached(
                            "DELETE FROM instances WHERE instance_id IN
                               (SELECT instance_id FROM instances i WHERE state != 'active' AND updated_at < ?1
                                AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.instance_id = i.instance_id)
                                LIMIT ?2)",
                        )?
                        .execute(params![instances_before, PURGE_BATCH])?;
                    Ok((instances as u64, deliveries as u64))
                })
                .await?;
            total.instances += instances;
            total.deliveries += deliveries;
            if instances < PURGE_BATCH as u64 && deliveries < PURGE_BATCH as u64 {
                break;
            }
        }
        Ok(total)
    }
}

/// Deletes old rows of `table` among the `PURGE_BATCH` seqs starting at `from`. Returns how many
/// it deleted and where the next window starts, or `None` when this window reached rows that are
/// not old (or the end of the table).
fn purge_window(
    conn: &rusqlite::Connection,
    table: &str,
    from: i64,
    events_before: i64,
    instances_before: i64,
) -> Result<(u64, Option<i64>)> {
    let (time, cutoff, keep) = match table {
        "events" => ("received_at", events_before, ""),
        // A merge is part of the profile's event history.
        "merges" => ("at", events_before, ""),
        // A transition goes with its instance: kept while the instance is active or recent.
        _ => (
            "at",
            instances_before,
            "AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.instance_id = t.instance_id
                             AND (i.state = 'active' OR i.updated_at >= ?3))",
        ),
    };
    let window: Option<(i64, i64)> = conn
        .prepare_cached(&format!(
            "SELECT max(seq), max({time} >= ?2) FROM (SELECT seq, {time} FROM {table} WHERE seq >= ?1 ORDER BY seq LIMIT ?3)"
        ))?
        .query_row(params![from, cutoff, PURGE_BATCH], |r| Ok(r.get::<_, Option<i64>>(0)?.zip(r.get::<_, Option<i64>>(1)?)))?;
    let Some((last, reached_new)) = window else {
        return Ok((0, None));
    };
    let deleted = conn
        .prepare_cached(&format!(
            "DELETE FROM {table} AS t WHERE seq >= ?1 AND seq <= ?4 AND {time} < ?2 {keep}"
        ))?
        .execute(params![from, cutoff, instances_before, last])?;
    let next = (reached_new == 0).then_some(last + 1);
    Ok((deleted as u64, next))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::store::{StoreOptions, send};

    const DAY: i64 = 86_400_000;
    const T0: i64 = 1_795_000_000_000;

    fn temp_db(name: &str) -> std::path::PathBuf {
        crate::store::temp_db(&format!("hk-{name}"))
    }

    async fn track(store: &Store, at: i64, user: &str, event: &str) {
        send(
            store,
            at,
            json!({"type": "track", "userId": user, "event": event}),
        )
        .await;
    }

    async fn count(store: &Store, sql: &'static str) -> i64 {
        store
            .read(move |c| Ok(c.query_row(sql, [], |r| r.get(0))?))
            .await
            .unwrap()
    }

    /// On a manual clock: what is past retention goes, what is not stays; active instances stay
    /// whatever their age.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn purge_keeps_what_is_within_retention() {
        let path = temp_db("purge");
        let clock = Arc::new(ManualClock::new(T0));
        let store = Store::open(&path, clock.clone(), StoreOptions::default()).unwrap();
        let journey = |id: &str, hold: &str| {
            crate::journey::parse(&json!({"id": id, "entry": {"event": format!("{id}_start")},
                "steps": [{"id": "h", "type": "hold_until", "max_hold": hold, "branches": [{"event": format!("{id}_done")}]}]}))
            .unwrap()
        };
        store
            .publish_journey(journey("short", "1h"), "{}".into())
            .await
            .unwrap();
        store
            .publish_journey(journey("long", "365d"), "{}".into())
            .await
            .unwrap();

        // Day 0: an event, a journey that completes, and one that stays active for a year.
        track(&store, T0, "old", "short_start").await;
        track(&store, T0, "old", "short_done").await;
        track(&store, T0, "old", "long_start").await;
        // Day 80: a recent event and a recently finished instance.
        track(&store, T0 + 80 * DAY, "new", "short_start").await;
        track(&store, T0 + 80 * DAY, "new", "short_done").await;

        clock.set(T0 + 100 * DAY);
        let now = clock.now_ms();
        let purged = store.purge(now - 30 * DAY, now - 90 * DAY).await.unwrap();
        assert_eq!(purged.events, 3, "{purged:?}");
        assert_eq!(purged.instances, 1, "{purged:?}");
        assert_eq!(count(&store, "SELECT count(*) FROM events").await, 2);
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM instances WHERE state = 'active'"
            )
            .await,
            1
        );
        assert_eq!(count(&store, "SELECT count(*) FROM instances").await, 2);
        // The active instance's history is kept whole; the recent instance's too.
        let kept = count(
            &store,
            "SELECT count(*) FROM transitions WHERE journey_id = 'long'",
        )
        .await;
        assert_eq!(kept, 2, "entered and step of the year-long hold");
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM transitions WHERE profile_key = 'new'"
            )
            .await,
            4
        );
        assert_eq!(count(&store, "SELECT count(*) FROM transitions WHERE profile_key = 'old' AND journey_id = 'short'").await, 0);

        // A second run finds nothing more.
        assert_eq!(
            store.purge(now - 30 * DAY, now - 90 * DAY).await.unwrap(),
            Purged::default()
        );
        store.writer().shutdown().await;
    }

    /// A finished instance past retention stays while it has a delivery (a failed one, kept
    /// whatever its age), so that forgetting the person still finds that delivery through it;
    /// one whose delivery succeeded or was capped goes with the delivery. A delivery an older
    /// journeyd's purge left without its instance is found through its listing by profile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn purge_keeps_the_instances_of_kept_deliveries_and_forgetting_finds_them() {
        let path = temp_db("purge-deliveries");
        let clock = Arc::new(ManualClock::new(T0));
        let store = Store::open(&path, clock.clone(), StoreOptions::default()).unwrap();
        store
            .put_destination(
                "hook".into(),
                json!({"type": "webhook", "url": "http://127.0.0.1:9/hook"}),
                Default::default(),
            )
            .await
            .unwrap();
        let journey = crate::journey::parse(&json!({"id": "fwd", "entry": {"event": "Go"},
            "steps": [{"id": "s", "type": "send", "destination": "hook", "next": null}]}))
        .unwrap();
        store.publish_journey(journey, "{}".into()).await.unwrap();
        for user in ["ok", "failed", "capped"] {
            track(&store, T0, user, "Go").await;
        }
        store
            .writer()
            .submit_wait(|ctx| {
                ctx.conn.execute(
                    "UPDATE deliveries SET status = CASE profile_key WHEN 'ok' THEN 'succeeded'
                         WHEN 'capped' THEN 'capped' ELSE 'failed' END, next_attempt_at = NULL",
                    [],
                )?;
                Ok(())
            })
            .await
            .unwrap();

        clock.set(T0 + 100 * DAY);
        let now = clock.now_ms();
        let purged = store.purge(now - 30 * DAY, now - 90 * DAY).await.unwrap();
        assert_eq!((purged.instances, purged.deliveries), (2, 2), "{purged:?}");
        let left = "SELECT group_concat(profile_key || ':' || status) FROM
                      (SELECT i.profile_key, d.status FROM instances i JOIN deliveries d USING (instance_id))";
        let kept: String = store
            .read(move |c| Ok(c.query_row(left, [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(kept, "failed:failed");
        // As the upgrade to version 10 lists a delivery whose instance is gone.
        store
            .writer()
            .submit_wait(|ctx| {
                ctx.conn.execute_batch(
                    "INSERT INTO deliveries (delivery_id, profile_key, instance_id, journey_id, step_id, destination_id,
                         payload, status, expires_at, created_at, updated_at)
                     VALUES ('orphan', 'failed', 42, 'fwd', 's', 'hook', '{}', 'failed', 0, 0, 0);
                     INSERT INTO deliveries_without_instance VALUES ('failed', 'orphan');",
                )?;
                Ok(())
            })
            .await
            .unwrap();

        store.forget_profile("failed".into()).await.unwrap();
        assert_eq!(count(&store, "SELECT count(*) FROM deliveries").await, 0);
        assert_eq!(count(&store, "SELECT count(*) FROM instances").await, 0);
        assert_eq!(
            count(&store, "SELECT count(*) FROM deliveries_without_instance").await,
            0
        );
        store.writer().shutdown().await;
    }

    /// Rows of `profile_log` that are not those of an event or an instance, and events and
    /// instances without their row: both empty when its triggers kept it as an index.
    async fn log_mismatches(store: &Store) -> i64 {
        count(
            store,
            "SELECT (SELECT count(*) FROM (SELECT profile_key, seq, instance_id FROM profile_log
                     EXCEPT SELECT profile_key, seq, NULL FROM events
                     EXCEPT SELECT profile_key, coalesce(log_seq, -instance_id), instance_id FROM instances))
                  + (SELECT count(*) FROM (SELECT profile_key, seq, NULL FROM events
                     UNION ALL SELECT profile_key, coalesce(log_seq, -instance_id), instance_id FROM instances
                     EXCEPT SELECT profile_key, seq, instance_id FROM profile_log))",
        )
        .await
    }

    /// `profile_log` follows events and instances as they are written, moved by a merge,
    /// purged and forgotten; a profile's instances are found through it under the survivor's key.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_profile_log_follows_merges_purges_and_forgetting() {
        let path = temp_db("profile-log");
        let clock = Arc::new(ManualClock::new(T0));
        let store = Store::open(&path, clock.clone(), StoreOptions::default()).unwrap();
        let journey = crate::journey::parse(&json!({"id": "wait", "entry": {"event": "Start"},
            "steps": [{"id": "h", "type": "hold_until", "max_hold": "365d",
                       "branches": [{"event": "Done"}]}]}))
        .unwrap();
        store.publish_journey(journey, "{}".into()).await.unwrap();
        send(
            &store,
            T0,
            json!({"type": "track", "anonymousId": "anon", "event": "Start"}),
        )
        .await;
        track(&store, T0, "gone", "Start").await;
        track(&store, T0, "gone", "Done").await;
        assert_eq!(log_mismatches(&store).await, 0);
        let logged = |key: &'static str| {
            let sql = format!(
                "SELECT count(*) FROM profile_log WHERE profile_key = '{key}' AND instance_id IS NOT NULL"
            );
            let store = store.clone();
            async move {
                store
                    .read(move |c| Ok(c.query_row(&sql, [], |r| r.get::<_, i64>(0))?))
                    .await
                    .unwrap()
            }
        };
        assert_eq!(logged("anon").await, 1);

        // The anonymous visitor signs in: the active instance and its row move to the user.
        clock.set(T0 + DAY);
        send(
            &store,
            T0 + DAY,
            json!({"type": "identify", "userId": "u", "anonymousId": "anon"}),
        )
        .await;
        assert_eq!((logged("anon").await, logged("u").await), (0, 1));
        let instances = store.profile_instances("u".into(), 10).await.unwrap();
        assert_eq!(instances.len(), 1);
        assert_eq!(log_mismatches(&store).await, 0);

        // Old events and the finished instance go with their rows; then a forgotten person.
        clock.set(T0 + 100 * DAY);
        let now = clock.now_ms();
        let purged = store.purge(now - 30 * DAY, now - 90 * DAY).await.unwrap();
        assert!(purged.events >= 3 && purged.instances == 1, "{purged:?}");
        assert_eq!(log_mismatches(&store).await, 0);
        track(&store, now, "gone", "Start").await;
        store.forget_profile("gone".into()).await.unwrap();
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM profile_log WHERE profile_key = 'gone'"
            )
            .await,
            0
        );
        assert_eq!(log_mismatches(&store).await, 0);
        assert!(count(&store, "SELECT count(*) FROM profile_log").await > 0);
        store.writer().shutdown().await;
    }
}
