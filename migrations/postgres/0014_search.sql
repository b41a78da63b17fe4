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

-- On Citus these tables are colocated with events by eventline_distribute(), which
-- migration 0016 redefines with every table of 0013 to 0016 (the function runs after the
-- last migration, so one definition serves them all).
