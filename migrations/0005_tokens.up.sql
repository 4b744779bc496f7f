-- API tokens. Only the SHA-256 of a token's secret is stored: the secret is
-- shown once, at creation. Revoked tokens are kept (revoked_at set) so that
-- the commands they sent still say by whom.
CREATE TABLE api_tokens (
    id           text        NOT NULL,
    name         text        NOT NULL,
    hash         bytea       NOT NULL,
    scopes       text[]      NOT NULL,
    -- The label selector limiting the token's devices; {} selects all.
    devices      jsonb       NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    CONSTRAINT api_tokens_pkey PRIMARY KEY (id),
    CONSTRAINT api_tokens_hash_key UNIQUE (hash),
    CONSTRAINT api_tokens_hash_check CHECK (octet_length(hash) = 32),
    CONSTRAINT api_tokens_scopes_check CHECK (cardinality(scopes) > 0)
);

-- Who sent each command: the token's ID and its name at the time (no
-- foreign key, so that the record outlives the token). Commands from
-- before this migration have neither.
ALTER TABLE commands
    ADD COLUMN token_id text,
    ADD COLUMN sent_by  text NOT NULL DEFAULT '';
