//! Admin tokens and write keys: stored as SHA-256 digests, loaded into memory at start.

use rusqlite::params;

use super::{Result, Store, hash_secret};

/// The digests of every admin token and write key, as loaded at start.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeySet {
    pub(crate) admin: std::collections::HashSet<String>,
    pub(crate) write: std::collections::HashSet<String>,
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
                let mut keys = KeySet::default();
                let mut stmt = conn.prepare("SELECT hash, kind FROM api_keys")?;
                for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
                    let (hash, kind) = row?;
                    if kind == "admin" { keys.admin.insert(hash) } else { keys.write.insert(hash) };
                }
                Ok::<_, super::StoreError>((keys, generated))
            })
            .await
    }
}
