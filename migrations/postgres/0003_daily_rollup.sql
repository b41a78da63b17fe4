-- Daily counts per event type, maintained with the hourly ones in the ingest transaction.
-- Top types, totals and daily series over 30 days read ~30 rows per type here instead of
-- ~720 hourly ones (DESIGN §5: stats cost follows the number of buckets, not events).
CREATE TABLE event_rollups_daily (
    tenant_id   uuid NOT NULL,
    day         timestamptz NOT NULL,
    event_type  text NOT NULL,
    event_count bigint NOT NULL,
    PRIMARY KEY (tenant_id, day, event_type)
);

-- Existing data: the hourly rollup already holds exactly the inserted rows. Block writers
-- for the backfill so no commit lands between the copy and the first daily upsert.
LOCK TABLE event_rollups_hourly IN SHARE MODE;
INSERT INTO event_rollups_daily (tenant_id, day, event_type, event_count)
SELECT tenant_id, date_trunc('day', hour, 'UTC'), event_type, sum(event_count)
FROM event_rollups_hourly
GROUP BY 1, 2, 3;
