"""The analytics helpers (count, top_event_types, series, funnel, retention) of `Client`
and `AsyncClient` against the real server: known events spread over six days, every
answer compared with the model in analytics_data.py, computed from those events alone."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Tuple

import pytest

import analytics_data as data
import eventline
from conftest import API_KEY, free_port

DAY = data.DAY
HOUR = timedelta(hours=1)

# (what, method, args, kwargs, expected answer)
Case = Tuple[str, str, Tuple[Any, ...], Dict[str, Any], Any]


def cases(base: datetime) -> List[Case]:
    sent = data.events(base)
    end = base + 6 * DAY
    two_days = timedelta(days=2)
    funnel_steps = ["signup", "view", "purchase"]
    pro_only = lambda event: event.plan == "pro"  # noqa: E731
    return [
        ("count of everything", "count", (None, base, end), {}, data.count(sent, base, end)),
        ("count_events", "count_events", ("view", base, end), {}, data.count(sent, base, end, "view").count),
        (
            "count_events of unique users",
            "count_events", (None, base, end), {"measure": "unique_users"},
            data.count(sent, base, end, measure="unique_users").count,
        ),
        (
            "unique users of one type",
            "count", ("view", base, end), {"measure": "unique_users"},
            data.count(sent, base, end, "view", "unique_users"),
        ),
        (
            "count by plan",
            "count", (None, base, end), {"group_by_property": "plan"},
            data.count(sent, base, end, group_limit=10),
        ),
        (
            "count by plan, one value of its own",
            "count", (None, base, end), {"group_by_property": "plan", "group_limit": 1},
            data.count(sent, base, end, group_limit=1),
        ),
        (
            "count of one day by plan",
            "count", ("view", base + DAY, base + 2 * DAY), {"group_by_property": "plan"},
            data.count(sent, base + DAY, base + 2 * DAY, "view", group_limit=10),
        ),
        ("top event types", "top_event_types", (base, end), {}, data.top_event_types(sent, base, end, 10)),
        ("top 2 event types", "top_event_types", (base, end, 2), {}, data.top_event_types(sent, base, end, 2)),
        (
            "top event types by plan",
            "top_event_types", (base, end), {"group_by_property": "plan", "group_limit": 2},
            data.top_event_types(sent, base, end, 10, group_limit=2),
        ),
        ("daily series", "series", ("day", None, base, end), {}, data.series(sent, base, end, DAY)),
        (
            "daily unique users",
            "series", ("day", None, base, end), {"measure": "unique_users"},
            data.series(sent, base, end, DAY, measure="unique_users"),
        ),
        (
            "daily series by plan",
            "series", ("day", None, base, end), {"group_by_property": "plan"},
            data.series(sent, base, end, DAY, group_limit=10),
        ),
        (
            "hourly views of the second day",
            "series", ("hour", "view", base + DAY, base + 2 * DAY), {},
            data.series(sent, base + DAY, base + 2 * DAY, HOUR, "view"),
        ),
        (
            "timeseries (the buckets of series) by plan",
            "timeseries", ("day", "view", base, end), {"group_by_property": "plan", "group_limit": 1},
            list(data.series(sent, base, end, DAY, "view", group_limit=1).buckets),
        ),
        (
            "funnel within two days",
            "funnel", (funnel_steps, two_days, base, base + 5 * DAY), {},
            data.funnel(sent, funnel_steps, two_days, base, base + 5 * DAY),
        ),
        (
            "funnel within the default 30 days",
            "funnel", (funnel_steps,), {"start_time": base, "end_time": base + 5 * DAY},
            data.funnel(sent, funnel_steps, timedelta(days=30), base, base + 5 * DAY),
        ),
        (
            "funnel of pro events only",
            "funnel", (funnel_steps, two_days, base, base + 5 * DAY), {"property_filters": {"plan": "pro"}},
            data.funnel(sent, funnel_steps, two_days, base, base + 5 * DAY, keep=pro_only),
        ),
        (
            "funnel by plan",
            "funnel", (funnel_steps, two_days, base, base + 5 * DAY), {"group_by_property": "plan"},
            data.funnel(sent, funnel_steps, two_days, base, base + 5 * DAY, group_limit=10),
        ),
        (
            "funnel by plan, one value of its own",
            "funnel", (funnel_steps, two_days, base, base + 5 * DAY),
            {"group_by_property": "plan", "group_limit": 1},
            data.funnel(sent, funnel_steps, two_days, base, base + 5 * DAY, group_limit=1),
        ),
        (
            "two-step funnel with a 90-minute window",
            "funnel", (["signup", "view"], timedelta(minutes=90), base, end), {},
            data.funnel(sent, ["signup", "view"], timedelta(minutes=90), base, end),
        ),
        (
            "daily retention",
            "retention", ("signup", "view", "day", base, end), {},
            data.retention(sent, "signup", "view", DAY, base, end),
        ),
        (
            "daily retention from a start time within the first day",
            "retention", ("signup", "view", "day", base + 8 * HOUR, end), {},
            data.retention(sent, "signup", "view", DAY, base, end),
        ),
        (
            "retention of signup to signup",
            "retention", ("signup", "signup", "day", base, end), {},
            data.retention(sent, "signup", "signup", DAY, base, end),
        ),
        (
            "weekly retention",
            "retention", ("signup", "purchase", "week", base, base + 14 * DAY), {},
            data.retention(sent, "signup", "purchase", 7 * DAY, base, base + 14 * DAY),
        ),
    ]


def test_the_model_agrees_with_counting_by_hand():
    """The events were chosen for these cases; the model must see them as intended."""
    base = datetime(2026, 3, 2, tzinfo=timezone.utc)
    sent = data.events(base)
    end = base + 6 * DAY
    assert data.count(sent, base, end) == eventline.EventCount(24, True)
    assert data.count(sent, base, end, measure="unique_users").count == 7  # anonymous views left out
    assert data.count(sent, base, end, group_limit=10).groups == (
        eventline.PropertyGroup("value", "free", 9),
        eventline.PropertyGroup("value", "pro", 8),
        eventline.PropertyGroup("value", 5, 2),
        eventline.PropertyGroup("missing", None, 5),
    )
    assert data.count(sent, base, end, group_limit=1).groups == (
        eventline.PropertyGroup("value", "free", 9),
        eventline.PropertyGroup("missing", None, 5),
        eventline.PropertyGroup("other", None, 10),
    )
    assert [(t.event_type, t.count) for t in data.top_event_types(sent, base, end, 10)] == [
        ("view", 12), ("signup", 7), ("purchase", 5),
    ]
    assert [b.count for b in data.series(sent, base, end, DAY, measure="unique_users").buckets] == [2, 3, 4, 2, 2, 1]
    # u1 and u4 convert; u2 drops out after the view; u3 buys after the 2-day window; u5
    # buys before the view; u6 views after end_time, inside the conversion window.
    funnel = data.funnel(sent, ["signup", "view", "purchase"], timedelta(days=2), base, base + 5 * DAY)
    assert [step.users for step in funnel.steps] == [6, 6, 2]
    assert [step.users for step in data.funnel(
        sent, ["signup", "view", "purchase"], timedelta(days=30), base, base + 5 * DAY
    ).steps] == [6, 6, 3]
    by_plan = data.funnel(sent, ["signup", "view", "purchase"], timedelta(days=2), base, base + 5 * DAY, group_limit=10)
    assert [(g.kind, g.value, [s.users for s in g.steps]) for g in by_plan.groups] == [
        ("value", "pro", [3, 3, 1]), ("value", "free", [2, 2, 0]), ("missing", None, [1, 1, 1]),
    ]
    cohorts = data.retention(sent, "signup", "view", DAY, base, end)
    assert [(c.users, list(c.returned)) for c in cohorts] == [
        (2, [2, 1, 1, 1, 0, 0]),
        (2, [2, 0, 0, 0, 0]),
        (0, [0, 0, 0, 0]),
        (1, [1, 0, 0]),
        (1, [0, 1]),
        (0, [0]),
    ]
    assert [list(c.returned) for c in data.retention(sent, "signup", "signup", DAY, base, end)][4] == [0, 1]


def test_client_analytics_answer_what_the_events_say(server):
    base = data.base_day()
    client = eventline.Client(server.address, api_key=API_KEY)
    data.track_all(client, data.events(base))
    assert client.flush(timeout=60)
    assert client.stats().accepted == len(data.SCRIPT)
    for what, method, args, kwargs, expected in cases(base):
        assert getattr(client, method)(*args, **kwargs) == expected, what
    series = client.series("day", start_time=base, end_time=base + 6 * DAY)
    assert all(bucket.start_time.tzinfo is not None for bucket in series.buckets)
    assert series.buckets[0].start_time == base
    cohorts = client.retention("signup", "view", "week", base, base + 14 * DAY)
    assert [c.start_time for c in cohorts] == [base, base + 7 * DAY]
    assert client.close() == eventline.Counts(accepted=len(data.SCRIPT))


def test_async_client_analytics_answer_what_the_events_say(server):
    base = data.base_day()

    async def scenario() -> None:
        async with eventline.AsyncClient(server.address, api_key=API_KEY) as client:
            data.track_all(client, data.events(base))
            assert await client.flush(timeout=60)
            for what, method, args, kwargs, expected in cases(base):
                assert await getattr(client, method)(*args, **kwargs) == expected, what
            # The server answers what the arguments ask, not a fixed window.
            funnel = await client.funnel(["signup", "view"], timedelta(hours=2), base + 3 * DAY, base + 5 * DAY)
            assert [step.users for step in funnel.steps] == [2, 1]
            assert funnel.conversion == 0.5

    asyncio.run(scenario())


def test_the_server_refuses_what_the_helpers_would_refuse_locally(server):
    """The local checks are the server's: the same request, unchecked, is INVALID_ARGUMENT."""
    import grpc

    from eventline.v1 import query_pb2

    client = eventline.Client(server.address, api_key=API_KEY)
    for method, request in [
        ("Funnel", query_pb2.FunnelRequest(steps=["signup"])),
        ("CountEvents", query_pb2.CountEventsRequest(group_by_property="plan", measure=2)),
        ("Retention", query_pb2.RetentionRequest(start_event_type="a", return_event_type="b")),
    ]:
        with pytest.raises(grpc.RpcError) as raised:
            client._unary(method, request)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
    client.close()


