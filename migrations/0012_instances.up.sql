-- Several instances: each running iotgate has a heartbeat row; commands
-- say which instance runs them and which IQ id they were sent in, so that
-- an answer reaching another instance finds its command and a dead
-- instance's commands can be failed by a survivor.
CREATE TABLE instances (
    id         text        NOT NULL,
    started_at timestamptz NOT NULL,
    seen_at    timestamptz NOT NULL,
    streaming  boolean     NOT NULL DEFAULT false,
    role       text        NOT NULL DEFAULT 'disconnected',
    CONSTRAINT instances_pkey PRIMARY KEY (id)
);

ALTER TABLE commands ADD COLUMN iq_id text;
ALTER TABLE commands ADD COLUMN instance text NOT NULL DEFAULT '';
CREATE INDEX commands_iq_idx ON commands (iq_id) WHERE iq_id IS NOT NULL;
-- The commands a dead instance leaves unfinished.
CREATE INDEX commands_unfinished_instance_idx ON commands (instance) WHERE status IN ('pending', 'sent');

-- Who delivers a device's queued commands: one instance at a time, for a
-- lease it renews while it delivers, so that they go out once and in
-- order, and a survivor takes over when the lease runs out.
CREATE TABLE delivery_claims (
    device_id  bigint      NOT NULL,
    instance   text        NOT NULL,
    expires_at timestamptz NOT NULL,
    CONSTRAINT delivery_claims_pkey PRIMARY KEY (device_id),
    CONSTRAINT delivery_claims_device_fkey FOREIGN KEY (device_id)
        REFERENCES devices (id) ON DELETE CASCADE
);
