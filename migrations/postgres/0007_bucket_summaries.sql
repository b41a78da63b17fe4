-- Summaries of one tenant's events in one UTC hour or day, of one event type or of all
-- (''): the HyperLogLog sketch of its users (summary 'users') or its counts per value of
-- a property (summary 'property:<name>'). They are not written at ingest: a query builds
-- a bucket's summary from its events the first time it needs it and keeps it with the
-- bucket's event count at that moment; a later query reuses it only while the rollups
-- still show that count, so a late event makes the bucket's summary be rebuilt.
-- Ingest pays nothing for them (README "Unique users and breakdowns").
CREATE TABLE bucket_summaries (
    tenant_id     uuid NOT NULL,
    event_type    text COLLATE "C" NOT NULL,
    summary       text COLLATE "C" NOT NULL,
    width_seconds integer NOT NULL,
    bucket        timestamptz NOT NULL,
    event_count   bigint NOT NULL,
    body          bytea NOT NULL,
    PRIMARY KEY (tenant_id, event_type, summary, width_seconds, bucket)
);
