//! `journeyd restore BACKUP [--db PATH]`: replaces a stopped server's database file with a
//! backup (SPEC §8, invariant 8). The work, and every refusal, is `store::restore`'s: refused
//! while a server holds the file (naming its pid), for a file that is not a journeyd database
//! or fails `PRAGMA quick_check`; nothing is changed then, and the exit is 1.

use std::process::ExitCode;

use crate::config::RestoreArgs;

pub(super) fn run(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let db = &args.db.db;
    let restored = crate::store::restore(&args.backup, db)
        .map_err(|e| anyhow::anyhow!("cannot restore into {}: {e}", db.display()))?;
    let crate::store::Restored {
        bytes,
        schema_version,
    } = restored;
    println!(
        "restored {} into {} ({bytes} bytes, schema version {schema_version}); start journeyd serve --db {} to serve it",
        args.backup.display(),
        db.display(),
        db.display()
    );
    Ok(ExitCode::SUCCESS)
}
