"""What track() refuses at once, naming the field (no server needed: the refusal happens
in the calling thread), and the client-side ids."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta, timezone

import pytest

import eventline
from conftest import free_port
from eventline._wire import queued_events


@pytest.fixture
def client():
    # Nothing listens there: validation must not depend on the network.
    client = eventline.Client(f"127.0.0.1:{free_port()}", api_key="unused")
    yield client
    client.shutdown(timeout=0)


def nested(levels: int) -> dict:
    value: dict = {"leaf": "x"}
    for _ in range(levels - 1):
        value = {"n": value}
    return value


@pytest.mark.parametrize(
    "kwargs, error, field",
    [
        ({"event_type": ""}, ValueError, "event_type: must be 1 to 128 characters, got 0"),
        ({"event_type": "x" * 129}, ValueError, "event_type: must be 1 to 128 characters, got 129"),
        ({"event_type": "a\nb"}, ValueError, "event_type: must not contain control characters"),
        ({"event_type": 5}, TypeError, "event_type: must be a str"),
        ({"event_type": "t", "user_id": "u" * 257}, ValueError, "user_id:"),
        ({"event_type": "t", "session_id": "s" * 257}, ValueError, "session_id:"),
        ({"event_type": "t", "event_id": "i" * 129}, ValueError, "event_id:"),
        ({"event_type": "t", "properties": ["a"]}, TypeError, "properties: must be a mapping"),
        ({"event_type": "t", "properties": {"n": math.nan}}, ValueError, "properties.n: must be a finite number"),
        ({"event_type": "t", "properties": {"n": [1, math.inf]}}, ValueError, "properties.n[1]: must be a finite number"),
        ({"event_type": "t", "properties": {"k": object()}}, TypeError, "properties.k: object is not JSON-compatible"),
        ({"event_type": "t", "properties": {1: "v"}}, TypeError, "properties: keys must be str"),
        ({"event_type": "t", "properties": {"k": "a\x00b"}}, ValueError, "properties.k: must not contain NUL"),
        ({"event_type": "t", "properties": nested(11)}, ValueError, "nests deeper than 10 levels"),
        ({"event_type": "t", "properties": {"blob": "x" * (1 << 20)}}, ValueError, "event: encoded event is"),
        ({"event_type": "t", "timestamp": datetime(1970, 6, 1)}, ValueError, "timestamp:"),
        ({"event_type": "t", "timestamp": datetime.now(timezone.utc) + timedelta(hours=2)}, ValueError, "timestamp:"),
        ({"event_type": "t", "timestamp": "2026-01-01"}, TypeError, "timestamp: must be a datetime"),
    ],
)
def test_track_refuses_what_the_server_would_reject_naming_the_field(client, kwargs, error, field):
    with pytest.raises(error) as raised:
        client.track(**kwargs)
    assert field in str(raised.value)
    assert client.stats() == eventline.Stats(), "a refused event must not be counted"


def test_track_accepts_the_limits_themselves(client):
    client.track("x" * 128, user_id="u" * 256, properties=nested(10))
    client.track("t", properties={"blob": "x" * ((1 << 20) - 200)})
    client.track("t", properties={"list": [1, 2.5, None, True, "s", {"a": [1]}]})
    assert client.stats().queued == 3


def test_event_ids_are_uuid7_and_timestamps_are_taken_at_track(client):
    ids = [client.track("t") for _ in range(100)]
    assert len(set(ids)) == 100
    for text in ids:
        assert uuid.UUID(text).version == 7
        assert uuid.UUID(text).variant == uuid.RFC_4122
    queued = queued_events(list(client._producer._queue))
    now = datetime.now(timezone.utc).timestamp()
    assert all(abs(event.timestamp.seconds - now) < 60 for event in queued)


def test_naive_datetimes_are_utc(client):
    client.track("t", timestamp=datetime(2025, 1, 2, 3, 4, 5, 600))
    event = queued_events(list(client._producer._queue))[0]
    expected = datetime(2025, 1, 2, 3, 4, 5, 600, tzinfo=timezone.utc)
    assert event.timestamp.seconds == int(expected.timestamp())
    assert event.timestamp.nanos == 600_000


def test_unknown_options_and_bad_settings_are_refused():
    with pytest.raises(TypeError, match="max_bach"):
        eventline.Client("localhost:1", max_bach=10)
    with pytest.raises(ValueError, match="max_batch: at most 2000"):
        eventline.Client("localhost:1", max_batch=2001)
    with pytest.raises(ValueError, match="queue_full_policy"):
        eventline.Client("localhost:1", queue_full_policy="block")
