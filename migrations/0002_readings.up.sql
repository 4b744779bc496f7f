-- Readings, rejections and what ingest keeps on the device row.
--
-- Readings reference devices by a compact numeric id rather than the JID:
-- with millions of rows per device the key size matters, and a device's JID
-- never changes anyway.
ALTER TABLE devices
    ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY,
    ADD COLUMN last_seen_at timestamptz,
    ADD CONSTRAINT devices_id_key UNIQUE (id);

-- Which registered version each xs:import resolved to at registration, so
-- that recompiling a stored schema gives the same result.
ALTER TABLE schema_versions
    ADD COLUMN imports jsonb NOT NULL DEFAULT '{}';

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
-- One index serves history pages in both orders (with since/until), the
-- latest reading of a device, and the cascade on device delete.
CREATE INDEX readings_device_received_idx ON readings (device_id, received_at, id);

CREATE TABLE rejections (
    id          bigint      GENERATED ALWAYS AS IDENTITY,
    device_id   bigint      NOT NULL,
    received_at timestamptz NOT NULL,
    via         text        NOT NULL,
    reason      text        NOT NULL,
    payload     text        NOT NULL,
    CONSTRAINT rejections_pkey PRIMARY KEY (id),
    CONSTRAINT rejections_device_fkey FOREIGN KEY (device_id)
        REFERENCES devices (id) ON DELETE CASCADE
);
CREATE INDEX rejections_device_received_idx ON rejections (device_id, received_at, id);
