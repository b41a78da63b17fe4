-- Outbound streams (README "Streams"); see migrations/postgres/0015_streams.sql.

CREATE TABLE subscriptions (
    tenant_id        TEXT NOT NULL,
    subscription_id  TEXT NOT NULL,
    sink_kind        TEXT NOT NULL CHECK (sink_kind IN ('webhook', 'nats')),
    target           TEXT NOT NULL,
    secret           TEXT NOT NULL,
    -- A JSON array of strings; empty: every type.
    event_types      TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('active', 'paused')),
    last_error       TEXT NOT NULL DEFAULT '',
    events_delivered INTEGER NOT NULL DEFAULT 0,
    created_us       INTEGER NOT NULL,
    cursor_sequence  INTEGER NOT NULL,
    cursor_event_id  TEXT NOT NULL,
    lease_owner      TEXT NOT NULL DEFAULT '',
    lease_until_us   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, subscription_id)
);
