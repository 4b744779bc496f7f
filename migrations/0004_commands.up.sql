-- Commands: requests web apps send to devices (as IQs), with their outcome
-- and status history. Every command is stored, whether it succeeded,
-- failed, timed out or is still queued; queued ones survive a restart.
CREATE TABLE commands (
    id                   text        NOT NULL,
    device_id            bigint      NOT NULL,
    type                 text        NOT NULL,
    payload              text        NOT NULL,
    -- resource is what the client asked for ('' = the highest-priority
    -- available one); target is the full JID the IQ was last sent to.
    resource             text        NOT NULL DEFAULT '',
    target               text        NOT NULL DEFAULT '',
    mode                 text        NOT NULL,
    status               text        NOT NULL,
    timeout_ms           integer     NOT NULL,
    expires_at           timestamptz,
    created_at           timestamptz NOT NULL,
    sent_at              timestamptz,
    completed_at         timestamptz,
    answered_at          timestamptz,
    response_xml         text,
    response_data        jsonb,
    response_invalid     text,
    xmpp_error_type      text,
    xmpp_error_condition text,
    xmpp_error_text      text,
    error_code           text        NOT NULL DEFAULT '',
    error                text        NOT NULL DEFAULT '',
    late_answer          boolean     NOT NULL DEFAULT false,
    -- An Idempotency-Key stands for its command for 24 hours; the
    -- application releases (NULLs) an older holder before reusing a key,
    -- so a plain unique constraint enforces the window.
    idempotency_key      text,
    request_hash         text        NOT NULL DEFAULT '',
    CONSTRAINT commands_pkey PRIMARY KEY (id),
    CONSTRAINT commands_device_fkey FOREIGN KEY (device_id)
        REFERENCES devices (id) ON DELETE CASCADE,
    CONSTRAINT commands_idempotency_key_key UNIQUE (idempotency_key),
    CONSTRAINT commands_type_check CHECK (type IN ('get', 'set')),
    CONSTRAINT commands_mode_check CHECK (mode IN ('sync', 'async', 'queue')),
    CONSTRAINT commands_status_check CHECK (status IN
        ('pending', 'queued', 'sent', 'succeeded', 'failed', 'timed_out', 'expired', 'canceled')),
    CONSTRAINT commands_timeout_check CHECK (timeout_ms > 0)
);
-- A device's commands, newest first, a page at a time; and the cascade.
CREATE INDEX commands_device_created_idx ON commands (device_id, created_at, id);
-- Queued commands: per device in order, and by expiry for the sweeper.
CREATE INDEX commands_queued_idx ON commands (device_id, created_at, id) WHERE status = 'queued';
CREATE INDEX commands_queued_expiry_idx ON commands (expires_at) WHERE status = 'queued';
-- Commands a crash left unfinished, resolved at start.
CREATE INDEX commands_unfinished_idx ON commands (status) WHERE status IN ('pending', 'sent');

-- The status history of each command, in order.
CREATE TABLE command_events (
    id         bigint      GENERATED ALWAYS AS IDENTITY,
    command_id text        NOT NULL,
    status     text        NOT NULL,
    at         timestamptz NOT NULL,
    reason     text        NOT NULL DEFAULT '',
    CONSTRAINT command_events_pkey PRIMARY KEY (id),
    CONSTRAINT command_events_command_fkey FOREIGN KEY (command_id)
        REFERENCES commands (id) ON DELETE CASCADE
);
CREATE INDEX command_events_command_idx ON command_events (command_id, id);
