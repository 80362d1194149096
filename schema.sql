-- The journeyd schema, current version. A new database is made from this file in one step;
-- an older one is brought here by the files in migrations/ (see src/store/schema.rs).

-- Keys, profiles, identity links, stored events.
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
-- journey transitions so a profile's timeline is one ordered stream. `body` is the JSON as text,
-- or compressed as a zstd frame (a BLOB; see `dictionaries`).
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY,
    profile_key TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    type        TEXT NOT NULL,
    event       TEXT,
    received_at INTEGER NOT NULL,
    body        TEXT NOT NULL
);

-- messageId deduplication (src/store/dedup.rs): the ids of the last 24 hours as sorted runs, each
-- written once, in a run number's order. The ids of events after the newest run's `last_seq` are
-- in memory only (read back from `events`).
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

-- A journey's status and newest version. Archived journeys stay, so their ids and stats remain.
CREATE TABLE journeys (
    journey_id TEXT PRIMARY KEY,
    status     TEXT NOT NULL CHECK (status IN ('active', 'paused', 'archived')),
    version    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Every published version: the definition as uploaded (canonical JSON) and its SHA-256, which
-- tells a changed body from the same one uploaded again.
CREATE TABLE journey_versions (
    journey_id TEXT NOT NULL,
    version    INTEGER NOT NULL,
    definition TEXT NOT NULL,
    digest     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (journey_id, version)
) WITHOUT ROWID;

-- One row per instance. While it waits at a hold with max_hold or at a delay, `due_at` is its
-- timer: timers live here, found through `instances_due`, never by scanning.
-- `context`, like `events.body`, is the JSON as text or a zstd frame.
CREATE TABLE instances (
    instance_id  INTEGER PRIMARY KEY,
    profile_key  TEXT NOT NULL,
    journey_id   TEXT NOT NULL,
    version      INTEGER NOT NULL,
    state        TEXT NOT NULL CHECK (state = 'active' OR state = 'completed' OR state = 'exited' OR state = 'archived'),
    step_id      TEXT,
    unique_value TEXT,
    context      TEXT NOT NULL,
    resets       INTEGER NOT NULL DEFAULT 0,
    due_at       INTEGER,
    ordinal      INTEGER NOT NULL,
    entered_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
, log_seq INTEGER);
-- The instances an event can reach: those of its profile (at most the per-profile cap).
CREATE INDEX instances_active ON instances (profile_key) WHERE state = 'active';
-- The scheduler's queue: the next due timer is the first entry.
CREATE INDEX instances_due ON instances (due_at) WHERE due_at IS NOT NULL;
-- A journey's instances, newest first (the operator's list; archiving ends the active ones).
CREATE INDEX instances_by_journey ON instances (journey_id, instance_id);

-- A profile's events and instances, in one b-tree (instead of an index by profile for each): an
-- event's row and the row of an instance it made are neighbours, so the two share a page. An
-- event's row has its `seq` and no instance; an instance's has its `log_seq` (the next number of
-- the shared sequence when it was made; for instances made before version 12, which have none,
-- the negative of their id). A row is written by the statement after the one that writes its
-- event or instance (in `store/ingest.rs`, `store/profiles.rs`: a trigger would give every such
-- insert a statement journal), and deleted or moved by the triggers below, as an index entry
-- would be: purges and forgetting delete, merges move active instances. (`log_seq` was added by
-- version 12, hence its place.)
CREATE TABLE profile_log (
    profile_key TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    instance_id INTEGER,
    PRIMARY KEY (profile_key, seq)
) WITHOUT ROWID;
CREATE TRIGGER events_unlogged AFTER DELETE ON events BEGIN
    DELETE FROM profile_log WHERE profile_key = old.profile_key AND seq = old.seq;
END;
CREATE TRIGGER instances_unlogged AFTER DELETE ON instances BEGIN
    DELETE FROM profile_log WHERE profile_key = old.profile_key AND seq = coalesce(old.log_seq, -old.instance_id);
END;
CREATE TRIGGER instances_moved AFTER UPDATE OF profile_key ON instances BEGIN
    UPDATE profile_log SET profile_key = new.profile_key WHERE profile_key = old.profile_key AND seq = coalesce(old.log_seq, -old.instance_id);
END;

-- What a profile remembers of a journey beyond its instances: entries (for reentry "once" and
-- random-split seeds) and sticky random-split branches.
CREATE TABLE journey_memory (
    profile_key TEXT NOT NULL,
    journey_id  TEXT NOT NULL,
    entries     INTEGER NOT NULL,
    sticky      TEXT,
    PRIMARY KEY (profile_key, journey_id)
) WITHOUT ROWID;

