-- Alert notifications a stopped server left pending are sent again; see
-- migrations/postgres/0016_alert_resends.sql. Deliveries logged before this migration take
-- their creation time for both columns (SQLite adds a NOT NULL column only with a default).
ALTER TABLE alert_deliveries ADD COLUMN window_end INTEGER NOT NULL DEFAULT 0;
ALTER TABLE alert_deliveries ADD COLUMN claimed_at INTEGER NOT NULL DEFAULT 0;
UPDATE alert_deliveries SET window_end = created_at, claimed_at = created_at;
CREATE INDEX alert_deliveries_pending ON alert_deliveries (tenant_id, claimed_at)
    WHERE outcome = 'pending';
