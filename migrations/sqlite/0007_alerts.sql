-- Alert rules and their delivery log (README "Alerts"); see
-- migrations/postgres/0013_alerts.sql. Times are microseconds since the epoch, under the
-- PostgreSQL column names, so both stores run the same statements
-- (eventline-store/src/alerts.rs).

CREATE TABLE alert_rules (
    tenant_id              TEXT NOT NULL,
    rule_id                TEXT NOT NULL,
    name                   TEXT NOT NULL,
    kind                   TEXT NOT NULL CHECK (kind IN ('threshold', 'ratio', 'spike')),
    window_seconds         INTEGER NOT NULL CHECK (window_seconds > 0),
    event_type             TEXT,
    denominator_event_type TEXT,
    comparison             TEXT CHECK (comparison IN ('>', '>=', '<', '<=')),
    threshold              REAL,
    min_denominator        INTEGER,
    baseline_windows       INTEGER,
    sensitivity            REAL,
    min_count              INTEGER,
    webhook_url            TEXT NOT NULL,
    webhook_secret         TEXT NOT NULL,
    created_at             INTEGER NOT NULL,
    state                  TEXT NOT NULL CHECK (state IN ('resolved', 'firing')),
    state_since            INTEGER NOT NULL,
    last_value             REAL,
    evaluated_until        INTEGER,
    PRIMARY KEY (tenant_id, rule_id)
);

CREATE TABLE alert_deliveries (
    tenant_id   TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    rule_id     TEXT NOT NULL,
    transition  TEXT NOT NULL CHECK (transition IN ('resolved', 'firing')),
    value       REAL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('pending', 'delivered', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_status INTEGER,
    last_error  TEXT,
    created_at  INTEGER NOT NULL,
    finished_at INTEGER,
    PRIMARY KEY (tenant_id, delivery_id)
);
CREATE INDEX alert_deliveries_by_rule ON alert_deliveries (tenant_id, rule_id, delivery_id);
