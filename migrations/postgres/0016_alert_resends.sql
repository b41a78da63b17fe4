-- Alert notifications a stopped server left pending are sent again (README "Alerts"):
-- a delivery keeps the end of the window whose evaluation changed the rule's state (with
-- the rule, which never changes, it rebuilds the exact notification) and when a server
-- last took it on; a pending one not finished long after is claimed by the next
-- evaluation pass. Deliveries logged before this migration take their creation time for
-- both.
ALTER TABLE alert_deliveries ADD COLUMN window_end timestamptz;
ALTER TABLE alert_deliveries ADD COLUMN claimed_at timestamptz;
UPDATE alert_deliveries SET window_end = created_at, claimed_at = created_at;
ALTER TABLE alert_deliveries ALTER COLUMN window_end SET NOT NULL;
ALTER TABLE alert_deliveries ALTER COLUMN claimed_at SET NOT NULL;
CREATE INDEX alert_deliveries_pending ON alert_deliveries (tenant_id, claimed_at)
    WHERE outcome = 'pending';

-- As in 0013, with the tables of 0014 (search) and 0015 (streams) colocated too.
CREATE OR REPLACE FUNCTION eventline_distribute() RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    reference_tables constant text[] := ARRAY['tenants', 'api_keys'];
    colocated_tables constant text[] := ARRAY[
        'event_rollups_minutely', 'event_rollups_hourly', 'event_rollups_daily',
        'bucket_summaries', 'audit_events', 'user_deletions', 'quarantined_events',
        'event_schemas', 'search_indexes', 'event_search', 'subscriptions',
        'alert_rules', 'alert_deliveries'];
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
