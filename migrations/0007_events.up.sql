-- The event log: every stored change of a reading, rejection, presence,
-- command or device, written in the transaction of the change, read by
-- the event streams and webhooks of every instance.
--
-- Ids must grow in commit order, or a reader that has seen id n could
-- later miss a smaller id committed after it. A sequence alone doesn't
-- give that (ids are taken before commit), so writers take the
-- transaction-level advisory lock pg_advisory_xact_lock(K), K being one
-- constant key (postgres.eventsLockKey, "iotgate1" in ASCII), in the
-- statement that inserts their events, the last one of their
-- transaction: commits that write events are serialized for that
-- statement and the commit, nothing longer. The same statement runs
-- pg_notify('iotgate_events', '') to wake readers. No foreign key: the
-- insert under the lock must take no other lock, and a device's events
-- outlive it.
CREATE TABLE events (
    id     bigint      GENERATED ALWAYS AS IDENTITY,
    type   text        NOT NULL,
    at     timestamptz NOT NULL,
    device text        NOT NULL,
    data   json        NOT NULL,
    -- The device's labels when the event was written; only device
    -- events carry them (the others take the device's current labels
    -- when read).
    labels jsonb,
    CONSTRAINT events_pkey PRIMARY KEY (id)
);
-- Retention trims by time, oldest first.
CREATE INDEX events_at_idx ON events (at);

-- The highest id retention has trimmed: a client resuming before it has
-- missed events (the gap event). One row.
CREATE TABLE events_trimmed (
    one     boolean NOT NULL DEFAULT true,
    last_id bigint  NOT NULL DEFAULT 0,
    CONSTRAINT events_trimmed_pkey PRIMARY KEY (one),
    CONSTRAINT events_trimmed_one_check CHECK (one)
);
INSERT INTO events_trimmed DEFAULT VALUES;
