#!/usr/bin/env python3
"""A ClickHouse anchor for eventline's analytics: the four analytics questions of
`eventline bench query` asked of eventline (REST, against a real `eventline serve`) and of
an in-process ClickHouse (chdb) holding a copy of the same events, interleaved, with
every answer checked against the other.

Run it through `scripts/bench-clickhouse`, which sets up the pinned virtualenv. Progress
goes to stderr; the table (or, with --json, one JSON object) to stdout. It exits 1 when
an answer check fails.

Nothing here holds the events in Python: the copy streams PostgreSQL's COPY output into a
FIFO that ClickHouse reads, so memory stays flat at 10M events.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable

import chdb
import psycopg
from chdb import session as chdb_session

# The bootstrap key and admin token `eventline bench` gives its servers
# (crates/eventline-bench/src/server.rs); the kept database's API key is this one.
BENCH_API_KEY = "elk_bench_bootstrap_key_0123456789abcdef"
BENCH_ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"

# The analytics calls of `eventline bench query` (query.rs, `analytics_calls`).
FUNNEL_STEPS = ("type_1", "type_2", "type_3")
CONVERSION_WINDOW = dt.timedelta(days=7)
RETENTION_START, RETENTION_RETURN = "type_1", "type_2"
RETENTION_INTERVAL = dt.timedelta(days=1)
BREAKDOWN_TYPE, BREAKDOWN_PROPERTY = "type_1", "plan"
# The largest relative error the sketched daily uniques may show against uniqExact.
UNIQUES_TOLERANCE = 0.02

WARM_UP_CALLS = 3
MICROS_PER_SECOND = 1_000_000

# The sort key of the ClickHouse table. Three of the four questions read one to three
# event types, so the key starts with event_type: ClickHouse reads only the granules of
# those types (type_1..type_3 are ~16 % of the rows); timestamp second lets a window
# narrower than the data skip the rest. (user_id, timestamp) would let a per-user
# aggregation read in order, but then every type filter scans the whole table.
DEFAULT_ORDER_BY = "event_type, timestamp"


def stop_on_signal(signum: int, _frame: Any) -> None:
    """SIGTERM (a timeout, kill) unwinds like Ctrl-C: every `finally` runs, so the server
    stops and the loaded database is dropped."""
    raise SystemExit(128 + signum)


def child_setup() -> None:
    """In a child before exec: SIGTERM when this process dies, however it dies (even by
    SIGKILL, when no `finally` runs), so that no server outlives the bench."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- timestamps


def micros(at: dt.datetime) -> int:
    """Microseconds since the epoch of a UTC datetime, exactly (no float)."""
    delta = at - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * MICROS_PER_SECOND + delta.microseconds


def from_micros(value: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=value)


def rfc3339(at: dt.datetime) -> str:
    """RFC 3339 in UTC with the microseconds (what the proto3 JSON Timestamp takes)."""
    return at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: str) -> dt.datetime:
    """A proto3 JSON Timestamp ("2026-11-07T00:00:00Z", fractions of up to 9 digits)."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z", text)
    if not match:
        raise ValueError(f"not a UTC RFC 3339 timestamp: {text!r}")
    base = dt.datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.timezone.utc)
    fraction = (match.group(2) or "").ljust(9, "0")
    return base + dt.timedelta(microseconds=int(fraction) // 1000)


def ch_time(at: dt.datetime) -> str:
    """A ClickHouse DateTime64(6, 'UTC') literal of `at`, exact to the microsecond."""
    return f"fromUnixTimestamp64Micro(toInt64({micros(at)}), 'UTC')"


def floor_day(at: dt.datetime) -> dt.datetime:
    return at.astimezone(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Window:
    """The bench's window, [now - 30 days, now + 1 minute), `now` being the load's."""

    start: dt.datetime
    end: dt.datetime

    @property
    def day0(self) -> dt.datetime:
        """Retention's first cohort: start rounded down to a UTC day (RetentionRequest)."""
        return floor_day(self.start)

    def retention_intervals(self) -> int:
        """Cohorts in the window, the last one cut short by end (interval_count)."""
        span = micros(self.end) - micros(self.day0)
        width = RETENTION_INTERVAL // dt.timedelta(microseconds=1)
        return span // width + (1 if span % width else 0)


# ---------------------------------------------------------------- PostgreSQL


