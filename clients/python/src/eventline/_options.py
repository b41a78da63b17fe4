"""The producer's settings and the counts it reports; the defaults are the table in
clients/README.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from eventline._events import MAX_EVENTS_PER_MESSAGE

QUEUE_FULL_POLICIES = ("drop_newest", "drop_oldest")


@dataclass(frozen=True)
class Counts:
    """Final outcomes; their sum is the number of successful `track()` calls."""

    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    dropped: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.accepted + self.duplicates + self.rejected + self.dropped + self.failed


@dataclass(frozen=True)
class Stats(Counts):
    """`Counts` plus the events still on their way."""

    queued: int = 0
    in_flight: int = 0


@dataclass(frozen=True)
class RejectedEvent:
    """An event the server refused, with its message naming the field."""

    event_id: str
    event_type: str
    error: str


@dataclass
class ProducerOptions:
    """Producer settings; the defaults are the table in clients/README.md."""

    max_queue_size: int = 10_000
    queue_full_policy: str = "drop_newest"
    max_batch: int = 500
    flush_interval: float = 1.0
    max_in_flight: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 30.0
    max_retry_duration: float = 600.0
    ack_timeout: float = 30.0
    shutdown_timeout: float = 10.0
    on_rejected: Optional[Callable[[RejectedEvent], Any]] = None

    def validate(self) -> None:
        def positive(name: str) -> None:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)!r}")

        for name in ("max_queue_size", "max_batch", "flush_interval", "max_in_flight",
                     "initial_backoff", "max_backoff", "max_retry_duration", "ack_timeout"):
            positive(name)
        if self.max_batch > MAX_EVENTS_PER_MESSAGE:
            raise ValueError(f"max_batch: at most {MAX_EVENTS_PER_MESSAGE}, got {self.max_batch}")
        if self.queue_full_policy not in QUEUE_FULL_POLICIES:
            raise ValueError(
                f"queue_full_policy: one of {QUEUE_FULL_POLICIES}, got {self.queue_full_policy!r}"
            )
        if self.shutdown_timeout < 0:
            raise ValueError(f"shutdown_timeout: must not be negative, got {self.shutdown_timeout}")
