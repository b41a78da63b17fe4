"""The real segment-analytics-python and posthog SDKs, unmodified, sending to eventline's
drop-in capture doors: every call type, read back through ListEvents/CountEvents, each
event stored exactly once with its mapped type and properties; a server killed with
SIGKILL mid-flush and restarted, and a key over its rate limit (429 + Retry-After), with
the SDKs' own retries leaving every event stored once."""

import threading
import time
import uuid
from datetime import datetime, timezone

import posthog
from segment.analytics import Client as SegmentClient

from conftest import API_KEY, assert_each_stored_once

PER_CALL = 100  # events of each call type per SDK


def send_segment(client, prefix, count=PER_CALL):
    """Every Segment call type, `count` each; returns what each should be stored as."""
    expected = {}
    now = datetime.now(timezone.utc)
    for n in range(count):
        user, anon = f"{prefix}-user-{n % 17}", f"{prefix}-anon-{n}"
        ids = {call: f"{prefix}-{call}-{n}" for call in ("track", "identify", "page", "screen", "group", "alias")}
        client.track(user, "Order Completed", {"n": n, "total": n * 1.5}, message_id=ids["track"], timestamp=now)
        expected[ids["track"]] = ("Order Completed", user, {"n": n, "total": n * 1.5, "$lib": "analytics-python"})
        client.identify(user, {"plan": "pro", "n": n}, anonymous_id=anon, message_id=ids["identify"])
        expected[ids["identify"]] = ("$identify", user, {"$set": {"plan": "pro", "n": n}, "$anonymous_id": anon})
        client.page(anonymous_id=anon, name="Home", properties={"url": f"https://example.com/{n}"}, message_id=ids["page"])
        expected[ids["page"]] = ("$pageview", anon, {"$current_url": f"https://example.com/{n}", "$page_name": "Home"})
        client.screen(user, name="Settings", properties={"n": n}, message_id=ids["screen"])
        expected[ids["screen"]] = ("$screen", user, {"$screen_name": "Settings", "n": n})
        client.group(user, f"org-{n % 5}", {"seats": n}, message_id=ids["group"])
        expected[ids["group"]] = ("$groupidentify", user, {"$group_key": f"org-{n % 5}", "$group_set": {"seats": n}})
        client.alias(anon, user, message_id=ids["alias"])
        expected[ids["alias"]] = ("$create_alias", anon, {"alias": user})
    return expected


def send_posthog(client, prefix, count=PER_CALL):
    """Every posthog-python call type, `count` each; returns what each should be stored as."""
    expected = {}
    for n in range(count):
        user = f"{prefix}-user-{n % 17}"
        ids = [str(uuid.uuid4()) for _ in range(6)]
        client.capture("order completed", distinct_id=user, properties={"n": n}, uuid=ids[0])
        expected[ids[0]] = ("order completed", user, {"n": n, "$lib": "posthog-python"})
        client.capture("$pageview", distinct_id=user, properties={"$current_url": f"https://example.com/{n}"}, uuid=ids[1])
        expected[ids[1]] = ("$pageview", user, {"$current_url": f"https://example.com/{n}"})
        client.capture("$identify", distinct_id=user, properties={"$set": {"plan": "pro"}}, uuid=ids[2])
        expected[ids[2]] = ("$identify", user, {"$set": {"plan": "pro"}})
        client.set(distinct_id=user, properties={"n": n}, uuid=ids[3])
        expected[ids[3]] = ("$set", user, {"$set": {"n": n}})
        client.group_identify("company", f"org-{n % 5}", {"seats": n}, uuid=ids[4], distinct_id=user)
        expected[ids[4]] = ("$groupidentify", user, {"$group_type": "company", "$group_key": f"org-{n % 5}"})
        client.alias(f"{prefix}-anon-{n}", user, uuid=ids[5])
        expected[ids[5]] = ("$create_alias", f"{prefix}-anon-{n}", {"alias": user})
    return expected


class Failures:
    """The SDKs' on_error callbacks: anything they report as lost."""

    def __init__(self):
        self.errors = []

    def __call__(self, error, batch):
        self.errors.append((repr(error), len(batch)))


def segment_client(server, failures, **options):
    return SegmentClient(API_KEY, host=server.url, on_error=failures, **{"upload_size": 100, **options})


def posthog_client(server, failures, **options):
    return posthog.Posthog(API_KEY, host=server.url, on_error=failures, **{"flush_at": 100, **options})


def test_segment_python_every_call_type_stored_once_with_its_mapped_type(make_server):
    server = make_server()
    failures = Failures()
    client = segment_client(server, failures, gzip=True)
    expected = send_segment(client, "seg")
    client.shutdown()
    assert failures.errors == []
    stored = server.events()
    assert_each_stored_once(stored, expected)
    assert server.count() == len(expected) == 6 * PER_CALL
    assert server.metric('eventline_capture_events_total{door="segment",outcome="accepted"}') == len(expected)


def test_posthog_python_every_call_type_stored_once_with_its_mapped_type(make_server):
    server = make_server()
    failures = Failures()
    client = posthog_client(server, failures, gzip=True)
    expected = send_posthog(client, "ph")
    client.shutdown()
    assert failures.errors == []
    assert_each_stored_once(server.events(), expected)
    assert server.count() == len(expected)
    assert server.metric('eventline_capture_events_total{door="posthog",outcome="accepted"}') == len(expected)


def kill_and_restart_while_sending(server, send):
    """Sends in a thread; once some events are stored, SIGKILLs the server mid-flush and
    starts it again on the same ports and database a second later. Returns how many
    events were stored when it came back."""
    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 30
    while server.count() == 0:
        assert time.monotonic() < deadline, "nothing stored within 30 s"
        time.sleep(0.02)
    server.kill()
    time.sleep(1)
    server.start()
    stored_at_restart = server.count()
    sender.join(timeout=120)
    assert not sender.is_alive(), "the SDK did not finish after the restart"
    return stored_at_restart


def test_segment_and_posthog_python_retries_store_everything_once_across_a_server_kill(make_server):
    server = make_server()
    failures = Failures()
    segment = segment_client(server, failures, upload_interval=0.05, upload_size=50)
    ph = posthog_client(server, failures, flush_at=50, flush_interval=0.05, max_retries=6)
    expected = {}

    def send():
        expected.update(send_segment(segment, "kill-seg"))
        expected.update(send_posthog(ph, "kill-ph"))
        segment.shutdown()
        ph.shutdown()

    stored_at_restart = kill_and_restart_while_sending(server, send)
    assert stored_at_restart < len(expected), "the kill came after everything was sent"
    assert failures.errors == []
    assert_each_stored_once(server.events(), expected)
    assert server.count() == len(expected)


def test_both_python_sdks_back_off_on_429_with_retry_after_and_lose_nothing(make_server):
    server = make_server(EVENTLINE_LIMITS_EVENTS_PER_SECOND_PER_KEY="400")
    failures = Failures()
    segment = segment_client(server, failures)
    ph = posthog_client(server, failures, max_retries=10)
    expected = send_segment(segment, "rl-seg", count=60)
    expected.update(send_posthog(ph, "rl-ph", count=60))
    segment.shutdown()
    ph.shutdown()
    assert failures.errors == []
    refused = server.metric('eventline_capture_requests_total{door="segment",status="429"}') or 0
    refused += server.metric('eventline_capture_requests_total{door="posthog",status="429"}') or 0
    assert refused > 0, "720 events at 400/s should have met the rate limit"
    assert_each_stored_once(server.events(), expected)