def database_url(admin_url: str, name: str) -> str:
    """`admin_url` with its database replaced by `name`, parameters kept (as server.rs)."""
    base, _, parameters = admin_url.partition("?")
    base = base.rsplit("/", 1)[0] if base.count("/") > 2 else base
    return f"{base}/{name}" + (f"?{parameters}" if parameters else "")


def load_with_bench(binary: str, admin_url: str, events: int) -> str:
    """Runs `eventline bench query --keep-database` and returns the kept database's name."""
    command = [
        binary, "bench", "query",
        "--events", str(events),
        "--iterations", "1",
        "--keep-database",
        "--database-url", admin_url,
    ]
    log(f"loading {events} events: {' '.join(command)}")
    # In a process group of its own, so that an interrupt can stop it together with the
    # server it started.
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: (os.setpgid(0, 0), child_setup()),
    )
    pid = None
    assert process.stderr is not None
    try:
        for line in process.stderr:
            sys.stderr.write(line)
            match = re.search(r"kept the databases eventline_bench_(\d+)_", line)
            if match:
                pid = match.group(1)
        process.wait()
    except BaseException:
        # Interrupted mid-load: stop the bench and drop what it created (its databases
        # are named after its process id).
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        process.wait()
        for name in bench_databases(admin_url, str(process.pid)):
            drop_database(admin_url, name)
        raise
    if process.returncode != 0:
        raise SystemExit(f"eventline bench query failed with {process.returncode}")
    if pid is None:
        raise SystemExit("eventline bench query did not say which database it kept")
    names = bench_databases(admin_url, pid)
    if len(names) != 1:
        raise SystemExit(f"expected one kept database eventline_bench_{pid}_*, found {names}")
    return names[0]


def bench_databases(admin_url: str, pid: str) -> list[str]:
    """The databases `eventline bench` process `pid` created: eventline_bench_<pid>_*."""
    with psycopg.connect(admin_url, autocommit=True) as connection:
        return [
            row[0]
            for row in connection.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s",
                (f"eventline\\_bench\\_{pid}\\_%",),
            )
        ]


def drop_database(admin_url: str, name: str) -> None:
    if not re.fullmatch(r"eventline_bench_\w+", name):
        raise SystemExit(f"refusing to drop {name!r}: not a bench database")
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    log(f"dropped the database {name}")


def bench_window(url: str) -> tuple[Window, int]:
    """The window `eventline bench query` measured on this load, and its event count.

    Its loader puts the first event at exactly now - 30 days (query.rs, `Load::rows`), so
    the load's `now` is the earliest timestamp + 30 days, and the window is
    [now - 30 days, now + 1 minute)."""
    with psycopg.connect(url) as connection:
        first, count = connection.execute(
            'SELECT (extract(epoch FROM min("timestamp")) * 1000000)::bigint, count(*) FROM events'
        ).fetchone()
        tenants = connection.execute("SELECT count(DISTINCT tenant_id) FROM events").fetchone()[0]
    if count == 0:
        raise SystemExit("the database holds no events")
    if tenants != 1:
        raise SystemExit(f"expected the events of one tenant, found {tenants} tenants")
    now = from_micros(first) + dt.timedelta(days=30)
    return Window(start=now - dt.timedelta(days=30), end=now + dt.timedelta(minutes=1)), count


