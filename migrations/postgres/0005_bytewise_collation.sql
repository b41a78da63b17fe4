-- Ids, types and user ids compare byte by byte (COLLATE "C"), whatever the database's
-- default collation: listings break timestamp ties by event_id in the same order on every
-- PostgreSQL (an ICU or libc locale orders 'B' after 'a') and on SQLite (BINARY), and the
-- writer's key-ordered rows lock in the order the indexes hold them (issue #12).
-- text to text is binary-coercible, so no table is rewritten; the indexes are rebuilt.
ALTER TABLE events
    ALTER COLUMN event_id TYPE text COLLATE "C",
    ALTER COLUMN event_type TYPE text COLLATE "C",
    ALTER COLUMN user_id TYPE text COLLATE "C",
    ALTER COLUMN session_id TYPE text COLLATE "C";
ALTER TABLE event_rollups_hourly ALTER COLUMN event_type TYPE text COLLATE "C";
ALTER TABLE event_rollups_daily ALTER COLUMN event_type TYPE text COLLATE "C";
ALTER TABLE event_rollups_minutely ALTER COLUMN event_type TYPE text COLLATE "C";
