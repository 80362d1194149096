//! Stored JSON, compressed: event bodies and delivery payloads are kept as zstd frames, with a
//! dictionary trained on this database's own recent messages (issue 15: bytes kept and written
//! per event).
//!
//! Two SQL functions, installed on every connection of the store, keep the SQL readable:
//! `jd_pack(text)` turns JSON into what is stored (a zstd frame as a BLOB when that is smaller,
//! else the text itself) and `jd_text(value)` turns what is stored back into the JSON, byte for
//! byte. Rows written before compression (TEXT) read as they are. A frame names its dictionary
//! by the id zstd writes into its header; the dictionaries live in the `dictionaries` table of the
//! same file, so a backup is readable on its own, and are never deleted (16 KiB each: a second one
//! after 10,000 more values, then one a week, or sooner when what is stored changed: when values
//! compress [`DRIFT`] times worse than in the current dictionary's first window, after at least
//! 10,000 values with it, twice that for each dictionary after the second).
//!
//! A dictionary holds text frequent in its samples, so it is trained only on what many people
//! share: before training, every string value that fewer than [`MIN_PROFILES`] profiles of the
//! samples have is blanked (ids, emails, names, addresses), leaving the keys, the event names and
//! the values common to many (library names, pages, currencies). Forgetting a person (SPEC §6)
//! deletes their rows and leaves nothing of theirs in a dictionary.
//!
//! Which dictionary `jd_pack` uses is [`Dictionaries::current`]: none until enough messages were
//! stored to train one (values are stored as text meanwhile), then the newest. A new dictionary
//! becomes current only after the transaction that stored it committed, so no committed row
//! names a dictionary the file does not hold.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rusqlite::Connection;
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::{Value, ValueRef};

use super::{Result, Store, StoreError};

/// The zstd level of stored JSON: small values compress in microseconds at this level, and
/// higher ones gain little with a dictionary.
const LEVEL: i32 = 3;

/// The size of a trained dictionary: larger ones gained nothing on measured event streams.
const DICTIONARY_BYTES: usize = 16 * 1024;

/// Most samples of each kind (event bodies, delivery payloads) a dictionary is trained on.
const SAMPLES: i64 = 1_000;

/// A string value goes into training samples only when at least this many profiles have it.
const MIN_PROFILES: usize = 5;

/// A dictionary is trained once this many values were stored without one.
const TRAIN_AFTER: u64 = 1_000;

/// The second dictionary is trained once this many values were stored with the first: the first
/// thousand messages of a new database (tests, a backfill, one journey's events) often look
/// little like the traffic that follows.
const RETRAIN_FIRST_AFTER: u64 = 10_000;

/// Later, a newer dictionary is trained when the current one is this old and this many values were
/// stored since: what users send changes as their product does.
const RETRAIN_AFTER_MS: i64 = 7 * 24 * 3_600_000;

/// Values per window over which compression is measured (stored bytes over text bytes).
const WINDOW: u32 = 1_000;

/// A window that compresses this many times worse than the current dictionary's first one means
/// what is stored changed (a new database filled by one kind of message, then another traffic):
/// a newer dictionary is trained once [`RETRAIN_FIRST_AFTER`] values were stored with the current
/// (twice as many for each dictionary after the second).
/// Measured: a dictionary trained on the entry events of a large fill left forwarded events'
/// bodies and delivery payloads 20-40 % larger than one trained on them.
const DRIFT: f64 = 1.15;

/// The largest value `jd_text` inflates: far above any message or payload the API accepts; a
/// frame claiming more is damage.
const MAX_TEXT_BYTES: u64 = 64 * 1024 * 1024;

/// The dictionaries of one database file, shared by its connections.
#[derive(Default)]
pub(crate) struct Dictionaries {
    state: RwLock<State>,
    /// Values `jd_pack` stored since the current dictionary (or since start).
    packed: std::sync::atomic::AtomicU64,
    /// How well the values stored since the current dictionary compress, by source: event bodies
    /// (packed on the requests' threads, a batch's bodies together) and what `jd_pack` stores
    /// (instance contexts and payloads, in the writer's order). Apart, so that a window's mix of
    /// the two, which varies with how requests interleave, is not taken for a change.
    windows: std::sync::Mutex<[Window; 2]>,
}

/// Which of [`Dictionaries::windows`] a value is measured in.
#[derive(Clone, Copy)]
enum Source {
    Body = 0,
    Derived = 1,
}

