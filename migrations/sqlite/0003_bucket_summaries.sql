-- Summaries of one tenant's events in one UTC hour or day (a user sketch, or counts per
-- property value), built on first read and kept with the bucket's event count; see
-- migrations/postgres/0007_bucket_summaries.sql.
CREATE TABLE bucket_summaries (
    tenant_id     TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    summary       TEXT NOT NULL,
    width_seconds INTEGER NOT NULL,
    bucket_us     INTEGER NOT NULL,
    event_count   INTEGER NOT NULL,
    body          BLOB NOT NULL,
    PRIMARY KEY (tenant_id, event_type, summary, width_seconds, bucket_us)
) WITHOUT ROWID;
