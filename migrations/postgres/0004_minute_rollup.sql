-- Per-minute counts per event type, maintained with the hourly and daily ones. A window's
-- partial edge hours read whole minutes here and raw rows only for the partial minutes:
-- at 10M events a month the two edge hours held ~28k raw rows and set the p99 of counts,
-- top types and series (DESIGN §5: stats cost follows buckets, not events).
CREATE TABLE event_rollups_minutely (
    tenant_id   uuid NOT NULL,
    minute      timestamptz NOT NULL,
    event_type  text NOT NULL,
    event_count bigint NOT NULL,
    PRIMARY KEY (tenant_id, minute, event_type)
);

LOCK TABLE events IN SHARE MODE;
INSERT INTO event_rollups_minutely (tenant_id, minute, event_type, event_count)
SELECT tenant_id, date_trunc('minute', "timestamp", 'UTC'), event_type, count(*)
FROM events
GROUP BY 1, 2, 3;
