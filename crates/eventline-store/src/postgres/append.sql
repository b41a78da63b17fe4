-- The exact path for a batch holding keys that exist already: inserts the new rows and
-- returns their keys. The caller updates the rollups from exactly those rows in the same
-- transaction, as the COPY path does.
INSERT INTO events (tenant_id, event_id, event_type, user_id, session_id,
                    "timestamp", client_timestamp, received_at, properties)
SELECT tenant_id, event_id, event_type, user_id, session_id,
       "timestamp", client_timestamp, received_at, properties::jsonb
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
            $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::text[])
     AS b (tenant_id, event_id, event_type, user_id, session_id,
           "timestamp", client_timestamp, received_at, properties)
ON CONFLICT (tenant_id, event_id) DO NOTHING
RETURNING tenant_id, event_id
