-- HyperLogLog sketches of the distinct users of one tenant in one UTC hour or day, of
-- one event type or of all (''), built on first read and kept with the bucket's event
-- count; see migrations/postgres/0007_user_sketches.sql.
CREATE TABLE user_sketches (
    tenant_id     TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    width_seconds INTEGER NOT NULL,
    bucket_us     INTEGER NOT NULL,
    event_count   INTEGER NOT NULL,
    registers     BLOB NOT NULL,
    PRIMARY KEY (tenant_id, event_type, width_seconds, bucket_us)
) WITHOUT ROWID;
