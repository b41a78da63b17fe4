"""The producer contract (clients/README.md) against the real server."""

from __future__ import annotations

import logging
import re
import time

import eventline
from conftest import API_KEY
from eventline.v1 import event_pb2
from helpers import exported_ids, wait_until


def test_ten_thousand_events_are_accepted_and_counted(server):
    client = eventline.Client(server.address, api_key=API_KEY)
    for number in range(10_000):
        client.track("page_view", user_id=f"user-{number % 50}", properties={"n": number})
    counts = client.shutdown(timeout=120)
    assert counts == eventline.Counts(accepted=10_000)
    assert client.count_events() == 10_000
    assert client.stats() == eventline.Stats(accepted=10_000)


def test_server_killed_mid_stream_stores_every_event_exactly_once(server):
    client = eventline.Client(
        server.address, api_key=API_KEY, max_queue_size=20_000, max_retry_duration=120
    )
    tracked = [client.track("order", properties={"n": number}) for number in range(20_000)]
    wait_until(lambda: client.stats().accepted >= 2_000, "the first acknowledgements")
    server.kill()
    assert client.stats().queued + client.stats().in_flight > 0, "nothing left to resend"
    time.sleep(1)
    server.start()
    counts = client.shutdown(timeout=120)
    assert counts.accepted + counts.duplicates == 20_000, counts
    assert counts.rejected == counts.dropped == counts.failed == 0, counts
    stored = exported_ids(client)
    assert len(stored) == 20_000
    assert sorted(stored) == sorted(tracked)


def test_stalled_server_is_detected_by_the_ack_timeout_and_every_event_is_stored_once(
    server, caplog
):
    caplog.set_level(logging.WARNING, logger="eventline")
    client = eventline.Client(server.address, api_key=API_KEY, ack_timeout=1, max_retry_duration=120)
    tracked = [client.track("before_stall") for _ in range(1_000)]
    assert client.flush(timeout=60)
    server.pause()
    try:
        tracked += [client.track("during_stall") for _ in range(1_000)]
        wait_until(lambda: "no acknowledgement within ack_timeout" in caplog.text, "the ack timeout")
    finally:
        server.resume()
    counts = client.shutdown(timeout=120)
    assert counts.accepted + counts.duplicates == 2_000, counts
    assert sorted(exported_ids(client)) == sorted(tracked)


def test_overloaded_server_is_retried_with_backoff_until_every_event_is_stored(
    make_server, caplog
):
    # The server's smallest writer queue holds two of these batches; four arrive at once.
    server = make_server(
        {"EVENTLINE_WRITER_QUEUE_EVENTS": "2000", "EVENTLINE_WRITER_ENQUEUE_TIMEOUT_MS": "1"}
    )
    caplog.set_level(logging.WARNING, logger="eventline")
    client = eventline.Client(server.address, api_key=API_KEY, max_batch=1000, max_in_flight=4)
    tracked = [client.track("burst", properties={"n": number}) for number in range(8_000)]
    counts = client.shutdown(timeout=120)
    refusals = [
        record.getMessage() for record in caplog.records if "RESOURCE_EXHAUSTED" in record.getMessage()
    ]
    assert refusals, "the server never refused a batch"
    # The server asks for 500 ms (google.rpc.RetryInfo); jitter alone would start near 0.
    delays = [float(re.search(r"reconnecting in ([0-9.]+)s", line).group(1)) for line in refusals]
    assert min(delays) >= 0.5, delays
    assert counts.accepted + counts.duplicates == 8_000, counts
    assert counts.failed == 0
    assert sorted(exported_ids(client)) == sorted(tracked)


def test_full_queue_drops_exactly_the_newest_events_that_did_not_fit(server):
    # The queue holds 100 and a batch waits for 500 events or a minute, so nothing is
    # sent until shutdown: exactly the last 50 do not fit.
    client = eventline.Client(
        server.address, api_key=API_KEY, max_queue_size=100, max_batch=500, flush_interval=60
    )
    tracked = [client.track("click", properties={"n": number}) for number in range(150)]
    assert client.stats() == eventline.Stats(dropped=50, queued=100)
    counts = client.shutdown(timeout=60)
    assert counts == eventline.Counts(accepted=100, dropped=50)
    assert sorted(exported_ids(client)) == sorted(tracked[:100])


