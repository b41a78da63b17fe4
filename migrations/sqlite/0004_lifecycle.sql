-- The data lifecycle (README "Data lifecycle"); see migrations/postgres/0010_lifecycle.sql.

ALTER TABLE tenants ADD COLUMN raw_retention_seconds INTEGER;
ALTER TABLE tenants ADD COLUMN rollup_retention_seconds INTEGER;

CREATE TABLE user_deletions (
    tenant_id      TEXT NOT NULL,
    deletion_id    TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done')),
    events_deleted INTEGER NOT NULL DEFAULT 0,
    requested_us   INTEGER NOT NULL,
    finished_us    INTEGER,
    PRIMARY KEY (tenant_id, deletion_id)
);
CREATE UNIQUE INDEX user_deletions_unfinished ON user_deletions (tenant_id, user_id)
    WHERE state <> 'done';

CREATE TABLE quarantined_events (
    tenant_id     TEXT NOT NULL,
    quarantine_id TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    reason        TEXT NOT NULL,
    payload       TEXT NOT NULL,
    received_us   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, quarantine_id)
);
CREATE INDEX quarantined_events_by_type ON quarantined_events (tenant_id, event_type, quarantine_id);

CREATE TABLE event_schemas (
    tenant_id  TEXT NOT NULL,
    event_type TEXT NOT NULL,
    schema     TEXT NOT NULL,
    mode       TEXT NOT NULL CHECK (mode IN ('enforce', 'warn')),
    updated_us INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, event_type)
);
