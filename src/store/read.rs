//! A small pool of read-only connections. In WAL mode a reader sees the last committed state and
//! never blocks the writer, so queries for the admin API do not slow ingest.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

use super::Result;
use super::codec::Dictionaries;

pub(super) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    keep: usize,
    dictionaries: Arc<Dictionaries>,
}

impl ReadPool {
    pub(super) fn new(path: PathBuf, keep: usize, dictionaries: Arc<Dictionaries>) -> ReadPool {
        ReadPool {
            path,
            idle: Mutex::new(Vec::new()),
            keep,
            dictionaries,
        }
    }

    /// Runs `f` on an idle connection, opening one when none is idle. At most `keep` connections
    /// are kept for reuse; extra ones made under a burst are closed after use.
    pub(super) fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.idle.lock().unwrap().pop();
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY
                        | OpenFlags::SQLITE_OPEN_NO_MUTEX
                        | OpenFlags::SQLITE_OPEN_URI,
                )?;
                c.busy_timeout(std::time::Duration::from_secs(5))?;
                c.pragma_update(None, "temp_store", "MEMORY")?;
                super::plan_stability(&c)?;
                c.set_prepared_statement_cache_capacity(32);
                super::codec::install(&c, self.dictionaries.clone())?;
                c
            }
        };
        let out = f(&conn);
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < self.keep {
            idle.push(conn);
        }
        out
    }
}
