DROP TABLE rejections;
DROP TABLE readings;
ALTER TABLE schema_versions DROP COLUMN imports;
ALTER TABLE devices
    DROP CONSTRAINT devices_id_key,
    DROP COLUMN last_seen_at,
    DROP COLUMN id;
