-- Version 1: keys, profiles, identity links, stored events.
--
-- Every row of per-user state carries `profile_key` (SPEC invariant 7), so the state can one day be
-- split by profile. Times are UTC unix milliseconds written by the application's clock.

-- Admin tokens and write keys, stored as SHA-256 hex digests: the database file alone does not leak them.
CREATE TABLE api_keys (
    hash       TEXT PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('admin', 'write')),
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

-- A profile is keyed by userId, else anonymousId (`anonymous` = 1). `traits` is a JSON object
-- merged by identify calls.
CREATE TABLE profiles (
    profile_key TEXT PRIMARY KEY,
    anonymous   INTEGER NOT NULL DEFAULT 0,
    traits      TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- Identity links: messages carrying `id` (an anonymousId or a previousId) belong to `profile_key`.
-- An id with no row here is its own profile key.
CREATE TABLE identities (
    id          TEXT PRIMARY KEY,
    profile_key TEXT NOT NULL,
    linked_at   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX identities_by_profile ON identities (profile_key);

-- Every accepted message, as stored (server fields added). `seq` is the commit order, shared with
-- journey transitions so a profile's timeline is one ordered stream.
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY,
    profile_key TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    type        TEXT NOT NULL,
    event       TEXT,
    received_at INTEGER NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX events_by_profile ON events (profile_key, seq);
-- messageId deduplication looks here: a message id stored within the last 24 hours is not processed again.
CREATE INDEX events_by_message_id ON events (message_id);