-- Instance transitions, numbered in the same commit-order sequence as events so that a profile's
-- timeline is one ordered stream.
CREATE TABLE transitions (
    seq         INTEGER PRIMARY KEY,
    profile_key TEXT NOT NULL,
    instance_id INTEGER,
    journey_id  TEXT NOT NULL,
    version     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    what        TEXT NOT NULL,
    step_id     TEXT,
    detail      TEXT
);
-- A profile's transitions are those of its instances (which move with merges), found here; an
-- instance id grows with time, so a new instance's transitions append. The few without an
-- instance (entries skipped at the per-profile cap) are found by profile.
CREATE INDEX transitions_by_instance ON transitions (instance_id, seq);
CREATE INDEX transitions_without_instance ON transitions (profile_key, seq) WHERE instance_id IS NULL;

-- Profile merges (SPEC §2 Identity), recorded in the timeline of both profiles: one row under the
-- surviving profile's key and one under the absorbed profile's, in the shared commit order.
CREATE TABLE merges (
    seq         INTEGER PRIMARY KEY,
    profile_key TEXT NOT NULL,
    absorbed    TEXT NOT NULL,
    survivor    TEXT NOT NULL,
    at          INTEGER NOT NULL
);
CREATE INDEX merges_by_profile ON merges (profile_key, seq);

-- Counters behind GET /v1/journeys/{id}/stats, kept in the transaction of each transition.
-- kind: 'total' (label: entered, active, completed, exited, skipped, archived), 'reached' and
-- 'waiting' (per step), 'branch' (per step and branch label, 'timeout' included).
CREATE TABLE journey_stats (
    journey_id TEXT NOT NULL,
    version    INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    step_id    TEXT NOT NULL,
    label      TEXT NOT NULL,
    count      INTEGER NOT NULL,
    PRIMARY KEY (journey_id, version, kind, step_id, label)
) WITHOUT ROWID;

-- Delivery targets. `config` is the JSON as uploaded minus the secret, which is kept apart and
-- never returned by the API.
CREATE TABLE destinations (
    destination_id TEXT PRIMARY KEY,
    config         TEXT NOT NULL,
    secret         TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
) WITHOUT ROWID;

-- The outbox: each row is written in the transaction of the send step that caused it. `payload`,
-- like `events.body`, is the JSON as text or a zstd frame. `cap_counted` (added by version 10, hence
-- its place) is 1 when the send counts against its destination's frequency cap.
CREATE TABLE deliveries (
    delivery_id     TEXT PRIMARY KEY,
    profile_key     TEXT NOT NULL,
    instance_id     INTEGER NOT NULL,
    journey_id      TEXT NOT NULL,
    step_id         TEXT NOT NULL,
    destination_id  TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status = 'pending' OR status = 'succeeded' OR status = 'failed' OR status = 'capped'),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    -- Retries stop here (24 hours after the delivery was written, or after a manual retry).
    expires_at      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
, cap_counted INTEGER) WITHOUT ROWID;
-- The delivery workers' queue, per destination, so that a dead destination's backlog never
-- hides the deliveries of the others.
CREATE INDEX deliveries_due ON deliveries (destination_id, next_attempt_at) WHERE status = 'pending';
-- Listing, newest first.
CREATE INDEX deliveries_by_created ON deliveries (created_at);
-- A person's deliveries are those of their instances (for forgetting them). An instance id grows
-- with time, so the delivery of a new instance appends here rather than dirtying a page at the
-- person's place in an index by profile; a finished instance is kept while it has deliveries.
CREATE INDEX deliveries_by_instance ON deliveries (instance_id);
-- Deliveries whose instance an older journeyd's purge deleted (it did not keep instances with
-- deliveries), by profile, for forgetting the person: filled by the upgrade to version 10 only.
CREATE TABLE deliveries_without_instance (
    profile_key TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    PRIMARY KEY (profile_key, delivery_id)
) WITHOUT ROWID;
-- A person's recent sends to a destination, counted against its frequency cap: only the rows with
-- `cap_counted` = 1 (not capped, to a destination that had a cap when the row was written or when
-- the cap was set), so sends to destinations without a cap write nothing here.
CREATE INDEX deliveries_counted ON deliveries (profile_key, destination_id, created_at) WHERE cap_counted = 1;

-- Finished instances, oldest first, for the retention purge. Active instances are not in it.
CREATE INDEX instances_finished ON instances (updated_at) WHERE state != 'active';

-- One row that `GET /healthz` writes when no commit succeeded moments ago, so that "writable"
-- means a real write reached the file.
CREATE TABLE health (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at INTEGER NOT NULL
);

-- zstd dictionaries trained on this database's own recent messages; never deleted, since stored
-- frames name them. Read `events.body` and `deliveries.payload` with the `jd_text()` SQL function
-- the store installs (see src/store/codec.rs).
CREATE TABLE dictionaries (
    dict_id    INTEGER PRIMARY KEY,
    created_at INTEGER NOT NULL,
    data       BLOB NOT NULL
);