/// Compression of the values stored with the current dictionary, by windows of [`WINDOW`].
#[derive(Default)]
struct Window {
    text: u64,
    stored: u64,
    values: u32,
    /// Stored over text bytes in the first full window.
    first: Option<f64>,
    /// A later window compressed [`DRIFT`] times worse than the first.
    drifted: bool,
}

impl Window {
    fn record(&mut self, text: usize, stored: usize) {
        self.text += text as u64;
        self.stored += stored as u64;
        self.values += 1;
        if self.values < WINDOW {
            return;
        }
        let ratio = self.stored as f64 / self.text.max(1) as f64;
        match self.first {
            None => self.first = Some(ratio),
            Some(first) if ratio > first * DRIFT => self.drifted = true,
            Some(_) => {}
        }
        (self.text, self.stored, self.values) = (0, 0, 0);
    }
}

#[derive(Default)]
struct State {
    by_id: HashMap<u32, Arc<[u8]>>,
    /// The dictionary new values are compressed with, and when it was trained.
    current: Option<(u32, i64)>,
}

impl Dictionaries {
    /// Reads the dictionaries stored in the file `conn` is open on; the newest becomes current.
    /// A database from before compression has none.
    pub(crate) fn load(conn: &Connection) -> Result<Arc<Dictionaries>> {
        let dicts = Dictionaries::default();
        let exists: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'dictionaries')",
            [],
            |r| r.get(0),
        )?;
        if exists {
            let mut stmt = conn.prepare(
                "SELECT dict_id, created_at, data FROM dictionaries ORDER BY created_at, dict_id",
            )?;
            let mut rows = stmt.query([])?;
            let mut state = dicts.state.write().unwrap();
            while let Some(r) = rows.next()? {
                let (id, at, data): (i64, i64, Vec<u8>) = (r.get(0)?, r.get(1)?, r.get(2)?);
                let id = u32::try_from(id)
                    .map_err(|_| StoreError::Corrupt(format!("dictionary id {id}")))?;
                state.by_id.insert(id, data.into());
                state.current = Some((id, at));
            }
        }
        Ok(Arc::new(dicts))
    }

    /// The dictionary new values are compressed with, and when it was trained.
    pub(crate) fn current(&self) -> Option<(u32, i64)> {
        self.state.read().unwrap().current
    }

    fn get(&self, id: u32) -> Option<Arc<[u8]>> {
        self.state.read().unwrap().by_id.get(&id).cloned()
    }

    /// Makes a stored dictionary the one new values are compressed with.
    fn adopt(&self, id: u32, created_at: i64, data: Arc<[u8]>) {
        let mut state = self.state.write().unwrap();
        state.by_id.insert(id, data);
        state.current = Some((id, created_at));
        self.packed.store(0, std::sync::atomic::Ordering::Relaxed);
        *self.windows.lock().unwrap() = Default::default();
    }

    /// Whether a (new) dictionary should be trained now.
    fn due(&self, now: i64) -> bool {
        let packed = self.packed.load(std::sync::atomic::Ordering::Relaxed);
        let state = self.state.read().unwrap();
        let drifted = self.windows.lock().unwrap().iter().any(|w| w.drifted);
        // Each dictionary after the second doubles the values a drift must wait for, so traffic
        // whose mix keeps changing adds dictionaries ever more rarely (they are never deleted).
        let after_drift = RETRAIN_FIRST_AFTER << (state.by_id.len().saturating_sub(2)).min(30);
        match state.current {
            None => packed >= TRAIN_AFTER,
            Some(_) if state.by_id.len() == 1 => packed >= RETRAIN_FIRST_AFTER,
            Some((_, at)) => {
                (drifted && packed >= after_drift)
                    || (now - at >= RETRAIN_AFTER_MS && packed >= TRAIN_AFTER)
            }
        }
    }
}

