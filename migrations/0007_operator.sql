-- Version 7: indexes for the operator's views (SPEC §6).
-- A journey's instances, newest first, whatever their state (it also serves archiving, which
-- ends the active ones): replaces the index of active instances by journey.
DROP INDEX instances_active_by_journey;
CREATE INDEX instances_by_journey ON instances (journey_id, instance_id);
-- Forgetting a person (DELETE /v1/profiles/{id}) finds their deliveries.
CREATE INDEX deliveries_by_profile ON deliveries (profile_key);
