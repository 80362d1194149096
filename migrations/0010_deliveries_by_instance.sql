-- Version 10: a person's deliveries found through their instances (issue 15). The index by
-- profile dirtied a page at the profile's place on every send; an instance id grows with time, so
-- the delivery of a new instance appends to an index by instance instead. Forgetting a person
-- reaches their deliveries through their instances (a finished instance is now kept while it has
-- deliveries). Frequency caps count a person's sends through a partial index of only the
-- deliveries that count against a cap (`cap_counted`: sent, not capped, to a destination with a
-- cap when written, or when the cap was set).
ALTER TABLE deliveries ADD COLUMN cap_counted INTEGER;
UPDATE deliveries SET cap_counted = 1
 WHERE status != 'capped'
   AND destination_id IN (SELECT destination_id FROM destinations
                          WHERE json_extract(config, '$.frequency_cap') IS NOT NULL);
-- Older versions' purge deleted finished instances whatever their deliveries, so a failed,
-- capped or pending delivery can have lost its instance: those are listed here by profile, for
-- forgetting the person. No newer row is ever added (the purge now keeps such instances).
CREATE TABLE deliveries_without_instance (
    profile_key TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    PRIMARY KEY (profile_key, delivery_id)
) WITHOUT ROWID;
INSERT INTO deliveries_without_instance (profile_key, delivery_id)
SELECT profile_key, delivery_id FROM deliveries d
 WHERE NOT EXISTS (SELECT 1 FROM instances i WHERE i.instance_id = d.instance_id);
DROP INDEX deliveries_by_profile;
CREATE INDEX deliveries_by_instance ON deliveries (instance_id);
CREATE INDEX deliveries_counted ON deliveries (profile_key, destination_id, created_at) WHERE cap_counted = 1;
