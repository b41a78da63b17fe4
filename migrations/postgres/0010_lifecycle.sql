-- The data lifecycle (README "Data lifecycle"): user deletions, per-tenant retention,
-- the quarantine of rejected events and a JSON Schema per event type. Every table is
-- keyed by tenant_id first and, on Citus, colocated with events (eventline_distribute
-- below), so each statement of a tenant stays on its worker.

-- Retention in seconds; NULL keeps forever.
ALTER TABLE tenants
    ADD COLUMN raw_retention_seconds    bigint CHECK (raw_retention_seconds > 0),
    ADD COLUMN rollup_retention_seconds bigint CHECK (rollup_retention_seconds > 0);

CREATE TABLE user_deletions (
    tenant_id      uuid NOT NULL,
    -- A UUIDv7: time-ordered.
    deletion_id    text COLLATE "C" NOT NULL,
    user_id        text NOT NULL,
    state          text NOT NULL CHECK (state IN ('pending', 'running', 'done')),
    events_deleted bigint NOT NULL DEFAULT 0,
    requested_at   timestamptz NOT NULL,
    finished_at    timestamptz,
    PRIMARY KEY (tenant_id, deletion_id)
);
-- At most one unfinished deletion per user: a second request returns the first.
CREATE UNIQUE INDEX user_deletions_unfinished ON user_deletions (tenant_id, user_id)
    WHERE state <> 'done';

CREATE TABLE quarantined_events (
    tenant_id     uuid NOT NULL,
    -- A UUIDv7: newest first is descending order, and the oldest go first past the cap.
    quarantine_id text COLLATE "C" NOT NULL,
    event_id      text NOT NULL,
    event_type    text COLLATE "C" NOT NULL,
    reason        text NOT NULL,
    payload       text NOT NULL,
    received_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, quarantine_id)
);
CREATE INDEX quarantined_events_by_type ON quarantined_events (tenant_id, event_type, quarantine_id);

CREATE TABLE event_schemas (
    tenant_id  uuid NOT NULL,
    event_type text COLLATE "C" NOT NULL,
    schema     jsonb NOT NULL,
    mode       text NOT NULL CHECK (mode IN ('enforce', 'warn')),
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, event_type)
);

-- As in 0009, with the tables above colocated too.
CREATE OR REPLACE FUNCTION eventline_distribute() RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    reference_tables constant text[] := ARRAY['tenants', 'api_keys'];
    colocated_tables constant text[] := ARRAY[
        'event_rollups_minutely', 'event_rollups_hourly', 'event_rollups_daily',
        'bucket_summaries', 'audit_events', 'user_deletions', 'quarantined_events',
        'event_schemas'];
    tenant_functions constant text[] := ARRAY[
        'eventline_commit_horizon(uuid)', 'eventline_wal_position(uuid)',
        'eventline_wal_visible(uuid,pg_lsn)'];
    name text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN false;
    END IF;
    FOREACH name IN ARRAY reference_tables LOOP
        IF NOT EXISTS (
            SELECT 1 FROM citus_tables
            WHERE table_name = name::regclass AND citus_table_type = 'reference'
        ) THEN
            PERFORM create_reference_table(name);
            PERFORM truncate_local_data_after_distributing_table(name);
        END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'events'::regclass) THEN
        UPDATE events SET commit_xid = '1' WHERE commit_xid <> '1';
        PERFORM create_distributed_table('events', 'tenant_id');
        PERFORM truncate_local_data_after_distributing_table('events');
    END IF;
    FOREACH name IN ARRAY colocated_tables LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = name::regclass) THEN
            PERFORM create_distributed_table(name, 'tenant_id', colocate_with => 'events');
            PERFORM truncate_local_data_after_distributing_table(name);
        END IF;
    END LOOP;
    FOREACH name IN ARRAY tenant_functions LOOP
        IF NOT EXISTS (
            SELECT 1 FROM pg_dist_object
            WHERE classid = 'pg_proc'::regclass AND objid = name::regprocedure
              AND distribution_argument_index IS NOT NULL
        ) THEN
            PERFORM create_distributed_function(name::regprocedure, '$1', colocate_with => 'events');
        END IF;
    END LOOP;
    IF NOT EXISTS (
        SELECT 1 FROM pg_trigger
        WHERE tgrelid = 'events'::regclass AND tgname = 'events_stamp_commit'
    ) THEN
        PERFORM set_config('citus.enable_unsafe_triggers', 'on', true);
        CREATE TRIGGER events_stamp_commit BEFORE INSERT ON events
            FOR EACH ROW EXECUTE FUNCTION eventline_stamp_commit();
    END IF;
    RETURN true;
END $$;
