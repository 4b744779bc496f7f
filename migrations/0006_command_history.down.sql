DROP INDEX commands_idempotency_key_key;
ALTER TABLE commands ADD CONSTRAINT commands_idempotency_key_key UNIQUE (idempotency_key);

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

INSERT INTO command_events (command_id, status, at, reason)
SELECT c.id, e.value->>'status', (e.value->>'at')::timestamptz, coalesce(e.value->>'reason', '')
FROM commands c, jsonb_array_elements(c.history) WITH ORDINALITY AS e(value, n)
ORDER BY c.created_at, c.id, e.n;

ALTER TABLE commands DROP COLUMN history;