# ---------------------------------------------------------------- the eventline server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`eventline serve` on the kept database, configured as the bench configures its own
    (server.rs, `ServerProcess::start_with`): the bootstrap key is the bench's, so the key
    already in the database is the one to call with."""

    def __init__(self, binary: str, url: str) -> None:
        self.http_port = free_port()
        environment = dict(os.environ)
        environment.update(
            EVENTLINE_DATABASE_URL=url,
            EVENTLINE_GRPC_ADDR=f"127.0.0.1:{free_port()}",
            EVENTLINE_HTTP_ADDR=f"127.0.0.1:{self.http_port}",
            EVENTLINE_METRICS_ADDR=f"127.0.0.1:{free_port()}",
            EVENTLINE_BOOTSTRAP_API_KEY=BENCH_API_KEY,
            EVENTLINE_ADMIN_TOKEN=BENCH_ADMIN_TOKEN,
            # Warnings, less sqlx's slow-statement ones: every funnel at 10M is one.
            EVENTLINE_LOG_LEVEL="warn,sqlx::query=error",
        )
        environment.pop("DATABASE_URL", None)
        self.process = subprocess.Popen(
            [binary, "serve"],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=sys.stderr,
            preexec_fn=child_setup,
        )
        self.connection: http.client.HTTPConnection | None = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"eventline serve exited with {self.process.returncode}")
            try:
                probe = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=2)
                probe.request("GET", "/readyz")
                if probe.getresponse().status == 200:
                    probe.close()
                    log(f"eventline serve ready on 127.0.0.1:{self.http_port} (pid {self.process.pid})")
                    return
                probe.close()
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise SystemExit("eventline serve was not ready within 60 s")

    def get(self, path: str, parameters: list[tuple[str, str]]) -> Any:
        """GET `path` with the bench key over one kept-alive connection; the decoded JSON."""
        target = f"{path}?{urllib.parse.urlencode(parameters)}"
        for attempt in range(2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=600)
            try:
                self.connection.request("GET", target, headers={"X-API-Key": BENCH_API_KEY})
                response = self.connection.getresponse()
                body = response.read()
            except (http.client.HTTPException, OSError):
                # A connection the server closed while idle: open another, once.
                self.connection.close()
                self.connection = None
                if attempt:
                    raise
                continue
            if response.status != 200:
                raise RuntimeError(f"GET {target}: {response.status} {body[:500]!r}")
            return json.loads(body)
        raise AssertionError("unreachable")

    def stop(self) -> None:
        if self.connection is not None:
            self.connection.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        log("stopped eventline serve")


# ---------------------------------------------------------------- ClickHouse (chdb)


class ClickHouse:
    """An in-process ClickHouse with its data in a scratch directory."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.session = chdb_session.Session(os.path.join(directory, "data"))

    def rows(self, sql: str) -> list[list[Any]]:
        result = self.session.query(sql, "JSONCompact")
        text = result.bytes() if hasattr(result, "bytes") else bytes(result)
        if not text.strip():
            return []
        return json.loads(text)["data"]

    def execute(self, sql: str) -> None:
        self.session.query(sql, "CSV")

    def close(self) -> None:
        try:
            self.session.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def copy_events(url: str, clickhouse: ClickHouse, order_by: str, expected: int) -> dict[str, float]:
    """Streams the events out of PostgreSQL (COPY … TO STDOUT as CSV) into a MergeTree
    table, through a FIFO ClickHouse reads while Python writes; then merges the parts.
    Returns the seconds each phase took."""
    clickhouse.execute(
        f"""CREATE TABLE events (
                user_id String,
                event_type LowCardinality(String),
                timestamp DateTime64(6, 'UTC'),
                plan LowCardinality(Nullable(String))
            ) ENGINE = MergeTree ORDER BY ({order_by})"""
    )
    fifo = os.path.join(clickhouse.directory, "events.csv")
    os.mkfifo(fifo)
    # user_id: eventline stores an unset user id as NULL; '' stands for it here, and every
    # question that follows users leaves '' out, as eventline leaves NULL out. The
    # timestamp goes as exact integer microseconds (numeric in PostgreSQL ≥ 14).
    copy_sql = """COPY (
        SELECT coalesce(user_id, ''), event_type,
               (extract(epoch FROM "timestamp") * 1000000)::bigint,
               properties ->> 'plan'
        FROM events
    ) TO STDOUT (FORMAT csv)"""
    failure: list[BaseException] = []
    copied = [0]

    def write() -> None:
        try:
            with psycopg.connect(url) as connection, open(fifo, "wb") as pipe:
                with connection.cursor().copy(copy_sql) as copy:
                    for chunk in copy:
                        pipe.write(chunk)
                        copied[0] += len(chunk)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            failure.append(error)
            # Unblock ClickHouse if it is still waiting for the writer to open the FIFO.
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass

    started = time.monotonic()
    writer = threading.Thread(target=write, name="copy-out", daemon=True)
    writer.start()
    clickhouse.execute(
        f"""INSERT INTO events
            SELECT user_id, event_type, fromUnixTimestamp64Micro(micros, 'UTC'), plan
            FROM file('{fifo}', 'CSV',
                      'user_id String, event_type String, micros Int64, plan Nullable(String)')"""
    )
    writer.join()
    if failure:
        raise failure[0]
    copied_seconds = time.monotonic() - started
    merge_started = time.monotonic()
    clickhouse.execute("OPTIMIZE TABLE events FINAL")
    merge_seconds = time.monotonic() - merge_started
    loaded = clickhouse.rows("SELECT count() FROM events")[0][0]
    if int(loaded) != expected:
        raise SystemExit(f"ClickHouse holds {loaded} events, PostgreSQL {expected}")
    log(
        f"copied {expected} events ({copied[0] / 2**20:.0f} MiB of CSV) into ClickHouse in "
        f"{copied_seconds:.1f} s ({expected / copied_seconds:,.0f} events/s), "
        f"OPTIMIZE FINAL {merge_seconds:.1f} s"
    )
    return {"copy_seconds": copied_seconds, "optimize_seconds": merge_seconds}


