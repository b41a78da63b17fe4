#!/usr/bin/env bash
# Loads N events (default 10,000,000) of one tenant over 30 days into a scratch database
# with eventline's schema, then EXPLAIN ANALYZEs TopEventTypes the way the server runs
# it (hourly rollup for full hours, raw rows for the partial edge hours) next to the same
# answer computed from raw rows. Usage: scripts/explain-top-types.sh [N] [ADMIN_URL]
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-10000000}"
admin_url="${2:-${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}}"
database="eventline_explain"
url="${admin_url%/*}/$database"
# Reuses a database loaded by an earlier run with the same N (loading 10M rows takes
# about 12 minutes on 2 cores); EXPLAIN_RELOAD=1 forces a fresh load.
loaded=$(psql "$url" -Atc "SELECT count(*) FROM events" 2>/dev/null || echo 0)
if [ "${EXPLAIN_RELOAD:-0}" = 1 ] || [ "$loaded" != "$events" ]; then
psql "$admin_url" -q -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" -c "CREATE DATABASE $database"
psql "$url" -q -v ON_ERROR_STOP=1 -f migrations/postgres/0001_init.sql
psql "$url" -q -v ON_ERROR_STOP=1 <<SQL
\timing on
INSERT INTO tenants VALUES ('00000000-0000-0000-0000-000000000001', 'bench');
-- 50 event types with a skewed distribution, 100k users, events spread over 30 days.
INSERT INTO events (tenant_id, event_id, event_type, user_id, "timestamp", received_at, properties)
SELECT '00000000-0000-0000-0000-000000000001', 'e' || n,
       'type_' || floor(50 * power(random(), 3))::int,
       'user_' || (n % 100000),
       now() - random() * interval '30 days', now(),
       jsonb_build_object('plan', CASE WHEN n % 3 = 0 THEN 'pro' ELSE 'free' END, 'n', n)
FROM generate_series(1, $events) AS n;
INSERT INTO event_rollups_hourly
SELECT tenant_id, date_trunc('hour', "timestamp", 'UTC'), event_type, count(*)
FROM events GROUP BY 1, 2, 3;
VACUUM ANALYZE;
SQL
fi
now=$(psql "$url" -Atc "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
echo "== TopEventTypes, last 30 days, as the server answers it (rollup + raw edges)"
psql "$url" <<SQL
\timing on
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT event_type, sum(n) FROM (
  SELECT event_type, sum(event_count)::bigint AS n FROM event_rollups_hourly
  WHERE tenant_id = '00000000-0000-0000-0000-000000000001'
    AND hour >= date_trunc('hour', '$now'::timestamptz - interval '30 days', 'UTC') + interval '1 hour'
    AND hour < date_trunc('hour', '$now'::timestamptz, 'UTC')
  GROUP BY 1
  UNION ALL
  SELECT event_type, count(*) FROM events
  WHERE tenant_id = '00000000-0000-0000-0000-000000000001'
    AND (("timestamp" >= '$now'::timestamptz - interval '30 days'
          AND "timestamp" < date_trunc('hour', '$now'::timestamptz - interval '30 days', 'UTC') + interval '1 hour')
      OR ("timestamp" >= date_trunc('hour', '$now'::timestamptz, 'UTC') AND "timestamp" < '$now'::timestamptz))
  GROUP BY 1
) AS parts GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10;
SQL
echo "== The same answer from raw rows"
psql "$url" <<SQL
\timing on
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT event_type, count(*) FROM events
WHERE tenant_id = '00000000-0000-0000-0000-000000000001'
  AND "timestamp" >= '$now'::timestamptz - interval '30 days' AND "timestamp" < '$now'::timestamptz
GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10;
SQL
