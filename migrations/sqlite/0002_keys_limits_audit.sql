-- Keys that expire and keys with their own ingest rate limit (issue #17), and the audit
-- trail of admin actions.

ALTER TABLE api_keys ADD COLUMN expires_us INTEGER;
ALTER TABLE api_keys ADD COLUMN events_per_second INTEGER CHECK (events_per_second > 0);
ALTER TABLE api_keys ADD COLUMN burst INTEGER CHECK (burst > 0);

CREATE TABLE audit_events (
    tenant_id   TEXT NOT NULL,
    audit_id    TEXT NOT NULL, -- a UUIDv7: time-ordered, the listing's tie-breaker
    occurred_us INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    details     TEXT NOT NULL DEFAULT '{}', -- a JSON object of strings
    PRIMARY KEY (tenant_id, audit_id)
);
CREATE INDEX audit_events_by_tenant_time ON audit_events (tenant_id, occurred_us, audit_id);
CREATE INDEX audit_events_by_time ON audit_events (occurred_us, audit_id);
