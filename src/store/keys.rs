//! Admin tokens and write keys: stored as SHA-256 digests (the database file alone does not leak
//! them), held in memory by the API, which reloads them whenever one is added or revoked.
//!
//! A key's public id is the first 12 hex digits of its digest: stable, shown in lists and used to
//! revoke, and no help in guessing the key.

use rusqlite::{Connection, params};

use super::{Refusal, Result, Store, StoreError, hash_secret};

/// The digests of every admin token and write key, as loaded at start.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeySet {
    pub(crate) admin: std::collections::HashSet<String>,
    pub(crate) write: std::collections::HashSet<String>,
}

/// A stored key as listed: never the key itself.
#[derive(Debug, Clone)]
pub(crate) struct KeyView {
    pub(crate) id: String,
    pub(crate) kind: String,
    pub(crate) created_at: i64,
}

/// How long a key's public id is: hex digits of its digest.
const ID_DIGITS: usize = 12;

fn key_id(hash: &str) -> String {
    hash[..ID_DIGITS.min(hash.len())].to_string()
}

/// Every digest, by kind.
fn key_set(conn: &Connection) -> Result<KeySet> {
    let mut keys = KeySet::default();
    let mut stmt = conn.prepare_cached("SELECT hash, kind FROM api_keys")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (hash, kind) = row?;
        if kind == "admin" {
            keys.admin.insert(hash)
        } else {
            keys.write.insert(hash)
        };
    }
    Ok(keys)
}

/// Keys generated on first start, to print once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Generated {
    pub(crate) admin_token: Option<String>,
    pub(crate) write_key: Option<String>,
}

impl Store {
    /// Adds the given tokens and keys to those stored, generates one of a kind when none is
    /// stored or given, and returns every digest with what was generated.
    pub(crate) async fn ensure_keys(
        &self,
        admin_tokens: Vec<String>,
        write_keys: Vec<String>,
        generate: fn() -> String,
    ) -> Result<(KeySet, Generated)> {
        self.writer()
            .submit_wait(move |ctx| {
                let conn = ctx.conn;
                let mut insert = conn.prepare_cached(
                    "INSERT INTO api_keys (hash, kind, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (hash) DO NOTHING",
                )?;
                let mut generated = Generated::default();
                for (kind, given, slot) in [
                    ("admin", &admin_tokens, &mut generated.admin_token),
                    ("write", &write_keys, &mut generated.write_key),
                ] {
                    for secret in given {
                        insert.execute(params![hash_secret(secret), kind, ctx.now])?;
                    }
                    let count: i64 =
                        conn.query_row("SELECT count(*) FROM api_keys WHERE kind = ?1", [kind], |r| r.get(0))?;
                    if count == 0 {
                        let secret = generate();
                        insert.execute(params![hash_secret(&secret), kind, ctx.now])?;
                        *slot = Some(secret);
                    }
                }
                Ok((key_set(conn)?, generated))
            })
            .await
    }
}

impl Store {
    /// Every stored key, oldest first: id, kind and creation time.
    pub(crate) async fn keys(&self) -> Result<Vec<KeyView>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT hash, kind, created_at FROM api_keys ORDER BY created_at, hash",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(KeyView {
                    id: key_id(&r.get::<_, String>(0)?),
                    kind: r.get(1)?,
                    created_at: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Stores a new key of `kind` (`admin` or `write`), given in the clear; returns its view and
    /// every digest now stored.
    pub(crate) async fn add_key(
        &self,
        kind: &'static str,
        secret: String,
    ) -> Result<(KeyView, KeySet)> {
        self.writer()
            .submit_wait(move |ctx| {
                let hash = hash_secret(&secret);
                ctx.conn
                    .prepare_cached(
                        "INSERT INTO api_keys (hash, kind, created_at) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![hash, kind, ctx.now])?;
                let view = KeyView {
                    id: key_id(&hash),
                    kind: kind.to_string(),
                    created_at: ctx.now,
                };
                Ok((view, key_set(ctx.conn)?))
            })
            .await
    }

    /// Revokes the key with this id; refused for the last admin token ([`Refusal::LastAdminToken`]).
    /// Returns every digest still stored.
    pub(crate) async fn revoke_key(&self, id: String) -> Result<KeySet> {
        self.writer()
            .submit_wait(move |ctx| {
                let conn = ctx.conn;
                if id.len() != ID_DIGITS || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(StoreError::NotFound(format!("key \"{id}\"")));
                }
                let pattern = format!("{}%", id.to_ascii_lowercase());
                let found: Vec<(String, String)> = conn
                    .prepare_cached("SELECT hash, kind FROM api_keys WHERE hash LIKE ?1")?
                    .query_map([&pattern], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                let [(hash, kind)] = found.as_slice() else {
                    return Err(StoreError::NotFound(format!("key \"{id}\"")));
                };
                if kind == "admin" {
                    let admins: i64 = conn
                        .prepare_cached("SELECT count(*) FROM api_keys WHERE kind = 'admin'")?
                        .query_row([], |r| r.get(0))?;
                    if admins == 1 {
                        return Err(StoreError::Refused(Refusal::LastAdminToken));
                    }
                }
                conn.prepare_cached("DELETE FROM api_keys WHERE hash = ?1")?
                    .execute([hash])?;
                key_set(conn)
            })
            .await
    }
}
