-- eventline schema for PostgreSQL. Every table is keyed by tenant_id first so that events
-- can be distributed by tenant_id (Citus) with tenants and api_keys as reference tables.

CREATE TABLE tenants (
    tenant_id  uuid PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    key_id      text PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (tenant_id),
    scopes      text[] NOT NULL,
    secret_hash bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_at);

CREATE TABLE events (
    tenant_id        uuid NOT NULL,
    event_id         text NOT NULL,
    event_type       text NOT NULL,
    user_id          text,
    session_id       text,
    "timestamp"      timestamptz NOT NULL,
    client_timestamp timestamptz,
    received_at      timestamptz NOT NULL,
    properties       jsonb NOT NULL,
    -- The inserting transaction: tails read in commit order and only below the oldest
    -- running transaction, so a tail never skips an event that commits late.
    commit_xid       xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (tenant_id, event_id)
);
-- event_id closes both indexes so that keyset pages on (timestamp, event_id) of one type
-- or one user never sort (DESIGN §5).
CREATE INDEX events_by_type_time ON events (tenant_id, event_type, "timestamp", event_id);
CREATE INDEX events_by_user_time ON events (tenant_id, user_id, "timestamp", event_id);
CREATE INDEX events_by_time ON events (tenant_id, "timestamp", event_id);
CREATE INDEX events_by_commit ON events (tenant_id, commit_xid, event_id);
-- Property equality filters are JSONB containment (properties @> '{"plan":"pro"}').
CREATE INDEX events_by_properties ON events USING gin (properties jsonb_path_ops);

-- Hourly counts per event type, maintained in the ingest transaction from the rows
-- actually inserted, never from duplicates.
CREATE TABLE event_rollups_hourly (
    tenant_id   uuid NOT NULL,
    hour        timestamptz NOT NULL,
    event_type  text NOT NULL,
    event_count bigint NOT NULL,
    PRIMARY KEY (tenant_id, hour, event_type)
);
