-- Webhooks: servers' subscriptions to the event log, with their delivery
-- state. The secret is stored as is: every delivery is signed with it.
-- lease_owner/lease_until let one instance at a time deliver a webhook
-- (claimed with FOR UPDATE SKIP LOCKED, every state write checks it).
CREATE TABLE webhooks (
    id              text        NOT NULL,
    url             text        NOT NULL,
    -- The event types selected; {} selects all.
    types           text[]      NOT NULL DEFAULT '{}',
    devices         jsonb       NOT NULL DEFAULT '{}',
    secret          text        NOT NULL,
    paused          boolean     NOT NULL DEFAULT false,
    -- The creating token and its device selector then (no foreign key:
    -- the webhook outlives nothing, but a revoked token stays listed).
    token_id        text        NOT NULL DEFAULT '',
    cap             jsonb       NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    -- Delivery state.
    cursor_id       bigint      NOT NULL DEFAULT 0,
    failing         boolean     NOT NULL DEFAULT false,
    last_error      text        NOT NULL DEFAULT '',
    last_attempt_at timestamptz,
    last_success_at timestamptz,
    failing_since   timestamptz,
    next_attempt_at timestamptz,
    attempts        integer     NOT NULL DEFAULT 0,
    lease_owner     text,
    lease_until     timestamptz,
    CONSTRAINT webhooks_pkey PRIMARY KEY (id)
);
