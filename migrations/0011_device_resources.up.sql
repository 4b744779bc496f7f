-- Current presence, shared by every instance: each available resource
-- (full JID) of each device, as the last presence stanza any instance
-- received from it says. updated_at is when a stanza last confirmed it,
-- so that reconciliation after a reconnection can drop what no probe
-- answer confirmed.
CREATE TABLE device_resources (
    device_id  bigint      NOT NULL,
    jid        text        NOT NULL,
    show       text        NOT NULL DEFAULT '',
    status     text        NOT NULL DEFAULT '',
    priority   integer     NOT NULL DEFAULT 0,
    since      timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT device_resources_pkey PRIMARY KEY (device_id, jid),
    CONSTRAINT device_resources_device_fkey FOREIGN KEY (device_id)
        REFERENCES devices (id) ON DELETE CASCADE
);
CREATE INDEX device_resources_updated_at_idx ON device_resources (updated_at);