# ---------------------------------------------------------------- the SQL


def uniques_sql(window: Window) -> str:
    return f"""
SELECT toString(toStartOfDay(timestamp)) AS day, uniqExact(user_id) AS users
FROM events
WHERE timestamp >= {ch_time(window.start)} AND timestamp < {ch_time(window.end)}
  AND user_id != ''
GROUP BY day
ORDER BY day"""


def breakdown_sql(window: Window) -> str:
    return f"""
SELECT plan, count() AS events
FROM events
WHERE event_type = '{BREAKDOWN_TYPE}'
  AND timestamp >= {ch_time(window.start)} AND timestamp < {ch_time(window.end)}
GROUP BY plan
ORDER BY events DESC, plan"""


def funnel_sql(window: Window) -> str:
    """QueryService.Funnel exactly, for three distinct step types: a user enters at their
    first step-1 event in [start, end); step 2 is their earliest step-2 event at or after
    it and at most the conversion window after it (which may fall after end); step 3 an
    event at or after that one, within the same deadline. The earliest step-2 event is
    the best choice for step 3, so this greedy walk is the exact count."""
    first, second, third = FUNNEL_STEPS
    assert len(set(FUNNEL_STEPS)) == 3, "the SQL assumes distinct step types"
    window_micros = CONVERSION_WINDOW // dt.timedelta(microseconds=1)
    return f"""
SELECT count() AS entered, countIf(reached_2) AS step_2, countIf(reached_3) AS step_3
FROM
(
    SELECT
        notEmpty(step_2_matches) AS reached_2,
        reached_2 AND arrayExists(t -> t >= arrayMin(step_2_matches) AND t <= deadline, step_3_times) AS reached_3
    FROM
    (
        SELECT
            entered + toIntervalMicrosecond({window_micros}) AS deadline,
            arrayFilter(t -> t >= entered AND t <= deadline, step_2_times) AS step_2_matches,
            step_3_times
        FROM
        (
            SELECT
                user_id,
                minIf(timestamp, event_type = '{first}' AND timestamp < {ch_time(window.end)}) AS entered,
                groupArrayIf(timestamp, event_type = '{second}') AS step_2_times,
                groupArrayIf(timestamp, event_type = '{third}') AS step_3_times
            FROM events
            WHERE event_type IN ('{first}', '{second}', '{third}') AND user_id != ''
              AND timestamp >= {ch_time(window.start)}
              AND timestamp <= {ch_time(window.end)} + toIntervalMicrosecond({window_micros})
            GROUP BY user_id
            HAVING countIf(event_type = '{first}' AND timestamp < {ch_time(window.end)}) > 0
        )
    )
)"""


def window_funnel_sql(window: Window) -> str:
    """The same funnel with ClickHouse's own windowFunnel (its window in microseconds, as
    windowFunnel takes integer timestamps); steps 1 only within [start, end)."""
    first, second, third = FUNNEL_STEPS
    window_micros = CONVERSION_WINDOW // dt.timedelta(microseconds=1)
    return f"""
SELECT countIf(level >= 1), countIf(level >= 2), countIf(level >= 3)
FROM
(
    SELECT user_id,
        windowFunnel({window_micros})(
            toUInt64(toUnixTimestamp64Micro(timestamp)),
            event_type = '{first}' AND timestamp < {ch_time(window.end)},
            event_type = '{second}',
            event_type = '{third}') AS level
    FROM events
    WHERE event_type IN ('{first}', '{second}', '{third}') AND user_id != ''
      AND timestamp >= {ch_time(window.start)}
      AND timestamp <= {ch_time(window.end)} + toIntervalMicrosecond({window_micros})
    GROUP BY user_id
)"""


