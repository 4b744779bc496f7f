-- The rows 0014 added stay: the schema they describe is the same, and
-- older versions of iotgate never read schema_imports (they only keep
-- imported versions from being deleted).
SELECT 1;
