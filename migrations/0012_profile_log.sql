-- Version 12: a profile's events and instances in one per-profile log (issue 15). The indexes
-- `events_by_profile` and `instances_by_profile` each dirtied a page at the profile's place for
-- every forwarded event; in `profile_log` an event's row and its instance's are neighbours (an
-- instance's `log_seq` comes from the shared sequence when it is made), so they share a page.
-- Triggers keep the log as an index would be kept: every insert, delete and move of an event or
-- an instance (merges move active instances) changes its row. Instances made before this
-- version have no `log_seq` (none of their rows is rewritten here) and are logged under the
-- negative of their id, before the profile's events.
CREATE TABLE profile_log (
    profile_key TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    instance_id INTEGER,
    PRIMARY KEY (profile_key, seq)
) WITHOUT ROWID;
ALTER TABLE instances ADD COLUMN log_seq INTEGER;
INSERT INTO profile_log (profile_key, seq, instance_id)
SELECT profile_key, seq, NULL FROM events ORDER BY profile_key, seq;
INSERT INTO profile_log (profile_key, seq, instance_id)
SELECT profile_key, -instance_id, instance_id FROM instances;
DROP INDEX events_by_profile;
DROP INDEX instances_by_profile;
CREATE TRIGGER events_logged AFTER INSERT ON events BEGIN
    INSERT INTO profile_log (profile_key, seq, instance_id) VALUES (new.profile_key, new.seq, NULL);
END;
CREATE TRIGGER events_unlogged AFTER DELETE ON events BEGIN
    DELETE FROM profile_log WHERE profile_key = old.profile_key AND seq = old.seq;
END;
CREATE TRIGGER instances_logged AFTER INSERT ON instances BEGIN
    INSERT INTO profile_log (profile_key, seq, instance_id) VALUES (new.profile_key, coalesce(new.log_seq, -new.instance_id), new.instance_id);
END;
CREATE TRIGGER instances_unlogged AFTER DELETE ON instances BEGIN
    DELETE FROM profile_log WHERE profile_key = old.profile_key AND seq = coalesce(old.log_seq, -old.instance_id);
END;
CREATE TRIGGER instances_moved AFTER UPDATE OF profile_key ON instances BEGIN
    UPDATE profile_log SET profile_key = new.profile_key WHERE profile_key = old.profile_key AND seq = coalesce(old.log_seq, -old.instance_id);
END;