/// Installs `jd_pack` and `jd_text` on `conn`, with the dictionaries of its file.
pub(crate) fn install(conn: &Connection, dicts: Arc<Dictionaries>) -> Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    let pack_dicts = dicts.clone();
    conn.create_scalar_function("jd_pack", 1, flags, move |ctx: &mut Context<'_>| {
        let text = match ctx.get_raw(0) {
            ValueRef::Text(t) => t,
            ValueRef::Null => return Ok(Value::Null),
            other => {
                return Err(rusqlite::Error::UserFunctionError(
                    format!("jd_pack takes text, not {:?}", other.data_type()).into(),
                ));
            }
        };
        pack_bytes(&pack_dicts, text, Source::Derived)
            .map_err(|e| rusqlite::Error::UserFunctionError(e.into()))
    })?;
    let unpacker = RefCell::new(Unpacker::default());
    conn.create_scalar_function("jd_text", 1, flags, move |ctx: &mut Context<'_>| match ctx
        .get_raw(0)
    {
        ValueRef::Blob(frame) => unpacker
            .borrow_mut()
            .unpack(&dicts, frame)
            .map(Value::Text)
            .map_err(|e| rusqlite::Error::UserFunctionError(e.into())),
        ValueRef::Text(t) => Ok(Value::Text(String::from_utf8_lossy(t).into_owned())),
        ValueRef::Null => Ok(Value::Null),
        other => Err(rusqlite::Error::UserFunctionError(
            format!(
                "jd_text takes text or a zstd frame, not {:?}",
                other.data_type()
            )
            .into(),
        )),
    })?;
    Ok(())
}

/// What `jd_pack` stores for `text`: a zstd frame with the current dictionary when that is
/// smaller, else the text itself; counted towards the next dictionary's training and its drift.
/// Callable on any thread: ingest packs event bodies on the request's thread before they reach
/// the writer, whose thread is the one every write waits for.
pub(crate) fn pack(dicts: &Dictionaries, text: &str) -> Result<Value> {
    pack_bytes(dicts, text.as_bytes(), Source::Body)
        .map_err(|e| StoreError::Corrupt(format!("compressing: {e}")))
}

fn pack_bytes(dicts: &Dictionaries, text: &[u8], source: Source) -> Result<Value, String> {
    thread_local! {
        static PACKER: RefCell<Packer> = RefCell::new(Packer::default());
    }
    let packed = PACKER.with(|p| p.borrow_mut().pack(dicts, text))?;
    dicts
        .packed
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dicts.windows.lock().unwrap()[source as usize]
        .record(text.len(), packed.as_ref().map_or(text.len(), Vec::len));
    Ok(match packed {
        Some(frame) => Value::Blob(frame),
        None => Value::Text(String::from_utf8_lossy(text).into_owned()),
    })
}

/// A thread's compressor, set up for the current dictionary.
#[derive(Default)]
struct Packer {
    /// The dictionary (0: none) `compressor` was made with.
    with: Option<(u32, zstd::bulk::Compressor<'static>)>,
}

impl Packer {
    /// The frame for `text`, or `None` when it would not be smaller than the text, or when
    /// there is no dictionary yet: without one, a small JSON value compresses to about two
    /// thirds at several times the cost (6 against 1.7 µs for a 466-byte event), and a new
    /// database's first seconds (a fill, a backfill) are when its writer is busiest.
    fn pack(&mut self, dicts: &Dictionaries, text: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let Some((want, _)) = dicts.current() else {
            return Ok(None);
        };
        if self.with.as_ref().map(|(id, _)| *id) != Some(want) {
            let dict = dicts
                .get(want)
                .ok_or(format!("dictionary {want} is not loaded"))?;
            let compressor = zstd::bulk::Compressor::with_dictionary(LEVEL, &dict)
                .map_err(|e| format!("zstd: {e}"))?;
            self.with = Some((want, compressor));
        }
        let (_, compressor) = self.with.as_mut().expect("set above");
        let frame = compressor
            .compress(text)
            .map_err(|e| format!("zstd: {e}"))?;
        Ok((frame.len() < text.len()).then_some(frame))
    }
}

/// A connection's decompressors, one per dictionary met.
#[derive(Default)]
struct Unpacker {
    by_dict: HashMap<u32, zstd::bulk::Decompressor<'static>>,
}

impl Unpacker {
    fn unpack(&mut self, dicts: &Dictionaries, frame: &[u8]) -> Result<String, String> {
        let id = zstd::zstd_safe::get_dict_id_from_frame(frame).map_or(0, |id| id.get());
        let decompressor = match self.by_dict.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let d = match id {
                    0 => zstd::bulk::Decompressor::new(),
                    id => {
                        let dict = dicts.get(id).ok_or(format!(
                            "stored value names dictionary {id}, which the database does not hold"
                        ))?;
                        zstd::bulk::Decompressor::with_dictionary(&dict)
                    }
                }
                .map_err(|e| format!("zstd: {e}"))?;
                e.insert(d)
            }
        };
        let size = match zstd::zstd_safe::get_frame_content_size(frame) {
            Ok(Some(n)) if n <= MAX_TEXT_BYTES => n as usize,
            _ => return Err("stored value is not a zstd frame with its size".into()),
        };
        let bytes = decompressor
            .decompress(frame, size)
            .map_err(|e| format!("zstd: {e}"))?;
        String::from_utf8(bytes).map_err(|_| "stored value is not UTF-8 text".into())
    }
}