def test_drop_oldest_policy_keeps_the_newest_events(server):
    client = eventline.Client(
        server.address, api_key=API_KEY, max_queue_size=100, max_batch=500,
        flush_interval=60, queue_full_policy="drop_oldest",
    )
    tracked = [client.track("click") for _ in range(130)]
    counts = client.shutdown(timeout=60)
    assert counts == eventline.Counts(accepted=100, dropped=30)
    assert sorted(exported_ids(client)) == sorted(tracked[30:])


def test_rejected_events_are_counted_reported_with_the_field_and_not_resent(server, caplog):
    caplog.set_level(logging.WARNING, logger="eventline")
    reported = []
    client = eventline.Client(server.address, api_key=API_KEY, on_rejected=reported.append)
    good = [client.track("fine") for _ in range(10)]
    # track() refuses these itself; an older SDK or a stricter server would send them,
    # so they go to the producer directly to see what the server's REJECTED leads to.
    client._producer.enqueue(event_pb2.Event(event_id="bad-empty-type", event_type=""))
    client._producer.enqueue(
        event_pb2.Event(event_id="bad-user", event_type="fine", user_id="u" * 257)
    )
    counts = client.shutdown(timeout=60)
    assert counts == eventline.Counts(accepted=10, rejected=2)
    errors = {event.event_id: event.error for event in reported}
    assert set(errors) == {"bad-empty-type", "bad-user"}
    assert errors["bad-empty-type"].startswith("event_type: must be 1 to 128 characters")
    assert errors["bad-user"].startswith("user_id:")
    assert "bad-empty-type" in caplog.text and "event_type:" in caplog.text
    assert sorted(exported_ids(client)) == sorted(good)
    # Never resent: the server saw each rejected event exactly once.
    assert server.metric("eventline_ingest_events_total", 'outcome="rejected"') == 2


def test_flush_returns_once_everything_tracked_before_it_is_acknowledged(server):
    client = eventline.Client(server.address, api_key=API_KEY, flush_interval=60)
    for _ in range(25):
        client.track("flushed")
    assert client.flush(timeout=60)
    assert client.stats() == eventline.Stats(accepted=25)
    assert client.count_events(event_type="flushed") == 25
    client.shutdown()


def test_unreachable_server_counts_events_as_failed_at_the_shutdown_timeout():
    from conftest import free_port

    client = eventline.Client(f"127.0.0.1:{free_port()}", api_key=API_KEY)
    for _ in range(10):
        client.track("lost")  # never raises, though nothing listens
    counts = client.shutdown(timeout=1)
    assert counts == eventline.Counts(failed=10)


def test_a_wrong_api_key_fails_the_events_without_raising_in_track(server, caplog):
    caplog.set_level(logging.WARNING, logger="eventline")
    client = eventline.Client(server.address, api_key="elk_wrong_key_0123456789abcdef0123")
    for _ in range(10):
        client.track("denied")
    counts = client.shutdown(timeout=3)
    assert counts == eventline.Counts(failed=10)
    assert "UNAUTHENTICATED" in caplog.text


def test_a_batch_unacknowledged_for_max_retry_duration_is_counted_as_failed(server, caplog):
    caplog.set_level(logging.WARNING, logger="eventline")
    client = eventline.Client(
        server.address, api_key=API_KEY, max_batch=100, ack_timeout=0.5, max_retry_duration=2
    )
    client.track("connected")
    assert client.flush(timeout=60)
    server.pause()  # the connection stays up; nothing is read or acknowledged
    try:
        for _ in range(200):
            client.track("given_up")
        wait_until(lambda: client.stats().failed == 200, "the batches to be given up")
        assert client.flush(timeout=1)  # nothing is left waiting
    finally:
        server.resume()
    assert client.shutdown(timeout=10) == eventline.Counts(accepted=1, failed=200)
    assert "max_retry_duration=2" in caplog.text