def retention_sql(window: Window) -> str:
    """QueryService.Retention exactly, as eventline computes it (start and return types
    distinct): cohorts from start rounded down to a UTC day; a user's cohort is the
    interval of their first start event in [day0, end); they returned in their own
    interval with a return event at or after that first start event, in a later one with
    any return event before end. Each user gives one row per interval returned in, after
    a row at -1 that counts them into their cohort."""
    assert RETENTION_START != RETENTION_RETURN, "the SQL assumes two distinct types"
    day0 = micros(window.day0)
    width = RETENTION_INTERVAL // dt.timedelta(microseconds=1)
    return f"""
SELECT cohort, returned_after, count() AS users
FROM
(
    SELECT
        intDiv(toUnixTimestamp64Micro(first_start) - {day0}, {width}) AS cohort,
        arrayConcat([-1], arrayDistinct(arrayMap(
            t -> intDiv(toUnixTimestamp64Micro(t) - {day0}, {width}) - cohort,
            arrayFilter(t -> t >= first_start, return_times)))) AS offsets
    FROM
    (
        SELECT
            user_id,
            minIf(timestamp, event_type = '{RETENTION_START}') AS first_start,
            groupArrayIf(timestamp, event_type = '{RETENTION_RETURN}') AS return_times
        FROM events
        WHERE event_type IN ('{RETENTION_START}', '{RETENTION_RETURN}') AND user_id != ''
          AND timestamp >= {ch_time(window.day0)} AND timestamp < {ch_time(window.end)}
        GROUP BY user_id
        HAVING countIf(event_type = '{RETENTION_START}') > 0
    )
)
ARRAY JOIN offsets AS returned_after
GROUP BY cohort, returned_after
ORDER BY cohort, returned_after"""


# ---------------------------------------------------------------- the questions


@dataclass
class Question:
    name: str
    eventline: Callable[[], Any]
    clickhouse: Callable[[], Any]
    # (equal, note) of the two answers.
    compare: Callable[[Any, Any], tuple[bool, str]]
    eventline_ms: list[float] = field(default_factory=list)
    clickhouse_ms: list[float] = field(default_factory=list)
    equal: bool = False
    note: str = ""


def window_parameters(window: Window) -> list[tuple[str, str]]:
    return [("start_time", rfc3339(window.start)), ("end_time", rfc3339(window.end))]


