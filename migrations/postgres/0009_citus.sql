-- Scale-out on Citus (README "Scale out"). On one PostgreSQL these functions answer
-- locally; on Citus, eventline_distribute() distributes them by tenant_id with events,
-- so each call runs on the worker that holds the tenant's shard. That node is where the
-- tenant's events commit, so its snapshot and WAL are the only ones that say what a
-- tail may read and what a replica has replayed.
--
-- plpgsql, not sql: the planner inlines a simple sql function before Citus can delegate
-- the call, and the coordinator would answer for the worker.

-- The oldest transaction still running (or prepared) on the tenant's node: every event
-- stamped below it is committed or gone for good, so a tail reads up to it and no further.
CREATE FUNCTION eventline_commit_horizon(tenant uuid) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN pg_snapshot_xmin(pg_current_snapshot())::text::bigint;
END $$;

-- The tenant's node's WAL position after a commit: the watermark of an append.
CREATE FUNCTION eventline_wal_position(tenant uuid) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN pg_current_wal_lsn()::text;
END $$;

-- Whether the tenant's node (a primary, or a standby that replays it) has the writes
-- behind `watermark`.
CREATE FUNCTION eventline_wal_visible(tenant uuid, watermark pg_lsn) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce(pg_last_wal_replay_lsn(), pg_current_wal_lsn()) >= watermark;
END $$;

-- On Citus the column default pg_current_xact_id() is evaluated on the coordinator, whose
-- transaction ids say nothing of when a worker's rows become visible (a worker commits
-- its prepared transaction after the coordinator). This trigger, created on the shards by
-- eventline_distribute(), stamps each row with the worker's own transaction instead.
CREATE FUNCTION eventline_stamp_commit() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.commit_xid := pg_current_xact_id();
    RETURN NEW;
END $$;

-- Distributes the schema when the database has the citus extension; does nothing
-- otherwise and nothing twice. `eventline migrate` calls it after every migration run, so
-- a single-node database becomes distributed the first time it is migrated with Citus
-- installed (README "Scale out"). Returns whether the database is distributed.
CREATE FUNCTION eventline_distribute() RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    reference_tables constant text[] := ARRAY['tenants', 'api_keys'];
    -- Every table keyed by tenant_id, colocated with events so a tenant's statements,
    -- joins and transactions stay on one worker.
    colocated_tables constant text[] := ARRAY[
        'event_rollups_minutely', 'event_rollups_hourly', 'event_rollups_daily',
        'bucket_summaries', 'audit_events'];
    tenant_functions constant text[] := ARRAY[
        'eventline_commit_horizon(uuid)', 'eventline_wal_position(uuid)',
        'eventline_wal_visible(uuid,pg_lsn)'];
    name text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN false;
    END IF;
    FOREACH name IN ARRAY reference_tables LOOP
        -- Making tenants a reference table turns api_keys, whose foreign key points at
        -- it, into a Citus local table first; that one is converted too.
        IF NOT EXISTS (
            SELECT 1 FROM citus_tables
            WHERE table_name = name::regclass AND citus_table_type = 'reference'
        ) THEN
            PERFORM create_reference_table(name);
            PERFORM truncate_local_data_after_distributing_table(name);
        END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'events'::regclass) THEN
        -- Rows committed on one node keep that node's transaction ids; from now on the
        -- workers stamp theirs. History from before the move sorts first for tails.
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
        -- Citus creates the trigger on every shard; it asks for this switch because a
        -- trigger could touch other shards (this one only sets a column of its own row).
        PERFORM set_config('citus.enable_unsafe_triggers', 'on', true);
        CREATE TRIGGER events_stamp_commit BEFORE INSERT ON events
            FOR EACH ROW EXECUTE FUNCTION eventline_stamp_commit();
    END IF;
    RETURN true;
END $$;
