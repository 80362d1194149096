//! Consistent copies of the database while it is being written, and the rules that keep a backup
//! from ever touching the live database (SPEC §9).
//!
//! The copy is made with SQLite's online backup API from a connection that holds one read
//! transaction for the whole copy: in WAL mode that pins a snapshot, so the writer goes on
//! committing and the copy is exactly the database as of the moment the backup began. It is
//! written under a temporary name beside the destination (readable by the owner only) and
//! renamed into place, so the destination is never a half-written file; the temporary file is
//! removed on every failure.
//!
//! [`restore`] goes the other way: it replaces a stopped server's database with a backup, under
//! the database's process lock (SPEC invariant 8), so that no server can open the file while it
//! is being replaced and no restore can touch a file a server holds.

use std::path::{Path, PathBuf};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::files::{ProcessLock, create_private, is_journeyd_database, is_live_file, with_suffix};
use super::{Result, Store, StoreError};

/// Pages copied per step: progress is reported between steps.
const PAGES_PER_STEP: i32 = 4096;

/// What a backup may replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replace {
    /// Only a journeyd database (an older backup); anything else is refused.
    Backups,
    /// Any file that is not the live database or one of its companions (`--force`).
    Anything,
}

/// Copies the database at `src` to `dest` from one snapshot, calling `progress` with (pages
/// done, pages in all) between steps. Refuses a `dest` that is the live database or one of its
/// files, and an existing `dest` that `replace` does not allow.
pub(crate) fn backup_to(
    src: &Path,
    dest: &Path,
    replace: Replace,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    if !src.exists() {
        return Err(StoreError::NotFound(format!(
            "database \"{}\"",
            src.display()
        )));
    }
    check_destination(src, dest, replace)?;
    let source = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    source.busy_timeout(std::time::Duration::from_secs(5))?;
    let tmp = temp_name(dest);
    let result = copy(&source, &tmp, progress).and_then(|()| Ok(std::fs::rename(&tmp, dest)?));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_file(with_suffix(&tmp, "-journal"));
    }
    result
}

/// Refuses to write a backup over the live database, its companion files, or (unless told to)
/// a file that is not a journeyd database.
fn check_destination(src: &Path, dest: &Path, replace: Replace) -> Result<()> {
    let refused = |why: String| Err(StoreError::Refused(super::Refusal::Destination(why)));
    if is_live_file(src, dest) || names_a_live_file(src, dest) {
        return refused(format!(
            "{} is the live database or one of its files: write the backup somewhere else",
            dest.display()
        ));
    }
    if dest.is_dir() {
        return refused(format!("{} is a directory: name a file", dest.display()));
    }
    if replace == Replace::Backups && dest.exists() && !is_journeyd_database(dest) {
        return refused(format!(
            "{} exists and is not a journeyd backup: remove it, or pass --force to replace it",
            dest.display()
        ));
    }
    Ok(())
}

/// Whether `dest` names the database's path or a companion's (`-wal`, `-shm`), even when that
/// file does not exist right now (a backup written as `j.db-wal` would be taken for the WAL).
fn names_a_live_file(src: &Path, dest: &Path) -> bool {
    let canonical = |p: &Path| -> Option<PathBuf> {
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
        let dir = std::fs::canonicalize(parent.unwrap_or(Path::new("."))).ok()?;
        Some(dir.join(p.file_name()?))
    };
    let (Some(src), Some(dest)) = (canonical(src), canonical(dest)) else {
        return false;
    };
    ["", "-wal", "-shm", "-journal", ".lock"]
        .into_iter()
        .any(|suffix| with_suffix(&src, suffix) == dest)
}

fn copy(source: &Connection, tmp: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
    let _ = std::fs::remove_file(tmp);
    create_private(tmp)?;
    // Open the read transaction that pins the snapshot for every step below.
    source.execute_batch("BEGIN")?;
    source.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
    let mut dest = Connection::open(tmp)?;
    {
        let backup = Backup::new(source, &mut dest)?;
        loop {
            let step = backup.step(PAGES_PER_STEP)?;
            let p = backup.progress();
            let total = p.pagecount.max(0) as u64;
            progress(total - p.remaining.max(0) as u64, total);
            match step {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                _ => {}
            }
        }
    }
    source.execute_batch("COMMIT")?;
    // The copy keeps WAL mode from the source header; fold everything into the main file so the
    // single file is the whole backup.
    dest.pragma_update(None, "journal_mode", "DELETE")?;
    drop(dest);
    std::fs::File::open(tmp)?.sync_all()?;
    Ok(())
}

/// What [`restore`] put in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Restored {
    /// The size of the restored database file.
    pub(crate) bytes: u64,
    /// The backup's schema version (an older one is migrated when `serve` next opens it).
    pub(crate) schema_version: i64,
}

