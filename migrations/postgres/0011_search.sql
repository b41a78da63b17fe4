-- Full-text search (README "Search"). A tenant turns it on; the server then indexes its
-- events off the ingest path, in commit order (history first), into event_search: one
-- row per event with the tsvector of its words as the server splits them
-- (eventline-core's search module), so tenants without search pay nothing at ingest.
-- Both tables are keyed by tenant_id first and colocated with events on Citus.

CREATE TABLE search_indexes (
    tenant_id       uuid PRIMARY KEY,
    enabled_at      timestamptz NOT NULL,
    -- The commit position (sequence, event_id) indexed through; the next pass goes on
    -- strictly after it.
    cursor_sequence bigint NOT NULL DEFAULT 0,
    cursor_event_id text COLLATE "C" NOT NULL DEFAULT '',
    events_indexed  bigint NOT NULL DEFAULT 0,
    caught_up       boolean NOT NULL DEFAULT false
);

CREATE TABLE event_search (
    tenant_id   uuid NOT NULL,
    event_id    text NOT NULL,
    -- The event's timestamp, named apart from events."timestamp" so that a join of the
    -- two USING (tenant_id, event_id) names every column once.
    event_time  timestamptz NOT NULL,
    document    tsvector NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);
-- A selective word: the GIN index finds its few rows, then they are sorted by time.
CREATE INDEX event_search_words ON event_search USING gin (document)
    WITH (gin_pending_list_limit = 512);
-- A common word: walking the tenant's rows newest first finds a page at once.
CREATE INDEX event_search_by_time ON event_search (tenant_id, event_time, event_id);

-- As in 0010, with the tables above colocated too.
CREATE OR REPLACE FUNCTION eventline_distribute() RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    reference_tables constant text[] := ARRAY['tenants', 'api_keys'];
    colocated_tables constant text[] := ARRAY[
        'event_rollups_minutely', 'event_rollups_hourly', 'event_rollups_daily',
        'bucket_summaries', 'audit_events', 'user_deletions', 'quarantined_events',
        'event_schemas', 'search_indexes', 'event_search'];
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
