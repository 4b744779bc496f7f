DROP TABLE delivery_claims;
DROP INDEX commands_unfinished_instance_idx;
DROP INDEX commands_iq_idx;
ALTER TABLE commands DROP COLUMN instance;
ALTER TABLE commands DROP COLUMN iq_id;
DROP TABLE instances;
