-- Version 9: transitions found through their instance (issue 15). An instance id grows with time,
-- so the transitions of a new instance append to this index instead of dirtying a page at the
-- profile's place in an index by profile on every event; a profile's transitions are those of its
-- instances (which move with merges), and the few without an instance (entries skipped at the
-- per-profile cap) keep an index by profile of their own.
DROP INDEX transitions_by_profile;
CREATE INDEX transitions_by_instance ON transitions (instance_id, seq);
CREATE INDEX transitions_without_instance ON transitions (profile_key, seq) WHERE instance_id IS NULL;
