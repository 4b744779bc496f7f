-- Single-use tickets for the browser's EventSource, which can't send an
-- Authorization header: POST /v1/events/tickets stores the hash of a
-- random secret for 60 s; GET /v1/events?ticket= deletes it with DELETE
-- ... RETURNING, so that of two instances one at most accepts it. No
-- foreign key: the token is read again (and must be active) on redemption.
CREATE TABLE event_tickets (
    hash       bytea       NOT NULL,
    token_id   text        NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    CONSTRAINT event_tickets_pkey PRIMARY KEY (hash),
    CONSTRAINT event_tickets_hash_check CHECK (octet_length(hash) = 32)
);
-- Expired tickets are swept by time.
CREATE INDEX event_tickets_expires_at_idx ON event_tickets (expires_at);
