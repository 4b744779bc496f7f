-- Readings partitioned by day of received_at, so that retention drops
-- whole days (DROP TABLE, no vacuum) and history pages touch only the
-- days they ask for.
--
-- The existing table is kept where it is and attached as the first
-- partition, from MINVALUE to the end of today (UTC), or of the day of its
-- newest reading if that is later: no row is copied. Its CHECK constraint,
-- validated first (one scan, under the migration's lock), lets ATTACH skip
-- its own scan; its index and foreign key become the partitioned table's
-- as they are. A last partition covers the rest, up to MAXVALUE, so that
-- an insert never fails for want of a partition; iotgate carves the daily
-- partitions out of it ahead of time (postgres.(*DB).EnsurePartitions).
-- The partitions are contiguous and there is no DEFAULT partition: with
-- one, PostgreSQL can't read the partitions in order, and a newest-first
-- page would probe every partition instead of the newest.
--
-- There is no primary key: one on a partitioned table must include
-- received_at, so it would not make id unique across partitions anyway,
-- and it would cost an index build here and a second index on every
-- insert. Ids come from the identity sequence, as before; nothing
-- references a reading's id.
DO $$
DECLARE
    newest  timestamptz;
    bound   timestamptz;
    next_id bigint;
    legacy  text;
BEGIN
    -- The newest reading, one index probe per device.
    SELECT max(l.received_at) INTO newest
    FROM devices d CROSS JOIN LATERAL (
        SELECT r.received_at FROM readings r
        WHERE r.device_id = d.id
        ORDER BY r.received_at DESC LIMIT 1) AS l;
    bound := date_trunc('day', greatest(now(), newest), 'UTC') + interval '24 hours';
    legacy := 'readings_before_' || to_char(bound AT TIME ZONE 'UTC', 'YYYYMMDD');

    -- The identity moves to the partitioned table and goes on from where
    -- the old one stopped.
    SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('readings', 'id')::regclass), 0) + 1
    INTO next_id;
    ALTER TABLE readings ALTER COLUMN id DROP IDENTITY;

    EXECUTE format('ALTER TABLE readings RENAME TO %I', legacy);
    EXECUTE format('ALTER TABLE %I RENAME CONSTRAINT readings_pkey TO %I', legacy, legacy || '_pkey');
    EXECUTE format('ALTER INDEX readings_device_received_idx RENAME TO %I', legacy || '_device_received_idx');
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (received_at < %L) NOT VALID',
        legacy, legacy || '_bound', bound);
    EXECUTE format('ALTER TABLE %I VALIDATE CONSTRAINT %I', legacy, legacy || '_bound');

    EXECUTE format($t$
        CREATE TABLE readings (
            id          bigint      GENERATED ALWAYS AS IDENTITY (START WITH %s),
            device_id   bigint      NOT NULL,
            received_at timestamptz NOT NULL,
            device_time timestamptz,
            xml         text        NOT NULL,
            data        jsonb       NOT NULL
        ) PARTITION BY RANGE (received_at)$t$, next_id);
    -- As before: one index serves history pages in both orders, the
    -- latest reading of a device and the cascade on device delete.
    CREATE INDEX readings_device_received_idx ON readings (device_id, received_at, id);
    ALTER TABLE readings ADD CONSTRAINT readings_device_fkey FOREIGN KEY (device_id)
        REFERENCES devices (id) ON DELETE CASCADE;

    EXECUTE format('ALTER TABLE readings ATTACH PARTITION %I FOR VALUES FROM (MINVALUE) TO (%L)', legacy, bound);
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', legacy, legacy || '_bound');
    EXECUTE format('CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (MAXVALUE)',
        'readings_from_' || to_char(bound AT TIME ZONE 'UTC', 'YYYYMMDD'), bound);
END
$$;

-- Retention deletes by age across devices.
CREATE INDEX rejections_received_idx ON rejections (received_at);
CREATE INDEX commands_finished_created_idx ON commands (created_at)
    WHERE status IN ('succeeded', 'failed', 'timed_out', 'expired', 'canceled');
