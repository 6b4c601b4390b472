-- Issue 17: a fingerprint of the last observation merged into each number by its source. A
-- poll whose observation of a present number has the same fingerprint, from the same source and
-- priority, is unchanged without the row being read or compared. Any other write of the row
-- (INSERT OR REPLACE) leaves it NULL, so the next poll compares in full.
ALTER TABLE phone_numbers ADD COLUMN obs_hash INTEGER;
