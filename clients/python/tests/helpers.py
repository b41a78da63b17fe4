"""Small helpers shared by the test modules."""

from __future__ import annotations

import time
from typing import Callable, List

import eventline


def exported_ids(client: eventline.Client) -> List[str]:
    """Every stored event id, oldest first, as ExportEvents returns them."""
    return [event.event_id for event in client.export()]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Polls `condition`; fails naming `what` if it never holds (a hang guard, not a
    timed assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)
