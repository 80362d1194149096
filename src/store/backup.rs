//! Consistent copies of the database while it is being written.
//!
//! The copy is made with SQLite's online backup API from a connection that holds one read
//! transaction for the whole copy: in WAL mode that pins a snapshot, so the writer goes on
//! committing and the copy is exactly the database as of the moment the backup began.

use std::path::{Path, PathBuf};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::{Result, Store, StoreError};

/// Pages copied per step: progress is reported between steps.
const PAGES_PER_STEP: i32 = 4096;

/// Copies the database at `src` to `dest` (replacing it) from one snapshot, calling `progress`
/// with (pages done, pages in all) between steps. The copy is written beside `dest` under a
/// temporary name and renamed into place, so `dest` is never a half-written file.
pub(crate) fn backup_to(src: &Path, dest: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
    if !src.exists() {
        return Err(StoreError::NotFound(format!(
            "database \"{}\"",
            src.display()
        )));
    }
    let source = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    source.busy_timeout(std::time::Duration::from_secs(5))?;
    let tmp = temp_name(dest);
    let _ = std::fs::remove_file(&tmp);
    let result = copy(&source, &tmp, progress);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, dest)?;
    Ok(())
}

fn copy(source: &Connection, tmp: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<()> {
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

fn temp_name(dest: &Path) -> PathBuf {
    let mut name = dest
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    dest.with_file_name(name)
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
            backup_to(&src, &tmp, &mut |_, _| {})?;
            let file = std::fs::File::open(&tmp)?;
            std::fs::remove_file(&tmp)?;
            Ok(file)
        })
        .await
        .expect("backup task panicked")
    }
}