def questions(server: Server, clickhouse: ClickHouse, window: Window) -> list[Question]:
    # Daily unique users: {UTC day: users}, and whether eventline says exact.
    def uniques_eventline() -> tuple[dict[dt.datetime, int], bool]:
        answer = server.get(
            "/v1/stats/timeseries",
            [("interval", "INTERVAL_DAY"), ("measure", "MEASURE_UNIQUE_USERS"), *window_parameters(window)],
        )
        days = {parse_rfc3339(bucket["start_time"]): int(bucket.get("count", 0)) for bucket in answer["buckets"]}
        return days, bool(answer.get("exact", False))

    uniques_query = uniques_sql(window)

    def uniques_clickhouse() -> dict[dt.datetime, int]:
        return {
            dt.datetime.strptime(day, "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.timezone.utc): int(users)
            for day, users in clickhouse.rows(uniques_query)
        }

    def uniques_compare(ours: tuple[dict[dt.datetime, int], bool], theirs: dict[dt.datetime, int]) -> tuple[bool, str]:
        days, exact = ours
        if set(theirs) - set(days):
            return False, f"ClickHouse has days eventline lacks: {sorted(set(theirs) - set(days))}"
        worst = 0.0
        for day, users in days.items():
            truth = theirs.get(day, 0)
            error = abs(users - truth) / truth if truth else (0.0 if users == 0 else math.inf)
            worst = max(worst, error)
        kind = "exact counts" if exact else "HyperLogLog estimates"
        if exact:
            equal = all(days[day] == theirs.get(day, 0) for day in days)
            return equal, f"{len(days)} days, eventline says exact; max relative error {worst * 100:.2f} %"
        return (
            worst <= UNIQUES_TOLERANCE,
            f"{len(days)} days of {kind} (exact: false) against uniqExact: max relative error "
            f"{worst * 100:.2f} % (allowed {UNIQUES_TOLERANCE * 100:.0f} %)",
        )

    # Breakdown of type_1 by plan: ({value: events} with None for no plan, other, total).
    def breakdown_eventline() -> tuple[dict[Any, int], int, int]:
        answer = server.get(
            "/v1/stats/count",
            [("event_type", BREAKDOWN_TYPE), ("group_by_property", BREAKDOWN_PROPERTY), *window_parameters(window)],
        )
        groups: dict[Any, int] = {}
        other = 0
        for group in answer.get("groups", []):
            kind, count = group.get("kind"), int(group.get("count", 0))
            if kind == "PROPERTY_GROUP_KIND_VALUE":
                value = json.loads(group["value"])
                if not isinstance(value, str):
                    value = group["value"]  # ->> gives a non-string as its JSON text
                groups[value] = count
            elif kind == "PROPERTY_GROUP_KIND_MISSING":
                groups[None] = count
            else:
                other += count
        return groups, other, int(answer.get("count", 0))

    breakdown_query = breakdown_sql(window)

    def breakdown_clickhouse() -> dict[Any, int]:
        return {plan: int(events) for plan, events in clickhouse.rows(breakdown_query)}

    def breakdown_compare(ours: tuple[dict[Any, int], int, int], theirs: dict[Any, int]) -> tuple[bool, str]:
        groups, other, total = ours
        if other:
            # More values than group_limit: those named must match, the rest add up.
            named = all(theirs.get(value) == count for value, count in groups.items())
            rest = sum(count for value, count in theirs.items() if value not in groups)
            equal = named and rest == other and total == sum(theirs.values())
        else:
            equal = groups == theirs and total == sum(theirs.values())
        shown = ", ".join(f"{value}={count}" for value, count in sorted(theirs.items(), key=lambda item: -item[1]))
        return equal, f"total {total}; ClickHouse {shown}"

    # Funnel: users per step.
    def funnel_eventline() -> list[int]:
        answer = server.get(
            "/v1/analytics/funnel",
            [
                *(("steps", step) for step in FUNNEL_STEPS),
                ("conversion_window", f"{int(CONVERSION_WINDOW.total_seconds())}s"),
                *window_parameters(window),
            ],
        )
        return [int(step.get("users", 0)) for step in answer["steps"]]

    funnel_query = funnel_sql(window)

    def funnel_clickhouse() -> list[int]:
        return [int(value) for value in clickhouse.rows(funnel_query)[0]]

    def funnel_compare(ours: list[int], theirs: list[int]) -> tuple[bool, str]:
        return ours == theirs, f"eventline {ours}, ClickHouse {theirs}"

    # Retention: [(cohort start, users, returned...)], every interval of the window.
    intervals = window.retention_intervals()

    def retention_eventline() -> list[tuple[dt.datetime, int, list[int]]]:
        answer = server.get(
            "/v1/analytics/retention",
            [
                ("start_event_type", RETENTION_START),
                ("return_event_type", RETENTION_RETURN),
                ("interval", "RETENTION_INTERVAL_DAY"),
                *window_parameters(window),
            ],
        )
        return [
            (
                parse_rfc3339(cohort["start_time"]),
                int(cohort.get("users", 0)),
                [int(value) for value in cohort.get("returned", [])],
            )
            for cohort in answer["cohorts"]
        ]

    retention_query = retention_sql(window)

    def retention_clickhouse() -> list[tuple[dt.datetime, int, list[int]]]:
        table = [
            (window.day0 + RETENTION_INTERVAL * index, 0, [0] * (intervals - index)) for index in range(intervals)
        ]
        for cohort, returned_after, users in clickhouse.rows(retention_query):
            cohort, returned_after, users = int(cohort), int(returned_after), int(users)
            if returned_after < 0:
                start, _, returned = table[cohort]
                table[cohort] = (start, users, returned)
            else:
                table[cohort][2][returned_after] = users
        return table

    def retention_compare(ours: list, theirs: list) -> tuple[bool, str]:
        if ours == theirs:
            cells = sum(len(returned) for _, _, returned in ours)
            users = sum(users for _, users, _ in ours)
            return True, f"{len(ours)} cohorts, {users} users, {cells} cells equal"
        for mine, other in zip(ours, theirs):
            if mine != other:
                return False, f"first difference: eventline {mine}, ClickHouse {other}"
        return False, f"eventline has {len(ours)} cohorts, ClickHouse {len(theirs)}"

    return [
        Question("Unique users per day, 30 days", uniques_eventline, uniques_clickhouse, uniques_compare),
        Question(f"Breakdown of {BREAKDOWN_TYPE} by {BREAKDOWN_PROPERTY}, 30 days", breakdown_eventline, breakdown_clickhouse, breakdown_compare),
        Question("Funnel, type_1 → type_2 → type_3 within 7 days, 30 days", funnel_eventline, funnel_clickhouse, funnel_compare),
        Question("Retention, type_1 → type_2, daily, 30 days", retention_eventline, retention_clickhouse, retention_compare),
    ]


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    answer = call()
    return (time.perf_counter() - started) * 1000.0, answer


def quantile(samples: list[float], q: float) -> float:
    """Nearest rank, as hdrhistogram's value_at_quantile in the Rust bench."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def measure(question: Question, iterations: int) -> None:
    """Warm-up calls, then eventline and ClickHouse alternately; the answers of the last
    call of each are compared."""
    for _ in range(WARM_UP_CALLS):
        question.eventline()
        question.clickhouse()
    ours = theirs = None
    for _ in range(iterations):
        elapsed, ours = timed(question.eventline)
        question.eventline_ms.append(elapsed)
        elapsed, theirs = timed(question.clickhouse)
        question.clickhouse_ms.append(elapsed)
    question.equal, question.note = question.compare(ours, theirs)


# ---------------------------------------------------------------- main


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench-clickhouse",
        description="eventline's analytics against an in-process ClickHouse (chdb) on the same events.",
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events to load (default 1,000,000)")
    parser.add_argument("--iterations", type=int, default=20, help="measured calls per question and engine (default 20)")
    parser.add_argument(
        "--bin",
        default=os.environ.get("EVENTLINE_BIN", "target/release/eventline"),
        help="the eventline binary (default $EVENTLINE_BIN or target/release/eventline)",
    )
    parser.add_argument(
        "--database-url",
        default="postgres://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL server the bench loads into (default postgres://postgres@127.0.0.1:5432/postgres)",
    )
    parser.add_argument(
        "--database",
        help="reuse this database kept by `eventline bench query --keep-database` instead of loading "
        "(it is never dropped)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database this run loaded")
    parser.add_argument(
        "--order-by", default=DEFAULT_ORDER_BY, help=f"the ClickHouse table's sort key (default {DEFAULT_ORDER_BY!r})"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return parser.parse_args()


def main() -> int:
    args = arguments()
    signal.signal(signal.SIGTERM, stop_on_signal)
    if not os.access(args.bin, os.X_OK):
        raise SystemExit(f"no eventline binary at {args.bin} (give --bin or $EVENTLINE_BIN)")
    started = time.monotonic()
    loaded_here = args.database is None
    name = args.database
    load_seconds = None
    server = clickhouse = None
    scratch = tempfile.mkdtemp(prefix="eventline-chdb-")
    try:
        if loaded_here:
            load_started = time.monotonic()
            name = load_with_bench(args.bin, args.database_url, args.events)
            load_seconds = time.monotonic() - load_started
        url = database_url(args.database_url, name)
        window, events = bench_window(url)
        log(f"database {name}: {events} events; window [{rfc3339(window.start)}, {rfc3339(window.end)})")
        server = Server(args.bin, url)
        clickhouse = ClickHouse(scratch)
        copy = copy_events(url, clickhouse, args.order_by, events)

        asked = questions(server, clickhouse, window)
        for question in asked:
            log(f"measuring: {question.name}")
            measure(question, args.iterations)
            log(f"  {'equal' if question.equal else 'DIFFERENT'}: {question.note}")

        funnel = next(question for question in asked if question.name.startswith("Funnel"))
        exact_funnel = [int(value) for value in clickhouse.rows(funnel_sql(window))[0]]
        window_funnel_ms, rows = timed(lambda: clickhouse.rows(window_funnel_sql(window)))
        window_funnel = [int(value) for value in rows[0]]
        log(f"windowFunnel: {window_funnel} in {window_funnel_ms:.1f} ms; exact funnel {exact_funnel}")
    finally:
        if server is not None:
            server.stop()
        if clickhouse is not None:
            clickhouse.close()
        shutil.rmtree(scratch, ignore_errors=True)
        if loaded_here and name is not None:
            if args.keep:
                log(f"kept the database {name} (drop it by hand, or reuse it with --database {name})")
            else:
                drop_database(args.database_url, name)

    total_seconds = time.monotonic() - started
    window_funnel_note = (
        "windowFunnel agrees with the exact funnel"
        if window_funnel == exact_funnel
        else (
            f"windowFunnel gives {window_funnel} against the exact {exact_funnel}: windowFunnel keeps the "
            "furthest level any step-1 event in the window reaches within the window, not the level of the "
            "user's first step-1 event, so a user whose first entry does not convert but a later one does "
            "counts further there; eventline (like Mixpanel and Amplitude) walks from the first entry only"
        )
    )
    report = {
        "events": events,
        "iterations": args.iterations,
        "window": {"start": rfc3339(window.start), "end": rfc3339(window.end)},
        "bench_load_seconds": load_seconds,
        "clickhouse_order_by": args.order_by,
        "clickhouse_copy_seconds": copy["copy_seconds"],
        "clickhouse_optimize_seconds": copy["optimize_seconds"],
        "chdb_version": chdb.__version__,
        "clickhouse_engine_version": getattr(chdb, "engine_version", None),
        "questions": [
            {
                "question": question.name,
                "eventline_p50_ms": quantile(question.eventline_ms, 0.5),
                "eventline_p99_ms": quantile(question.eventline_ms, 0.99),
                "clickhouse_p50_ms": quantile(question.clickhouse_ms, 0.5),
                "clickhouse_p99_ms": quantile(question.clickhouse_ms, 0.99),
                "ratio_p50": quantile(question.eventline_ms, 0.5) / max(quantile(question.clickhouse_ms, 0.5), 1e-9),
                "equal": question.equal,
                "note": question.note,
            }
            for question in asked
        ],
        "window_funnel": window_funnel,
        "exact_funnel": exact_funnel,
        "window_funnel_ms": window_funnel_ms,
        "window_funnel_note": window_funnel_note,
        "total_seconds": total_seconds,
    }
    ok = all(question.equal for question in asked)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_report(report)
    if not ok:
        log("FAILED: an answer differs (see the table)")
    return 0 if ok else 1


def print_report(report: dict[str, Any]) -> None:
    print(
        f"ClickHouse (chdb {report['chdb_version']}, engine {report['clickhouse_engine_version']}, in process, "
        f"ORDER BY ({report['clickhouse_order_by']})): {report['events']:,} events copied from PostgreSQL in "
        f"{report['clickhouse_copy_seconds']:.1f} s, OPTIMIZE FINAL {report['clickhouse_optimize_seconds']:.1f} s"
        + (
            f" (the load into PostgreSQL by `eventline bench query`: {report['bench_load_seconds']:.0f} s)"
            if report["bench_load_seconds"] is not None
            else ""
        )
        + "; "
        f"window [{report['window']['start']}, {report['window']['end']}); "
        f"{report['iterations']} calls of each, interleaved, after {WARM_UP_CALLS} warm-up calls"
        + (" (with fewer than 100 calls, p99 is the slowest)" if report["iterations"] < 100 else "")
        + "\n"
    )
    print(
        f"| question ({report['events']:,} events) | eventline p50 / p99 (ms) | ClickHouse p50 / p99 (ms) "
        "| ratio eventline/ClickHouse (p50) | answers equal |"
    )
    print("| --- | ---: | ---: | ---: | --- |")
    for row in report["questions"]:
        print(
            f"| {row['question']} | {row['eventline_p50_ms']:.1f} / {row['eventline_p99_ms']:.1f} "
            f"| {row['clickhouse_p50_ms']:.1f} / {row['clickhouse_p99_ms']:.1f} | {row['ratio_p50']:.1f} "
            f"| {'yes' if row['equal'] else '**NO**'}: {row['note']} |"
        )
    print()
    print(f"- {report['window_funnel_note']} (windowFunnel took {report['window_funnel_ms']:.1f} ms).")
    print(f"- total run {report['total_seconds']:.0f} s.")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; cleaned up")
        sys.exit(128 + signal.SIGINT)
