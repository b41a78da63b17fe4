"""Query helpers: paging, export, counts, and a tail that survives a server restart."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone

import eventline
from conftest import API_KEY
from helpers import exported_ids, wait_until


def test_list_events_pages_through_every_event_exactly_once(server):
    client = eventline.Client(server.address, api_key=API_KEY)
    tracked = [
        client.track(
            ("signup", "view", "buy")[n % 3],
            user_id=f"u{n % 7}",
            properties={"n": n, "plan": "pro" if n % 2 else "free"},
        )
        for n in range(2_500)
    ]
    assert client.shutdown(timeout=60) == eventline.Counts(accepted=2_500)

    listed = list(client.list_events(page_size=100))
    assert len(listed) == 2_500
    assert sorted(event.event_id for event in listed) == sorted(tracked)
    newest_first = [(event.timestamp, event.event_id) for event in listed]
    assert newest_first == sorted(newest_first, reverse=True)

    exported = exported_ids(client)
    assert len(exported) == 2_500 and set(exported) == set(tracked)

    pro_views = list(client.list_events(event_type="view", property_filters={"plan": "pro"}))
    assert len(pro_views) == sum(1 for n in range(2_500) if n % 3 == 1 and n % 2)
    assert all(event.properties["plan"] == "pro" for event in pro_views)
    assert isinstance(pro_views[0].properties["n"], int)
    assert len(list(client.list_events(user_id="u3"))) == sum(1 for n in range(2_500) if n % 7 == 3)

    assert client.count_events() == 2_500
    assert client.count_events(event_type="buy") == 833
    top = client.top_event_types()
    assert {item.event_type: item.count for item in top} == {"signup": 834, "view": 833, "buy": 833}
    hourly = client.timeseries("hour", start_time=datetime.now(timezone.utc) - timedelta(hours=3))
    assert sum(bucket.count for bucket in hourly) == 2_500
    assert all(bucket.start_time.minute == 0 for bucket in hourly)


def test_export_resumes_from_a_cursor(server):
    client = eventline.Client(server.address, api_key=API_KEY)
    tracked = [client.track("step", properties={"n": n}) for n in range(50)]
    client.flush(timeout=60)
    stream = client.export()
    first = [next(stream) for _ in range(20)]
    stream.close()
    rest = list(client.export(cursor=stream.cursor))
    assert [event.event_id for event in first + rest] == exported_ids(client)
    assert sorted(event.event_id for event in first + rest) == sorted(tracked)
    client.shutdown()


def test_tail_resumes_after_a_server_restart_without_gap_or_repeat(server):
    client = eventline.Client(server.address, api_key=API_KEY, max_retry_duration=120)
    seen = []
    tail = client.tail(start_time=datetime.now(timezone.utc) - timedelta(minutes=1))

    def follow():
        for event in tail:
            seen.append(event.event_id)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    before = [client.track("tailed", properties={"n": n}) for n in range(300)]
    wait_until(lambda: len(seen) >= 300, "the tail to deliver the first 300 events")
    server.kill()
    server.start()
    after = [client.track("tailed", properties={"n": n}) for n in range(300, 600)]
    assert client.flush(timeout=120)
    wait_until(lambda: len(seen) >= 600, "the tail to resume and deliver 600 events")
    tail.close()
    follower.join(timeout=30)
    assert len(seen) == 600, "a repeat or an unexpected event"
    assert sorted(seen) == sorted(before + after)
    client.shutdown()


def test_async_client_tracks_counts_and_queries(server):
    async def scenario():
        async with eventline.AsyncClient(server.address, api_key=API_KEY) as client:
            tracked = [client.track("async", properties={"n": n}) for n in range(1_000)]
            assert await client.flush(timeout=60)
            assert client.stats() == eventline.Stats(accepted=1_000)
            assert await client.count_events(event_type="async") == 1_000
            listed = [event.event_id async for event in client.list_events(page_size=300)]
            assert sorted(listed) == sorted(tracked)
            exported = [event.event_id async for event in client.export()]
            assert sorted(exported) == sorted(tracked)
            top = await client.top_event_types()
            assert top == [eventline.EventTypeCount("async", 1_000)]
            series = await client.timeseries("minute", start_time=datetime.now() - timedelta(minutes=5))
            assert sum(bucket.count for bucket in series) == 1_000
            tail = client.tail(start_time=datetime.now(timezone.utc) - timedelta(minutes=5))
            first = await tail.__anext__()
            tail.close()
            assert first.event_id in set(tracked) and first.cursor
            counts = await client.shutdown()
        assert counts == eventline.Counts(accepted=1_000)

    asyncio.run(scenario())
