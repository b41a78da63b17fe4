-- Inserts a batch and updates the minute, hourly and daily rollups from the rows actually inserted, in one
-- statement. Rollup keys are upserted in key order so concurrent writers lock them in the
-- same order.
WITH batch AS (
    SELECT *
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::text[])
         AS b (tenant_id, event_id, event_type, user_id, session_id,
               "timestamp", client_timestamp, received_at, properties)
),
inserted AS (
    INSERT INTO events (tenant_id, event_id, event_type, user_id, session_id,
                        "timestamp", client_timestamp, received_at, properties)
    SELECT tenant_id, event_id, event_type, user_id, session_id,
           "timestamp", client_timestamp, received_at, properties::jsonb
    FROM batch
    ON CONFLICT (tenant_id, event_id) DO NOTHING
    RETURNING tenant_id, event_id, event_type, "timestamp"
),
rollup_minutely AS (
    INSERT INTO event_rollups_minutely (tenant_id, minute, event_type, event_count)
    SELECT tenant_id, date_trunc('minute', "timestamp", 'UTC'), event_type, count(*)
    FROM inserted
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (tenant_id, minute, event_type)
    DO UPDATE SET event_count = event_rollups_minutely.event_count + EXCLUDED.event_count
),
rollup AS (
    INSERT INTO event_rollups_hourly (tenant_id, hour, event_type, event_count)
    SELECT tenant_id, date_trunc('hour', "timestamp", 'UTC'), event_type, count(*)
    FROM inserted
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (tenant_id, hour, event_type)
    DO UPDATE SET event_count = event_rollups_hourly.event_count + EXCLUDED.event_count
),
rollup_daily AS (
    INSERT INTO event_rollups_daily (tenant_id, day, event_type, event_count)
    SELECT tenant_id, date_trunc('day', "timestamp", 'UTC'), event_type, count(*)
    FROM inserted
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (tenant_id, day, event_type)
    DO UPDATE SET event_count = event_rollups_daily.event_count + EXCLUDED.event_count
)
SELECT tenant_id, event_id FROM inserted
