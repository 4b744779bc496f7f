-- Presence history: when each device went online or offline. Current
-- presence itself is volatile and kept in memory (rebuilt by probes after
-- every reconnection).
CREATE TABLE presence_events (
    id        bigint      GENERATED ALWAYS AS IDENTITY,
    device_id bigint      NOT NULL,
    at        timestamptz NOT NULL,
    online    boolean     NOT NULL,
    CONSTRAINT presence_events_pkey PRIMARY KEY (id),
    CONSTRAINT presence_events_device_fkey FOREIGN KEY (device_id)
        REFERENCES devices (id) ON DELETE CASCADE
);
CREATE INDEX presence_events_device_at_idx ON presence_events (device_id, at, id);
