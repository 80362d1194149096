//! The database's files on disk: the lock that keeps a second process off a database file
//! (SPEC invariant 8), files created readable by the owner only (SPEC §9), and telling a file
//! that belongs to a live database from one that may be replaced.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{Result, StoreError};

/// Held for the life of a process that serves (or restores into) a database file: an OS lock on
/// `<db>.lock`, which holds the holder's pid. The OS releases it when the process ends, however
/// it ends, so a `kill -9` never leaves a stale lock behind.
#[derive(Debug)]
pub(crate) struct ProcessLock {
    _file: File,
}

impl ProcessLock {
    /// Takes the lock of the database at `db`, or says who holds it.
    pub(crate) fn acquire(db: &Path) -> Result<ProcessLock> {
        let path = lock_path(db);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another process".to_string()
                } else {
                    format!("process {holder}")
                };
                return Err(StoreError::Locked(format!(
                    "{} is in use by {holder} (lock file {}): stop it first",
                    db.display(),
                    path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_all()?;
        Ok(ProcessLock { _file: file })
    }
}

/// The lock file of the database at `db`.
pub(crate) fn lock_path(db: &Path) -> PathBuf {
    with_suffix(db, ".lock")
}

/// `db` with `suffix` appended to its file name (`j.db` and `-wal`: `j.db-wal`).
pub(crate) fn with_suffix(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Creates `path` empty and readable by the owner only, if it does not exist. SQLite then opens
/// it and creates the WAL and shared-memory files with the same permissions.
pub(crate) fn create_private(path: &Path) -> Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Makes an existing file readable by the owner only.
pub(crate) fn make_private(path: &Path) -> Result<()> {
    if path.exists() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Whether `candidate` is the database at `db` or one of its companion files (WAL, shared
/// memory, lock), by device and inode, so that links and other spellings of the path count.
pub(crate) fn is_live_file(db: &Path, candidate: &Path) -> bool {
    let Ok(target) = std::fs::metadata(candidate) else {
        return false;
    };
    ["", "-wal", "-shm", "-journal", ".lock"]
        .into_iter()
        .filter_map(|suffix| std::fs::metadata(with_suffix(db, suffix)).ok())
        .any(|m| m.dev() == target.dev() && m.ino() == target.ino())
}

/// Whether the file at `path` is a journeyd database (or backup): an SQLite file whose schema
/// version is one journeyd wrote. Read from the header, without opening it with SQLite.
pub(crate) fn is_journeyd_database(path: &Path) -> bool {
    let mut header = [0u8; 100];
    let read = File::open(path).and_then(|mut f| f.read_exact(&mut header));
    read.is_ok() && &header[..16] == b"SQLite format 3\0" && {
        // The user_version, big-endian at offset 60 (PRAGMA user_version).
        let version = i32::from_be_bytes([header[60], header[61], header[62], header[63]]);
        version >= 1 && i64::from(version) <= super::schema::VERSION
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = std::env::temp_dir().join(format!("journeyd-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("j.db");
        let first = ProcessLock::acquire(&db).unwrap();
        let err = ProcessLock::acquire(&db).unwrap_err().to_string();
        assert!(
            err.contains(&format!("process {}", std::process::id())),
            "{err}"
        );
        drop(first);
        ProcessLock::acquire(&db).unwrap();
        let mode = std::fs::metadata(lock_path(&db)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(is_live_file(&db, &lock_path(&db)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
