-- eventline schema for the embedded SQLite store. Times are integer microseconds since
-- the Unix epoch (UTC), which sort and compare exactly.

CREATE TABLE tenants (
    tenant_id  TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_us INTEGER NOT NULL
);

CREATE TABLE api_keys (
    key_id      TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (tenant_id),
    scopes      TEXT NOT NULL, -- comma-separated scope names
    secret_hash BLOB NOT NULL,
    created_us  INTEGER NOT NULL,
    revoked_us  INTEGER
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_us);

CREATE TABLE events (
    tenant_id           TEXT NOT NULL,
    event_id            TEXT NOT NULL,
    event_type          TEXT NOT NULL,
    user_id             TEXT,
    session_id          TEXT,
    timestamp_us        INTEGER NOT NULL,
    client_timestamp_us INTEGER,
    received_us         INTEGER NOT NULL,
    properties          TEXT NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX events_by_type_time ON events (tenant_id, event_type, timestamp_us, event_id);
CREATE INDEX events_by_user_time ON events (tenant_id, user_id, timestamp_us, event_id);
CREATE INDEX events_by_time ON events (tenant_id, timestamp_us, event_id);
-- Tails read in commit order by rowid: SQLite has one writer, so rowids grow in commit
-- order and every visible rowid is final.

CREATE TABLE event_rollups_hourly (
    tenant_id   TEXT NOT NULL,
    hour_us     INTEGER NOT NULL,
    event_type  TEXT NOT NULL,
    event_count INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, hour_us, event_type)
);
