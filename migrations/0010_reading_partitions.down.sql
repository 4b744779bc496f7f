-- Back to one plain table: every row is copied (this takes as long as the
-- table is large).
DROP INDEX commands_finished_created_idx;
DROP INDEX rejections_received_idx;

ALTER TABLE readings RENAME TO readings_partitioned;
ALTER INDEX readings_device_received_idx RENAME TO readings_partitioned_device_received_idx;

CREATE TABLE readings (
    id          bigint      GENERATED ALWAYS AS IDENTITY,
    device_id   bigint      NOT NULL,
    received_at timestamptz NOT NULL,
    device_time timestamptz,
    xml         text        NOT NULL,
    data        jsonb       NOT NULL,
    CONSTRAINT readings_pkey PRIMARY KEY (id),
    CONSTRAINT readings_device_fkey FOREIGN KEY (device_id)
        REFERENCES devices (id) ON DELETE CASCADE
);
INSERT INTO readings (id, device_id, received_at, device_time, xml, data)
    OVERRIDING SYSTEM VALUE
    SELECT id, device_id, received_at, device_time, xml, data FROM readings_partitioned;
SELECT setval(pg_get_serial_sequence('readings', 'id'),
    greatest(coalesce(pg_sequence_last_value(pg_get_serial_sequence('readings_partitioned', 'id')::regclass), 0),
             (SELECT coalesce(max(id), 0) FROM readings), 1));
CREATE INDEX readings_device_received_idx ON readings (device_id, received_at, id);
DROP TABLE readings_partitioned;
