-- Back to one key for all: where scopes now share a key, only the newest
-- command keeps it (a retry then finds that one, as before the scopes).
UPDATE commands c SET idempotency_key = NULL
WHERE c.idempotency_key IS NOT NULL AND EXISTS (
    SELECT 1 FROM commands o
    WHERE o.idempotency_key = c.idempotency_key AND (o.created_at, o.id) > (c.created_at, c.id));
DROP INDEX commands_idempotency_key_key;
CREATE UNIQUE INDEX commands_idempotency_key_key ON commands (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
