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
DROP INDEX deliveries_by_profile;
CREATE INDEX deliveries_by_instance ON deliveries (instance_id);
CREATE INDEX deliveries_counted ON deliveries (profile_key, destination_id, created_at) WHERE cap_counted = 1;
