DROP TABLE IF EXISTS devices;
DROP TABLE IF EXISTS schema_imports;
DROP TABLE IF EXISTS schema_versions;
DROP FUNCTION IF EXISTS schema_imports_immutable();
DROP FUNCTION IF EXISTS schema_versions_immutable();
