-- Full-text search (README "Search"); see migrations/postgres/0014_search.sql. The words
-- are in an FTS5 table without content of its own, keyed by the event's rowid.

CREATE TABLE search_indexes (
    tenant_id       TEXT PRIMARY KEY,
    enabled_us      INTEGER NOT NULL,
    cursor_sequence INTEGER NOT NULL DEFAULT 0,
    cursor_event_id TEXT NOT NULL DEFAULT '',
    events_indexed  INTEGER NOT NULL DEFAULT 0,
    caught_up       INTEGER NOT NULL DEFAULT 0
);

-- Documents are already split into lowercase words by the server; unicode61 then only
-- splits at the spaces between them (remove_diacritics 0 keeps words as written).
CREATE VIRTUAL TABLE event_search USING fts5(
    document, content = '', contentless_delete = 1, tokenize = 'unicode61 remove_diacritics 0'
);

-- A deleted event's words go with it (user deletions and expiry), for tenants with search.
CREATE TRIGGER events_unsearch AFTER DELETE ON events
WHEN EXISTS (SELECT 1 FROM search_indexes WHERE tenant_id = old.tenant_id)
BEGIN
    DELETE FROM event_search WHERE rowid = old.rowid;
END;
