-- Each writer transaction in flight adds its counts to rows of its own slot, so two
-- concurrent commits never update the same rollup row: before this, the second writer's
-- upsert waited on the first one's row locks until that transaction's COMMIT and fsync,
-- which serialised the writers and set the ack latency (README "Performance"). Reads
-- already sum every row of a bucket, so they sum the slots too. Existing rows are slot 0.
ALTER TABLE event_rollups_minutely ADD COLUMN slot smallint NOT NULL DEFAULT 0;
ALTER TABLE event_rollups_minutely
    DROP CONSTRAINT event_rollups_minutely_pkey,
    ADD PRIMARY KEY (tenant_id, minute, event_type, slot);
ALTER TABLE event_rollups_hourly ADD COLUMN slot smallint NOT NULL DEFAULT 0;
ALTER TABLE event_rollups_hourly
    DROP CONSTRAINT event_rollups_hourly_pkey,
    ADD PRIMARY KEY (tenant_id, hour, event_type, slot);
ALTER TABLE event_rollups_daily ADD COLUMN slot smallint NOT NULL DEFAULT 0;
ALTER TABLE event_rollups_daily
    DROP CONSTRAINT event_rollups_daily_pkey,
    ADD PRIMARY KEY (tenant_id, day, event_type, slot);