/// The samples with every string value that fewer than [`MIN_PROFILES`] profiles have blanked:
/// what a dictionary may learn from. Samples are (profile key, JSON text); text that is not JSON
/// is left out.
fn shared_only(samples: &[(String, String)]) -> Vec<String> {
    use serde_json::Value as Json;
    fn strings<'a>(v: &'a Json, out: &mut Vec<&'a str>) {
        match v {
            Json::String(s) => out.push(s),
            Json::Array(a) => a.iter().for_each(|v| strings(v, out)),
            Json::Object(o) => o.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    fn blank(v: &mut Json, keep: &dyn Fn(&str) -> bool) {
        match v {
            Json::String(s) if !keep(s) => s.clear(),
            Json::Array(a) => a.iter_mut().for_each(|v| blank(v, keep)),
            Json::Object(o) => o.values_mut().for_each(|v| blank(v, keep)),
            _ => {}
        }
    }
    let parsed: Vec<(&str, Json)> = samples
        .iter()
        .filter_map(|(key, text)| Some((key.as_str(), serde_json::from_str(text).ok()?)))
        .collect();
    let mut holders: HashMap<&str, std::collections::HashSet<&str>> = HashMap::new();
    for (key, json) in &parsed {
        let mut found = Vec::new();
        strings(json, &mut found);
        for s in found {
            let h = holders.entry(s).or_default();
            if h.len() < MIN_PROFILES {
                h.insert(key);
            }
        }
    }
    let keep = |s: &str| holders.get(s).is_some_and(|h| h.len() >= MIN_PROFILES);
    parsed
        .iter()
        .map(|(_, json)| {
            let mut json = json.clone();
            blank(&mut json, &keep);
            json.to_string()
        })
        .collect()
}

/// A read-only connection on a journeyd database, with `jd_text()` to read stored JSON: for
/// looking into the file from outside the server (tests, the benchmark).
pub fn inspect(path: &std::path::Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    install(&conn, Dictionaries::load(&conn)?)?;
    Ok(conn)
}

impl Store {
    /// Trains a dictionary from the newest stored event bodies and delivery payloads when one is
    /// due (none yet and enough values stored, or the current one old), stores it, and makes it
    /// current. Returns the new dictionary's id and size. Values already stored keep theirs.
    pub(crate) async fn train_dictionary(&self) -> Result<Option<(u32, usize)>> {
        let dicts = self.dictionaries().clone();
        let now = self.clock().now_ms();
        if !dicts.due(now) {
            return Ok(None);
        }
        let samples = self
            .read(|conn| {
                let mut out: Vec<(String, String)> = Vec::new();
                for sql in [
                    "SELECT profile_key, jd_text(body) FROM events ORDER BY seq DESC LIMIT ?1",
                    "SELECT profile_key, jd_text(payload) FROM deliveries ORDER BY created_at DESC LIMIT ?1",
                ] {
                    let mut stmt = conn.prepare(sql)?;
                    for s in stmt.query_map([SAMPLES], |r| Ok((r.get(0)?, r.get(1)?)))? {
                        out.push(s?);
                    }
                }
                Ok(out)
            })
            .await?;
        // Too few, or too alike, to train on: zstd needs some variety. Try again later.
        if (samples.len() as u64) < TRAIN_AFTER / 2 {
            return Ok(None);
        }
        let trained = tokio::task::spawn_blocking(move || {
            zstd::dict::from_samples(&shared_only(&samples), DICTIONARY_BYTES)
        })
        .await
        .expect("training task panicked");
        let data: Arc<[u8]> = match trained {
            Ok(d) => d.into(),
            Err(e) => {
                tracing::debug!(error = %e, "no dictionary trained from these samples");
                dicts.packed.store(0, std::sync::atomic::Ordering::Relaxed);
                return Ok(None);
            }
        };
        let Some(id) = zstd::zstd_safe::get_dict_id_from_dict(&data).map(|id| id.get()) else {
            return Ok(None);
        };
        let stored = data.clone();
        let added = self
            .writer()
            .submit_wait(move |ctx| {
                Ok(ctx
                    .conn
                    .prepare_cached(
                        "INSERT OR IGNORE INTO dictionaries (dict_id, created_at, data) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(rusqlite::params![id, now, &stored[..]])?
                    == 1)
            })
            .await?;
        if !added {
            // The same id as a stored dictionary (zstd picks ids at random): train again later.
            return Ok(None);
        }
        let size = data.len();
        dicts.adopt(id, now, data);
        Ok(Some((id, size)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> (Connection, Arc<Dictionaries>) {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE dictionaries (dict_id INTEGER PRIMARY KEY, created_at INTEGER NOT NULL, data BLOB NOT NULL);
             CREATE TABLE t (v TEXT)",
        )
        .unwrap();
        let dicts = Dictionaries::load(&conn).unwrap();
        install(&conn, dicts.clone()).unwrap();
        (conn, dicts)
    }

    fn round_trip(conn: &Connection, text: &str) -> (String, String) {
        conn.execute("DELETE FROM t", []).unwrap();
        conn.execute("INSERT INTO t VALUES (jd_pack(?1))", [text])
            .unwrap();
        conn.query_row("SELECT typeof(v), jd_text(v) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap()
    }

    /// Trains a dictionary on `samples`, stores it in `conn`'s table and makes it current.
    fn adopt_trained(conn: &Connection, dicts: &Dictionaries, samples: &[String], at: i64) -> u32 {
        let data = zstd::dict::from_samples(samples, DICTIONARY_BYTES).unwrap();
        let id = zstd::zstd_safe::get_dict_id_from_dict(&data).unwrap().get();
        conn.execute(
            "INSERT INTO dictionaries VALUES (?1, ?2, ?3)",
            rusqlite::params![id, at, data],
        )
        .unwrap();
        dicts.adopt(id, at, data.into());
        id
    }

    fn message(i: usize) -> String {
        format!(
            r#"{{"type":"track","event":"Order Completed","userId":"user-{i:05}","properties":{{"order_id":"o-{}","total":{}.5,"currency":"USD"}},"context":{{"library":{{"name":"analytics.js","version":"2.11.1"}},"locale":"en-US","userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)"}}}}"#,
            i * 7919 % 100_003,
            i % 300
        )
    }

    #[test]
    fn values_read_back_byte_for_byte() {
        let (conn, dicts) = conn();
        // Before a dictionary, values stay text (as do short ones after), and read as they are.
        assert_eq!(round_trip(&conn, "{}"), ("text".into(), "{}".into()));
        let m = message(1);
        assert_eq!(round_trip(&conn, &m), ("text".into(), m.clone()));

        // With a dictionary, values become frames much smaller than one without a dictionary
        // (as versions before this one stored a new database's first values), which still read.
        let plain_frame = zstd::bulk::compress(m.as_bytes(), LEVEL).unwrap();
        let samples: Vec<String> = (0..2_000).map(message).collect();
        let id = adopt_trained(&conn, &dicts, &samples, 5);
        let m2 = message(5_000);
        assert_eq!(round_trip(&conn, &m2), ("blob".into(), m2.clone()));
        let dict_frame: Vec<u8> = conn.query_row("SELECT v FROM t", [], |r| r.get(0)).unwrap();
        assert!(
            dict_frame.len() * 2 < plain_frame.len(),
            "{} vs {}",
            dict_frame.len(),
            plain_frame.len()
        );
        conn.execute("UPDATE t SET v = ?1", [&plain_frame]).unwrap();
        let old: String = conn
            .query_row("SELECT jd_text(v) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(old, m);

        // Another connection on the same file finds the dictionary in the table.
        let fresh = Dictionaries::load(&conn).unwrap();
        assert_eq!(fresh.current(), Some((id, 5)));
    }

    #[test]
    fn dictionaries_learn_only_what_many_people_share() {
        let samples: Vec<(String, String)> = (0..1_500)
            .map(|i| {
                let who = i % 300;
                (
                    format!("user-{who:05}"),
                    format!(
                        r#"{{"type":"identify","userId":"user-{who:05}","traits":{{"email":"person{who}@mail.example","plan":"{}"}},"context":{{"library":{{"name":"analytics.js"}}}}}}"#,
                        ["free", "pro"][who % 2]
                    ),
                )
            })
            .collect();
        let shared = shared_only(&samples);
        assert_eq!(
            shared[7],
            r#"{"context":{"library":{"name":"analytics.js"}},"traits":{"email":"","plan":"pro"},"type":"identify","userId":""}"#
        );
        let dict = zstd::dict::from_samples(&shared, DICTIONARY_BYTES).unwrap();
        let text = String::from_utf8_lossy(&dict);
        assert!(
            !text.contains("mail.example") && !text.contains("user-0"),
            "{text}"
        );
        assert!(text.contains("analytics.js"), "{text}");
    }

    /// A dictionary is trained again when what is stored changed (values compress worse than in
    /// the current dictionary's first window), not while the traffic it was trained on goes on.
    #[test]
    fn a_change_in_what_is_stored_calls_for_a_newer_dictionary() {
        let (conn, dicts) = conn();
        // Two dictionaries, so neither the first training nor the first retraining is due.
        for first in [0, 2_000] {
            let samples: Vec<String> = (first..first + 2_000).map(message).collect();
            adopt_trained(&conn, &dicts, &samples, 5);
        }
        let store = |values: &mut dyn Iterator<Item = String>| {
            for v in values {
                conn.execute("INSERT INTO t VALUES (jd_pack(?1))", [v])
                    .unwrap();
            }
        };
        // The traffic the dictionary knows: nothing to do, however long it goes on.
        store(&mut (0..2 * RETRAIN_FIRST_AFTER as usize).map(message));
        assert!(!dicts.due(6));
        // Another kind of message (which the dictionary knows nothing of) drifts...
        let other = |i: usize| {
            format!(
                r#"{{"type":"page","name":"Pricing {i}","anonymousId":"a-{}","properties":{{"path":"/p/{}","referrer":"https://search.example/?q={}","title":"Plans and prices"}}}}"#,
                i * 31,
                i % 977,
                i * 7
            )
        };
        store(&mut (0..WINDOW as usize * 2).map(other));
        assert!(dicts.windows.lock().unwrap()[Source::Derived as usize].drifted);
        // ...and a newer dictionary is due once enough values were stored with the current one.
        assert!(dicts.due(6));

        // With a third dictionary a drift waits twice as long: traffic that keeps changing adds
        // dictionaries ever more rarely.
        let samples: Vec<String> = (0..2_000).map(other).collect();
        adopt_trained(&conn, &dicts, &samples, 6);
        store(&mut (0..WINDOW as usize).map(other));
        store(&mut (0..RETRAIN_FIRST_AFTER as usize).map(message));
        assert!(dicts.windows.lock().unwrap()[Source::Derived as usize].drifted);
        assert!(
            !dicts.due(7),
            "a drift waits 20,000 values with a third dictionary"
        );
        store(&mut (0..RETRAIN_FIRST_AFTER as usize).map(message));
        assert!(dicts.due(7));
    }

    /// Bodies packed on the requests' threads and values `jd_pack` stores are measured apart: runs
    /// of one and of the other, however they interleave, are no change in what is stored.
    #[test]
    fn an_uneven_mix_of_bodies_and_other_values_is_no_drift() {
        let (conn, dicts) = conn();
        let samples: Vec<String> = (0..2_000).map(message).collect();
        adopt_trained(&conn, &dicts, &samples, 5);
        // Bodies compress far better with this dictionary than the other values do.
        let other =
            |i: usize| format!(r#"{{"Start":{{"note":"{}","n":{i}}}}}"#, i * 7919 % 100_003);
        for round in 0..6 {
            for i in 0..(700 + round * 300) {
                pack(&dicts, &message(round * 10_000 + i)).unwrap();
            }
            for i in 0..(1_500 - round * 200) {
                conn.execute("INSERT INTO t VALUES (jd_pack(?1))", [other(i)])
                    .unwrap();
            }
        }
        assert!(!dicts.windows.lock().unwrap().iter().any(|w| w.drifted));
    }

    #[test]
    fn damage_is_an_error_not_a_guess() {
        let (conn, _) = conn();
        let m = message(2);
        round_trip(&conn, &m);
        // A frame naming a dictionary this file does not hold.
        let samples: Vec<String> = (0..2_000).map(message).collect();
        let data = zstd::dict::from_samples(&samples, DICTIONARY_BYTES).unwrap();
        let foreign = zstd::bulk::Compressor::with_dictionary(LEVEL, &data)
            .unwrap()
            .compress(m.as_bytes())
            .unwrap();
        for bad in [
            foreign,
            vec![0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3],
            vec![1, 2, 3],
        ] {
            conn.execute("UPDATE t SET v = ?1", [&bad]).unwrap();
            let err = conn
                .query_row("SELECT jd_text(v) FROM t", [], |r| r.get::<_, String>(0))
                .unwrap_err()
                .to_string();
            assert!(err.contains("zstd") || err.contains("dictionary"), "{err}");
        }
    }
}
