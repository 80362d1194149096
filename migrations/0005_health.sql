-- Version 5: a row that `GET /healthz` writes, so that "the database is writable" means a real
-- write reached the file (SPEC §6), not only that the writer thread answers.
CREATE TABLE health (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at INTEGER NOT NULL
);
