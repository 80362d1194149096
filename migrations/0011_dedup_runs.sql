-- Version 11: messageId deduplication without an index by messageId (issue 15). Random message
-- ids made that index dirty a page at a random place for every event. The ids of the last 24
-- hours are now kept as sorted runs, each written once (see src/store/dedup.rs): the ids of
-- events newer than the newest run's `last_seq` are read from `events` into memory when the store
-- opens. Here the ids of the last 24 hours before the newest event become the first runs.
CREATE TABLE dedup_runs (
    run       INTEGER PRIMARY KEY,
    newest_at INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL
);
CREATE TABLE dedup_ids (
    run         INTEGER NOT NULL,
    message_id  TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (run, message_id)
) WITHOUT ROWID;
INSERT INTO dedup_ids (run, message_id, received_at)
SELECT 1 + (row_number() OVER (ORDER BY message_id) - 1) / 65536, message_id, received_at
  FROM (SELECT message_id, max(received_at) AS received_at FROM events
         WHERE received_at > (SELECT max(received_at) FROM events) - 86400000
         GROUP BY message_id);
INSERT INTO dedup_runs (run, newest_at, last_seq)
SELECT run, max(received_at), (SELECT max(seq) FROM events) FROM dedup_ids GROUP BY run;
DROP INDEX events_by_message_id;
