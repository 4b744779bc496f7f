-- An Idempotency-Key is scoped to the token that sent the command and to
-- its device: one tenant's key never collides with another's (a global
-- key let any token squat on another's predictable keys and learn the
-- command IDs behind them). Commands of no token (from before tokens)
-- share the '' scope. Same name as the global index it replaces, so that
-- a violation still names it.
DROP INDEX commands_idempotency_key_key;
CREATE UNIQUE INDEX commands_idempotency_key_key ON commands (COALESCE(token_id, ''), device_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
