-- Version 7: indexes for the operator's views (SPEC §6), and capped deliveries (SPEC §3.5).
-- A journey's instances, newest first, whatever their state (it also serves archiving, which
-- ends the active ones): replaces the index of active instances by journey.
DROP INDEX instances_active_by_journey;
CREATE INDEX instances_by_journey ON instances (journey_id, instance_id);
-- A person's deliveries: for forgetting them (DELETE /v1/profiles/{id}), and for counting their
-- recent sends to a destination against its frequency cap.
CREATE INDEX deliveries_by_profile ON deliveries (profile_key, destination_id, created_at);
-- A send over a destination's frequency cap is recorded as a delivery with status 'capped'. The
-- CHECK constraint's text changes in place (see 0004), which leaves every stored row valid.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
SET sql = replace(sql,
    'CHECK (status = ''pending'' OR status = ''succeeded'' OR status = ''failed'')',
    'CHECK (status = ''pending'' OR status = ''succeeded'' OR status = ''failed'' OR status = ''capped'')')
WHERE type = 'table' AND name = 'deliveries';
PRAGMA writable_schema = OFF;
