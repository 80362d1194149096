-- Version 3: what housekeeping needs to find old rows without scanning.

-- Finished instances, oldest first, for the retention purge. Active instances are not in it.
CREATE INDEX instances_finished ON instances (updated_at) WHERE state != 'active';