@pytest.fixture
def offline():
    # Nothing listens there: the checks must not depend on the network.
    client = eventline.Client(f"127.0.0.1:{free_port()}", api_key="unused", timeout=2)
    yield client
    client.shutdown(timeout=0)


@pytest.mark.parametrize(
    "method, args, kwargs, error, message",
    [
        ("funnel", ([],), {}, ValueError, "steps: must hold 2 to 10 event types, got 0"),
        ("funnel", (["signup"],), {}, ValueError, "steps: must hold 2 to 10 event types, got 1"),
        ("funnel", (["s"] * 11,), {}, ValueError, "steps: must hold 2 to 10 event types, got 11"),
        ("funnel", ("signup",), {}, TypeError, "steps: must be a sequence of event types"),
        ("funnel", (["signup", ""],), {}, ValueError, "steps[1]: must be 1 to 128 characters"),
        ("funnel", (["a", "b"], timedelta(0)), {}, ValueError, "conversion_window: must be more than 0"),
        ("funnel", (["a", "b"], timedelta(days=90, seconds=1)), {}, ValueError, "conversion_window:"),
        ("funnel", (["a", "b"], 3600), {}, TypeError, "conversion_window: must be a datetime.timedelta"),
        ("funnel", (["a", "b"],), {"group_limit": 3}, ValueError, "group_limit: needs group_by_property"),
        ("funnel", (["a", "b"],), {"group_by_property": "p", "group_limit": 101}, ValueError, "group_limit:"),
        ("funnel", (["a", "b"],), {"property_filters": "plan=pro"}, TypeError, "property_filters:"),
        ("count", (), {"measure": "users"}, ValueError, "measure: one of ['events', 'unique_users']"),
        ("count", (), {"measure": "unique_users", "group_by_property": "plan"}, ValueError, "group_by_property:"),
        ("count", (), {"group_by_property": "x" * 129}, ValueError, "group_by_property: must be 1 to 128"),
        ("count", ("view", datetime(2026, 1, 2), datetime(2026, 1, 1)), {}, ValueError, "start_time: must be before"),
        ("count", (), {"start_time": "2026-01-01"}, TypeError, "start_time: must be a datetime"),
        ("count_events", (), {"measure": "sessions"}, ValueError, "measure:"),
        ("top_event_types", (), {"limit": 0}, ValueError, "limit: must be 1 to 1000, got 0"),
        ("top_event_types", (), {"group_by_property": "p", "group_limit": 0}, ValueError, "group_limit: must be 1"),
        ("series", ("week",), {}, ValueError, "interval: one of ['day', 'hour', 'minute']"),
        ("timeseries", ("day",), {"measure": "unique_users", "group_by_property": "p"}, ValueError, "group_by"),
        ("retention", ("signup", "view", "month"), {}, ValueError, "interval: one of ['day', 'week']"),
        ("retention", ("", "view"), {}, ValueError, "start_event_type: must be 1 to 128"),
        ("retention", ("signup", None), {}, TypeError, "return_event_type: must be a str"),
    ],
)
def test_helpers_refuse_bad_arguments_naming_them(offline, method, args, kwargs, error, message):
    with pytest.raises(error) as raised:
        getattr(offline, method)(*args, **kwargs)
    assert message in str(raised.value)


def test_async_helpers_refuse_bad_arguments_naming_them():
    async def scenario() -> None:
        async with eventline.AsyncClient(f"127.0.0.1:{free_port()}", api_key="unused", timeout=2) as client:
            with pytest.raises(ValueError, match=r"^steps: must hold 2 to 10 event types, got 0$"):
                await client.funnel([])
            with pytest.raises(ValueError, match="interval:"):
                await client.retention("a", "b", "year")
            with pytest.raises(ValueError, match="measure:"):
                await client.series("day", measure="sessions")

    asyncio.run(scenario())
