-- schema_imports was never written before this version: the imports of a
-- schema version lived only in schema_versions.imports (jsonb), so a
-- version other versions import could be deleted, and they no longer
-- compiled. Record the imports of the versions stored so far. An import
-- already deleted can't be recorded (its foreign key): that version is
-- broken either way, and its readings are refused until it is replaced.
INSERT INTO schema_imports (name, version, namespace, import_name, import_version)
SELECT v.name, v.version, i.key, i.value->>'name', (i.value->>'version')::integer
FROM schema_versions v, jsonb_each(v.imports) i
WHERE jsonb_typeof(i.value) = 'object'
  AND EXISTS (SELECT 1 FROM schema_versions t
              WHERE t.name = i.value->>'name' AND t.version = (i.value->>'version')::integer)
ON CONFLICT DO NOTHING;

-- The API token that registered each version, for the per-token quota on
-- schema versions; '' for the versions stored before (they count towards
-- no token) and those iotgate registers itself.
ALTER TABLE schema_versions
    ADD COLUMN created_by text NOT NULL DEFAULT '';
CREATE INDEX schema_versions_created_by_idx ON schema_versions (created_by) WHERE created_by <> '';
