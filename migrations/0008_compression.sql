-- Version 8: stored JSON compressed (issue 15). `events.body` and `deliveries.payload` hold either
-- the JSON as text (rows written before this version, and values too short to gain) or a zstd
-- frame as a BLOB; the frame's header names the dictionary it was compressed with, kept here.
-- Read them with the `jd_text()` SQL function the store installs (see src/store/codec.rs).

-- zstd dictionaries trained on this database's own recent messages; never deleted, since stored
-- frames name them.
CREATE TABLE dictionaries (
    dict_id    INTEGER PRIMARY KEY,
    created_at INTEGER NOT NULL,
    data       BLOB NOT NULL
);
