-- Outbound streams (README "Streams"): each subscription of a webhook or a NATS subject
-- to a tenant's events, with the commit position delivered through and a lease that
-- lets one replica at a time deliver it. Keyed by tenant_id first and colocated with
-- events on Citus.

CREATE TABLE subscriptions (
    tenant_id        uuid NOT NULL,
    -- A UUIDv7: oldest first is ascending order.
    subscription_id  text COLLATE "C" NOT NULL,
    sink_kind        text NOT NULL CHECK (sink_kind IN ('webhook', 'nats')),
    -- The webhook URL or the NATS subject.
    target           text NOT NULL,
    -- The webhook signing secret; empty for NATS.
    secret           text NOT NULL,
    -- Empty: every type.
    event_types      text[] NOT NULL,
    state            text NOT NULL CHECK (state IN ('active', 'paused')),
    last_error       text NOT NULL DEFAULT '',
    events_delivered bigint NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL,
    -- Every event before (cursor_sequence, cursor_event_id) in commit order is delivered.
    cursor_sequence  bigint NOT NULL,
    cursor_event_id  text COLLATE "C" NOT NULL,
    -- The replica delivering it, until when.
    lease_owner      text NOT NULL DEFAULT '',
    lease_until      timestamptz NOT NULL DEFAULT '-infinity',
    PRIMARY KEY (tenant_id, subscription_id)
);

-- On Citus these tables are colocated with events by eventline_distribute(), which
-- migration 0016 redefines with every table of 0013 to 0016 (the function runs after the
-- last migration, so one definition serves them all).
