-- Hourly rollups of readings, so that an aggregate over a long range
-- (a month of a reading every 10 s: 259,200 rows) reads one row per hour
-- and field instead of every reading.
--
-- One row per device, hour (UTC, aligned from the Unix epoch) and path of
-- a JSON number in the readings' data (keys from the top, through objects
-- only, as the aggregate query's field paths address them): how many of
-- the hour's readings hold a number there (n), and their sum, min and max
-- (numeric, exact, as stored). The row of the empty path '{}' counts the
-- hour's readings (n; the others are null). An hour without readings has
-- no row.
CREATE TABLE reading_rollups (
    device_id bigint      NOT NULL,
    hour      timestamptz NOT NULL,
    path      text[]      NOT NULL,
    n         bigint      NOT NULL,
    sum       numeric,
    min       numeric,
    max       numeric,
    CONSTRAINT reading_rollups_pkey PRIMARY KEY (device_id, hour, path),
    CONSTRAINT reading_rollups_device_fkey FOREIGN KEY (device_id)
        REFERENCES devices (id) ON DELETE CASCADE
);

-- How far each device's readings are rolled: every hour before
-- rolled_until has its rows in reading_rollups (NULL: none yet). Rows at
-- or after it may be stale and are never read. A reading committed late
-- for an hour already rolled moves rolled_until back to that hour, in
-- its own transaction, and the roller rolls again from there.
CREATE TABLE reading_rollup_marks (
    device_id    bigint      NOT NULL,
    rolled_until timestamptz,
    CONSTRAINT reading_rollup_marks_pkey PRIMARY KEY (device_id),
    CONSTRAINT reading_rollup_marks_device_fkey FOREIGN KEY (device_id)
        REFERENCES devices (id) ON DELETE CASCADE
);