/// Replaces the database at `db` with the backup at `backup`: refused while another process
/// holds `db` (its lock names the holder), when `backup` is not a journeyd database or fails
/// `PRAGMA quick_check`, and when it is the database itself or one of its files. The backup is
/// copied (SQLite's backup API, so a backup that still has a WAL beside it is copied whole) to
/// a private temporary file beside `db`, synced, the old WAL and shared-memory files are
/// removed (their frames belong to the old file), and the copy is renamed into place. The lock
/// is held until the rename is durable; the temporary file is removed on every failure.
pub(crate) fn restore(backup: &Path, db: &Path) -> Result<Restored> {
    let refused = |why: String| Err(StoreError::Refused(super::Refusal::Destination(why)));
    let dir = db
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return refused(format!(
            "the directory of {} does not exist: create it first",
            db.display()
        ));
    }
    let _lock = ProcessLock::acquire(db)?;
    if !backup.is_file() {
        return Err(StoreError::NotFound(format!(
            "backup \"{}\"",
            backup.display()
        )));
    }
    if is_live_file(db, backup) || names_a_live_file(db, backup) {
        return refused(format!(
            "{} is the database itself or one of its files: name a backup",
            backup.display()
        ));
    }
    if !is_journeyd_database(backup) {
        return Err(StoreError::Schema(format!(
            "{} is not a journeyd database or backup (or it is one from a newer journeyd): nothing was changed",
            backup.display()
        )));
    }
    let source = Connection::open_with_flags(backup, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    source.busy_timeout(std::time::Duration::from_secs(5))?;
    if let Some(found) = super::damage(&source) {
        return Err(StoreError::Damaged(format!(
            "{} is damaged ({found}): pick another backup; nothing was changed",
            backup.display(),
        )));
    }
    let schema_version: i64 = source.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".restore-{}", uuid::Uuid::new_v4().simple()));
    let tmp = db.with_file_name(name);
    let result = copy(&source, &tmp, &mut |_, _| {}).and_then(|()| {
        drop(source);
        for suffix in ["-wal", "-shm", "-journal"] {
            match std::fs::remove_file(with_suffix(db, suffix)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        std::fs::rename(&tmp, db)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(std::fs::metadata(db)?.len())
    });
    match result {
        Ok(bytes) => Ok(Restored {
            bytes,
            schema_version,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(with_suffix(&tmp, "-journal"));
            Err(e)
        }
    }
}

fn temp_name(dest: &Path) -> PathBuf {
    let mut name = dest
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    dest.with_file_name(name)
}

/// Scheduled backups are named `journeyd-backup-<UTC timestamp>.db`, and rotation touches only
/// files named exactly so.
const SCHEDULED_PREFIX: &str = "journeyd-backup-";
const SCHEDULED_TIME: &str = "%Y%m%dT%H%M%S%.3fZ";

/// The file name of a scheduled backup taken at `now`: `journeyd-backup-20261128T101741.908Z.db`.
pub(crate) fn backup_name(now: i64) -> String {
    let t = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(now).unwrap_or_default();
    format!("{SCHEDULED_PREFIX}{}.db", t.format(SCHEDULED_TIME))
}

/// Whether a file name is exactly that of a scheduled backup.
fn is_backup_name(name: &str) -> bool {
    name.strip_prefix(SCHEDULED_PREFIX)
        .and_then(|rest| rest.strip_suffix(".db"))
        .and_then(|time| chrono::NaiveDateTime::parse_from_str(time, SCHEDULED_TIME).ok())
        .is_some_and(|t| backup_name(t.and_utc().timestamp_millis()) == name)
}

/// The name a scheduled backup is written under until it is complete.
pub(crate) fn partial_name(name: &str) -> String {
    format!("{name}.partial")
}

/// The files in `dir` whose names `named` accepts, never the live database `db` or its files
/// whatever their names.
fn files_named(
    dir: &Path,
    db: &Path,
    named: impl Fn(&str) -> bool,
) -> std::io::Result<Vec<PathBuf>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&named))
        .filter(|p| !is_live_file(db, p) && !names_a_live_file(db, p))
        .collect())
}

/// Deletes what scheduled backups left half-written in `dir` (the process died during one):
/// only files named as [`partial_name`] names them. Call it while no scheduled backup is being
/// written.
pub(crate) fn remove_partials(dir: &Path, db: &Path) -> std::io::Result<()> {
    let partial = |n: &str| n.strip_suffix(".partial").is_some_and(is_backup_name);
    for p in files_named(dir, db, partial)? {
        std::fs::remove_file(p)?;
    }
    Ok(())
}

/// Keeps the newest `keep` scheduled backups in `dir` and deletes the older ones: only files
/// named exactly as [`backup_name`] names them, and never the live database `db` or its files,
/// whatever their names. Returns the deleted paths.
pub(crate) fn rotate_backups(dir: &Path, db: &Path, keep: usize) -> std::io::Result<Vec<PathBuf>> {
    let mut backups = files_named(dir, db, is_backup_name)?;
    // The names carry a sortable UTC timestamp: newest last.
    backups.sort();
    let excess = backups.len().saturating_sub(keep);
    let old: Vec<PathBuf> = backups.drain(..excess).collect();
    for p in &old {
        std::fs::remove_file(p)?;
    }
    Ok(old)
}

impl Store {
    /// Makes a backup in a temporary file beside the database and returns it open for reading,
    /// already unlinked: the caller streams it and the space is freed when it closes the file.
    pub(crate) async fn backup_file(&self) -> Result<std::fs::File> {
        let src = self.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut name = src
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_default();
            name.push(format!(".backup-{}", uuid::Uuid::new_v4().simple()));
            let tmp = src.with_file_name(name);
            backup_to(&src, &tmp, Replace::Backups, &mut |_, _| {})?;
            let file = std::fs::File::open(&tmp);
            let _ = std::fs::remove_file(&tmp);
            Ok(file?)
        })
        .await
        .expect("backup task panicked")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_names_are_exact() {
        let name = backup_name(1_795_861_059_906);
        assert_eq!(name, "journeyd-backup-20261128T101739.906Z.db");
        assert!(is_backup_name(&name));
        for other in [
            "journeyd-backup-.db",
            "journeyd-backup-latest.db",
            "journeyd-backup-20261128T101739.906Z.db.tmp",
            "journeyd-20261128T101739.906Z.db",
            "journeyd.db",
            "journeyd-backup-20261128T101739Z.db",
        ] {
            assert!(!is_backup_name(other), "{other}");
        }
    }
}
