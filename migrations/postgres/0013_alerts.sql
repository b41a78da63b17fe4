-- Alert rules and their delivery log (README "Alerts"). Both tables are keyed by
-- tenant_id first and, on Citus, colocated with events (eventline_distribute below), so
-- every statement of a tenant, the evaluator's included, stays on its worker.

CREATE TABLE alert_rules (
    tenant_id              uuid NOT NULL,
    -- A UUIDv7: oldest first is ascending order.
    rule_id                text COLLATE "C" NOT NULL,
    name                   text NOT NULL,
    kind                   text NOT NULL CHECK (kind IN ('threshold', 'ratio', 'spike')),
    window_seconds         integer NOT NULL CHECK (window_seconds > 0),
    -- The threshold's or spike's type, the ratio's numerator; NULL: every event.
    event_type             text,
    -- The ratio's denominator; NULL: every event.
    denominator_event_type text,
    comparison             text CHECK (comparison IN ('>', '>=', '<', '<=')),
    threshold              double precision,
    min_denominator        bigint,
    baseline_windows       integer,
    sensitivity            double precision,
    min_count              bigint,
    webhook_url            text NOT NULL,
    -- Kept in the clear: every notification is signed with it.
    webhook_secret         text NOT NULL,
    created_at             timestamptz NOT NULL,
    state                  text NOT NULL CHECK (state IN ('resolved', 'firing')),
    state_since            timestamptz NOT NULL,
    last_value             double precision,
    evaluated_until        timestamptz,
    PRIMARY KEY (tenant_id, rule_id)
);

CREATE TABLE alert_deliveries (
    tenant_id   uuid NOT NULL,
    -- A UUIDv7, also the webhook-id: newest first is descending order.
    delivery_id text COLLATE "C" NOT NULL,
    rule_id     text COLLATE "C" NOT NULL,
    transition  text NOT NULL CHECK (transition IN ('resolved', 'firing')),
    value       double precision,
    outcome     text NOT NULL CHECK (outcome IN ('pending', 'delivered', 'failed')),
    attempts    integer NOT NULL DEFAULT 0,
    last_status integer,
    last_error  text,
    created_at  timestamptz NOT NULL,
    finished_at timestamptz,
    PRIMARY KEY (tenant_id, delivery_id)
);
CREATE INDEX alert_deliveries_by_rule ON alert_deliveries (tenant_id, rule_id, delivery_id);

-- As in 0010, with the tables above colocated too.
CREATE OR REPLACE FUNCTION eventline_distribute() RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    reference_tables constant text[] := ARRAY['tenants', 'api_keys'];
    colocated_tables constant text[] := ARRAY[
        'event_rollups_minutely', 'event_rollups_hourly', 'event_rollups_daily',
        'bucket_summaries', 'audit_events', 'user_deletions', 'quarantined_events',
        'event_schemas', 'alert_rules', 'alert_deliveries'];
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
