-- Keys that expire and keys with their own ingest rate limit (issue #17), and the audit
-- trail of admin actions. Keyed by tenant_id first, like every table, for Citus.

ALTER TABLE api_keys
    ADD COLUMN expires_at        timestamptz,
    ADD COLUMN events_per_second integer CHECK (events_per_second > 0),
    ADD COLUMN burst             integer CHECK (burst > 0);

CREATE TABLE audit_events (
    tenant_id   uuid NOT NULL,
    -- A UUIDv7: time-ordered, and the tie-breaker of the newest-first listing.
    audit_id    text COLLATE "C" NOT NULL,
    occurred_at timestamptz NOT NULL,
    actor       text NOT NULL,
    action      text NOT NULL,
    target      text NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, audit_id)
);
CREATE INDEX audit_events_by_tenant_time ON audit_events (tenant_id, occurred_at, audit_id);
-- The operator's listing across tenants.
CREATE INDEX audit_events_by_time ON audit_events (occurred_at, audit_id);
