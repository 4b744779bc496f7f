-- A command's status history moves into the command's row, as a JSON array
-- of {status, at, reason} objects, oldest first. Every command writes
-- two or three history entries; as rows of command_events each one cost a
-- heap tuple, two index entries and a foreign-key check that locks the
-- command's row. Appending to an array in the row the status change
-- already rewrites costs none of that. History is only ever read with its
-- command, never queried on its own.
ALTER TABLE commands ADD COLUMN history jsonb NOT NULL DEFAULT '[]';

UPDATE commands c SET history = e.history
FROM (
    SELECT command_id,
           jsonb_agg(jsonb_build_object('status', status, 'at', at, 'reason', reason) ORDER BY id) AS history
    FROM command_events
    GROUP BY command_id
) e
WHERE e.command_id = c.id;

DROP TABLE command_events;

-- Most commands carry no Idempotency-Key: index only those that do (the
-- unique constraint indexed every NULL too, on every insert and update).
-- Same name, so that the violation still names it.
ALTER TABLE commands DROP CONSTRAINT commands_idempotency_key_key;
CREATE UNIQUE INDEX commands_idempotency_key_key ON commands (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
