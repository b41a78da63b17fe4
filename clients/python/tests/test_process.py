"""Processes: a forked child gets a fresh producer and the parent's queued events are sent
once, by the parent; events still queued at interpreter exit are sent by the atexit hook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import eventline
from conftest import API_KEY
from helpers import exported_ids


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork")
def test_forked_child_and_parent_each_send_their_own_events_once(server):
    # Small batches keep the parent streaming while it forks: at fork time some of its
    # events are in flight and some queued, the state SDKs lose or duplicate today.
    client = eventline.Client(server.address, api_key=API_KEY, max_batch=50, max_in_flight=2)
    parent_ids = [client.track("parent", properties={"n": n}) for n in range(3_000)]
    assert client.stats().queued > 0
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        exit_code = 1
        try:
            os.close(read_end)
            fresh = client.stats()
            child_ids = [client.track("child", properties={"n": n}) for n in range(200)]
            counts = client.shutdown(timeout=60)
            report = {"fresh": fresh.__dict__, "counts": counts.__dict__, "ids": child_ids}
            with os.fdopen(write_end, "w") as pipe:
                json.dump(report, pipe)
            exit_code = 0
        finally:
            os._exit(exit_code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        report = json.load(pipe)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert report["fresh"] == eventline.Stats().__dict__, "the child inherited queued events"
    assert report["counts"] == eventline.Counts(accepted=200).__dict__
    counts = client.shutdown(timeout=60)
    assert counts.accepted + counts.duplicates == 3_000, counts
    assert counts.total == 3_000, counts
    stored = exported_ids(client)
    assert len(stored) == 3_200
    assert sorted(stored) == sorted(parent_ids + report["ids"])


def test_events_queued_at_interpreter_exit_are_sent(server):
    script = textwrap.dedent(
        f"""
        import eventline
        client = eventline.Client({server.address!r}, api_key={API_KEY!r}, flush_interval=60)
        for n in range(250):
            client.track("at_exit", properties={{"n": n}})
        # no flush, no shutdown: the atexit hook must deliver them
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    with eventline.Client(server.address, api_key=API_KEY) as client:
        assert client.count_events(event_type="at_exit") == 250
