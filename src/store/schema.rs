//! The schema and its migrations.
//!
//! `schema.sql` at the repository root is the whole current schema: a new database gets it in one
//! step. A database made by an older journeyd is upgraded by the files in `migrations/`, one per
//! version, each in its own transaction. `PRAGMA user_version` records which version a file is at.
//! A test checks that a fresh database and one upgraded from version 1 end up identical.

use rusqlite::Connection;

use super::{Result, StoreError};

/// The current schema, applied to a new database.
pub const SCHEMA: &str = include_str!("../../schema.sql");

/// Migration `MIGRATIONS[i]` upgrades a database from version `i + 1` to `i + 2`; the first
/// file (`0001`) is the original schema and is used only to build version 1 in tests.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_foundation.sql"),
    include_str!("../../migrations/0002_journeys.sql"),
    include_str!("../../migrations/0003_housekeeping.sql"),
    include_str!("../../migrations/0004_checks.sql"),
    include_str!("../../migrations/0005_health.sql"),
    include_str!("../../migrations/0006_merges.sql"),
    include_str!("../../migrations/0007_operator.sql"),
    include_str!("../../migrations/0008_compression.sql"),
    include_str!("../../migrations/0009_transitions_by_instance.sql"),
    include_str!("../../migrations/0010_deliveries_by_instance.sql"),
    include_str!("../../migrations/0011_dedup_runs.sql"),
    include_str!("../../migrations/0012_profile_log.sql"),
    include_str!("../../migrations/0013_profile_log_written.sql"),
];

/// The version `schema.sql` describes.
pub(super) const VERSION: i64 = MIGRATIONS.len() as i64;

/// Whether the database is at [`VERSION`]: [`apply`] has nothing to do.
pub(super) fn is_current(conn: &Connection) -> Result<bool> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    Ok(version == VERSION)
}

/// Brings the database to [`VERSION`].
pub(super) fn apply(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > VERSION {
        return Err(StoreError::Schema(format!(
            "database is at schema version {version}, newer than this journeyd ({VERSION}): upgrade journeyd"
        )));
    }
    if version == 0 {
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if tables > 0 {
            return Err(StoreError::Schema(
                "database has tables but no journeyd schema version: not a journeyd database"
                    .into(),
            ));
        }
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(SCHEMA)?;
        tx.pragma_update(None, "user_version", VERSION)?;
        tx.commit()?;
        return Ok(());
    }
    migrate(conn, version, VERSION)
}

/// Applies the migrations that take a database from version `from` to version `to`.
fn migrate(conn: &mut Connection, from: i64, to: i64) -> Result<()> {
    for v in from..to {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(MIGRATIONS[v as usize])?;
        // A migration may edit the schema's text in place (writable_schema); bumping the schema
        // version makes every connection, this one included, read the schema again.
        let schema_version: i64 = tx.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
        tx.pragma_update(None, "schema_version", schema_version + 1)?;
        tx.pragma_update(None, "user_version", v + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table, index and trigger as SQLite normalised it, in a stable order.
    fn shape(conn: &Connection) -> Vec<(String, String, Option<String>)> {
        let mut stmt = conn
            .prepare("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    fn normalise(sql: Option<String>) -> Option<String> {
        sql.map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    #[test]
    fn fresh_schema_equals_every_older_version_upgraded() {
        let mut fresh = Connection::open_in_memory().unwrap();
        apply(&mut fresh).unwrap();
        let normalised = |c: &Connection| -> Vec<_> {
            shape(c)
                .into_iter()
                .map(|(t, n, s)| (t, n, normalise(s)))
                .collect()
        };
        let version = |c: &Connection| {
            c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
                .unwrap()
        };
        assert_eq!(version(&fresh), VERSION);
        // A database as each older journeyd left it: migrations 1..=from, then upgraded by `apply`.
        for from in 1..=VERSION {
            let mut upgraded = Connection::open_in_memory().unwrap();
            migrate(&mut upgraded, 0, from).unwrap();
            apply(&mut upgraded).unwrap();
            assert_eq!(
                normalised(&fresh),
                normalised(&upgraded),
                "schema.sql and version {from} upgraded disagree"
            );
            assert_eq!(version(&upgraded), VERSION);
        }
    }

    /// The busiest tables' CHECK constraints hold, fresh or upgraded, and are evaluated without a
    /// temporary b-tree per row.
    #[test]
    fn checks_hold_and_compare_in_place() {
        for from in [None, Some(3)] {
            let mut conn = Connection::open_in_memory().unwrap();
            if let Some(from) = from {
                migrate(&mut conn, 0, from).unwrap();
            }
            apply(&mut conn).unwrap();
            assert_eq!(
                conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
                    .unwrap(),
                "ok"
            );
            for (sql, bad) in [
                (
                    "INSERT INTO instances (instance_id, profile_key, journey_id, version, state, context, ordinal, entered_at, updated_at)
                     VALUES (1, 'p', 'j', 1, ?1, '{}', 1, 0, 0)",
                    "bogus",
                ),
                (
                    "INSERT INTO deliveries (delivery_id, profile_key, instance_id, journey_id, step_id, destination_id, payload, status, expires_at, created_at, updated_at)
                     VALUES ('d', 'p', 1, 'j', 's', 'x', '{}', ?1, 0, 0, 0)",
                    "sent",
                ),
            ] {
                let ops: Vec<String> = conn
                    .prepare(&format!("EXPLAIN {sql}"))
                    .unwrap()
                    .query_map([bad], |r| r.get(1))
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect();
                assert!(!ops.iter().any(|op| op == "OpenEphemeral"), "{from:?}: {sql}");
                let err = conn.execute(sql, [bad]).unwrap_err().to_string();
                assert!(err.contains("CHECK"), "{from:?}: {err}");
            }
        }
    }

    /// The upgrade to version 10 lists the deliveries an older purge left without their
    /// instance, so that forgetting a person still finds them.
    #[test]
    fn deliveries_without_instance_are_listed_by_the_upgrade() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, 0, 9).unwrap();
        conn.execute_batch(
            "INSERT INTO instances (instance_id, profile_key, journey_id, version, state, context, ordinal, entered_at, updated_at)
             VALUES (1, 'kept', 'j', 1, 'completed', '{}', 1, 0, 0);
             INSERT INTO deliveries (delivery_id, profile_key, instance_id, journey_id, step_id, destination_id, payload, status, expires_at, created_at, updated_at)
             VALUES ('a', 'kept', 1, 'j', 's', 'x', '{}', 'failed', 0, 0, 0),
                    ('b', 'orphaned', 2, 'j', 's', 'x', '{}', 'failed', 0, 0, 0);",
        )
        .unwrap();
        apply(&mut conn).unwrap();
        let listed: Vec<(String, String)> = conn
            .prepare("SELECT profile_key, delivery_id FROM deliveries_without_instance")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(listed, [("orphaned".to_string(), "b".to_string())]);
    }

    #[test]
    fn refuses_newer_and_foreign_databases() {
        let mut newer = Connection::open_in_memory().unwrap();
        newer
            .pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        assert!(matches!(apply(&mut newer), Err(StoreError::Schema(_))));

        let mut foreign = Connection::open_in_memory().unwrap();
        foreign.execute_batch("CREATE TABLE t (x)").unwrap();
        assert!(matches!(apply(&mut foreign), Err(StoreError::Schema(_))));
    }
}
