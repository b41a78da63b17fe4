-- Outbound streams (README "Streams"): each subscription of a webhook or a NATS subject
-- to a tenant's events, with the commit position delivered through and a lease that
-- lets one replica at a time deliver it. Keyed by tenant_id first and colocated with
-- events on Citus.

CREATE TABLE subscriptions (
    tenant_id        uuid NOT NULL,
    -- A UUIDv7: oldest first is ascending order.
    subscription_id  text COLLATE "C" NOT NULL,
    sink_kind        text NOT NULL CHECK (sink_kind IN ('webhook', 'nats')),
    -- The webhook URL or the NATS subject.
    target           text NOT NULL,
    -- The webhook signing secret; empty for NATS.
    secret           text NOT NULL,
    -- Empty: every type.
    event_types      text[] NOT NULL,
    state            text NOT NULL CHECK (state IN ('active', 'paused')),
    last_error       text NOT NULL DEFAULT '',
    events_delivered bigint NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL,
    -- Every event before (cursor_sequence, cursor_event_id) in commit order is delivered.
    cursor_sequence  bigint NOT NULL,
    cursor_event_id  text COLLATE "C" NOT NULL,
    -- The replica delivering it, until when.
    lease_owner      text NOT NULL DEFAULT '',
    lease_until      timestamptz NOT NULL DEFAULT '-infinity',
    PRIMARY KEY (tenant_id, subscription_id)
);

-- As in 0011, with subscriptions colocated too.
CREATE OR REPLACE FUNCTION eventline_distribute() RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    reference_tables constant text[] := ARRAY['tenants', 'api_keys'];
    colocated_tables constant text[] := ARRAY[
        'event_rollups_minutely', 'event_rollups_hourly', 'event_rollups_daily',
        'bucket_summaries', 'audit_events', 'user_deletions', 'quarantined_events',
        'event_schemas', 'search_indexes', 'event_search', 'subscriptions'];
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
