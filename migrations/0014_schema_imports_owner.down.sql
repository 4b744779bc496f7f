-- The schema_imports rows 0014 added stay: the schema they describe is the
-- same, and older versions of iotgate never read schema_imports (they only
-- keep imported versions from being deleted).
DROP INDEX schema_versions_created_by_idx;
ALTER TABLE schema_versions DROP COLUMN created_by;
