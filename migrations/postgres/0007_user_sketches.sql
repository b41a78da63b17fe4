-- HyperLogLog sketches of the distinct users of one tenant in one UTC hour or day, of
-- one event type or of all ('' ). They are not written at ingest: a unique-users query
-- builds each bucket's sketch from the events the first time it needs it and keeps it
-- with the bucket's event count at that moment; a later query reuses it only while the
-- rollups still show that count, so a late event makes the bucket's sketch be rebuilt.
-- Ingest pays nothing for them (README "Unique users").
CREATE TABLE user_sketches (
    tenant_id     uuid NOT NULL,
    event_type    text COLLATE "C" NOT NULL,
    width_seconds integer NOT NULL,
    bucket        timestamptz NOT NULL,
    event_count   bigint NOT NULL,
    registers     bytea NOT NULL,
    PRIMARY KEY (tenant_id, event_type, width_seconds, bucket)
);
