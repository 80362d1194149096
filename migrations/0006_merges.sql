-- Version 6: profile merges (SPEC §2 Identity), recorded in the timeline of both profiles: one
-- row under the surviving profile's key and one under the absorbed profile's, in the shared
-- commit-order sequence.
CREATE TABLE merges (
    seq         INTEGER PRIMARY KEY,
    profile_key TEXT NOT NULL,
    absorbed    TEXT NOT NULL,
    survivor    TEXT NOT NULL,
    at          INTEGER NOT NULL
);
CREATE INDEX merges_by_profile ON merges (profile_key, seq);
